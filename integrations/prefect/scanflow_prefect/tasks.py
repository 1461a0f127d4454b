"""``@scanflow_task``: a Prefect task with Scanflow's step path around a Python function.

Each task run is one step of the flow run's Scanflow run (the core's
:meth:`~scanflow_core.tasks.TaskStep.run`): its checks run, it is tracked (a child MLflow run of the
flow run's parent run) and attested. The run's workflow is the flow's name, its id the flow run's
(``scanflow_run_id`` when the flow has that parameter); a task run's step is named after the task,
``train_2``, ``train_3``, … when the task runs again in the same flow run.

The Scanflow run is closed when the flow run ends: the first Scanflow task run of a flow adds
:func:`finish_scanflow_run` to the flow's completion, failure, crash and cancellation hooks (list it
there yourself when the tasks run in other processes than the flow). A task run outside any flow is
a run of its own, closed when the task run ends.
"""

from __future__ import annotations

import functools
import inspect
import threading
import types
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from prefect import State, Task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext, TaskRunContext

from scanflow_core.tasks import ArtifactRef, TaskStep, finish_task_run, valid_name
from scanflow_prefect.errors import ScanflowStepFailed

__all__ = ["RUN_ID_PARAMETER", "TaskOutputs", "finish_scanflow_run", "scanflow_task"]

#: A flow of Scanflow tasks may name its Scanflow run with a parameter of this name.
RUN_ID_PARAMETER = "scanflow_run_id"
_FINISH_HOOKS = ("on_completion_hooks", "on_failure_hooks", "on_crashed_hooks", "on_cancellation_hooks")

#: The Scanflow runs that Scanflow task runs opened in this process, by flow run id:
#: {(home, run id): workflow}. The flow's finish hook closes them.
_runs: dict[uuid.UUID, dict[tuple[str | None, str], str]] = {}
_runs_lock = threading.Lock()


class TaskOutputs(dict[str, ArtifactRef]):
    """What a Scanflow task returns: its outputs by name, each an
    :class:`~scanflow_core.tasks.ArtifactRef` (a path to the file, with its run, step and digest).

    Pass one to the next task (``fit(table=made["table"])``); a task with a single output can be
    passed whole (``fit(table=made)``). References travel between tasks, never the data.

    Attributes:
        run_id: the Scanflow run.
        step: the step's name in the run (``train``, ``train_2``, …).
        metrics: the step's latest metrics (the numbers the function returned among them).
    """

    def __init__(
        self,
        outputs: Mapping[str, ArtifactRef] = (),  # type: ignore[assignment]
        *,
        run_id: str = "",
        step: str = "",
        metrics: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(outputs)
        self.run_id = run_id
        self.step = step
        self.metrics: dict[str, float] = dict(metrics or {})

    def __repr__(self) -> str:
        return f"TaskOutputs({dict.__repr__(self)}, run_id={self.run_id!r}, step={self.step!r})"


def scanflow_task(
    __fn: Callable[..., Any] | None = None,
    *,
    stage: str = "training",
    checks: Sequence[Mapping[str, Any]] | Mapping[str, Any] = (),
    outputs: Sequence[str] | Mapping[str, Any] | str = (),
    timeout: float | str | None = None,
    home: str | Path | None = None,
    **task_kwargs: Any,
) -> Any:
    """Make a Python function a Prefect task that runs as a Scanflow step.

    Args:
        stage: the step's MLSpec stage (``data_ingestion``, ``training``, ``evaluation``, …).
        checks: the checks of a spec step: ``[{"use": "row_limits", "on": ["table"], "min": 10}]``.
        outputs: the files the function writes: names, or ``{name: {"kind": "model", "path": "m.pt"}}``.
            Each is a parameter of the function that receives the path to write; callers do not pass it.
        timeout: seconds (or ``"10m"``) a call may take, as a step's ``timeout``.
        home: where runs live; default ``$SCANFLOW_HOME`` or ``./.scanflow`` where the task runs.
        **task_kwargs: Prefect's task options (``name``, ``retries``, ``retry_delay_seconds``,
            ``tags``, ``timeout_seconds``, ``log_prints``, ``task_run_name``, …). ``cache_policy``
            defaults to no caching (a cached call would not be a step of the run); a failing
            ``fail`` check is not retried unless ``retry_condition_fn`` says otherwise. ``name``
            also names the step.

    Returns:
        A :class:`prefect.Task`. Called (or submitted) in a flow, it takes the function's
        parameters except the outputs: an :class:`~scanflow_core.tasks.ArtifactRef`, a
        :class:`pathlib.Path` (or a :class:`TaskOutputs` of one output) is an input file, anything
        else a param (JSON). It returns a :class:`TaskOutputs`. A failing step, or a failing
        ``fail`` check, fails the task run with :class:`ScanflowStepFailed`; check results are
        published as a markdown artifact of the task run.

    Raises:
        SpecError: a bad stage, output, check or timeout, naming the function and the argument.
        TypeError: a bad argument type, or ``fn`` given among the task options.

    Examples:
        >>> @scanflow_task(stage="data_ingestion", outputs=["table"], retries=2)  # doctest: +SKIP
        ... def ingest(table: Path, rows: int = 100) -> dict[str, float]:
        ...     table.write_text("x\\n" * rows)
        ...     return {"rows": rows}
    """

    def decorate(fn: Callable[..., Any]) -> Task[..., TaskOutputs]:
        return _make_task(fn, stage, checks, outputs, timeout, home, dict(task_kwargs))

    if __fn is None:
        return decorate
    return decorate(__fn)


def _make_task(
    fn: Callable[..., Any],
    stage: str,
    checks: Any,
    outputs: Any,
    timeout: Any,
    home: str | Path | None,
    options: dict[str, Any],
) -> Task[..., TaskOutputs]:
    if "fn" in options:
        raise TypeError("scanflow_task: the function is the decorated one; do not pass fn=")
    if home is not None and not isinstance(home, str | Path):
        raise TypeError(f"scanflow_task: home must be a path, not {type(home).__name__}")
    name = options.get("name")
    step = TaskStep(
        fn,
        name=valid_name(name) if name else None,
        stage=stage,
        checks=checks,
        outputs=outputs,
        timeout=timeout,
    )
    signature = inspect.signature(fn)
    public = signature.replace(
        parameters=[p for n, p in signature.parameters.items() if n not in step.outputs and n != "ctx"]
    )
    var_keyword = next((p.name for p in public.parameters.values() if p.kind is p.VAR_KEYWORD), None)
    where = str(home) if home is not None else None

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> TaskOutputs:
        arguments = dict(public.bind(*args, **kwargs).arguments)
        if var_keyword is not None:
            arguments.update(arguments.pop(var_keyword, {}))
        return _run(step, arguments, where)

    call.__signature__ = public  # type: ignore[attr-defined]
    options.setdefault("cache_policy", NO_CACHE)
    options.setdefault("retry_condition_fn", _retry_unless_check_failed)
    prefect_task: Task[..., TaskOutputs] = Task(fn=call, **options)
    prefect_task.scanflow_step = step  # type: ignore[attr-defined]
    return prefect_task


def _retry_unless_check_failed(task: Any, task_run: Any, state: State[Any]) -> bool:
    """Retry a failed step, unless a ``fail`` check stopped it or the call itself is wrong (an
    argument the function does not take, a bad name): the same call fails the same way again."""
    from scanflow_core.errors import SpecError

    error = state.data
    if isinstance(error, ScanflowStepFailed):
        return not error.check_failed
    return not isinstance(error, TypeError | SpecError)


def _run(step: TaskStep, arguments: dict[str, Any], home: str | None) -> TaskOutputs:
    """One task run: find the Scanflow run and the step's name, run it, publish its checks."""
    from scanflow_core.errors import CheckFailed, StepFailed
    from scanflow_core.runs import scanflow_home
    from scanflow_prefect.artifacts import publish_checks
    from scanflow_prefect.runs import claim_step_name, flow_run_scanflow_id, plugin_manager

    task_context = TaskRunContext.get()
    if task_context is None:
        raise RuntimeError(f"{step.label} is a Prefect task: call it in a flow or as a task run")
    task_run = task_context.task_run
    flow_run, flow_name = _flow_run(task_run)
    if flow_run is not None:
        explicit = (getattr(flow_run, "parameters", None) or {}).get(RUN_ID_PARAMETER)
        run_id = flow_run_scanflow_id(flow_run, explicit, RUN_ID_PARAMETER)
        workflow = valid_name(flow_name or step.name)
        _remember(flow_run.id, home, run_id, workflow)
    else:  # a task run of its own: a run of its own
        run_id, workflow = flow_run_scanflow_id(task_run), step.name
    for key, value in list(arguments.items()):
        arguments[key] = _one_output(step, key, value)
    run_dir = scanflow_home(home) / "runs" / run_id
    step_name = claim_step_name(run_dir, step.name, str(task_run.id))
    pm = plugin_manager()
    try:
        result = step.run(
            run_id,
            workflow,
            arguments,
            home=home,
            orchestrator="prefect",
            attempt=max(1, task_run.run_count),
            step_name=step_name,
            pm=pm,
        )
    except StepFailed as exc:
        report = list(exc.report) if isinstance(exc, CheckFailed) else []
        publish_checks(run_id, workflow, step_name, run_dir, report)
        raise ScanflowStepFailed(
            exc.step, exc.run_id, exc.reason, exc.logs, report, isinstance(exc, CheckFailed)
        ) from exc
    finally:
        if flow_run is None:
            finish_task_run(run_id, workflow, home=home, pm=pm, orchestrator="prefect")
    publish_checks(run_id, workflow, step_name, run_dir, result.checks)
    return TaskOutputs(result.outputs, run_id=result.run_id, step=result.step, metrics=result.metrics)


def _one_output(step: TaskStep, key: str, value: Any) -> Any:
    """A :class:`TaskOutputs` passed whole stands for its only output."""
    if not isinstance(value, TaskOutputs):
        return value
    if len(value) == 1:
        return next(iter(value.values()))
    raise TypeError(
        f"task {step.label}: argument {key!r} is the outputs of step {value.step!r} "
        f"({', '.join(value) or 'none'}); pass one of them, e.g. {key}=outputs[{next(iter(value), 'name')!r}]"
    )


def _flow_run(task_run: Any) -> tuple[Any, str | None]:
    """The flow run a task run belongs to and the flow's name (``None`` for a task run of its own).

    From the flow run's context in this process, else (a task run in another process) from the API.
    """
    context = FlowRunContext.get()
    if context is not None and context.flow_run is not None:
        _add_finish_hooks(context.flow)
        return context.flow_run, context.flow.name if context.flow is not None else None
    if getattr(task_run, "flow_run_id", None) is None:
        return None, None
    from prefect.runtime import flow_run as runtime

    found = types.SimpleNamespace(
        id=uuid.UUID(str(runtime.get_id())), name=runtime.get_name(), parameters=runtime.get_parameters()
    )
    return found, runtime.get_flow_name()


def _remember(flow_run_id: uuid.UUID, home: str | None, run_id: str, workflow: str) -> None:
    with _runs_lock:
        _runs.setdefault(flow_run_id, {})[(home, run_id)] = workflow


_hooks_lock = threading.Lock()


def _add_finish_hooks(flow: Any) -> None:
    """Put :func:`finish_scanflow_run` among the flow's end hooks (a new list: the user's stays as it is)."""
    if flow is None:
        return
    with _hooks_lock:
        for attribute in _FINISH_HOOKS:
            hooks = list(getattr(flow, attribute, None) or [])
            if finish_scanflow_run not in hooks:
                setattr(flow, attribute, [*hooks, finish_scanflow_run])


def finish_scanflow_run(flow: Any, flow_run: Any, state: State[Any]) -> None:
    """A flow hook that closes the Scanflow run(s) of the flow run's Scanflow tasks.

    The first Scanflow task run of a flow adds it to the flow's ``on_completion``, ``on_failure``,
    ``on_crashed`` and ``on_cancellation`` hooks; list it there yourself when the tasks run in
    other processes::

        @flow(on_completion=[finish_scanflow_run], on_failure=[finish_scanflow_run])
        def pipeline(): ...

    A completed flow run leaves the status to the steps (``failed`` if one failed); a failed or
    crashed one makes it ``failed``, a cancelled one ``cancelled``.
    """
    from scanflow_core.runs import scanflow_home
    from scanflow_prefect.runs import flow_run_scanflow_id, plugin_manager

    with _runs_lock:
        opened = _runs.pop(flow_run.id, {})
    if not opened:  # the tasks ran elsewhere: the run under the default home, if it is still open
        explicit = (getattr(flow_run, "parameters", None) or {}).get(RUN_ID_PARAMETER)
        run_id = flow_run_scanflow_id(flow_run, explicit, RUN_ID_PARAMETER)
        manifest = scanflow_home() / "runs" / run_id / "run.json"
        if manifest.is_file() and '"status": "running"' in manifest.read_text(encoding="utf-8"):
            opened = {(None, run_id): valid_name(flow.name)}
    if state.is_completed():
        status = None
    elif state.is_cancelled() or state.is_cancelling():
        status = "cancelled"
    else:
        status = "failed"
    for (home, run_id), workflow in opened.items():
        finish_task_run(
            run_id, workflow, home=home, status=status, pm=plugin_manager(), orchestrator="prefect"
        )
