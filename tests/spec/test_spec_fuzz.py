"""Fuzzing the spec loader: whatever the text, bytes, structure or ``--param`` values, loading either
succeeds with a consistent plan or raises SpecError; no other exception ever escapes."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scanflow_core.errors import Problem, SpecError
from scanflow_core.spec import STAGES, Workflow, load_workflow, load_workflow_text

pytestmark = pytest.mark.slow

FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

CHILD = {
    "apiVersion": "scanflow/v1",
    "name": "child",
    "params": {"seed": 1},
    "inputs": {"source": {"kind": "data"}, "extra": {"kind": "data", "path": "extra.csv"}},
    "steps": [
        {
            "name": "clean",
            "stage": "data_transformation",
            "call": "m:clean",
            "inputs": ["source"],
            "outputs": ["cleaned"],
        },
        {"name": "look", "stage": "data_analysis", "command": "echo", "inputs": ["cleaned", "extra"]},
    ],
}

VALID: dict[str, Any] = {
    "apiVersion": "scanflow/v1",
    "name": "fuzzed",
    "description": "a workflow that uses most of the spec",
    "params": {"epochs": 3, "lr": 0.1, "device": "cpu"},
    "inputs": {"data": {"kind": "data", "path": "data.csv"}},
    "objectives": [
        "evaluate.accuracy >= 0.9",
        {"name": "fast", "expr": "train.seconds < params.epochs * 60", "blocking": False},
    ],
    "tracker": {"enabled": True, "uri": "file:./mlruns", "experiment": "fuzz"},
    "attestation": {"enabled": False},
    "steps": [
        {
            "name": "ingest",
            "stage": "data_ingestion",
            "call": "steps:ingest",
            "inputs": ["data"],
            "outputs": ["raw"],
        },
        {
            "name": "prep",
            "stage": "data_transformation",
            "workflow": "child.yaml",
            "needs": ["ingest"],
            "params": {"seed": 5},
            "inputs": {"source": "raw"},
        },
        {
            "name": "split",
            "stage": "data_splitting",
            "command": ["python", "split.py"],
            "inputs": {"data": "prep.cleaned"},
            "outputs": {"train": {"kind": "data"}, "eval": {"kind": "data"}, "test": {"kind": "data"}},
            "checks": [{"use": "leakage", "on": ["train", "test"], "policy": "warn", "threshold": 0.1}],
        },
        {
            "name": "train",
            "stage": "training",
            "image": "python:3.11",
            "command": "python train.py",
            "params": {"lr": 0.01},
            "inputs": ["train"],
            "outputs": {"model": {"kind": "model", "path": "model.pt"}},
            "resources": {"cpu": 2, "memory": "2Gi", "gpu": 0},
            "env": {"MODE": "fast", "N": 3},
            "retries": 2,
            "timeout": "10m",
            "when": "params.device == 'cpu'",
        },
        {"name": "evaluate", "stage": "evaluation", "call": "steps:evaluate", "inputs": ["model", "eval"]},
        {
            "name": "test",
            "stage": "test",
            "call": "steps:test",
            "needs": ["evaluate"],
            "inputs": ["model", "test"],
            "when": "evaluate.accuracy > 0.5 and system.gpus >= 0",
        },
        {"name": "package", "stage": "packaging", "build": {"requirements": "req.txt"}, "command": "pack"},
    ],
}

FIELDS = sorted(
    {
        "apiVersion",
        "name",
        "description",
        "params",
        "inputs",
        "objectives",
        "tracker",
        "attestation",
        "stage_metadata",
        "python_path",
        "steps",
        "stage",
        "needs",
        "when",
        "call",
        "command",
        "image",
        "build",
        "workflow",
        "runtime",
        "outputs",
        "resources",
        "env",
        "checks",
        "retries",
        "timeout",
        "kind",
        "path",
        "use",
        "on",
        "policy",
        "severity",
        "expr",
        "blocking",
        "cpu",
        "memory",
        "gpu",
        "requirements",
        "dockerfile",
        "steps ",
        "Name",
        "nedds",
        "stgae",
    }
)
NESTED_FILES = [
    "child.yaml",
    "loop.yaml",
    "bad.yaml",
    "missing.yaml",
    "scanflow.yaml",
    "",
    ".",
    "/dev/null",
    "sub/",
    "n" * 300,
    "child.yaml\x00",
]
EXPRESSIONS = [
    "train.accuracy >= 0.9",
    "params.epochs > 1",
    "params.nope",
    "system.gpus > 0",
    "system.nope",
    "a.b.c",
    "prep.clean.rows > 1",
    "((",
    "1 +",
    "'unterminated",
    "x = 1",
    "not",
    "true and 3",
    "min()",
    "[1, 2",
    "evaluate.accuracy in [1, 2]",
    "-" * 60 + "1",
    "(" * 60 + "1" + ")" * 60,
    "9" * 5000,
    "a.__class__",
]


def _junk() -> st.SearchStrategy[Any]:
    scalar = st.one_of(
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.booleans(),
        st.none(),
        st.text(max_size=20),
        st.text(st.characters(categories=["Cs", "Cc", "Zl", "Zp"]), max_size=5),
        st.sampled_from(list(STAGES) + FIELDS + NESTED_FILES + EXPRESSIONS),
        st.integers(1000, 20_000).map(lambda n: "x" * n),
    )
    return st.recursive(
        scalar,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=8,
    )


JUNK = _junk()


def _slots(node: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) pair of the document, containers first."""
    out: list[tuple[Any, Any]] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            items: list[tuple[Any, Any]] = [(current, k) for k in current]
        elif isinstance(current, list):
            items = [(current, i) for i in range(len(current))]
        else:
            continue
        out.extend(items)
        stack.extend(c[k] for c, k in items)
    return out


def _steps(spec: dict[str, Any]) -> list[dict[str, Any]]:
    steps = spec.get("steps")
    return [s for s in steps if isinstance(s, dict)] if isinstance(steps, list) else []


def _names(spec: dict[str, Any]) -> list[Any]:
    return [s.get("name") for s in _steps(spec)]


Draw = Callable[[st.SearchStrategy[Any]], Any]


def delete(draw: Draw, spec: dict[str, Any]) -> None:
    slots = _slots(spec)
    if slots:
        container, key = draw(st.sampled_from(slots))
        del container[key]


def retype(draw: Draw, spec: dict[str, Any]) -> None:
    slots = _slots(spec)
    if slots:
        container, key = draw(st.sampled_from(slots))
        container[key] = draw(JUNK)


def rename(draw: Draw, spec: dict[str, Any]) -> None:
    slots = [(c, k) for c, k in _slots(spec) if isinstance(c, dict)]
    if slots:
        container, key = draw(st.sampled_from(slots))
        new = draw(st.one_of(st.sampled_from(FIELDS), st.text(max_size=10), st.integers(-3, 3)))
        container[new] = container.pop(key)


def duplicate_step(draw: Draw, spec: dict[str, Any]) -> None:
    steps = spec.get("steps")
    if isinstance(steps, list) and steps:
        steps.insert(draw(st.integers(0, len(steps))), copy.deepcopy(draw(st.sampled_from(steps))))


def point_needs(draw: Draw, spec: dict[str, Any]) -> None:
    steps = _steps(spec)
    if steps:
        names = [n for n in _names(spec) if isinstance(n, str)] + ["nope", "prep.clean", ""]
        target = draw(st.sampled_from(steps))
        target["needs"] = draw(st.lists(st.one_of(st.sampled_from(names), st.text(max_size=6)), max_size=4))


def cycle(draw: Draw, spec: dict[str, Any]) -> None:
    steps = _steps(spec)
    if len(steps) >= 2:
        chosen = draw(st.lists(st.sampled_from(steps), min_size=2, max_size=4))
        for before, after in zip(chosen, [*chosen[1:], chosen[0]], strict=True):
            needs = after.get("needs")
            after["needs"] = [*needs, before.get("name")] if isinstance(needs, list) else [before.get("name")]


def swap_stages(draw: Draw, spec: dict[str, Any]) -> None:
    steps = _steps(spec)
    if len(steps) >= 2:
        a, b = draw(st.lists(st.sampled_from(steps), min_size=2, max_size=2))
        a["stage"], b["stage"] = b.get("stage"), a.get("stage")
    elif steps:
        steps[0]["stage"] = draw(st.sampled_from([*STAGES, "trainig", "Test", ""]))


def nest(draw: Draw, spec: dict[str, Any]) -> None:
    steps = _steps(spec)
    if steps:
        target = draw(st.sampled_from(steps))
        target["workflow"] = draw(st.sampled_from(NESTED_FILES))
        for key in ("call", "command", "image", "build", "outputs"):
            if draw(st.booleans()):
                target.pop(key, None)
        if draw(st.booleans()):
            target["inputs"] = draw(
                st.sampled_from([{"source": "raw"}, {"nope": "raw"}, {}, ["raw"], {"source": "x"}])
            )


def express(draw: Draw, spec: dict[str, Any]) -> None:
    text = draw(st.one_of(st.sampled_from(EXPRESSIONS), st.text(max_size=30)))
    steps = _steps(spec)
    if steps and draw(st.booleans()):
        draw(st.sampled_from(steps))["when"] = text
    elif isinstance(spec.get("objectives"), list):
        spec["objectives"].append(draw(st.sampled_from([text, {"expr": text}, {"expr": text, "name": 3}])))


def rewire_artifacts(draw: Draw, spec: dict[str, Any]) -> None:
    steps = _steps(spec)
    if steps:
        names = [
            "raw",
            "train",
            "eval",
            "test",
            "model",
            "data",
            "prep.cleaned",
            "prep.source",
            "nope",
            "a b",
        ]
        target = draw(st.sampled_from(steps))
        key = draw(st.sampled_from(["inputs", "outputs"]))
        target[key] = draw(
            st.one_of(
                st.lists(st.sampled_from(names), max_size=3),
                st.dictionaries(
                    st.sampled_from(["data", "x", "raw", "model"]), st.sampled_from(names), max_size=3
                ),
            )
        )


def shuffle_steps(draw: Draw, spec: dict[str, Any]) -> None:
    steps = spec.get("steps")
    if isinstance(steps, list):
        spec["steps"] = draw(st.permutations(steps))


MUTATIONS = [
    delete,
    retype,
    rename,
    duplicate_step,
    point_needs,
    cycle,
    swap_stages,
    nest,
    express,
    rewire_artifacts,
    shuffle_steps,
]
OVERRIDES = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "epochs=5",
                "lr=0.5",
                "train.lr=0.1",
                "prep.seed=3",
                "prep.clean.x=1",
                "nope=1",
                "prep.nope=1",
                "trian.lr=1",
                "train.lr.x=1",
                "epochs",
                "=3",
                "a.=1",
                ".a=1",
                "epochs=[[[",
                "epochs={a: [1, {b: 2}]}",
                "epochs=" + "[" * 300,
            ]
        ),
        st.text(max_size=20),
    ),
    max_size=3,
)


@st.composite
def mutated_specs(draw: Draw) -> tuple[dict[str, Any], list[str]]:
    spec = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 5))):
        draw(st.sampled_from(MUTATIONS))(draw, spec)
    return spec, draw(OVERRIDES)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    (root / "child.yaml").write_text(yaml.safe_dump(CHILD))
    (root / "loop.yaml").write_text(
        yaml.safe_dump(
            {**CHILD, "steps": [{"name": "back", "stage": "logging", "workflow": "scanflow.yaml"}]}
        )
    )
    (root / "bad.yaml").write_text("apiVersion: scanflow/v1\nname: bad\nsteps: [{name: 1}]\n")
    (root / "sub").mkdir()
    return root


def check_error(exc: SpecError, files: set[str]) -> None:
    """What every SpecError must be: a known file, problems with paths, a message naming the file."""
    assert exc.file in files, exc.file
    assert exc.problems, exc
    for problem in exc.problems:
        assert isinstance(problem, Problem)
        assert isinstance(problem.path, str)
        assert isinstance(problem.message, str) and problem.message
        assert problem.line is None or (isinstance(problem.line, int) and problem.line >= 1)
        assert problem.expected is None or isinstance(problem.expected, str)
    text = str(exc)
    assert text and exc.file in text
    assert len(text) < 200_000


def check_plan(workflow: Workflow) -> None:
    """What every loaded workflow must be: a plan in topological order whose inputs all exist."""
    plan = workflow.plan
    seen: set[str] = set()
    for planned in plan:
        assert set(planned.needs) <= seen, (planned.name, planned.needs)
        for artifact in planned.inputs.values():
            assert artifact in plan.artifacts, artifact
        seen.add(planned.name)
    assert sum(len(level) for level in plan.levels()) == len(plan)
    for name in plan.steps:
        assert name not in plan.ancestors(name)


def load_or_spec_error(call: Callable[[], Workflow], files: set[str]) -> None:
    try:
        workflow = call()
    except SpecError as exc:
        check_error(exc, files)
    else:
        check_plan(workflow)


# --- (a) random text and bytes ---------------------------------------------------------------------

YAML_ALPHABET = st.sampled_from([*":-[]{}#&*!|>'\",?%@`\\ \n\t.=<", "\r", "\ufeff", "\x00", "\x85", "\u2028"])
ANY_CHAR = st.one_of(st.characters(), st.characters(categories=["Cs"]), YAML_ALPHABET)
VALID_LINES = yaml.safe_dump(VALID, sort_keys=False).splitlines()


@settings(FUZZ, max_examples=600)
@given(st.text(ANY_CHAR, max_size=300))
def test_random_text(text: str) -> None:
    load_or_spec_error(lambda: load_workflow_text(text, file="random.yaml"), {"random.yaml", "--param"})


@settings(FUZZ, max_examples=700)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(VALID_LINES),
            st.text(YAML_ALPHABET, max_size=6),
            st.sampled_from(VALID_LINES).map(lambda line: line.replace("  ", " ", 1)),
            st.sampled_from(VALID_LINES).map(lambda line: line.split(":")[0]),
        ),
        min_size=1,
        max_size=60,
    )
)
def test_yamlish_text(lines: list[str]) -> None:
    text = "\n".join(lines)
    load_or_spec_error(lambda: load_workflow_text(text, file="yamlish.yaml"), {"yamlish.yaml"})


@settings(FUZZ, max_examples=400)
@given(
    st.one_of(
        st.binary(max_size=400),
        st.tuples(st.sampled_from(VALID_LINES), st.binary(max_size=8)).map(lambda p: p[0].encode() + p[1]),
        st.binary(max_size=50).map(lambda b: yaml.safe_dump(VALID).encode() + b),
    )
)
def test_random_bytes(folder: Path, data: bytes) -> None:
    spec = folder / "bytes.yaml"
    spec.write_bytes(data)
    files = {str(folder / n) for n in ("bytes.yaml", "child.yaml")}
    load_or_spec_error(lambda: load_workflow(spec), files)


# --- (b) mutated valid specs ----------------------------------------------------------------------


def test_the_unmutated_spec_loads(folder: Path) -> None:
    spec = folder / "scanflow.yaml"
    spec.write_text(yaml.safe_dump(VALID))
    workflow = load_workflow(spec, ["epochs=5", "train.lr=0.5", "prep.seed=3"])
    check_plan(workflow)
    assert workflow.params["epochs"] == 5
    assert "prep.clean" in workflow.plan.steps
    assert workflow.plan["prep.clean"].params["seed"] == 3


@settings(FUZZ, max_examples=1500)
@given(mutated_specs())
def test_mutated_specs(folder: Path, mutated: tuple[dict[str, Any], list[str]]) -> None:
    spec_dict, params = mutated
    spec = folder / "scanflow.yaml"
    spec.write_text(yaml.safe_dump(spec_dict, allow_unicode=False))
    files = {str(folder / n) for n in ("scanflow.yaml", "child.yaml", "loop.yaml", "bad.yaml")} | {"--param"}
    load_or_spec_error(lambda: load_workflow(spec, params), files)


@settings(FUZZ, max_examples=300)
@given(OVERRIDES, st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), JUNK, max_size=3))
def test_random_overrides(items: list[str], mapping: dict[Any, Any]) -> None:
    text = yaml.safe_dump({**VALID, "steps": [s for s in VALID["steps"] if s["name"] != "prep"]})
    text = text.replace("prep.cleaned", "raw")
    for params in (items, mapping):
        load_or_spec_error(
            lambda p=params: load_workflow_text(text, file="o.yaml", params=p), {"o.yaml", "--param"}
        )


def test_fuzz_corpus_has_no_nan_surprises() -> None:
    """safe_dump writes NaN as .nan; the loader must treat it like any other value."""
    spec = copy.deepcopy(VALID)
    spec["steps"][3]["retries"] = math.nan
    with pytest.raises(SpecError) as info:
        load_workflow_text(yaml.safe_dump(spec), file="nan.yaml")
    check_error(info.value, {"nan.yaml"})
    assert info.value.path == "steps[3].retries"
