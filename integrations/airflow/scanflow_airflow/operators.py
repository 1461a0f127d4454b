"""Scanflow steps as Airflow tasks.

:class:`ScanflowOperator` runs one step of a ``scanflow.yaml`` through the core's step path
(:func:`scanflow_core.steps.run_step`); :class:`ScanflowFinishOperator` closes the run once every
step's task is done. Every task of one DAG run shares one Scanflow run, whose id comes from the
Airflow run id (or ``scanflow_run_id`` in the DAG run's conf), so the run directory under
``home`` is the state the tasks share.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowSkipException

if TYPE_CHECKING:
    from airflow.sdk import Context

    from scanflow_core.records import ObjectiveResult
    from scanflow_core.runs import WorkflowRun

__all__ = [
    "RUN_ID_CONF_KEY",
    "ScanflowFinishOperator",
    "ScanflowOperator",
    "ScanflowRunFailed",
    "ScanflowStepFailed",
    "scanflow_run_id",
]

#: A DAG run's conf may name the Scanflow run explicitly: ``{"scanflow_run_id": "nightly-42"}``.
RUN_ID_CONF_KEY = "scanflow_run_id"


class ScanflowStepFailed(AirflowException):
    """A Scanflow step failed in an Airflow task.

    Attributes:
        step: the step's qualified name.
        run_id: the Scanflow run id.
        reason: why it failed.
        logs: the last lines the step wrote.
        report: its check results (empty unless a check failed).
    """

    def __init__(self, step: str, run_id: str, reason: str, logs: str = "", report: Sequence[Any] = ()):
        self.step = step
        self.run_id = run_id
        self.reason = reason
        self.logs = logs
        self.report = list(report)
        text = f"step {step!r} of Scanflow run {run_id} failed: {reason}"
        super().__init__(text + (f"\n{logs}" if logs else ""))


class ScanflowRunFailed(AirflowException):
    """The Scanflow run finished failed: a step failed or a blocking objective did not hold.

    Attributes:
        run_id: the Scanflow run id.
        status: the run's status (``succeeded`` / ``failed``).
        objectives: every objective's outcome.
    """

    def __init__(self, run_id: str, status: str, objectives: Sequence[ObjectiveResult], message: str):
        self.run_id = run_id
        self.status = status
        self.objectives = list(objectives)
        super().__init__(message)


def scanflow_run_id(context: Context) -> str:
    """The Scanflow run id of the Airflow run in ``context``.

    ``scanflow_run_id`` in the DAG run's conf when given, else the Airflow run id with every
    character other than letters, digits, ``.``, ``_`` and ``-`` replaced by ``-``.
    """
    dag_run = context["dag_run"]
    explicit = (getattr(dag_run, "conf", None) or {}).get(RUN_ID_CONF_KEY)
    if explicit:
        return str(explicit)
    return re.sub(r"[^A-Za-z0-9._-]", "-", str(dag_run.run_id)).strip(".-") or "airflow-run"


class _ScanflowBase(BaseOperator):
    template_fields: Sequence[str] = ("spec", "home")

    def __init__(
        self,
        *,
        spec: str | Path,
        params: Mapping[str, Any] | None = None,
        home: str | Path | None = None,
        executor: str = "local",
        pod_options: Mapping[str, Any] | None = None,
        operator_options: Mapping[str, Any] | None = None,
        airflow_executor: str | None = None,
        **kwargs: Any,
    ) -> None:
        from scanflow_airflow.kubernetes import check_options

        if not isinstance(spec, str | Path) or not str(spec):
            raise ValueError(f"spec must be the path of a scanflow.yaml, not {spec!r}")
        if params is not None and not isinstance(params, Mapping):
            raise TypeError(f"params must be a mapping of overrides, not {type(params).__name__}")
        if home is not None and not isinstance(home, str | Path):
            raise TypeError(f"home must be a path, not {type(home).__name__}")
        check_options(executor, pod_options, operator_options)
        super().__init__(executor=airflow_executor, **kwargs)
        self.spec = str(spec)
        self.overrides: dict[str, Any] = dict(params or {})
        self.home = str(home) if home is not None else None
        #: Where the work runs: ``local`` or ``kubernetes`` (``self.executor`` is Airflow's own).
        self.step_executor = executor
        self.pod_options: dict[str, Any] = dict(pod_options or {})
        self.operator_options: dict[str, Any] = dict(operator_options or {})

    def pod(self, context: Context) -> dict[str, Any]:
        """The pod this task launches with ``executor="kubernetes"`` (a v1 Pod manifest)."""
        raise NotImplementedError

    def pod_operator(self, context: Context) -> Any:
        """The ``KubernetesPodOperator`` that launches :meth:`pod` (not executed)."""
        from scanflow_airflow.kubernetes import pod_operator

        return pod_operator(self.task_id, self.pod(context), self.operator_options)

    def on_kill(self) -> None:
        """A killed task deletes the pod it launched (``executor="kubernetes"``)."""
        launched = getattr(self, "_launched", None)
        if launched is not None:
            launched.on_kill()

    def _launch(self, context: Context) -> None:
        """Launch :meth:`pod` and wait for it: the pod operator raises when its main container fails."""
        operator = self._launched = self.pod_operator(context)
        operator.execute(context)

    def _open(self, context: Context) -> WorkflowRun:
        """Load the spec and open this DAG run's Scanflow run (firing the start hook once)."""
        from scanflow_core.plugins import shared_plugin_manager
        from scanflow_core.runs import WorkflowRun
        from scanflow_core.spec import load_workflow

        workflow = load_workflow(self.spec, self.overrides)
        run = WorkflowRun(
            workflow,
            run_id=scanflow_run_id(context),
            home=self.home,
            pm=shared_plugin_manager(),
            params=self.overrides,
            orchestrator="airflow",
        )
        if run.open():
            run.pm.hook.scanflow_workflow_start(run=run)
        return run


class ScanflowOperator(_ScanflowBase):
    """Run one step of a Scanflow workflow as an Airflow task.

    Args:
        spec: the ``scanflow.yaml`` (templated).
        step: the step's qualified name, ``train`` or ``prep.clean`` (templated).
        params: ``--param`` style overrides (``{"epochs": 5, "train.lr": 0.1}``).
        home: where runs live (templated); default ``$SCANFLOW_HOME`` or ``./.scanflow``.
        executor: ``"local"`` (the default): the step runs in the task's process (a container step in
            Docker); ``"kubernetes"``: in a pod of its own, launched by ``KubernetesPodOperator``
            (see :mod:`scanflow_airflow.kubernetes`; the run lives on the pods' shared claim).
        pod_options: for ``executor="kubernetes"``: options of
            :func:`~scanflow_core.deploy.pods.step_pod` (``image``, ``namespace``, ``tracker_uri``,
            ``checker_detector``, ``claim``, ``work_volume``, ``image_prefix``, ``name``, ``container_name``).
        operator_options: for ``executor="kubernetes"``: more ``KubernetesPodOperator`` arguments
            (``kubernetes_conn_id``, ``in_cluster``, ``config_file``, ``service_account_name``, …).
        airflow_executor: the Airflow executor the task targets (``BaseOperator``'s own ``executor``
            argument, which ``executor`` here stands in for: it says where the *step* runs).
        **kwargs: passed to :class:`~airflow.sdk.BaseOperator`.

    The task returns one XCom, ``{"scanflow_run_id": ..., "outputs": {name: ArtifactRef dict}}``:
    references into the run directory (path, digest, ``file://`` URI), never the data (with
    ``executor="kubernetes"``, paths as the pods see them). A failed step raises
    :class:`ScanflowStepFailed`; a step whose ``when:`` does not hold is skipped
    (:class:`~airflow.sdk.exceptions.AirflowSkipException`).

    Examples:
        >>> ScanflowOperator(task_id="train", spec="scanflow.yaml", step="train")  # doctest: +SKIP
        >>> ScanflowOperator(
        ...     task_id="train", spec="scanflow.yaml", step="train", executor="kubernetes",
        ...     pod_options={"namespace": "ml", "image": "registry.example.com/ml/scanflow:0.1.0"},
        ... )  # doctest: +SKIP
    """

    template_fields: Sequence[str] = ("spec", "step", "home")
    ui_color = "#d9ecf2"

    def __init__(
        self,
        *,
        spec: str | Path,
        step: str,
        params: Mapping[str, Any] | None = None,
        home: str | Path | None = None,
        executor: str = "local",
        pod_options: Mapping[str, Any] | None = None,
        operator_options: Mapping[str, Any] | None = None,
        airflow_executor: str | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(step, str) or not step:
            raise ValueError(f"step must be a step name, not {step!r}")
        super().__init__(
            spec=spec,
            params=params,
            home=home,
            executor=executor,
            pod_options=pod_options,
            operator_options=operator_options,
            airflow_executor=airflow_executor,
            **kwargs,
        )
        self.step = step

    def execute(self, context: Context) -> dict[str, Any]:
        if self.step_executor == "kubernetes":
            return self._execute_in_pod(context)
        from scanflow_core.artifacts import ArtifactRef
        from scanflow_core.errors import CheckFailed, StepFailed
        from scanflow_core.steps import run_step

        run = self._open(context)
        try:
            step_run = run_step(run, self.step, attempt=max(1, int(context["ti"].try_number or 1)))
        except StepFailed as exc:
            report = exc.report if isinstance(exc, CheckFailed) else []
            raise ScanflowStepFailed(exc.step, exc.run_id, exc.reason, exc.logs, report) from exc
        if step_run.status == "skipped":
            raise AirflowSkipException(step_run.reason or "skipped")
        refs = {
            r.name: ArtifactRef(run.run_id, self.step, r.name, r.path, r.digest, r.kind).to_dict()
            for r in step_run.output_records
        }
        return {"scanflow_run_id": run.run_id, "outputs": refs}  # one XCom: references, never the data

    def pod(self, context: Context) -> dict[str, Any]:
        """The pod this task launches with ``executor="kubernetes"`` (a v1 Pod manifest), without
        launching it: :func:`~scanflow_core.deploy.pods.step_pod` for this step of the DAG run's
        Scanflow run, this try as the attempt."""
        from scanflow_airflow.kubernetes import SKIPPED_EXIT_CODE
        from scanflow_core.deploy.pods import step_pod

        return step_pod(
            self.spec,
            self.step,
            run_id_template=scanflow_run_id(context),
            params=self.overrides,
            attempt=max(1, int(context["ti"].try_number or 1)),
            orchestrator="airflow",
            skipped_exit_code=SKIPPED_EXIT_CODE,
            **self.pod_options,
        )

    def _execute_in_pod(self, context: Context) -> dict[str, Any]:
        from scanflow_core.deploy.pods import HOME_MOUNT
        from scanflow_core.spec import load_workflow

        run_id = scanflow_run_id(context)
        try:
            self._launch(context)
        except AirflowSkipException:
            raise
        except AirflowException as exc:
            raise ScanflowStepFailed(self.step, run_id, f"its pod failed: {exc}") from exc
        planned = load_workflow(self.spec, self.overrides).plan[self.step]
        folder = f"{HOME_MOUNT}/runs/{run_id}/steps/{self.step}/outputs"
        outputs = {name: f"{folder}/{spec.path or name}" for name, spec in planned.outputs.items()}
        return {"scanflow_run_id": run_id, "outputs": outputs}  # paths on the pods' shared volume


class ScanflowFinishOperator(_ScanflowBase):
    """Close the Scanflow run of a DAG run: record steps that never ran, judge the objectives,
    finish the run. Meant to run last with ``trigger_rule="all_done"`` (:func:`dag_from_spec` adds it).

    Args:
        spec, params, home: as for :class:`ScanflowOperator`.
        executor: ``"local"`` (the default): the run is closed in the task's process;
            ``"kubernetes"``: in a pod (:func:`~scanflow_core.deploy.finish_pod.finish_pod`) mounting
            what the step pods mount, running ``scanflow close``, launched by ``KubernetesPodOperator``.
        pod_options, operator_options, airflow_executor: as for :class:`ScanflowOperator` (give
            the steps' own: the finish pod then shares their claim, spec and tracker).
        **kwargs: passed to :class:`~airflow.sdk.BaseOperator`.

    Raises :class:`ScanflowRunFailed` when a step did not succeed (or was skipped) or a blocking
    objective did not hold, so the DAG run fails with the Scanflow run (with ``executor="kubernetes"``
    the pod exits 1 or 3 and its log, followed into the task's, says which).

    Examples:
        >>> ScanflowFinishOperator(
        ...     task_id="scanflow_finish", spec="scanflow.yaml", trigger_rule="all_done",
        ...     executor="kubernetes", pod_options={"namespace": "ml"},
        ... )  # doctest: +SKIP
    """

    ui_color = "#c4e0ea"

    def execute(self, context: Context) -> None:
        from scanflow_core.runner import close_run

        if self.step_executor == "kubernetes":
            return self._execute_in_pod(context)
        outcome = close_run(self._open(context))
        context["ti"].xcom_push(key="scanflow_run_id", value=outcome.run_id)
        if not outcome.ok:
            raise ScanflowRunFailed(outcome.run_id, outcome.status, outcome.objectives, outcome.message)
        return None

    def pod(self, context: Context) -> dict[str, Any]:
        """The pod this task launches with ``executor="kubernetes"``, without launching it:
        :func:`~scanflow_core.deploy.finish_pod.finish_pod` for the DAG run's Scanflow run."""
        from scanflow_core.deploy.finish_pod import finish_pod

        return finish_pod(
            self.spec,
            run_id_template=scanflow_run_id(context),
            params=self.overrides,
            orchestrator="airflow",
            **self.pod_options,
        )

    def _execute_in_pod(self, context: Context) -> None:
        run_id = scanflow_run_id(context)
        context["ti"].xcom_push(key="scanflow_run_id", value=run_id)
        try:
            self._launch(context)
        except AirflowException as exc:
            message = (
                f"Scanflow run {run_id} failed: its finish pod exited with an error (1: a step did not"
                f" succeed; 3: a blocking objective did not hold; its log above says which): {exc}"
            )
            raise ScanflowRunFailed(run_id, "failed", [], message) from exc
