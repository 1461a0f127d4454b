"""Decorated tasks: a plain Python function run as one Scanflow step, with no spec file.

The orchestrator adapters' ``@scanflow_task`` decorators wrap a function in a :class:`TaskStep`.
Each call of the task is one step of a Scanflow run, through the same step path as the steps of a
spec (:func:`scanflow_core.steps.run_step`): checks, tracking and attestation included.

How one call becomes a step (:meth:`TaskStep.run`):

1. the function is registered in this process (:func:`scanflow_core.callables.register_callable`),
   so the step's ``call:`` names it without importing its module;
2. a one-step spec for the call is written to ``<run>/steps/<step>/spec.yaml``: the workflow's
   ``inputs`` are the file arguments (absolute paths), the step's ``params`` the other arguments,
   its ``outputs``, ``checks`` and ``timeout`` those of the task (:mod:`scanflow_core.task_spec`); its
   workflow is what loading it gives, so a problem in it is a
   :class:`~scanflow_core.errors.SpecError` naming that file;
3. the run is opened (idempotent across processes): the call that makes it fires
   ``scanflow_workflow_start`` (the MLflow tracker opens the run's parent run);
4. :func:`~scanflow_core.steps.run_step` runs the step; the function's outputs come back as
   :class:`ArtifactRef` values, which the next task receives as its inputs.

The run's ``run.json``: a run made of decorated tasks has no spec file of its own, so the call that
opens it writes ``"kind": "tasks"``, ``"spec": null`` and ``"spec_digest": null``; each step's
attestation names the digest of the step's own ``spec.yaml``, which ``scanflow verify`` checks.
:func:`finish_task_run` writes the status and every step found in the run directory, in the order
they started, and fires ``scanflow_workflow_finish``.

Examples:
    >>> def train(data, model, lr=0.1):
    ...     model.write_text(data.read_text().upper())
    ...     return {"loss": lr}
    >>> step = TaskStep(train, outputs={"model": {"kind": "model"}})  # doctest: +SKIP
    >>> result = step.run(run_id="r1", workflow="demo", arguments={"data": Path("d.txt")})  # doctest: +SKIP
    >>> result.outputs["model"].to_dict()["digest"]  # doctest: +SKIP
    'sha256:…'
"""

from __future__ import annotations

import inspect
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scanflow_core.artifacts import ArtifactRef, is_artifact
from scanflow_core.errors import Problem, ScanflowError, SpecError, one_of
from scanflow_core.spec.models import API_VERSION, NAME_PATTERN
from scanflow_core.task_spec import OneStepSpec

if TYPE_CHECKING:
    import pluggy

    from scanflow_core.records import CheckResult
    from scanflow_core.runs import StepRun, WorkflowRun

__all__ = ["ArtifactRef", "TaskResult", "TaskStep", "finish_task_run", "valid_name"]

#: What a run made of decorated tasks has in ``run.json`` instead of a spec.
TASKS_MANIFEST: Mapping[str, Any] = {"kind": "tasks", "spec": None, "spec_digest": None}
#: Statuses :func:`finish_task_run` accepts.
RUN_STATUSES = ("succeeded", "failed", "cancelled")

_NAME = re.compile(NAME_PATTERN)
_RUN_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,199}$")
_NAME_HINT = "a name of letters, digits and '_' that does not start with a digit"


def valid_name(text: str) -> str:
    """``text`` made into a valid Scanflow name (a step or workflow name): other characters become
    ``_``; adapters use it for the host's names (``my-flow`` → ``my_flow``).

    Examples:
        >>> valid_name("train-2")
        'train_2'
        >>> valid_name("2nd pass")
        '_2nd_pass'
    """
    name = re.sub(r"\W", "_", str(text), flags=re.ASCII)[:100] or "_"
    return "_" + name[:99] if name[0].isdigit() else name


@dataclass(frozen=True)
class TaskResult:
    """What one call of a decorated task made.

    Attributes:
        run_id / step: the run and the step's name in it.
        outputs: output name → :class:`ArtifactRef`.
        metrics: the step's latest metrics (the function's returned numbers among them).
        checks: every check result.
        value: what the function returned.
        step_run: the core's record of the step.
    """

    run_id: str
    step: str
    outputs: dict[str, ArtifactRef]
    metrics: dict[str, float]
    checks: list[CheckResult] = field(default_factory=list)
    value: Any = None
    step_run: StepRun | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON: run id, step, outputs in their dict form, metrics."""
        return {
            "run_id": self.run_id,
            "step": self.step,
            "outputs": {n: ref.to_dict() for n, ref in self.outputs.items()},
            "metrics": dict(self.metrics),
        }


# ------------------------------------------------------------------------------------------ the task


class TaskStep:
    """A Python function made into a Scanflow step: validated here, once, with no I/O.

    Args:
        func: the function; its parameters receive the call's arguments by name, each output's
            path to write, and ``ctx`` (the step run) if it asks; a returned mapping of numbers is
            recorded as metrics.
        name: the step's name (default: the function's name).
        stage: one of MLSpec's 13 stages.
        checks: the checks of a spec step (``{"use": "leakage", "on": ["data"], "policy": "fail"}``).
        outputs: output names, or ``{name: {"kind": "model", "path": "model.pt"}}``.
        timeout: seconds (or ``"10m"``) the call may take.

    Raises:
        SpecError: a bad name, stage, output, check or timeout (naming the function and the argument).
        TypeError: ``func`` is not callable, or an argument has the wrong type.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        name: str | None = None,
        stage: str = "training",
        checks: Sequence[Mapping[str, Any]] | Mapping[str, Any] = (),
        outputs: Sequence[str] | Mapping[str, Any] | str = (),
        timeout: float | str | None = None,
    ) -> None:
        if not callable(func):
            raise TypeError(f"a decorated task needs a function, not {type(func).__name__}")
        self.func = func
        qualname = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
        self.label = f"{getattr(func, '__module__', None) or '__main__'}.{qualname}"
        self._where = f"task {self.label}"
        chosen = name if name is not None else getattr(func, "__name__", "")
        self._outputs = _outputs_mapping(outputs, self.label)
        self._checks = _checks_list(checks, self.label)
        try:
            json.dumps(self._checks, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{self._where}: checks must hold JSON values only ({exc})") from None
        self.step_spec = self._validate(chosen, stage, timeout)
        self.name: str = self.step_spec.name
        self.stage: str = self.step_spec.stage
        self.timeout: float | None = self.step_spec.timeout
        self.outputs: tuple[str, ...] = tuple(self.step_spec.outputs)
        try:
            self._signature = inspect.signature(func)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{self._where}: cannot read the function's signature ({exc})") from None
        self._check_against_signature()
        from scanflow_core.callables import register_callable

        self.ref = register_callable(func)
        self._spec = OneStepSpec(self.label, self.ref, self.step_spec, self._outputs, self._checks)

    def __repr__(self) -> str:
        return f"TaskStep({self.label}, name={self.name!r}, stage={self.stage!r}, outputs={self.outputs!r})"

    # -------------------------------------------------------------------- validation (no I/O)

    def _validate(self, name: Any, stage: Any, timeout: Any) -> Any:
        from pydantic import ValidationError

        from scanflow_core.spec.loader import _problems_from_pydantic
        from scanflow_core.spec.models import Step

        raw = {
            "name": name,
            "stage": stage,
            "call": "scanflow_core.tasks:TaskStep",
            "outputs": self._outputs,
            "checks": self._checks,
        }
        if timeout is not None:
            raw["timeout"] = timeout
        try:
            return Step.model_validate(raw)
        except ValidationError as exc:
            raise SpecError(self._where, _problems_from_pydantic(exc, raw)) from None

    @property
    def _accepts_any(self) -> bool:
        return any(p.kind is p.VAR_KEYWORD for p in self._signature.parameters.values())

    @property
    def _parameters(self) -> list[str]:
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return [n for n, p in self._signature.parameters.items() if p.kind in kinds]

    def _check_against_signature(self) -> None:
        params, problems = self._parameters, []
        if not self._accepts_any:
            for output in self.outputs:
                if output not in params:
                    problems.append(
                        Problem(
                            f"outputs.{output}",
                            f"{self.label}() has no parameter {output!r} to receive the path to write",
                            f"a parameter named {output!r}",
                        )
                    )
        known = list(dict.fromkeys([*self.outputs, *params]))
        for i, check in enumerate(self.step_spec.checks):
            for j, target in enumerate(check.on):
                if target not in known and not (self._accepts_any and target not in self.outputs):
                    problems.append(
                        Problem(
                            f"checks[{i}].on[{j}]",
                            f"{target!r} is no output or parameter of {self.label}()",
                            one_of(known, target),
                        )
                    )
        if problems:
            raise SpecError(self._where, problems)

    # -------------------------------------------------------------------- one call

    def run(
        self,
        run_id: str | None,
        workflow: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        home: str | Path | None = None,
        orchestrator: str = "local",
        attempt: int = 1,
        step_name: str | None = None,
        pm: pluggy.PluginManager | None = None,
    ) -> TaskResult:
        """Run one call of the task as step ``step_name`` of run ``run_id``.

        Args:
            run_id: the Scanflow run (the orchestrator's run, made safe); ``None``: a new one.
            workflow: the workflow's name (the MLflow experiment): a valid Scanflow name.
            arguments: the call's arguments by parameter name: an :class:`ArtifactRef`, its dict
                form or a :class:`pathlib.Path` is an input file; anything else a param (JSON).
                Parameters not given keep their defaults.
            home: the Scanflow home (default ``$SCANFLOW_HOME`` or ``./.scanflow``).
            orchestrator: recorded in the run and its attestations (``airflow``, ``prefect``, …).
            attempt: the orchestrator's try number.
            step_name: the step's name in the run (default the task's name); the adapter gives a
                unique one when the task runs more than once in a run (``train_2``).
            pm: the plugin manager (default: a fresh one).

        Returns:
            The :class:`TaskResult`.

        Raises:
            StepFailed: the step failed (the function raised, an output is missing, …);
                :class:`~scanflow_core.errors.CheckFailed` for a failing ``fail`` check. The step's
                record is in the run directory either way.
            TypeError: an argument the function does not take, a missing one, or one that is neither
                a file nor JSON.
            SpecError: a bad ``workflow`` or ``step_name``.
        """
        from scanflow_core.runs import WorkflowRun, new_run_id, scanflow_home
        from scanflow_core.steps import run_step

        run_id = new_run_id() if run_id is None else run_id
        if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
            raise ValueError(
                f"{self._where}: run_id {run_id!r} is not a run id (expected letters, digits, '.', '_' "
                "and '-', at most 200, not starting with '.' or '-')"
            )
        step = self.name if step_name is None else step_name
        for argument, value in (("workflow", workflow), ("step_name", step)):
            if not isinstance(value, str) or not _NAME.match(value) or len(value) > 100:
                hint = f"; valid_name() gives {valid_name(str(value))!r}" if isinstance(value, str) else ""
                raise SpecError.single(
                    self._where, argument, f"{value!r} is not a valid name{hint}", _NAME_HINT
                )
        files, params = self._split(arguments or {})
        run_dir = scanflow_home(home) / "runs" / run_id
        directory = run_dir / "steps" / step
        os.makedirs(directory, exist_ok=True)
        loaded = self._spec.write(directory / "spec.yaml", workflow, step, files, params)
        run = WorkflowRun(loaded, run_id=run_id, home=run_dir.parent.parent, pm=pm, orchestrator=orchestrator)
        _open(run, workflow)
        step_run = run_step(run, step, attempt=attempt)
        outputs = {
            r.name: ArtifactRef(run.run_id, step, r.name, r.path, r.digest, r.kind)
            for r in step_run.output_records
        }
        returned = step_run.execution.value if step_run.execution is not None else None
        metrics = dict(step_run.recorder.latest)
        return TaskResult(run.run_id, step, outputs, metrics, list(step_run.checks), returned, step_run)

    def _split(self, arguments: Mapping[str, Any]) -> tuple[dict[str, ArtifactRef], dict[str, Any]]:
        """The call's arguments as input files and params; argument problems raise TypeError here."""
        if not isinstance(arguments, Mapping):
            raise TypeError(f"{self._where}: arguments must be a mapping, not {type(arguments).__name__}")
        params = self._parameters
        files: dict[str, ArtifactRef] = {}
        values: dict[str, Any] = {}
        for key, value in arguments.items():
            if key in self.outputs:
                raise TypeError(
                    f"{self._where}: {key!r} is an output of the task; Scanflow passes the path to write, "
                    "do not give it as an argument"
                )
            if key == "ctx":
                raise TypeError(f"{self._where}: 'ctx' is the step run Scanflow passes; it is no argument")
            if not isinstance(key, str) or (key not in params and not self._accepts_any):
                raise TypeError(
                    f"{self._where}: {self.label}() takes no argument {key!r} "
                    f"({one_of([p for p in params if p not in self.outputs and p != 'ctx'], str(key))})"
                )
            if is_artifact(value):
                try:
                    files[key] = ArtifactRef.from_value(value)
                except ValueError as exc:
                    raise TypeError(f"{self._where}: argument {key!r}: {exc}") from None
                continue
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise TypeError(
                    f"{self._where}: argument {key!r} is a {type(value).__name__}, which is neither a file "
                    f"(an ArtifactRef or a pathlib.Path) nor a JSON value for a param ({exc})"
                ) from None
            values[key] = value
        missing = [
            n
            for n, p in self._signature.parameters.items()
            if n in params
            and p.default is p.empty
            and n not in arguments
            and n not in self.outputs
            and n != "ctx"
        ]
        if missing:
            raise TypeError(f"{self._where}: {self.label}() is missing the argument(s) {', '.join(missing)}")
        for i, check in enumerate(self.step_spec.checks):
            for target in check.on:
                if target not in self.outputs and target not in files:
                    raise TypeError(
                        f"{self._where}: check checks[{i}] ({check.label}) is on {target!r}, which this call "
                        "gives no file (pass an ArtifactRef or a pathlib.Path)"
                    )
        return files, values


def _outputs_mapping(outputs: Any, label: str) -> dict[str, Any]:
    if isinstance(outputs, str):
        outputs = [outputs]
    if isinstance(outputs, Mapping):
        out = {}
        for key, value in outputs.items():
            if hasattr(value, "model_dump"):  # an ArtifactSpec
                value = value.model_dump(exclude_defaults=True)
            out[key] = {} if value is None else value
        return out
    if isinstance(outputs, Sequence) and all(isinstance(o, str) for o in outputs):
        return {o: {} for o in outputs}
    raise TypeError(
        f"task {label}: outputs must be names or a mapping of name → {{kind:, path:}}, not {outputs!r}"
    )


def _checks_list(checks: Any, label: str) -> list[Any]:
    if isinstance(checks, Mapping):
        checks = [checks]
    if not isinstance(checks, Sequence) or isinstance(checks, str):
        raise TypeError(f"task {label}: checks must be a list of check mappings, not {checks!r}")
    out = []
    for i, check in enumerate(checks):
        if hasattr(check, "model_dump"):  # a CheckSpec
            check = check.model_dump(exclude_defaults=True)
        if not isinstance(check, Mapping):
            raise TypeError(
                f"task {label}: checks[{i}] must be a mapping like {{'use': 'leakage', 'on': ['data']}}, "
                f"not {check!r}"
            )
        out.append(dict(check))
    return out


#: The runs this process has opened or found open: run directory → (workflow, start time). A run's
#: ``run.json`` names its workflow once and for all, so a later call needs only to see it is there.
_open_runs: dict[Path, tuple[str | None, float]] = {}


def _open(run: WorkflowRun, workflow: str) -> None:
    """Open the run as a run of decorated tasks; the call that makes it fires the workflow start."""
    known = _open_runs.get(run.directory)
    if known is None or not run.manifest_path.exists():
        if run.open(manifest=TASKS_MANIFEST):
            run.pm.hook.scanflow_workflow_start(run=run)
        known = _open_runs[run.directory] = (run.manifest().get("workflow"), run.started_at)
    recorded, run.started_at = known
    if recorded is not None and recorded != workflow:
        raise ScanflowError(
            f"run {run.run_id} is a run of workflow {recorded!r}, not {workflow!r}: "
            "every task of a run must name the same workflow"
        )


# ------------------------------------------------------------------------------------------ the end


def finish_task_run(
    run_id: str,
    workflow: str,
    *,
    home: str | Path | None = None,
    status: str | None = None,
    pm: pluggy.PluginManager | None = None,
    orchestrator: str = "local",
) -> str:
    """Close a run made of decorated tasks: write ``run.json`` and fire ``scanflow_workflow_finish``.

    Args:
        run_id: the run.
        workflow: its workflow name (as the tasks gave it).
        home: the Scanflow home.
        status: the run's status; default ``failed`` if a recorded step did not succeed (or was
            skipped), else ``succeeded``.
        pm: the plugin manager (default: a fresh one).
        orchestrator: recorded if no task opened the run.

    Returns:
        The status written.

    Examples:
        >>> finish_task_run("r1", "demo")  # doctest: +SKIP
        'succeeded'
    """
    from scanflow_core.runs import WorkflowRun
    from scanflow_core.spec import load_workflow_text

    if status is not None and status not in RUN_STATUSES:
        raise ValueError(
            f"status {status!r} is not a run status (expected one of: {', '.join(RUN_STATUSES)})"
        )
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise ValueError(f"run_id {run_id!r} is not a run id (expected letters, digits, '.', '_' and '-')")
    if not isinstance(workflow, str) or not _NAME.match(workflow):
        raise SpecError.single(f"run {run_id}", "workflow", f"{workflow!r} is not a valid name", _NAME_HINT)
    # The run has no spec of its own: a stand-in names the workflow (the tracker's experiment).
    stand_in = load_workflow_text(
        f"apiVersion: {API_VERSION}\nname: {workflow}\n"
        "steps: [{name: __tasks__, stage: logging, call: 'scanflow_core.tasks:finish_task_run'}]\n",
        file="<decorated tasks>",
    )
    run = WorkflowRun(stand_in, run_id=run_id, home=home, pm=pm, orchestrator=orchestrator)
    _open(run, workflow)
    if status is None:
        steps = run.step_summaries()
        done = all(s.get("status") in ("succeeded", "skipped") for s in steps.values())
        status = "succeeded" if done else "failed"
    run.finish(status, [])
    run.pm.hook.scanflow_workflow_finish(run=run)
    return status
