"""A Scanflow step's pod as a flytekit ``PodTemplate``: the tracker and checker sidecars, the shared claim
of the runs and the spec's ConfigMap around the task's primary container.

:func:`scanflow_pod_template` turns :func:`scanflow_core.deploy.pods.pod_template_spec` into the
kubernetes client's ``V1PodSpec`` that flytekit expects. Flyte replaces the primary container's
``command`` and ``args`` with the task's, its ``resources`` when the task sets any, its ``image`` when the
template names none, and prepends the task's ``env`` to the template's: a container task that uses the
template runs, as its command, the template's own (``template.pod_spec.containers[0].command``:
``scanflow step`` for exactly that step of the run ``run_id_template`` names, e.g.
``{{.inputs.run_id}}``), and sets no resources of its own, so that the step's (GPU included) stay.

Needs the ``kubernetes`` client (a dependency of this package; flytekit itself does not install it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flytekit import PodTemplate
    from kubernetes.client import V1PodSpec

    from scanflow_core.spec import Workflow

__all__ = ["PRIMARY_CONTAINER", "scanflow_pod_template", "to_v1_pod_spec"]

#: flytekit's default name of a pod template's primary container.
PRIMARY_CONTAINER = "primary"


class _Body:
    """What the kubernetes client's deserializer reads: an HTTP response's JSON body."""

    def __init__(self, value: Any) -> None:
        self.data = json.dumps(value)


def to_v1_pod_spec(spec: Mapping[str, Any]) -> V1PodSpec:
    """A pod spec (a dict, field names as in a manifest) as the kubernetes client's ``V1PodSpec``.

    Raises:
        ValueError: a required field is missing (the client checks them).
    """
    from kubernetes.client import ApiClient

    with ApiClient() as client:
        pod_spec: V1PodSpec = client.deserialize(_Body(dict(spec)), "V1PodSpec")
    return pod_spec


def scanflow_pod_template(
    spec: Workflow | str | Path,
    step: str,
    *,
    run_id_template: str,
    primary_container_name: str = PRIMARY_CONTAINER,
    **options: Any,
) -> PodTemplate:
    """The ``PodTemplate`` of a Scanflow step's pod, for a flytekit container task.

    Args:
        spec: a loaded workflow, or the path of its ``scanflow.yaml``.
        step: the step's qualified name.
        run_id_template: the Scanflow run id, or the template Flyte fills in (``{{.inputs.run_id}}``).
        primary_container_name: the primary container's name.
        **options: the other options of :func:`scanflow_core.deploy.pods.step_pod` (``image``,
            ``params``, ``attempt``, ``tracker_uri``, ``checker_detector``, ``claim``, ``work_volume``,
            ``image_prefix``, ``orchestrator``, ``pm``).

    Returns:
        The template, labelled ``scanflow.io/workflow``, ``/step``, ``/stage`` (and ``/run`` for a
        literal run id).

    Examples:
        >>> run_id = "{{.inputs.run_id}}"
        >>> template = scanflow_pod_template("scanflow.yaml", "fit", run_id_template=run_id)  # doctest: +SKIP
        >>> ContainerTask(name="fit", image=template.pod_spec.containers[0].image,
        ...               command=template.pod_spec.containers[0].command, pod_template=template,
        ...               inputs=kwtypes(run_id=str))  # doctest: +SKIP
    """
    from flytekit import PodTemplate

    from scanflow_core.deploy.pods import pod_template_spec

    options.setdefault("orchestrator", "flyte")
    template = pod_template_spec(
        spec, step, run_id_template=run_id_template, primary_container_name=primary_container_name, **options
    )
    return PodTemplate(
        pod_spec=to_v1_pod_spec(template["spec"]),
        primary_container_name=primary_container_name,
        labels=dict(template["metadata"]["labels"]),
    )
