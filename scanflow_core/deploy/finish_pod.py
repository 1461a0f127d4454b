"""The pod that closes a run whose steps ran in step pods: what an orchestrator launches last.

When every step of a run ran in a pod of its own (:func:`scanflow_core.deploy.pods.step_pod`), the
task that closes the run runs where they ran: :func:`finish_pod` writes a v1 Pod whose main container
runs :func:`finish_command`, ``python3 -m scanflow_core close SPEC --run-id RUN --home /scanflow/home``
(``scanflow close``: steps that never ran are recorded, the objectives judged and tracked, ``run.json``
finished; exit code 1 when a step failed, 3 when a blocking objective did not hold).

It mounts what a step pod of the same spec and options mounts, built by the same functions: the shared
claim at ``/scanflow/home``, the spec's ConfigMap (or ``work_volume``) at ``/scanflow/work``; the same
tracker wiring (the spec's own server, ``tracker_uri=``, or else the MLflow **tracker** sidecar with its
store on the claim); and runs in the image a step that names none runs in (``image=``,
``$SCANFLOW_POD_IMAGE`` or :data:`~scanflow_core.deploy.pods.DEFAULT_POD_IMAGE`). It needs no checker
and no step's resources or ``env``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scanflow_core.deploy.common import WORK_MOUNT, dns_name
from scanflow_core.deploy.kubernetes import _escape
from scanflow_core.deploy.pods import (
    DEFAULT_POD_IMAGE,
    HOME_MOUNT,
    HOME_VOLUME,
    POD_IMAGE_ENV,
    WORK_VOLUME,
    _check_arguments,
    _check_namespace,
    _config_volume,
    _is_template,
    _load,
    _param_text,
    _sidecar_container,
    claim_name,
)
from scanflow_core.spec import Workflow

__all__ = ["FINISH_CONTAINER", "finish_command", "finish_pod"]

#: The main container's default name.
FINISH_CONTAINER = "finish"


def finish_command(
    spec: str,
    *,
    run_id_template: str,
    params: Mapping[str, Any] | None = None,
    tracker_uri: str | None = None,
    orchestrator: str = "kubernetes",
    home: str = HOME_MOUNT,
) -> list[str]:
    """The command of a finish pod's main container: ``scanflow close`` for the run.

    Args:
        spec: the spec's path inside the container.
        run_id_template: the run id, or a template the host fills in (as for
            :func:`~scanflow_core.deploy.pods.step_command`).
        params: overrides, passed as ``--param NAME=VALUE`` (those the step pods had).
        tracker_uri: ``--tracker-uri``: the tracker the pod reaches.
        orchestrator: recorded as the run's orchestrator.
        home: where runs live inside the container.

    Returns:
        The argv; a ``$(`` in a param is written ``$$(`` (Kubernetes would expand it).

    Examples:
        >>> finish_command("/scanflow/work/scanflow.yaml", run_id_template="r1")[:7]
        ['python3', '-m', 'scanflow_core', 'close', '/scanflow/work/scanflow.yaml', '--run-id', 'r1']
    """
    argv = ["python3", "-m", "scanflow_core", "close", spec, "--run-id", run_id_template]
    argv += ["--home", home, "--orchestrator", orchestrator]
    if tracker_uri:
        argv += ["--tracker-uri", tracker_uri]
    for name, value in (params or {}).items():
        argv += ["--param", _escape(f"{name}={_param_text(name, value)}")]
    return argv


def finish_pod(
    workflow: Workflow | str | Path,
    *,
    run_id_template: str,
    image: str | None = None,
    namespace: str | None = None,
    params: Mapping[str, Any] | Sequence[str] | None = None,
    name: str | None = None,
    container_name: str = FINISH_CONTAINER,
    tracker_uri: str | None = None,
    checker_detector: str | None = None,
    claim: str | None = None,
    work_volume: Mapping[str, Any] | None = None,
    image_prefix: str = "",
    orchestrator: str = "kubernetes",
    pm: Any = None,
) -> dict[str, Any]:
    """A v1 Pod that closes run ``run_id_template`` of ``workflow`` after its step pods ran.

    Takes the options of :func:`~scanflow_core.deploy.pods.step_pod` (so one set of options serves
    every pod of a run) and mounts, wires and labels the pod as the step pods of those options.

    Args:
        workflow: a loaded workflow, or the path of its ``scanflow.yaml``.
        run_id_template: the run id the step pods shared, or a template the host fills in.
        image: the pod's image (default ``$SCANFLOW_POD_IMAGE``, else
            :data:`~scanflow_core.deploy.pods.DEFAULT_POD_IMAGE`): ``scanflow`` with mlflow when the
            run is tracked.
        namespace: the pod's namespace (default: the context's).
        params: overrides: applied to the spec here and passed to ``scanflow close``.
        name: the pod's name (default ``<workflow>-finish[-<run id>]``).
        container_name: the main container's name.
        tracker_uri: track to this server instead of a tracker sidecar.
        checker_detector: accepted for symmetry with ``step_pod``; closing a run checks nothing.
        claim: the shared ``ReadWriteMany`` claim (default ``<workflow>-scanflow-home``).
        work_volume: a volume source for ``/scanflow/work``; default: the spec's ConfigMap.
        image_prefix: as for ``step_pod`` (it names the step pods' images, not this one's).
        orchestrator: recorded as the run's orchestrator.
        pm: the plugin manager asked for the tracker sidecar (default: a fresh one).

    Returns:
        The Pod as a dict; its main container exits 0 when the run succeeded, 1 when a step did not,
        3 when a blocking objective did not hold.

    Raises:
        SpecError: the spec is not valid.
        ValueError: a bad argument (named).

    Examples:
        >>> pod = finish_pod("examples/digits/scanflow.yaml", run_id_template="r1")  # doctest: +SKIP
        >>> pod["spec"]["containers"][0]["command"][3]  # doctest: +SKIP
        'close'
    """
    from scanflow_core.deploy.common import plan_deployment
    from scanflow_core.spec import parse_overrides

    _check_arguments(run_id_template, None, container_name, name, claim, work_volume, None)
    _check_namespace(namespace)
    if checker_detector is not None and not isinstance(checker_detector, str):
        raise ValueError(f"checker_detector must be a path, not {checker_detector!r}")
    overrides = parse_overrides(params)
    flow = _load(workflow, overrides)
    templated = _is_template(run_id_template)
    pod_image = image or os.environ.get(POD_IMAGE_ENV) or DEFAULT_POD_IMAGE
    deployment = plan_deployment(
        flow,
        run_id=flow.name if templated else run_id_template,
        image_prefix=image_prefix,
        default_image=pod_image,
        inputs_root=WORK_MOUNT,
        pm=pm,
    )
    # The step pods' tracker sidecar, unless they track elsewhere; no checker, no plugin's sidecars.
    sidecars = [s for s in deployment.sidecars if s.name == "tracker" and not tracker_uri]
    env = {"SCANFLOW_HOME": HOME_MOUNT}
    if flow.tracker.enabled and flow.tracker.uri not in (None, "sidecar"):
        env["MLFLOW_TRACKING_URI"] = flow.tracker.uri  # a server of the spec's own
    for sidecar in sidecars:
        env.update(sidecar.spec.inject_env)
    if tracker_uri:
        env["MLFLOW_TRACKING_URI"] = tracker_uri
    command = finish_command(
        f"{WORK_MOUNT}/{Path(flow.file).name}",
        run_id_template=run_id_template,
        params=overrides,
        tracker_uri=tracker_uri or (env.get("MLFLOW_TRACKING_URI") if sidecars else None),
        orchestrator=orchestrator,
    )
    main: dict[str, Any] = {
        "name": container_name,
        "image": pod_image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "workingDir": WORK_MOUNT,
        "env": [{"name": k, "value": _escape(v)} for k, v in env.items()],
        "volumeMounts": [
            {"name": HOME_VOLUME, "mountPath": HOME_MOUNT},
            {"name": WORK_VOLUME, "mountPath": WORK_MOUNT, "readOnly": True},
        ],
    }
    pod_spec: dict[str, Any] = {"restartPolicy": "Never"}
    if sidecars:
        pod_spec["initContainers"] = [_sidecar_container(s, builtin_checker=False) for s in sidecars]
    pod_spec["containers"] = [main]
    work = dict(work_volume) if work_volume is not None else _config_volume(flow)
    pod_spec["volumes"] = [
        {"name": HOME_VOLUME, "persistentVolumeClaim": {"claimName": claim or claim_name(flow)}},
        {"name": WORK_VOLUME, **work},
    ]
    if sidecars:
        pod_spec["hostAliases"] = [{"ip": "127.0.0.1", "hostnames": [s.name for s in sidecars]}]
    labels = deployment.labels()
    labels["scanflow.io/role"] = "finish"  # what ``kubectl get pods -l`` tells apart from the steps
    if templated:
        del labels["scanflow.io/run"]  # filled in later: no label value yet
    suffix = "" if templated else f"-{run_id_template}"
    metadata: dict[str, Any] = {"name": name or dns_name(f"{deployment.name}-finish{suffix}")}
    if namespace:
        metadata["namespace"] = namespace
    metadata["labels"] = labels
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}
