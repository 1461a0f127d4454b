"""A whole Airflow DAG built from a ``scanflow.yaml``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, TaskGroup, TriggerRule

from scanflow_airflow.operators import ScanflowFinishOperator, ScanflowOperator

__all__ = ["FINISH_TASK_ID", "dag_from_spec"]

#: The task that closes the Scanflow run after every step's task is done.
FINISH_TASK_ID = "scanflow_finish"


def dag_from_spec(
    path: str | Path,
    dag_id: str | None = None,
    *,
    params: Mapping[str, Any] | None = None,
    home: str | Path | None = None,
    executor: str = "local",
    pod_options: Mapping[str, Any] | None = None,
    operator_options: Mapping[str, Any] | None = None,
    **dag_kwargs: Any,
) -> DAG:
    """Build an Airflow DAG that runs the workflow ``path``: one task per step, then ``scanflow_finish``.

    Args:
        path: the ``scanflow.yaml``. It is loaded (and so validated) here, at parse time; nothing
            is run or written until a task runs.
        dag_id: default: the workflow's name.
        params: ``--param`` style overrides for every step.
        home: where runs live; default ``$SCANFLOW_HOME`` or ``./.scanflow`` where the task runs.
        executor: where every task's work runs: ``"local"`` (the task's process) or ``"kubernetes"``:
            each step in its step pod and ``scanflow_finish`` in the run's finish pod (see
            :mod:`scanflow_airflow.kubernetes`).
        pod_options: for ``executor="kubernetes"``: the pods' options, the same for every task (see
            :class:`~scanflow_airflow.operators.ScanflowOperator`).
        operator_options: for ``executor="kubernetes"``: more ``KubernetesPodOperator`` arguments.
        **dag_kwargs: passed to :class:`~airflow.sdk.DAG` (``schedule``, ``tags``, ``default_args``, …).

    Returns:
        The DAG. A step ``s`` of nested workflow ``prep`` is task ``s`` in task group ``prep``
        (task id ``prep.s``); dependencies follow the plan's ``needs``; each task retries as often
        as its step's ``retries``. The last task, ``scanflow_finish`` (trigger rule ``all_done``),
        judges the objectives and finishes the run.

    Raises:
        SpecError: the spec is not valid.

    Examples:
        >>> dag = dag_from_spec("scanflow.yaml", schedule=None)  # doctest: +SKIP
        >>> dag = dag_from_spec(
        ...     "scanflow.yaml", executor="kubernetes", pod_options={"namespace": "ml"}
        ... )  # doctest: +SKIP
    """
    from scanflow_core.errors import ScanflowError
    from scanflow_core.spec import load_workflow

    spec = Path(path).absolute()
    overrides = dict(params or {})
    workflow = load_workflow(spec, overrides)
    plan = workflow.plan
    if FINISH_TASK_ID in plan.steps:
        raise ScanflowError(
            f"a step may not be named {FINISH_TASK_ID!r} under Airflow: the DAG's last task is"
        )
    dag_kwargs.setdefault("schedule", None)
    dag_kwargs.setdefault("description", f"Scanflow workflow {workflow.name!r} ({spec})")
    common: dict[str, Any] = {
        "spec": str(spec),
        "params": overrides,
        "home": str(home) if home is not None else None,
        "executor": executor,
        "pod_options": pod_options,
        "operator_options": operator_options,
    }

    with DAG(dag_id or workflow.name, **dag_kwargs) as dag:
        groups: dict[str, TaskGroup] = {}

        def group_of(name: str) -> TaskGroup | None:
            if not name:
                return None
            if name not in groups:
                parent, _, local = name.rpartition(".")
                groups[name] = TaskGroup(local, parent_group=group_of(parent), prefix_group_id=True)
            return groups[name]

        tasks = {}
        for name, planned in plan.steps.items():
            local = name[len(planned.group) + 1 :] if planned.group else name
            tasks[name] = ScanflowOperator(
                task_id=local,
                step=name,
                task_group=group_of(planned.group),
                retries=planned.spec.retries,
                **common,
            )
        for name, planned in plan.steps.items():
            for upstream in planned.needs:
                tasks[upstream] >> tasks[name]
        finish = ScanflowFinishOperator(task_id=FINISH_TASK_ID, trigger_rule=TriggerRule.ALL_DONE, **common)
        list(tasks.values()) >> finish
    return dag
