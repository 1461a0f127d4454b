"""Python functions as Scanflow steps in a TaskFlow DAG: ``@scanflow_task`` and ``scanflow_finish()``.

``@scanflow_task(...)`` makes a function an Airflow TaskFlow task (:func:`airflow.sdk.task`
underneath, so ``retries``, pools, ``.override()`` and ``.expand()`` work as usual) whose body is one
call of the core's :meth:`scanflow_core.tasks.TaskStep.run`: the same step path as a spec's steps
(checks, tracking, attestation). Every task of one DAG run is a step of one Scanflow run, whose id
comes from the Airflow run (:func:`scanflow_airflow.operators.scanflow_run_id`); the workflow is the
DAG (its id made a valid name), the step the task (its id, plus the map index of a mapped task).

Artifacts travel between tasks as references through XCom, never as data: a task pushes each output
as the dict form of an :class:`~scanflow_core.artifacts.ArtifactRef` (run, step, name, absolute path,
digest, ``file://`` URI) under the output's name, all of them together as ``return_value``, and the
run id under ``scanflow_run_id``; the task downstream receives the reference and the core hands its
function the file's path. The files stay in the run directory under the Scanflow home, which every
worker must see (a shared volume).

A DAG of decorated tasks ends its Scanflow run with :func:`scanflow_finish`, called last::

    with DAG("demo", schedule=None):
        data = ingest()
        model = train(data=data["table"], lr=0.1)
        scanflow_finish()  # after every task above, whatever their outcome
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from airflow.sdk import TriggerRule, get_current_context, task

from scanflow_airflow.operators import ScanflowRunFailed, ScanflowStepFailed, scanflow_run_id

if TYPE_CHECKING:
    import pluggy
    from airflow.sdk import Context
    from airflow.sdk.definitions.xcom_arg import PlainXComArg

    from scanflow_core.records import CheckResult
    from scanflow_core.tasks import TaskStep

__all__ = ["FINISH_TASK_ID", "scanflow_finish", "scanflow_task"]

#: The default task id of :func:`scanflow_finish`.
FINISH_TASK_ID = "scanflow_finish"
#: The XCom key of the Scanflow run id (as :class:`~scanflow_airflow.ScanflowOperator` pushes it).
RUN_ID_KEY = "scanflow_run_id"
#: XCom keys an output may not take: Airflow's and Scanflow's own.
_RESERVED = frozenset({"return_value", RUN_ID_KEY})
#: Airflow task states after which the Scanflow run has failed.
_FAILED_STATES = frozenset({"failed", "upstream_failed"})

log = logging.getLogger(__name__)


def scanflow_task(
    func: Callable[..., Any] | None = None,
    *,
    stage: str = "training",
    checks: Sequence[Mapping[str, Any]] | Mapping[str, Any] = (),
    outputs: Sequence[str] | Mapping[str, Any] | str = (),
    timeout: float | str | None = None,
    home: str | Path | None = None,
    **task_kwargs: Any,
) -> Any:
    """Make a Python function a TaskFlow task that runs as one Scanflow step.

    Args:
        func: the function (when used as ``@scanflow_task`` without parentheses). It receives its
            params by name, each input as a read-only :class:`~pathlib.Path`, each output as the
            :class:`~pathlib.Path` to write, and ``ctx`` (the step run) if it asks; a returned
            mapping of numbers is recorded as the step's metrics.
        stage: one of MLSpec's 13 stages.
        checks: the checks of a spec step, e.g. ``[{"use": "leakage", "on": ["test"],
            "against": ["train"], "policy": "fail"}]``; a failing ``fail`` check fails the task.
        outputs: output names, or ``{name: {"kind": "model", "path": "model.pt"}}``.
        timeout: seconds (or ``"10m"``) one call may take.
        home: where runs live; default ``$SCANFLOW_HOME`` or ``./.scanflow`` where the task runs.
            :func:`scanflow_finish` must be given the same.
        **task_kwargs: passed to :func:`airflow.sdk.task` (``task_id``, ``retries``, ``pool``, …).
            ``multiple_outputs`` defaults to whether the task has outputs, so that ``result["model"]``
            is the reference to output ``model``.

    Returns:
        The TaskFlow decorator's result: call it in a DAG to add a task. An argument is an input file
        when it is an upstream output (``result["table"]``), an :class:`~scanflow_core.artifacts.ArtifactRef`
        or a :class:`~pathlib.Path`, else a param (a JSON value). The task returns (and pushes) its
        outputs as ``{name: ArtifactRef.to_dict()}``.

    Raises:
        SpecError: a bad stage, output, check or timeout (at DAG-parse time, naming the function).
        TypeError: a bad argument type, or an output named ``return_value`` or ``scanflow_run_id``.

    At run time a failed step raises :class:`~scanflow_airflow.ScanflowStepFailed` (so ``retries``
    are honoured; each try is recorded as the step's attempt), with the check report logged.

    Examples:
        >>> @scanflow_task(stage="training", outputs=["model"], retries=1)  # doctest: +SKIP
        ... def train(table, model, lr=0.1):
        ...     model.write_text(table.read_text())
        ...     return {"loss": lr}
    """
    from scanflow_core.tasks import TaskStep

    if home is not None and not isinstance(home, str | Path):
        raise TypeError(f"@scanflow_task: home must be a path, not {type(home).__name__}")

    def decorate(function: Callable[..., Any]) -> Any:
        step = TaskStep(function, stage=stage, checks=checks, outputs=outputs, timeout=timeout)
        reserved = sorted(_RESERVED.intersection(step.outputs))
        if reserved:
            raise TypeError(f"task {step.label}: an output may not be named {reserved[0]!r} (an XCom key)")
        options = dict(task_kwargs)
        options.setdefault("multiple_outputs", bool(step.outputs))
        return task(_airflow_callable(step, home), **options)

    return decorate(func) if func is not None else decorate


def scanflow_finish(
    *, task_id: str = FINISH_TASK_ID, home: str | Path | None = None, **task_kwargs: Any
) -> PlainXComArg:
    """Add the task that closes the DAG run's Scanflow run: call it in the DAG after every other task.

    It runs after each task already in the DAG (trigger rule ``all_done``), writes ``run.json`` with
    every step the run recorded (:func:`scanflow_core.tasks.finish_task_run`) and fires the workflow's
    finish hook (the MLflow tracker closes the parent run). The run has failed when a task of the DAG
    failed (or never ran because one did) or a step's record says so; the task then raises
    :class:`~scanflow_airflow.ScanflowRunFailed`, so the DAG run fails with it.

    Args:
        task_id: the task's id.
        home: where runs live, as given to the tasks.
        **task_kwargs: passed to :func:`airflow.sdk.task`.

    Returns:
        The task's XCom, the run's status: ``succeeded`` (when the run failed, the task fails).

    Examples:
        >>> with DAG("demo", schedule=None):  # doctest: +SKIP
        ...     model = train(data=ingest()["table"])
        ...     scanflow_finish()
    """
    task_kwargs.setdefault("trigger_rule", TriggerRule.ALL_DONE)

    def finish() -> str:
        return _finish(get_current_context(), home)

    finish.__name__ = finish.__qualname__ = task_id
    result = cast("PlainXComArg", task(task_id=task_id, **task_kwargs)(finish)())
    closer = result.operator
    dag = closer.dag if closer.has_dag() else None
    if dag is None:
        raise RuntimeError("scanflow_finish() adds a task to a DAG: call it inside `with DAG(...)`")
    for other in dag.tasks:
        if other is not closer:
            other >> closer
    return result


# ------------------------------------------------------------------------------------------ run time


def _airflow_callable(step: TaskStep, home: str | Path | None) -> Callable[..., Any]:
    """The function Airflow calls: the user's signature without outputs and ``ctx``; its body one call
    of :meth:`TaskStep.run` in the task's context."""
    signature = inspect.signature(step.func)
    given = [p for name, p in signature.parameters.items() if name not in step.outputs and name != "ctx"]
    accepted = signature.replace(parameters=given, return_annotation=inspect.Signature.empty)

    @functools.wraps(step.func)
    def call(*args: Any, **kwargs: Any) -> dict[str, Any]:
        context = get_current_context()
        return _run(step, _arguments(step, accepted, args, kwargs), context, home)

    # Airflow binds a call's arguments to this signature (inspect stops here, before ``__wrapped__``).
    call.__signature__ = accepted  # type: ignore[attr-defined]
    call.__annotations__ = {}
    return call


def _arguments(
    step: TaskStep, signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """The call's arguments by parameter name, upstream outputs resolved to their references."""
    from scanflow_core.artifacts import REF_MARKER

    bound = signature.bind(*args, **kwargs)
    arguments: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            if value:
                raise TypeError(f"task {step.label}: positional arguments beyond named parameters ({name})")
            continue
        if kind is inspect.Parameter.VAR_KEYWORD:
            arguments.update(value)
            continue
        arguments[name] = value
    for name, value in arguments.items():
        # A whole upstream result ({output: reference}) given for one file: its only reference.
        if isinstance(value, Mapping) and REF_MARKER not in value and value:
            refs = [v for v in value.values() if isinstance(v, Mapping) and REF_MARKER in v]
            if len(refs) == len(value) == 1:
                arguments[name] = refs[0]
            elif len(refs) == len(value):
                raise TypeError(
                    f"task {step.label}: argument {name!r} got the outputs {sorted(value)} of an upstream "
                    f"task; pass one of them, e.g. result[{sorted(value)[0]!r}]"
                )
    return arguments


def _run(
    step: TaskStep, arguments: dict[str, Any], context: Context, home: str | Path | None
) -> dict[str, Any]:
    from scanflow_core.errors import CheckFailed, StepFailed
    from scanflow_core.tasks import valid_name

    ti = context["ti"]
    run_id = scanflow_run_id(context)
    map_index = getattr(ti, "map_index", -1)
    step_name = valid_name(ti.task_id if map_index is None or map_index < 0 else f"{ti.task_id}_{map_index}")
    ti.xcom_push(key=RUN_ID_KEY, value=run_id)
    try:
        result = step.run(
            run_id,
            valid_name(ti.dag_id),
            arguments,
            home=home,
            orchestrator="airflow",
            attempt=max(1, int(ti.try_number or 1)),
            step_name=step_name,
            pm=plugin_manager(),
        )
    except StepFailed as exc:
        report = exc.report if isinstance(exc, CheckFailed) else []
        for check in report:
            log.error("%s", _check_line(check))
        raise ScanflowStepFailed(exc.step, exc.run_id, exc.reason, exc.logs, report) from exc
    for check in result.checks:
        (log.info if check.passed else log.warning)("%s", _check_line(check))
    return {name: ref.to_dict() for name, ref in result.outputs.items()}


def _check_line(check: CheckResult) -> str:
    """``check leakage on test (policy fail): FAILED: leakage: 2 of 5 rows of 'test' also in 'train'``."""
    verdict = "passed" if check.passed else "FAILED"
    name = check.check or check.checker
    return f"check {name} on {check.target} (policy {check.policy}): {verdict}: {check.summary}"


def _finish(context: Context, home: str | Path | None) -> str:
    from scanflow_core.tasks import finish_task_run, valid_name

    ti = context["ti"]
    run_id = scanflow_run_id(context)
    others = sorted(ti.task.upstream_task_ids)
    states = ti.get_task_states(ti.dag_id, task_ids=others, run_ids=[ti.run_id]).get(ti.run_id, {})
    failed = sorted(t for t, s in states.items() if str(s) in _FAILED_STATES)
    status = finish_task_run(
        run_id,
        valid_name(ti.dag_id),
        home=home,
        status="failed" if failed else None,
        pm=plugin_manager(),
        orchestrator="airflow",
    )
    ti.xcom_push(key=RUN_ID_KEY, value=run_id)
    if status != "succeeded":
        where = f"tasks not succeeded: {', '.join(failed)}" if failed else "a step did not succeed"
        raise ScanflowRunFailed(run_id, status, [], f"Scanflow run {run_id} failed: {where}")
    return status


def plugin_manager() -> pluggy.PluginManager:
    """This process's plugin manager for Airflow tasks (see ``shared_plugin_manager`` in the core)."""
    from scanflow_core.plugins import shared_plugin_manager

    return shared_plugin_manager()
