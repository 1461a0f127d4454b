"""One step of a run as a Kubernetes Pod: what an orchestrator launches for one task.

``scanflow export k8s`` deploys a whole workflow at once; an orchestrator that already orders the
steps (Airflow's ``KubernetesPodOperator``, a Flyte container task) launches one pod per step instead.
:func:`step_pod` writes that pod (``apiVersion: v1, kind: Pod``), :func:`pod_template_spec` the same as
a pod template (``{"metadata", "spec"}``, for Flyte's ``PodTemplate``), and :func:`shared_objects` the
two objects every step pod of a workflow mounts (apply them once: ``kubectl apply -f``).

A step pod:

* its main container (``step``; Flyte's ``primary``) runs in the step's image: its ``image``, the
  Scanflow-built tag of a ``build`` step (behind ``image_prefix``), else ``image=`` (a step that names
  none: a ``call`` or a ``command``), ``$SCANFLOW_POD_IMAGE`` or :data:`DEFAULT_POD_IMAGE`. Its command
  is :func:`step_command`: ``python3 -m scanflow_core step SPEC STEP --run-id RUN --in-image ...``, the
  one step path (checks, tracking, attestation) for exactly that step of the shared run, so the image
  must have ``scanflow`` installed, with whatever the step and its checks import;
* ``/scanflow/home`` (``$SCANFLOW_HOME``) is a ``ReadWriteMany`` claim (default
  ``<workflow>-scanflow-home``) shared by every step pod: the run directory ``runs/<run id>/`` where a
  step finds its upstream outputs, the signing key ``keys/``, the tracker's store ``tracker/``;
* ``/scanflow/work`` (the working directory) holds the spec and the Python modules of its folder and
  ``python_path`` folders (and nested workflow files): the ConfigMap ``<workflow>-scanflow-spec`` by
  default; ``work_volume=`` gives another volume (one that also holds the workflow input files a step
  reads, which a ConfigMap does not carry);
* sidecars are native sidecars (init containers with ``restartPolicy: Always``, Kubernetes 1.29+: the
  pod still completes), reached by their names through ``hostAliases``: the MLflow **tracker** when the
  spec tracks to no server of its own (``tracker.uri`` unset or ``sidecar``; its store on the claim, so
  the workflow's history outlives the pods), the **checker** (a drift detector saved on the claim,
  ``checker_detector=``, served by :mod:`scanflow_core.checking.service`), and every sidecar a plugin's
  ``scanflow_sidecars`` asks for. ``tracker_uri=`` tracks to a server of your own instead (step pods
  running at once each start a tracker on one SQLite file; give a server when steps run in parallel);
* the step's ``resources`` as requests and limits (``nvidia.com/gpu`` for ``gpu``), its ``env`` and the
  sidecars' (``MLFLOW_TRACKING_URI``, ``SCANFLOW_CHECKER_URL``); ``restartPolicy: Never`` (the
  orchestrator retries, passing ``attempt``); the labels of ``scanflow export k8s``.

Written for Kubernetes 1.30 (:data:`~scanflow_core.deploy.kubernetes.KUBERNETES_VERSION`), against
whose schema the tests validate every pod strictly.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scanflow_core import __version__
from scanflow_core.deploy.common import WORK_MOUNT, Deployment, Sidecar, StepContainer, dns_name
from scanflow_core.deploy.kubernetes import (
    DEFAULT_STORAGE,
    _config_key,
    _escape,
    _pod_sidecar,
    _resources,
    spec_files,
)
from scanflow_core.errors import SpecError
from scanflow_core.records import SidecarSpec
from scanflow_core.runtimes.sidecars import CHECKER_PORT
from scanflow_core.spec import Workflow
from scanflow_core.step_command import IMAGE_ENV

__all__ = [
    "DEFAULT_POD_IMAGE",
    "HOME_MOUNT",
    "POD_IMAGE_ENV",
    "claim_name",
    "config_map_name",
    "pod_template_spec",
    "shared_objects",
    "step_command",
    "step_pod",
    "work_files",
]

#: The claim every step pod shares, mounted here as ``$SCANFLOW_HOME``.
HOME_MOUNT = "/scanflow/home"
POD_IMAGE_ENV = "SCANFLOW_POD_IMAGE"
#: The image of a step that names none: Python with ``scanflow`` installed (``scanflow image build``).
DEFAULT_POD_IMAGE = f"scanflow/scanflow:{__version__}"
HOME_VOLUME = "scanflow-home"
WORK_VOLUME = "scanflow-work"
TRACKER_SUBPATH = "tracker"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_TEMPLATE_MARKS = ("{{", "{%", "$(")
_HEALTH = (
    "python3 -c \"import urllib.request; urllib.request.urlopen('http://localhost:{port}/ok', timeout=5)\""
)


def claim_name(workflow: Workflow) -> str:
    """The default claim of the step pods: ``<workflow>-scanflow-home``."""
    return dns_name(f"{workflow.name}-scanflow-home")


def config_map_name(workflow: Workflow) -> str:
    """The default ConfigMap of the spec's files: ``<workflow>-scanflow-spec``."""
    return dns_name(f"{workflow.name}-scanflow-spec")


def _load(workflow: Workflow | str | Path, params: Mapping[str, Any] | Sequence[str] | None) -> Workflow:
    from scanflow_core.spec import load_workflow

    if isinstance(workflow, Workflow):
        if not Path(workflow.file).is_file():
            raise ValueError(
                f"workflow {workflow.name!r} was not loaded from a file: a pod reads the spec's file"
            )
        if not params:
            return workflow
        workflow = workflow.file
    if not isinstance(workflow, str | Path) or not str(workflow):
        raise ValueError(
            f"workflow must be a loaded Workflow or the path of a scanflow.yaml, not {workflow!r}"
        )
    return load_workflow(workflow, params)


def _is_template(text: str) -> bool:
    return any(mark in text for mark in _TEMPLATE_MARKS)


def work_files(workflow: Workflow) -> dict[str, str]:
    """The files ``/scanflow/work`` must hold, by path under it: the spec, the Python modules of its
    folder and ``python_path`` folders, and each nested workflow's file and modules (in their folders)."""
    root = Path(workflow.file).parent.resolve()
    files: dict[str, str] = {}

    def add(flow: Workflow) -> None:
        folder = Path(flow.file).parent.resolve()
        if not folder.is_relative_to(root):
            raise SpecError.single(
                workflow.file, "steps", f"nested workflow {flow.file} is outside the spec's folder {root}"
            )
        prefix = folder.relative_to(root).as_posix()
        for path, text in spec_files(Deployment(flow, flow.name, [])).items():
            files.setdefault(path if prefix == "." else f"{prefix}/{path}", text)
        for child in flow.children.values():
            add(child)

    add(workflow)
    return files


def _config_volume(workflow: Workflow) -> dict[str, Any]:
    files = work_files(workflow)
    return {
        "configMap": {
            "name": config_map_name(workflow),
            "items": [{"key": _config_key(path), "path": path} for path in files],
        }
    }


def shared_objects(
    workflow: Workflow | str | Path,
    *,
    namespace: str | None = None,
    storage: str = DEFAULT_STORAGE,
    params: Mapping[str, Any] | Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """The ConfigMap of the spec's files and the ``ReadWriteMany`` claim that every step pod mounts.

    Args:
        workflow: a loaded workflow, or the path of its ``scanflow.yaml``.
        namespace: the namespace of the objects (default: the context's).
        storage: the size of the claim.
        params: overrides (only to load the spec; the files are written as they are).

    Returns:
        ``[ConfigMap, PersistentVolumeClaim]``, to apply once before launching step pods.

    Examples:
        >>> docs = shared_objects("examples/digits/scanflow.yaml", namespace="ml")  # doctest: +SKIP
    """
    flow = _load(workflow, params)
    _check_namespace(namespace)
    labels = {"scanflow.io/workflow": dns_name(flow.name)}

    def meta(name: str) -> dict[str, Any]:
        return {"name": name, "labels": labels, **({"namespace": namespace} if namespace else {})}

    files = work_files(flow)
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta(config_map_name(flow)),
            "data": {_config_key(path): text for path, text in files.items()},
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": meta(claim_name(flow)),
            "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": storage}}},
        },
    ]


def _check_namespace(namespace: str | None) -> None:
    if namespace is not None and (not isinstance(namespace, str) or dns_name(namespace) != namespace):
        raise ValueError(f"namespace must be a DNS-1123 label (lower case, digits, '-'), not {namespace!r}")


def _param_text(name: str, value: Any) -> str:
    """``value`` as ``--param`` text that reads back as the same value."""
    from scanflow_core.spec import parse_overrides

    text = value if isinstance(value, str) else json.dumps(value)
    if parse_overrides([f"{name}={text}"]).get(name) != value:
        text = json.dumps(value)
    return text


def step_command(
    spec: str,
    step: str,
    *,
    run_id_template: str,
    params: Mapping[str, Any] | None = None,
    attempt: int | str | None = None,
    tracker_uri: str | None = None,
    orchestrator: str = "kubernetes",
    skipped_exit_code: int | None = None,
    home: str = HOME_MOUNT,
) -> list[str]:
    """The command of a step pod's main container: ``scanflow step`` for exactly one step.

    Args:
        spec: the spec's path inside the container.
        step: the step's qualified name.
        run_id_template: the run id, or a template the host fills in (Airflow's Jinja, Flyte's
            ``{{.inputs.run_id}}``, Kubernetes' ``$(VAR)``); put in as it is.
        params: overrides, passed as ``--param NAME=VALUE``.
        attempt: which attempt (a number, or a template); default: the first.
        tracker_uri: ``--tracker-uri``: the tracker the pod reaches.
        orchestrator: recorded as the run's orchestrator.
        skipped_exit_code: exit code of a skipped step (default 0, like a success).
        home: where runs live inside the container.

    Returns:
        The argv; a ``$(`` in a param is written ``$$(`` (Kubernetes would expand it).

    Examples:
        >>> step_command("/scanflow/work/scanflow.yaml", "train", run_id_template="r1")[:6]
        ['python3', '-m', 'scanflow_core', 'step', '/scanflow/work/scanflow.yaml', 'train']
    """
    argv = ["python3", "-m", "scanflow_core", "step", spec, step, "--run-id", run_id_template]
    argv += ["--home", home, "--in-image", "--orchestrator", orchestrator]
    if attempt is not None:
        argv += ["--attempt", str(attempt)]
    if tracker_uri:
        argv += ["--tracker-uri", tracker_uri]
    if skipped_exit_code:
        argv += ["--skipped-exit-code", str(skipped_exit_code)]
    for name, value in (params or {}).items():
        argv += ["--param", _escape(f"{name}={_param_text(name, value)}")]
    return argv


def _checker(detector: str, image: str) -> Sidecar:
    path = detector if detector.startswith("/") else f"{HOME_MOUNT}/{detector}"
    return Sidecar(
        SidecarSpec(
            name="checker",
            image=image,
            command=["python3", "-m", "scanflow_core.checking.service", "--detector", path],
            ports={CHECKER_PORT: None},
            healthcheck=_HEALTH.format(port=CHECKER_PORT),
            inject_env={"SCANFLOW_CHECKER_URL": f"http://checker:{CHECKER_PORT}"},
        )
    )


def _sidecar_container(sidecar: Sidecar, builtin_checker: bool) -> dict[str, Any]:
    container = _pod_sidecar(sidecar)
    if builtin_checker:  # runs python3 itself, whatever the image's entry point
        container["command"] = [*container.pop("args"), "--port", str(CHECKER_PORT)]
        container["volumeMounts"] = [{"name": HOME_VOLUME, "mountPath": HOME_MOUNT, "readOnly": True}]
    elif sidecar.data_dir:  # the tracker's store, on the shared claim
        container["volumeMounts"] = [
            {"name": HOME_VOLUME, "mountPath": sidecar.data_dir, "subPath": TRACKER_SUBPATH}
        ]
        if sidecar.name == "tracker":  # one step's client: one worker starts in a fraction of the time
            container["args"].append("--workers=1")
    return container


def _container_of(deployment: Deployment, step: str) -> StepContainer:
    import difflib

    try:
        return deployment.container(step)
    except KeyError:
        names = [c.step for c in deployment.steps]
        close = difflib.get_close_matches(step, names, n=1)
        hint = f"one of: {', '.join(names)}" + (f"; did you mean {close[0]!r}?" if close else "")
        raise SpecError.single(
            deployment.workflow.file, f"step {step}", f"no step named {step!r}", hint
        ) from None


def step_pod(
    workflow: Workflow | str | Path,
    step: str,
    *,
    run_id_template: str,
    image: str | None = None,
    namespace: str | None = None,
    params: Mapping[str, Any] | Sequence[str] | None = None,
    attempt: int | str | None = None,
    name: str | None = None,
    container_name: str = "step",
    tracker_uri: str | None = None,
    checker_detector: str | None = None,
    claim: str | None = None,
    work_volume: Mapping[str, Any] | None = None,
    image_prefix: str = "",
    orchestrator: str = "kubernetes",
    skipped_exit_code: int | None = None,
    pm: Any = None,
) -> dict[str, Any]:
    """A v1 Pod that runs exactly one step of a run, with the tracker and checker sidecars.

    Args:
        workflow: a loaded workflow, or the path of its ``scanflow.yaml``.
        step: the step's qualified name (``train``, ``prep.clean``).
        run_id_template: the run id the step pods share, or a template the host fills in (see
            :func:`step_command`).
        image: the image of a step that names none (default ``$SCANFLOW_POD_IMAGE``, else
            :data:`DEFAULT_POD_IMAGE`); also the built-in checker's.
        namespace: the pod's namespace (default: the context's).
        params: overrides: applied to the spec here and passed to the step.
        attempt: which attempt this pod is (a number, or a template).
        name: the pod's name (default ``<workflow>-<step>[-<run id>]``).
        container_name: the main container's name.
        tracker_uri: track to this server instead of a tracker sidecar.
        checker_detector: a drift detector folder (``DriftDetector.save``) on the claim (relative to
            it) or in the image (absolute), served by a ``checker`` sidecar at ``$SCANFLOW_CHECKER_URL``.
        claim: the shared ``ReadWriteMany`` claim (default ``<workflow>-scanflow-home``).
        work_volume: a volume source for ``/scanflow/work`` (``{"persistentVolumeClaim": {...}}``);
            default: the ConfigMap of :func:`shared_objects`.
        image_prefix: put before the images Scanflow builds (``build`` steps).
        orchestrator: recorded as the run's orchestrator.
        skipped_exit_code: the main container's exit code when the step is skipped (default 0).
        pm: the plugin manager asked for sidecars (default: a fresh one).

    Returns:
        The Pod as a dict (``yaml.safe_dump`` it, or hand it to a client).

    Raises:
        SpecError: the spec is not valid, has no step ``step``, or the step cannot run in a pod (it
            only names an image, or reads a workflow input file the ConfigMap does not carry).
        ValueError: a bad argument (named).

    Examples:
        >>> pod = step_pod("examples/digits/scanflow.yaml", "train", run_id_template="r1")  # doctest: +SKIP
        >>> pod["spec"]["containers"][0]["command"][3:6]  # doctest: +SKIP
        ['step', '/scanflow/work/scanflow.yaml', 'train']
    """
    from scanflow_core.deploy.common import plan_deployment
    from scanflow_core.spec import parse_overrides

    _check_arguments(run_id_template, attempt, container_name, name, claim, work_volume, skipped_exit_code)
    _check_namespace(namespace)
    overrides = parse_overrides(params)
    flow = _load(workflow, overrides)
    templated = _is_template(run_id_template)
    default_image = image or os.environ.get(POD_IMAGE_ENV) or DEFAULT_POD_IMAGE
    deployment = plan_deployment(
        flow,
        run_id=flow.name if templated else run_id_template,
        image_prefix=image_prefix,
        default_image=default_image,
        inputs_root=WORK_MOUNT,
        pm=pm,
    )
    container = _container_of(deployment, step)
    _check_step(flow, container, work_volume)
    sidecars = [s for s in deployment.sidecars if not (tracker_uri and s.name == "tracker")]
    if checker_detector is not None:
        if any(s.name == "checker" for s in sidecars):
            raise ValueError("checker_detector: a plugin already adds a sidecar named 'checker'")
        sidecars.append(_checker(checker_detector, default_image))
    inject: dict[str, str] = {}
    if flow.tracker.enabled and flow.tracker.uri not in (None, "sidecar"):
        inject["MLFLOW_TRACKING_URI"] = flow.tracker.uri  # a server of the spec's own
    for sidecar in sidecars:
        inject.update(sidecar.spec.inject_env)
    if tracker_uri:
        inject["MLFLOW_TRACKING_URI"] = tracker_uri
    in_pod_tracker = any(s.name == "tracker" for s in sidecars)

    spec_env = flow.plan[container.step].spec.env
    env = {"SCANFLOW_HOME": HOME_MOUNT, IMAGE_ENV: container.image}
    env.update({k: v for k, v in inject.items() if k not in spec_env})
    env.update(spec_env)
    command = step_command(
        f"{WORK_MOUNT}/{Path(flow.file).name}",
        container.step,
        run_id_template=run_id_template,
        params=overrides,
        attempt=attempt,
        tracker_uri=tracker_uri or (inject.get("MLFLOW_TRACKING_URI") if in_pod_tracker else None),
        orchestrator=orchestrator,
        skipped_exit_code=skipped_exit_code,
    )
    main: dict[str, Any] = {
        "name": container_name,
        "image": container.image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "workingDir": WORK_MOUNT,
        "env": [{"name": k, "value": _escape(v)} for k, v in env.items()],
        "volumeMounts": [
            {"name": HOME_VOLUME, "mountPath": HOME_MOUNT},
            {"name": WORK_VOLUME, "mountPath": WORK_MOUNT, "readOnly": True},
        ],
    }
    resources = _resources(container)
    if resources:
        main["resources"] = resources
    if container.port is not None:
        main["ports"] = [{"name": "http", "containerPort": container.port}]
        main["readinessProbe"] = {"tcpSocket": {"port": container.port}, "periodSeconds": 5}

    pod_spec: dict[str, Any] = {"restartPolicy": "Never"}
    if sidecars:
        pod_spec["initContainers"] = [
            _sidecar_container(s, builtin_checker=checker_detector is not None and s.name == "checker")
            for s in sidecars
        ]
    pod_spec["containers"] = [main]
    work = dict(work_volume) if work_volume is not None else _config_volume(flow)
    pod_spec["volumes"] = [
        {"name": HOME_VOLUME, "persistentVolumeClaim": {"claimName": claim or claim_name(flow)}},
        {"name": WORK_VOLUME, **work},
    ]
    if sidecars:
        pod_spec["hostAliases"] = [{"ip": "127.0.0.1", "hostnames": [s.name for s in sidecars]}]
    labels = deployment.labels(container)
    if templated:
        del labels["scanflow.io/run"]  # filled in later: no label value yet
    suffix = "" if templated else f"-{run_id_template}"
    metadata: dict[str, Any] = {"name": name or dns_name(f"{deployment.name}-{container.name}{suffix}")}
    if namespace:
        metadata["namespace"] = namespace
    metadata["labels"] = labels
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}


def pod_template_spec(
    workflow: Workflow | str | Path,
    step: str,
    *,
    run_id_template: str,
    primary_container_name: str = "primary",
    **options: Any,
) -> dict[str, Any]:
    """The pod of :func:`step_pod` as a pod template: ``{"metadata": {"labels"}, "spec": {...}}``,
    its main container named ``primary_container_name`` (Flyte's ``PodTemplate`` shape).

    Args:
        workflow: a loaded workflow, or the path of its ``scanflow.yaml``.
        step: the step's qualified name.
        run_id_template: as for :func:`step_pod`.
        primary_container_name: the main container's name.
        **options: the other keyword arguments of :func:`step_pod` (not ``name``, ``namespace``).

    Returns:
        The template; its ``metadata`` holds the labels only.
    """
    for key in ("name", "namespace", "container_name"):
        if key in options:
            raise TypeError(f"pod_template_spec() takes no {key!r}: a template has no name of its own")
    pod = step_pod(
        workflow, step, run_id_template=run_id_template, container_name=primary_container_name, **options
    )
    return {"metadata": {"labels": pod["metadata"]["labels"]}, "spec": pod["spec"]}


def _check_step(flow: Workflow, container: StepContainer, work_volume: Mapping[str, Any] | None) -> None:
    spec = flow.plan[container.step].spec
    where = f"steps.{container.step}"
    if spec.kind == "container" and spec.command is None and spec.call is None:
        raise SpecError.single(
            flow.file,
            where,
            "a step pod runs the step through 'scanflow step', which cannot start an image's own entry point",
            "a 'command' to run inside the image",
        )
    if container.input_files and work_volume is None:
        files = ", ".join(f"{i.name} ({i.source})" for i in container.input_files)
        raise SpecError.single(
            flow.file,
            f"{where}.inputs",
            f"the step reads workflow input files ({files}); the spec's ConfigMap carries only the spec"
            " and its Python modules",
            "work_volume=: a volume holding the spec's folder with its input files",
        )


def _check_arguments(
    run_id: str,
    attempt: int | str | None,
    container_name: str,
    name: str | None,
    claim: str | None,
    work_volume: Mapping[str, Any] | None,
    skipped_exit_code: int | None,
) -> None:
    if not isinstance(run_id, str) or not run_id.strip():
        raise ValueError(f"run_id_template must be a run id or a template of one, not {run_id!r}")
    if not _is_template(run_id) and not _RUN_ID.match(run_id):
        raise ValueError(
            f"run_id_template {run_id!r}: a run id is letters, digits, '.', '_' and '-' (or a template)"
        )
    if attempt is not None and not (
        (isinstance(attempt, int) and not isinstance(attempt, bool) and attempt >= 1)
        or (isinstance(attempt, str) and _is_template(attempt))
    ):
        raise ValueError(f"attempt must be a number from 1 or a template, not {attempt!r}")
    for what, value in (("container_name", container_name), ("name", name), ("claim", claim)):
        if value is not None and (not isinstance(value, str) or dns_name(value) != value):
            raise ValueError(f"{what} must be a DNS-1123 label (lower case, digits, '-'), not {value!r}")
    if work_volume is not None and not isinstance(work_volume, Mapping):
        raise ValueError(
            f"work_volume must be a volume source like {{'persistentVolumeClaim': ...}}, not {work_volume!r}"
        )
    if skipped_exit_code is not None and (
        isinstance(skipped_exit_code, bool)
        or not isinstance(skipped_exit_code, int)
        or not 0 <= skipped_exit_code <= 255
    ):
        raise ValueError(f"skipped_exit_code must be an exit code 0-255, not {skipped_exit_code!r}")
