"""``@scanflow_task``: a flytekit task with Scanflow's step path around it.

A flytekit plugin in flytekit's own way: :class:`Scanflow` is a ``task_config`` and
:class:`ScanflowFunctionTask` the ``PythonFunctionTask`` flytekit builds for it, so
``@scanflow_task(stage="training")`` and ``@task(task_config=Scanflow(stage="training"))`` are the same
task. Each call is one step of a Scanflow run (:class:`scanflow_core.tasks.TaskStep`): checked,
tracked and attested like a step of a spec.

How typed values cross (the function keeps its signature and its typed return):

* inputs: a ``FlyteFile``, ``FlyteDirectory``, :class:`~scanflow_core.tasks.ArtifactRef` or
  ``pathlib.Path`` is an input file of the step (digested, attested, checkable by name); any other
  JSON value is a param (recorded); other values reach the function unrecorded. The function gets
  each value as flytekit gives it.
* outputs: each ``FlyteFile`` / ``FlyteDirectory`` output is an output of the step under its Flyte
  name (``o0``, or the ``NamedTuple`` field): the file the function returns is copied into the run
  directory (no copy when it wrote it at :func:`output_path`), digested and attested, and the task
  returns a ``FlyteFile`` of that copy.
* metrics: every number in the typed return, under its Flyte output name (``o0`` or the field), the
  numbers of a returned ``dict``, and what the function logs with ``scanflow_core.log_metric``.

The run: the Flyte execution id names it (every task of one execution shares it). A local
execution of a plain function or a plain ``@workflow`` has no id of its own, so there each call is a
run of its own, closed as the call ends; under :func:`~scanflow_flyte.scanflow_workflow` the tasks
of one execution share a run, which its last node closes. The same task twice in one run gives
steps ``train``, ``train_2``, …
"""

from __future__ import annotations

import contextvars
import json
import os
import shutil
import threading
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from flytekit import task as flyte_task
from flytekit.core.python_function_task import PythonFunctionTask
from flytekit.core.task import TaskPlugins
from flytekit.types.directory import FlyteDirectory
from flytekit.types.file import FlyteFile

from scanflow_flyte.errors import from_core
from scanflow_flyte.runs import (
    ORCHESTRATOR,
    attempt_number,
    execution_run_id,
    is_local_execution,
    plugin_manager,
)

__all__ = ["Scanflow", "ScanflowFunctionTask", "output_path", "scanflow_task"]


@dataclass(frozen=True)
class Scanflow:
    """The ``task_config`` of a Scanflow task (``@task(task_config=Scanflow(...))``).

    Attributes:
        stage: one of MLSpec's 13 stages.
        checks: check mappings as in a spec (``{"use": "leakage", "on": ["data"], "policy": "fail"}``);
            ``on`` names inputs or outputs (Flyte output names).
        outputs: a ``{kind:, path:}`` for file outputs, by Flyte output name (``{"model": {"kind":
            "model", "path": "model.pt"}}``); a file output not listed is ``data`` at its name.
        workflow: the Scanflow workflow (the MLflow experiment); default: the run's when it is
            already open, else the last part of the function's module.
    """

    stage: str = "training"
    checks: Sequence[Mapping[str, Any]] = ()
    outputs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    workflow: str | None = None


@dataclass
class _Call:
    """One call in flight: the native inputs, the output paths the core gave, what came back."""

    inputs: dict[str, Any]
    paths: dict[str, Path] = field(default_factory=dict)
    returned: Any = None


_call: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("scanflow_flyte_call", default=None)
#: Run manifest → its workflow name, once known (it never changes).
_run_workflows: dict[str, str] = {}
#: (steps folder, step name) → the number of the last call this process claimed (1: the bare name).
_claimed: dict[tuple[str, str], int] = {}
_claim_lock = threading.Lock()


def output_path(name: str = "o0") -> Path:
    """Where the running Scanflow task should write its file output ``name`` (saves a copy).

    Raises:
        LookupError: not inside a Scanflow task, or the task has no file output ``name``.

    Examples:
        >>> @scanflow_task(stage="training")  # doctest: +SKIP
        ... def train(data: FlyteFile) -> FlyteFile:
        ...     path = output_path()  # the run directory's steps/train/outputs/o0
        ...     path.write_text("weights")
        ...     return FlyteFile(str(path))
    """
    call = _call.get()
    if call is None:
        raise LookupError("output_path() is for the body of a running @scanflow_task")
    if name not in call.paths:
        raise LookupError(
            f"the task has no file output {name!r} (file outputs: {', '.join(call.paths) or 'none'})"
        )
    return call.paths[name]


def _is_file_type(python_type: Any) -> bool:
    origin = typing.get_origin(python_type) or python_type
    return isinstance(origin, type) and issubclass(origin, FlyteFile | FlyteDirectory)


def _is_file_value(value: Any) -> bool:
    """A file for the step: a FlyteFile/FlyteDirectory, an ArtifactRef or its dict form, a path."""
    from scanflow_core.tasks import ArtifactRef

    return isinstance(value, FlyteFile | FlyteDirectory | ArtifactRef | PurePath) or (
        isinstance(value, Mapping) and "scanflow_artifact" in value
    )


class ScanflowFunctionTask(PythonFunctionTask[Scanflow]):  # type: ignore[misc]
    """The flytekit task of a function decorated with :func:`scanflow_task`.

    Raises (at decoration, no I/O): ``SpecError`` for a bad stage, check or output; ``TypeError``
    for a bad argument. Calls raise :class:`~scanflow_flyte.errors.ScanflowStepFailed` or
    :class:`~scanflow_flyte.errors.ScanflowCheckFailed` (naming the check).
    """

    def __init__(self, task_config: Scanflow, task_function: Callable[..., Any], **kwargs: Any) -> None:
        from scanflow_core.tasks import TaskStep, valid_name

        if not isinstance(task_config, Scanflow):
            raise TypeError(f"task_config must be a Scanflow(...), not {type(task_config).__name__}")
        super().__init__(task_config=task_config, task_function=task_function, **kwargs)
        outputs = self.python_interface.outputs
        self.file_outputs = [name for name, t in outputs.items() if _is_file_type(t)]
        unknown = sorted(set(task_config.outputs) - set(self.file_outputs))
        if unknown:
            raise TypeError(
                f"task {self.name}: outputs {unknown} are no FlyteFile/FlyteDirectory output of the function "
                f"(its file outputs: {', '.join(self.file_outputs) or 'none'})"
            )
        specs = {n: dict(task_config.outputs.get(n, {})) for n in self.file_outputs}
        inputs = list(self.python_interface.inputs)
        self._step = TaskStep(
            _step_function(task_function, inputs, list(outputs), self.file_outputs),
            name=valid_name(str(getattr(task_function, "__name__", None) or self.name)),
            stage=task_config.stage,
            checks=list(task_config.checks),
            outputs=specs,
        )
        self._defaults = {
            n: d for n, (_, d) in self.python_interface.inputs_with_defaults.items() if d is not None
        }
        module = str(getattr(task_function, "__module__", None) or "tasks")
        self.default_workflow = task_config.workflow or valid_name(module.rpartition(".")[2])

    @property
    def step(self) -> Any:
        """The core's :class:`~scanflow_core.tasks.TaskStep` of this task."""
        return self._step

    def execute(self, **kwargs: Any) -> Any:
        from scanflow_core.errors import CheckFailed, StepFailed
        from scanflow_core.tasks import finish_task_run

        run_id = execution_run_id()
        own_run = run_id is None  # a local call outside a Scanflow workflow: a run of its own
        if own_run:
            from scanflow_core.runs import new_run_id

            run_id = new_run_id()
        assert run_id is not None
        workflow = self._workflow(run_id)
        local = is_local_execution()
        attempt = 1 if local else attempt_number()
        retries = (self.metadata.retries or 0) if local else 0
        step_name = self._claim_step_name(run_id, attempt)
        given = {**self._defaults, **kwargs}  # flytekit leaves out inputs the call did not give
        arguments = {k: _argument(v) for k, v in given.items() if _recordable(v)}
        call = _Call(dict(kwargs))
        token = _call.set(call)
        try:
            while True:
                try:
                    result = self._step.run(
                        run_id,
                        workflow,
                        arguments,
                        home=None,
                        orchestrator=ORCHESTRATOR,
                        attempt=attempt,
                        step_name=step_name,
                        pm=plugin_manager(),
                    )
                    break
                except CheckFailed as exc:
                    raise from_core(exc) from exc
                except StepFailed as exc:
                    if attempt > retries:
                        raise from_core(exc) from exc
                    time.sleep(min(0.1 * 2**attempt, 5.0))
                    attempt += 1
        finally:
            _call.reset(token)
            if own_run:
                finish_task_run(run_id, workflow, pm=plugin_manager(), orchestrator=ORCHESTRATOR)
        return self._flyte_outputs(call.returned, {n: Path(ref.path) for n, ref in result.outputs.items()})

    def _workflow(self, run_id: str) -> str:
        """The run's workflow name when it is open (the first task named it), else this task's."""
        if self.task_config.workflow is not None:
            return str(self.task_config.workflow)
        from scanflow_core.runs import scanflow_home

        manifest = scanflow_home() / "runs" / run_id / "run.json"
        known = _run_workflows.get(str(manifest))
        if known is not None:
            return known
        try:
            recorded = json.loads(manifest.read_text(encoding="utf-8")).get("workflow")
        except (OSError, ValueError):
            return self.default_workflow
        if recorded:
            _run_workflows[str(manifest)] = str(recorded)
        return str(recorded or self.default_workflow)

    def _claim_step_name(self, run_id: str, attempt: int) -> str:
        """The step's name in the run: the task's, or ``<name>_2``, … when another call took it.

        The first attempt claims a name by making its folder (atomic, across processes); a retry
        (``attempt > 1``) takes the last name claimed.
        """
        from scanflow_core.runs import scanflow_home

        return claim_step_name(scanflow_home() / "runs" / run_id / "steps", self._step.name, attempt)

    def _flyte_outputs(self, returned: Any, files: Mapping[str, Path]) -> Any:
        """The function's return, with each file output pointing at its copy in the run directory."""
        names = list(self.python_interface.outputs)
        if not names or not files:
            return returned
        values = _values_by_name(returned, names)
        for name, path in files.items():
            kind = self.python_interface.outputs[name]
            origin = typing.get_origin(kind) or kind
            values[name] = origin(path=str(path))
        if len(names) == 1 and not isinstance(returned, tuple):
            return values[names[0]]
        return type(returned)(*(values[n] for n in names))


def claim_step_name(steps: Path, base: str, attempt: int = 1) -> str:
    """A step name of its own for one call: ``base``, else ``base_2``, ``base_3``, … (the first free).

    A first attempt claims the name by making its folder under ``steps`` (atomic, across processes);
    a retry (``attempt > 1``) takes the last name claimed.
    """
    steps.mkdir(parents=True, exist_ok=True)
    key = (str(steps), base)

    def name(n: int) -> str:
        return base if n == 1 else f"{base}_{n}"

    with _claim_lock:
        if attempt > 1:
            last = _claimed.get(key) or max(
                (
                    int(p.name[len(base) + 1 :])
                    for p in steps.glob(f"{base}_*")
                    if p.name[len(base) + 1 :].isdigit()
                ),
                default=1,
            )
            return name(last)
        n = _claimed.get(key, 0) + 1
        while True:
            try:
                (steps / name(n)).mkdir()
                break
            except FileExistsError:
                n += 1
        _claimed[key] = n
        return name(n)


def _recordable(value: Any) -> bool:
    """A file, or a JSON value (a param): what the step records. Other values only reach the function."""
    if _is_file_value(value):
        return True
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def _argument(value: Any) -> Any:
    """A task input as the core takes it: a file as a :class:`~pathlib.Path`, a param as it is."""
    if isinstance(value, FlyteFile | FlyteDirectory):
        return Path(value.download())
    return value


def _values_by_name(returned: Any, names: list[str]) -> dict[str, Any]:
    if len(names) == 1:
        single = returned[0] if isinstance(returned, tuple) and len(returned) == 1 else returned
        return {names[0]: single}
    if not isinstance(returned, tuple) or len(returned) != len(names):
        raise TypeError(
            f"expected {len(names)} outputs ({', '.join(names)}), the function returned {returned!r}"
        )
    return dict(zip(names, returned, strict=True))


def _step_function(func: Callable[..., Any], inputs: list[str], outputs: list[str], files: list[str]) -> Any:
    """What the core's step calls: the user's function with its native inputs, its return kept for
    flytekit, its file outputs copied to the paths the core gives, its numbers returned as metrics."""
    import functools
    import inspect

    @functools.wraps(func)
    def call(**kwargs: Any) -> dict[str, float]:
        state = _call.get()
        if state is None:
            raise RuntimeError(f"{func.__qualname__} is a Scanflow task: call the task, not this function")
        state.paths = {n: kwargs[n] for n in files}
        state.returned = func(**state.inputs)
        return _collect(state.returned, outputs, state.paths)

    kind = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter(n, kind, default=None) for n in inputs if n not in files]
    params += [inspect.Parameter(n, kind) for n in files]
    call.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return call


def _collect(returned: Any, outputs: list[str], paths: Mapping[str, Path]) -> dict[str, float]:
    """Copy the returned files to their paths; return the numbers of the return as metrics."""
    from scanflow_core.callables import numeric_metrics

    if not outputs:
        return {}
    metrics: dict[str, float] = {}
    for name, value in _values_by_name(returned, outputs).items():
        if name in paths:
            _place(value, paths[name], name)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            metrics[name] = float(value)
        elif isinstance(value, Mapping):
            metrics.update(numeric_metrics(value))
    return metrics


def _place(value: Any, destination: Path, name: str) -> None:
    """Put the file (or folder) the function returned as output ``name`` at ``destination``."""
    if isinstance(value, FlyteFile | FlyteDirectory):
        source = Path(value.download())
    elif isinstance(value, str | os.PathLike):
        source = Path(os.fspath(value))
    else:
        raise TypeError(
            f"output {name!r} must be a FlyteFile, FlyteDirectory or path, not {type(value).__name__}"
        )
    if not source.exists():
        raise FileNotFoundError(f"output {name!r}: the function returned {source}, which does not exist")
    if source.absolute() == destination.absolute():
        return
    if source.is_dir():
        shutil.copytree(source, destination, dirs_exist_ok=True)
    else:
        shutil.copyfile(source, destination)


def scanflow_task(
    _task_function: Callable[..., Any] | None = None,
    *,
    stage: str = "training",
    checks: Sequence[Mapping[str, Any]] = (),
    outputs: Mapping[str, Mapping[str, Any]] | None = None,
    workflow: str | None = None,
    **task_kwargs: Any,
) -> Any:
    """A flytekit task with Scanflow around it: ``@task`` plus a stage, checks and output kinds.

    Args:
        stage: one of MLSpec's 13 stages.
        checks: check mappings as in a spec; ``on`` names inputs or Flyte outputs.
        outputs: ``{kind:, path:}`` by Flyte output name, for ``FlyteFile``/``FlyteDirectory`` outputs.
        workflow: the Scanflow workflow name (the MLflow experiment); see :class:`Scanflow`.
        **task_kwargs: passed to :func:`flytekit.task` (``retries``, ``cache``, ``requests``, …);
            ``retries`` also apply locally (Scanflow retries the call), ``timeout`` only on a cluster.

    Returns:
        A :class:`ScanflowFunctionTask`.

    Examples:
        >>> @scanflow_task(stage="training", retries=2)  # doctest: +SKIP
        ... def train(data: FlyteFile, lr: float = 0.1) -> FlyteFile: ...
    """
    if "task_config" in task_kwargs:
        raise TypeError("scanflow_task() makes its own task_config; give stage, checks, outputs and workflow")
    config = Scanflow(stage=stage, checks=tuple(checks), outputs=dict(outputs or {}), workflow=workflow)
    decorator = flyte_task(task_config=config, **task_kwargs)
    return decorator(_task_function) if _task_function is not None else decorator


TaskPlugins.register_pythontask_plugin(Scanflow, ScanflowFunctionTask)
