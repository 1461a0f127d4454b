"""Load ``scanflow.yaml`` once, at the edge: parse, apply ``--param`` overrides, validate, plan.

Every problem becomes a :class:`~scanflow_core.errors.SpecError` that names the file, the line,
the path inside the file (``steps[2].needs[0]``) and what was expected. Nothing else escapes.
"""

from __future__ import annotations

import copy
import gc
import hashlib
import re
import reprlib
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ValidationError

from scanflow_core.errors import Problem, SpecError, one_of
from scanflow_core.spec.models import STAGES, Workflow

__all__ = ["format_path", "load_workflow", "load_workflow_text", "parse_overrides"]

_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[misc]
    """YAML with 1.2 booleans: only true/false, so a check's ``on:`` key stays the string 'on'."""

    yaml_implicit_resolvers: ClassVar[dict[Any, list[tuple[str, Any]]]] = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in _Base.yaml_implicit_resolvers.items()
    }


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
# YAML 1.2 floats too: ``1e-3`` is a number (YAML 1.1 wants a dot and reads it as a string).
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$"), list("-+0123456789")
)
_NAME_HINT = "a name of letters, digits and '_' that does not start with a digit"
_MEMORY_HINT = "a memory size such as '512Mi', '2G' or '1.5GiB'"
#: Deeper YAML is refused before it is composed: libyaml's composer recurses in C and crashes the
#: interpreter (SIGSEGV) on flow collections nested some tens of thousands deep.
_MAX_DEPTH = 200
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 80
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxdict, _SHORT.maxset = 3, 5, 5, 5, 5


def load_workflow(path: str | Path, params: Mapping[str, Any] | Sequence[str] | None = None) -> Workflow:
    """Load, validate and plan a workflow file.

    Args:
        path: the ``scanflow.yaml`` file.
        params: overrides, as a mapping or as ``["epochs=5", "train.lr=0.1"]`` (values are YAML
            scalars). ``NAME`` overrides a workflow parameter; ``STEP.NAME`` a step's parameter;
            ``NESTED.…`` goes down into a nested workflow.

    Returns:
        The validated :class:`Workflow`, with ``workflow.plan`` ready to run.

    Raises:
        SpecError: naming the file, line, path and what was expected.
    """
    with _gc_paused():
        return _load(Path(path), parse_overrides(params), chain=())


def load_workflow_text(text: str, file: str = "<string>", params: Any = None) -> Workflow:
    """Like :func:`load_workflow`, from text (nested workflows resolve from the working directory)."""
    with _gc_paused():
        return _from_text(text, file, Path.cwd(), parse_overrides(params), chain=())


def load_workflow_data(data: Mapping[str, Any], file: str | Path, text: str) -> Workflow:
    """Like :func:`load_workflow`, from data already parsed from ``text`` (the file's contents).

    For specs Scanflow writes itself (a decorated task's one-step spec): the same validation and
    errors, without parsing YAML again. ``text`` gives the digest and the line numbers of errors.
    """
    path = Path(file)
    with _gc_paused():
        return _from_text(text, str(path), path.parent, {}, chain=(), raw=copy.deepcopy(dict(data)))


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Loading builds many small objects at once: the cyclic collector, run again and again while they
    are made, turns a linear load into a quadratic one (10,000 steps: 5.4 s with it, 1.8 s without).
    The loader makes no cycles to collect, so the collector waits until the spec is built."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def parse_overrides(params: Mapping[str, Any] | Sequence[str] | None) -> dict[str, Any]:
    if params is None:
        return {}
    if isinstance(params, Mapping):
        return {str(key): value for key, value in params.items()}
    result: dict[str, Any] = {}
    for item in params:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise SpecError.single("--param", item, "a parameter override must look like NAME=VALUE")
        try:
            if _too_deep(value) is not None:
                reason = f"the value is nested more than {_MAX_DEPTH} deep"
                raise SpecError.single("--param", key.strip(), reason)
            result[key.strip()] = yaml.load(value, Loader=_Loader) if value.strip() else ""
        except (yaml.YAMLError, UnicodeError, RecursionError):
            result[key.strip()] = value
    return result


def _load(path: Path, overrides: dict[str, Any], chain: tuple[Path, ...]) -> Workflow:
    resolved = path.resolve()
    if resolved in chain:
        loop = " → ".join(p.name for p in (*chain, resolved))
        raise SpecError.single(str(path), "", f"nested workflows include each other: {loop}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SpecError.single(str(path), "", f"cannot read the spec: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        reason = f"the file is not UTF-8 text ({exc.reason})"
        raise SpecError.single(str(path), "", reason, line=line) from None
    return _from_text(text, str(path), path.parent, overrides, (*chain, resolved), data)


def _from_text(
    text: str,
    file: str,
    directory: Path,
    overrides: dict[str, Any],
    chain: tuple[Path, ...],
    data: bytes | None = None,
    raw: Any = None,
) -> Workflow:
    from scanflow_core.spec.plan import build_plan

    if raw is None:
        raw = _parse_yaml(text, file)
    nested_overrides = _apply_overrides(raw, overrides, file)
    try:
        workflow = Workflow.model_validate(raw)
    except ValidationError as exc:
        problems = _problems_from_pydantic(exc, raw)
        raise SpecError(file, _with_lines(problems, text)) from None
    workflow._file = file
    workflow._digest = "sha256:" + hashlib.sha256(data if data is not None else text.encode()).hexdigest()
    for index, step in enumerate(workflow.steps):
        if step.workflow is None:
            continue
        child_path = directory / step.workflow
        try:
            is_file = child_path.is_file()
        except (OSError, ValueError):  # a name too long for the file system, say
            is_file = False
        if not is_file:
            problem = Problem(f"steps[{index}].workflow", f"no such file {str(child_path)!r}", "a spec file")
            raise SpecError(file, _with_lines([problem], text))
        if child_path.resolve() in chain:
            loop = " → ".join(p.name for p in (*chain, child_path.resolve()))
            problem = Problem(f"steps[{index}].workflow", f"nested workflows include each other: {loop}")
            raise SpecError(file, _with_lines([problem], text))
        try:
            workflow._children[step.name] = _load(child_path, nested_overrides.get(step.name, {}), chain)
        except SpecError as exc:  # an override meant for the nested workflow keeps its full name
            prefix = f"--param {step.name}."
            problems = [
                Problem(prefix + p.path.removeprefix("--param "), p.message, p.expected, p.line)
                if p.path.startswith("--param ")
                else p
                for p in exc.problems
            ]
            raise SpecError(exc.file, problems) from None
    try:
        workflow._plan = build_plan(workflow, directory)
    except SpecError as exc:
        if exc.file == file:
            raise SpecError(file, _with_lines(exc.problems, text)) from None
        raise
    return workflow


def _parse_yaml(text: str, file: str) -> Any:
    try:
        deep = _too_deep(text)
        if deep is not None:
            raise SpecError.single(file, "", f"invalid YAML: nested more than {_MAX_DEPTH} deep", line=deep)
        raw = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        reason = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise SpecError.single(file, "", f"invalid YAML: {reason}", line=line) from None
    except yaml.YAMLError as exc:
        raise SpecError.single(file, "", f"invalid YAML: {exc}") from None
    except RecursionError:
        raise SpecError.single(file, "", "invalid YAML: nested too deeply") from None
    except UnicodeError as exc:  # a lone surrogate in text given as str
        reason = f"the text is not valid Unicode ({getattr(exc, 'reason', exc)})"
        raise SpecError.single(file, "", reason) from None
    if not isinstance(raw, dict):
        got = "an empty file" if raw is None else f"a {type(raw).__name__}"
        raise SpecError.single(file, "", f"the spec is {got}", "a mapping with apiVersion, name and steps")
    return raw


def _too_deep(text: str) -> int | None:
    """The line where ``text`` nests collections more than ``_MAX_DEPTH`` deep, or None.

    Reads parser events only (libyaml's parser keeps its own stack); syntax errors are left for
    the loader to report.
    """
    if len(text) <= _MAX_DEPTH:
        return None
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > _MAX_DEPTH:
                    mark = event.start_mark
                    return int(mark.line) + 1 if mark is not None else None
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError:
        return None
    return None


def _apply_overrides(raw: dict[str, Any], overrides: dict[str, Any], file: str) -> dict[str, dict[str, Any]]:
    """Write ``--param`` values into the raw document; return those meant for nested workflows."""
    nested: dict[str, dict[str, Any]] = {}
    steps: list[Any] = raw["steps"] if isinstance(raw.get("steps"), list) else []
    by_name = {s["name"]: s for s in steps if isinstance(s, dict) and isinstance(s.get("name"), str)}
    for key, value in overrides.items():
        head, dot, rest = key.partition(".")
        if not dot:
            params = raw.setdefault("params", {})
            if not isinstance(params, dict) or key not in params:
                known = sorted(map(str, params)) if isinstance(params, dict) else []
                raise SpecError.single(
                    file, f"--param {key}", f"unknown parameter {key!r}", one_of(known, key)
                )
            params[key] = value
            continue
        step = by_name.get(head)
        if step is None:
            raise SpecError.single(
                file, f"--param {key}", f"no step named {head!r}", one_of(sorted(map(str, by_name)), head)
            )
        if "workflow" in step:
            nested.setdefault(head, {})[rest] = value
            given = step.get("params")
            if "." not in rest and isinstance(given, dict) and rest in given:
                given[rest] = value  # the command line wins over the parent step's params
        elif "." in rest:
            raise SpecError.single(file, f"--param {key}", f"step {head!r} is not a nested workflow")
        else:
            params = step.setdefault("params", {})
            if isinstance(params, dict):
                params[rest] = value
    return nested


def format_path(loc: Sequence[int | str]) -> str:
    """``('steps', 2, 'needs', 0)`` → ``steps[2].needs[0]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _problems_from_pydantic(exc: ValidationError, raw: Any) -> list[Problem]:
    problems: dict[str, Problem] = {}
    for error in exc.errors(include_url=False):
        loc, kind = _data_loc(raw, error["loc"]), error["type"]
        message, expected = _describe(error, loc, raw)
        path = format_path(loc)
        if path in problems:  # a union reports once per member: merge into one problem
            old = problems[path]
            if message != old.message and message.startswith("Input should be "):
                merged = f"{old.message} or {message.removeprefix('Input should be ')}"
                problems[path] = Problem(path, merged, old.expected)
            continue
        if kind == "missing" and loc and isinstance(loc[-1], str):
            path = format_path(loc)
        problems[path] = Problem(path, message, expected)
    return list(problems.values())


def _data_loc(raw: Any, loc: Sequence[int | str]) -> list[int | str]:
    """Keep the part of pydantic's location that indexes the user's data (drops union member names)."""
    out: list[int | str] = []
    node = raw
    for part in loc:
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_list or (isinstance(node, dict) and part in node):
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and part in _fields_at(out):
            out.append(part)  # a missing field
            break
        else:
            continue
        out.append(part)
    return out


def _model_at(loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``loc``."""
    annotation: Any = Workflow
    for part in loc:
        model = _unwrap_model(annotation)
        if model is not None and isinstance(part, str):
            field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
            if field is None:
                return None
            annotation = field.annotation
        else:
            args = [a for a in typing.get_args(_strip(annotation)) if a is not type(None)]
            annotation = args[-1] if args else None
    return _unwrap_model(annotation)


def _strip(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _unwrap_model(annotation: Any) -> type[BaseModel] | None:
    annotation = _strip(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            model = _unwrap_model(arg)
            if model is not None:
                return model
    return None


def _fields_at(loc: Sequence[int | str]) -> list[str]:
    model = _model_at(loc)
    if model is None:
        return []
    return [f.alias or n for n, f in model.model_fields.items()]


def _describe(error: Any, loc: list[int | str], raw: Any) -> tuple[str, str | None]:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    name = loc[-1] if loc else ""
    shown = _SHORT.repr(value)  # never the whole value: YAML aliases can make it huge
    text = value[:200] if isinstance(value, str) else shown
    if kind == "missing":
        return f"missing required field {name!r}", None
    if kind == "extra_forbidden":
        return f"unknown field {name!r}", one_of(_fields_at(loc[:-1]), str(name))
    if kind == "literal_error":
        options = [
            o.strip().strip("'") for o in str(ctx.get("expected", "")).replace(" or ", ", ").split(",")
        ]
        if name == "stage":
            return f"unknown stage {shown}", one_of(list(STAGES), text)
        return f"{shown} is not allowed", one_of(options, text)
    if kind == "string_pattern_mismatch":
        if name == "call":
            return f"{shown} is not a callable reference", "'module:function', e.g. 'steps:train'"
        if name == "memory":
            return f"{shown} is not a memory size", _MEMORY_HINT
        return f"{shown} is not a valid name", _NAME_HINT
    if kind in ("value_error", "assertion_error"):
        return str(error["msg"]).removeprefix("Value error, "), None
    if kind == "too_short" and name == "steps":
        return "a workflow needs at least one step", None
    return str(error["msg"]), None


def _with_lines(problems: Sequence[Problem], text: str) -> list[Problem]:
    """Add the line of each problem's path, found by walking the YAML node tree (only on error)."""
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError:
        return list(problems)
    out = []
    for problem in problems:
        line = problem.line or _line_of(root, problem.path)
        out.append(Problem(problem.path, problem.message, problem.expected, line))
    return out


def _split_path(path: str) -> list[int | str]:
    parts: list[int | str] = []
    for chunk in path.replace("]", "").split("."):
        head, *indexes = chunk.split("[")
        if head:
            parts.append(head)
        parts.extend(int(i) for i in indexes if i.isdecimal())
    return parts


def _line_of(root: Any, path: str) -> int | None:
    if root is None or path.startswith("--"):
        return None
    node, line = root, int(root.start_mark.line) + 1
    for part in _split_path(path):
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == part), None)
            if match is None:
                break
            line, node = int(match[0].start_mark.line) + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = int(node.start_mark.line) + 1
        else:
            break
    return line
