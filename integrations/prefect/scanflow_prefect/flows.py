"""A whole Prefect flow built from a ``scanflow.yaml``: one task run per step, then the run is closed."""

from __future__ import annotations

import keyword
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefect import Flow, State, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext, TaskRunContext
from prefect.futures import PrefectFuture, wait
from prefect.states import Completed

from scanflow_prefect.errors import ScanflowRunFailed, ScanflowStepFailed

__all__ = ["SpecFlow", "flow_from_spec", "run_spec_step"]


def flow_from_spec(
    path: str | Path,
    name: str | None = None,
    params: Mapping[str, Any] | None = None,
    home: str | Path | None = None,
    **flow_kwargs: Any,
) -> SpecFlow:
    """Build a Prefect flow that runs the workflow ``path``: a task run per step, then the run's end.

    Args:
        path: the ``scanflow.yaml``. It is loaded (and so validated) here; nothing is run or
            written until the flow runs.
        name: the flow's name; default: the workflow's name.
        params: ``--param`` style overrides for every run (``{"epochs": 5, "train.lr": 0.1}``); a
            run's own ``params`` parameter overrides them in turn.
        home: where runs live; default ``$SCANFLOW_HOME`` or ``./.scanflow`` where the flow runs.
        **flow_kwargs: passed to :class:`prefect.Flow` (``retries``, ``log_prints``, ``task_runner``,
            ``flow_run_name``, ``on_failure``, …). ``version`` defaults to the spec's digest.

    Returns:
        The flow. It takes two parameters, ``run_id`` (the Scanflow run id; default: the flow run's
        name and the start of its id) and ``params`` (overrides for this run). Each step is a task
        run named after the step, submitted once its ``needs`` are done (independent steps run at
        once, on the flow's task runner), retried as often as the step's ``retries`` (a failing
        ``fail`` check is not retried), with the task run's run count as the step's attempt. A
        step whose image is given runs in it (the core's Docker runtime). At the end the steps
        that never ran are recorded, the objectives judged and the run finished; the flow returns
        ``{"run_id", "status", "directory", "objectives", "failed_steps"}``, or fails with
        :class:`ScanflowRunFailed` when a step failed or a blocking objective did not hold.

    Raises:
        SpecError: the spec is not valid.
        TypeError: ``params`` is not a mapping or ``home`` not a path.

    Examples:
        >>> digits = flow_from_spec("examples/digits/scanflow.yaml")  # doctest: +SKIP
        >>> digits(params={"seed": 1})["status"]  # doctest: +SKIP
        'succeeded'
    """
    from scanflow_core.spec import load_workflow

    if not isinstance(path, str | Path) or not str(path):
        raise TypeError(f"flow_from_spec: path must be the path of a scanflow.yaml, not {path!r}")
    if params is not None and not isinstance(params, Mapping):
        raise TypeError(f"flow_from_spec: params must be a mapping of overrides, not {type(params).__name__}")
    if home is not None and not isinstance(home, str | Path):
        raise TypeError(f"flow_from_spec: home must be a path, not {type(home).__name__}")
    spec = str(Path(path).absolute())
    overrides = dict(params or {})
    workflow = load_workflow(spec, overrides)
    where = str(home) if home is not None else None
    flow_kwargs.setdefault(
        "description", workflow.description or f"Scanflow workflow {workflow.name!r} ({spec})"
    )
    flow_kwargs.setdefault("version", workflow.digest)

    def run_workflow(run_id: str | None = None, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run the Scanflow workflow: one task run per step, then judge the objectives.

        Args:
            run_id: the Scanflow run id (default: the flow run's name and the start of its id).
            params: overrides for this run, as on the command line's --param (e.g. {"epochs": 5}).
        """
        if params is not None and not isinstance(params, Mapping):
            raise TypeError(f"the flow's params must be a mapping of overrides, not {type(params).__name__}")
        return _run_flow(spec, {**overrides, **(params or {})}, run_id, where)

    # Deployments name the flow by where it is defined: the module that called flow_from_spec (the
    # variable it is bound to is found when a deployment is made, see SpecFlow).
    caller = sys._getframe(1).f_globals.get("__name__", __name__)
    run_workflow.__module__ = caller
    run_workflow.__qualname__ = run_workflow.__name__ = _identifier(name or workflow.name)
    return SpecFlow(run_workflow, name=name or workflow.name, **flow_kwargs)


class SpecFlow(Flow[..., dict[str, Any]]):
    """The flow :func:`flow_from_spec` makes: a :class:`prefect.Flow` that, when a deployment is made
    (``serve``, ``deploy``, ``to_deployment``), names itself by the module variable it is bound to,
    so the deployment's entrypoint (``digits_flow.py:digits``) loads it again."""

    def _name_entrypoint(self) -> None:
        if getattr(self, "_storage", None) is not None:
            return  # loaded by Flow.from_source: Prefect deploys it from the entrypoint it was loaded from
        module = sys.modules.get(self.fn.__module__)
        names = [k for k, v in vars(module).items() if v is self] if module is not None else []
        if not names:
            raise ValueError(
                f"flow {self.name!r} is deployed from its module's variable: assign "
                f"flow_from_spec(...) to a module-level variable of {self.fn.__module__!r} "
                "(digits = flow_from_spec(...)) before serving or deploying it"
            )
        self.fn.__qualname__ = self.fn.__name__ = names[0]

    def to_deployment(self, *args: Any, **kwargs: Any) -> Any:
        self._name_entrypoint()
        return super().to_deployment(*args, **kwargs)

    async def ato_deployment(self, *args: Any, **kwargs: Any) -> Any:
        self._name_entrypoint()
        return await super().ato_deployment(*args, **kwargs)


def _identifier(text: str) -> str:
    name = re.sub(r"\W", "_", text, flags=re.ASCII) or "flow"
    name = "_" + name if name[0].isdigit() else name
    return name + "_" if keyword.iskeyword(name) else name


def _run_flow(spec: str, overrides: dict[str, Any], run_id: str | None, home: str | None) -> dict[str, Any]:
    """The flow's body: submit a task per step in plan order, wait for all, close the run."""
    from scanflow_prefect.runs import finish_spec_run, flow_run_scanflow_id, open_spec_run, release_run

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        raise RuntimeError("a Scanflow flow runs as a Prefect flow run")
    scanflow_id = flow_run_scanflow_id(context.flow_run, run_id)
    run = open_spec_run(spec, overrides, scanflow_id, home, register=True)
    futures: dict[str, PrefectFuture[Any]] = {}
    try:
        for name, planned in run.plan.steps.items():
            step_task = run_spec_step.with_options(
                name=name,
                task_run_name=name,
                retries=planned.spec.retries,
                tags={"scanflow", f"stage:{planned.stage}"},
            )
            futures[name] = step_task.submit(
                spec,
                name,
                overrides,
                scanflow_id,
                home,
                wait_for=[futures[n] for n in planned.needs],
                return_state=False,
            )
        wait(list(futures.values()))
    except BaseException as exc:
        release_run(run)
        run.finish("failed", [])
        run.pm.hook.scanflow_workflow_error(run=run, error=exc)
        raise
    outcome = finish_spec_run(run)
    if not outcome.ok:
        raise ScanflowRunFailed(
            outcome.run_id, outcome.status, outcome.objectives, outcome.message, outcome.failed_steps
        )
    return {
        "run_id": outcome.run_id,
        "status": outcome.status,
        "directory": str(run.directory),
        "objectives": [o.to_dict() for o in outcome.objectives],
        "failed_steps": list(outcome.failed_steps),
    }


def _retry_unless_check_failed(task: Any, task_run: Any, state: State[Any]) -> bool:
    """Retry a failed step, unless a ``fail`` check stopped it (the same data fails it again)."""
    return not (isinstance(state.data, ScanflowStepFailed) and state.data.check_failed)


@task(name="scanflow-step", cache_policy=NO_CACHE, retry_condition_fn=_retry_unless_check_failed)
def run_spec_step(
    spec: str, step: str, params: dict[str, Any], run_id: str, home: str | None
) -> dict[str, Any] | State[Any]:
    """Run one step of a spec's run (the task of each step of a flow from :func:`flow_from_spec`).

    Args:
        spec: the ``scanflow.yaml``.
        step: the step's qualified name.
        params: the run's overrides.
        run_id: the Scanflow run.
        home: where runs live.

    Returns:
        The step's outputs (name → :class:`~scanflow_core.tasks.ArtifactRef`); a ``Skipped``
        (completed) state when its ``when:`` does not hold or an upstream step was skipped (the
        run's end records the latter).

    Raises:
        ScanflowStepFailed: the step failed; its check results, if any, are a markdown artifact.
    """
    from scanflow_core.errors import CheckFailed, StepFailed
    from scanflow_core.steps import run_step
    from scanflow_core.tasks import ArtifactRef
    from scanflow_prefect.artifacts import publish_checks
    from scanflow_prefect.runs import open_spec_run

    run = open_spec_run(spec, params, run_id, home)
    skipped = [n for n in run.plan[step].needs if (run.step_summary(n) or {}).get("status") == "skipped"]
    if skipped:
        return Completed(name="Skipped", message=f"upstream step {skipped[0]!r} was skipped")
    context = TaskRunContext.get()
    attempt = max(1, context.task_run.run_count) if context is not None else 1
    try:
        step_run = run_step(run, step, attempt=attempt)
    except StepFailed as exc:
        report = list(exc.report) if isinstance(exc, CheckFailed) else []
        publish_checks(run.run_id, run.workflow.name, step, run.directory, report)
        raise ScanflowStepFailed(
            exc.step, exc.run_id, exc.reason, exc.logs, report, isinstance(exc, CheckFailed)
        ) from exc
    publish_checks(run.run_id, run.workflow.name, step, run.directory, step_run.checks)
    if step_run.status == "skipped":
        return Completed(name="Skipped", message=step_run.reason or "skipped")
    return {
        r.name: ArtifactRef(run.run_id, step, r.name, r.path, r.digest, r.kind)
        for r in step_run.output_records
    }
