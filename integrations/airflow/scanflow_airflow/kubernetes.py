"""``ScanflowOperator(..., executor="kubernetes")``: the step runs in a pod of its own, launched by the
cncf.kubernetes provider's ``KubernetesPodOperator`` from the pod of
:func:`scanflow_core.deploy.pods.step_pod` (the step's image, ``scanflow step`` for exactly that step of
the DAG run's Scanflow run, the tracker and checker sidecars, the shared claim and the spec's ConfigMap).
``ScanflowFinishOperator(..., executor="kubernetes")`` (and ``dag_from_spec(..., executor="kubernetes")``
for every task) closes the run in a pod too: :func:`scanflow_core.deploy.finish_pod.finish_pod`, which
runs ``scanflow close`` with the step pods' claim, ConfigMap and tracker, so no worker mounts the runs.

Before the first DAG run, apply the objects every step pod mounts (the spec's ConfigMap and the
``ReadWriteMany`` claim of the runs)::

    from scanflow_core.deploy.pods import shared_objects
    yaml.safe_dump_all(shared_objects("scanflow.yaml", namespace="ml"))  # then kubectl apply -f

Needs ``apache-airflow-providers-cncf-kubernetes`` (``pip install 'scanflow-airflow[kubernetes]'``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import V1Pod

__all__ = [
    "EXECUTORS",
    "OPERATOR_ARGUMENTS_SET_HERE",
    "POD_OPTIONS",
    "SKIPPED_EXIT_CODE",
    "check_options",
    "pod_operator",
    "to_v1_pod",
]

#: Where a :class:`~scanflow_airflow.operators.ScanflowOperator` runs its step.
EXECUTORS = ("local", "kubernetes")
#: ``scanflow step`` exits with this code when the step is skipped; the pod operator then skips the task.
SKIPPED_EXIT_CODE = 99
#: The options of :func:`~scanflow_core.deploy.pods.step_pod` that ``pod_options`` may give.
POD_OPTIONS = frozenset(
    {
        "image",
        "namespace",
        "name",
        "container_name",
        "tracker_uri",
        "checker_detector",
        "claim",
        "work_volume",
        "image_prefix",
    }
)
#: ``KubernetesPodOperator`` arguments the Scanflow operator sets itself (``operator_options`` may not).
OPERATOR_ARGUMENTS_SET_HERE = frozenset(
    {
        "task_id",
        "full_pod_spec",
        "pod_template_file",
        "pod_template_dict",
        "base_container_name",
        "name",
        "namespace",
        "image",
        "cmds",
        "arguments",
        "skip_on_exit_code",
        "do_xcom_push",
        "deferrable",
    }
)
_PROVIDER = "airflow.providers.cncf.kubernetes"


def check_options(
    executor: str, pod_options: Mapping[str, Any] | None, operator_options: Mapping[str, Any] | None
) -> None:
    """Check the Kubernetes arguments of a :class:`ScanflowOperator` when the DAG is parsed (no I/O).

    Raises:
        ValueError: an unknown executor, an unknown option, or options given for ``executor="local"``.
        ImportError: ``executor="kubernetes"`` without the cncf.kubernetes provider.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(map(repr, EXECUTORS))}, not {executor!r}")
    for what, options in (("pod_options", pod_options), ("operator_options", operator_options)):
        if options is None:
            continue
        if not isinstance(options, Mapping):
            raise TypeError(f"{what} must be a mapping of keyword arguments, not {type(options).__name__}")
        if executor != "kubernetes":
            raise ValueError(
                f"{what} is for executor='kubernetes' (this operator's executor is {executor!r})"
            )
    unknown = sorted(set(pod_options or {}) - POD_OPTIONS)
    if unknown:
        raise ValueError(
            f"pod_options: unknown option(s) {', '.join(unknown)}"
            f" (expected some of: {', '.join(sorted(POD_OPTIONS))})"
        )
    taken = sorted(set(operator_options or {}) & OPERATOR_ARGUMENTS_SET_HERE)
    if taken:
        raise ValueError(
            f"operator_options: {', '.join(taken)} is set by the Scanflow operator"
            " (the pod's name, namespace and image go in pod_options)"
        )
    if executor == "kubernetes" and importlib.util.find_spec(_PROVIDER) is None:
        raise ImportError(
            "executor='kubernetes' runs the step with the cncf.kubernetes provider's KubernetesPodOperator:"
            " pip install 'scanflow-airflow[kubernetes]'"
        )


def to_v1_pod(pod: Mapping[str, Any]) -> V1Pod:
    """A pod manifest (a dict, as :func:`~scanflow_core.deploy.pods.step_pod` makes it) as the
    kubernetes client's ``V1Pod``."""
    from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator

    return PodGenerator.deserialize_model_dict(dict(pod))


def pod_operator(
    task_id: str,
    pod: Mapping[str, Any],
    operator_options: Mapping[str, Any] | None = None,
) -> KubernetesPodOperator:
    """The ``KubernetesPodOperator`` that launches ``pod``: its name (with a random suffix: one pod per
    attempt) and namespace, its main container as the base container (whose logs are followed and
    whose exit code decides), a skipped step's exit code as a skip.

    Args:
        task_id: the Scanflow task's id.
        pod: the step's pod (:func:`~scanflow_core.deploy.pods.step_pod`).
        operator_options: other ``KubernetesPodOperator`` arguments (``kubernetes_conn_id``,
            ``in_cluster``, ``config_file``, ``service_account_name``, ``on_finish_action``, …).
    """
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    metadata = pod["metadata"]
    return KubernetesPodOperator(
        task_id=task_id,
        full_pod_spec=to_v1_pod(pod),
        name=metadata["name"],
        namespace=metadata.get("namespace"),
        base_container_name=pod["spec"]["containers"][0]["name"],
        skip_on_exit_code=SKIPPED_EXIT_CODE,
        do_xcom_push=False,
        deferrable=False,
        **dict(operator_options or {}),
    )
