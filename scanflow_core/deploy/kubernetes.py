"""Export a workflow as Kubernetes manifests (one multi-document YAML file, ``kubectl apply -f``).

Mapping:

* a batch step is a ``batch/v1`` **Job** (``restartPolicy: Never``; ``backoffLimit`` = the step's
  ``retries``); a serving step (:data:`~scanflow_core.deploy.common.SERVING_STAGES`) is an ``apps/v1``
  **Deployment** (``--replicas``) with a **Service** on its port (``params.port``, default 8080) and a TCP
  readiness probe;
* Jobs cannot depend on Jobs: each step with upstream steps gets an init container ``wait-upstream`` that
  waits until every upstream step has written its marker ``/scanflow/run/steps/<step>/.done`` on the
  run volume (and until the workflow input files it reads are there); the step's wrapper script writes
  its own marker when it succeeds. All the manifests are applied at once; the Jobs then run in the
  plan's order. A failed step leaves its dependants waiting: delete them with
  ``kubectl delete job -l scanflow.io/run=RUN``;
* a step's ``timeout`` is enforced per attempt by ``timeout(1)`` in the wrapper; a Job with no upstream
  step (it starts at once) also gets ``activeDeadlineSeconds`` = timeout * attempts (a deadline on a
  waiting Job would count its waiting);
* ``resources``: ``requests`` and ``limits`` of ``cpu`` and ``memory`` (the spec's size as a quantity),
  and ``nvidia.com/gpu`` limits for ``gpu``;
* volumes: the run volume is a ``PersistentVolumeClaim`` ``<workflow>-run`` (``ReadWriteMany``, as Jobs
  on different nodes share it) at ``/scanflow/run``; a **ConfigMap** ``<workflow>-spec`` carries the spec
  and the Python modules of its folder and ``python_path`` folders, mounted at ``/scanflow/work``.
  ``scanflow_core`` and anything else the steps import must be in the image. Workflow input files are
  read from ``/scanflow/run/inputs/<input>``: copy them onto the volume;
* sidecars: the MLflow ``tracker`` keeps state every step writes to, so it is one Deployment + Service
  named ``tracker`` (with its own claim); every other sidecar a plugin asks for is an extra container in
  each step's pod, a native sidecar (an init container with ``restartPolicy: Always``, Kubernetes 1.29+,
  so a Job still completes), reached under its own name through ``hostAliases``;
* every object is labelled ``scanflow.io/run``, ``scanflow.io/workflow`` and, for a step,
  ``scanflow.io/step`` and ``scanflow.io/stage``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from scanflow_core.deploy.common import (
    RUN_MOUNT,
    WORK_MOUNT,
    Deployment,
    Sidecar,
    StepContainer,
    dns_name,
    k8s_quantity,
    wait_lines,
)

__all__ = ["FILE_NAME", "INPUTS_ROOT", "KUBERNETES_VERSION", "manifests"]

FILE_NAME = "manifests.yaml"
#: Workflow input files live on the run volume (a pod cannot bind-mount this machine's files).
INPUTS_ROOT = f"{RUN_MOUNT}/inputs"
#: The Kubernetes version the manifests are written for and validated against (native sidecars: 1.29+).
KUBERNETES_VERSION = "1.30"
#: Most of a ConfigMap's 1 MiB for the spec folder's files; larger folders belong in the image.
CONFIGMAP_BUDGET = 900 * 1024
DEFAULT_STORAGE = "1Gi"


def _escape(text: str) -> str:
    """Kubernetes expands ``$(VAR)`` in command, args and env values; ``$$(`` keeps it literal."""
    return text.replace("$(", "$$(")


def _env(env: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": _escape(v)} for k, v in env.items()]


def _meta(name: str, labels: dict[str, str], namespace: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": labels}
    if namespace:
        meta["namespace"] = namespace
    return meta


def _resources(container: StepContainer) -> dict[str, Any]:
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    if container.cpu is not None:
        requests["cpu"] = limits["cpu"] = f"{container.cpu:g}"
    if container.memory is not None:
        requests["memory"] = limits["memory"] = k8s_quantity(container.memory)
    if container.gpu:
        limits["nvidia.com/gpu"] = container.gpu
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def spec_files(deployment: Deployment) -> dict[str, str]:
    """The files the ConfigMap carries, by path under ``/scanflow/work``: the spec, then the ``.py``
    files directly in its folder and in each ``python_path`` folder, while they fit the budget."""
    workflow = deployment.workflow
    spec_path = Path(workflow.file)
    files: dict[str, str] = {}
    if spec_path.is_file():
        files[spec_path.name] = spec_path.read_text(encoding="utf-8")
    root = spec_path.parent
    size = sum(len(v.encode()) for v in files.values())
    for folder in dict.fromkeys([".", *workflow.python_path]):
        base = (root / folder).resolve()
        if not base.is_dir() or not base.is_relative_to(root.resolve()):
            continue
        for module in sorted(base.glob("*.py")):
            rel = module.resolve().relative_to(root.resolve()).as_posix()
            try:
                text = module.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            if rel in files or size + len(text.encode()) > CONFIGMAP_BUDGET:
                continue
            files[rel] = text
            size += len(text.encode())
    return files


def _config_key(path: str) -> str:
    return path.replace("/", "__")


def _pod_sidecar(sidecar: Sidecar) -> dict[str, Any]:
    """A per-pod sidecar: a native sidecar container (an init container that keeps running)."""
    spec = sidecar.spec
    container: dict[str, Any] = {
        "name": dns_name(spec.name),
        "image": spec.image,
        "restartPolicy": "Always",
    }
    if spec.command:
        container["args"] = [_escape(a) for a in spec.command]
    if spec.env:
        container["env"] = _env(dict(spec.env))
    if spec.ports:
        container["ports"] = [{"containerPort": port} for port in spec.ports]
    if spec.healthcheck:
        container["startupProbe"] = {
            "exec": {"command": ["sh", "-c", spec.healthcheck]},
            "periodSeconds": 5,
            "failureThreshold": 60,
        }
    return container


def _shared_sidecar(
    sidecar: Sidecar, deployment: Deployment, namespace: str | None, storage: str
) -> list[dict[str, Any]]:
    """A shared sidecar (the tracker): its claim, a one-replica Deployment and a Service of its name."""
    spec = sidecar.spec
    name = dns_name(spec.name)
    labels = {**deployment.labels(), "scanflow.io/sidecar": name}
    container: dict[str, Any] = {"name": name, "image": spec.image}
    if spec.command:
        container["args"] = [_escape(a) for a in spec.command]
    if spec.env:
        container["env"] = _env(dict(spec.env))
    container["ports"] = [{"containerPort": port} for port in spec.ports]
    if spec.healthcheck:
        container["readinessProbe"] = {
            "exec": {"command": ["sh", "-c", spec.healthcheck]},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
        }
    pod: dict[str, Any] = {"containers": [container]}
    out: list[dict[str, Any]] = []
    if sidecar.data_dir:
        claim = dns_name(f"{deployment.name}-{name}")
        out.append(_claim(claim, labels, namespace, "ReadWriteOnce", storage))
        container["volumeMounts"] = [{"name": "data", "mountPath": sidecar.data_dir}]
        pod["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]
    out.append(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta(name, labels, namespace),
            "spec": {
                "replicas": 1,
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": pod},
            },
        }
    )
    if spec.ports:
        out.append(_service(name, labels, namespace, list(spec.ports)))
    return out


def _claim(name: str, labels: dict[str, str], namespace: str | None, mode: str, size: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(name, labels, namespace),
        "spec": {"accessModes": [mode], "resources": {"requests": {"storage": size}}},
    }


def _service(name: str, selector: dict[str, str], namespace: str | None, ports: list[int]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, selector, namespace),
        "spec": {
            "selector": selector,
            "ports": [{"name": f"port-{p}", "port": p, "targetPort": p, "protocol": "TCP"} for p in ports],
        },
    }


def _pod(
    container: StepContainer, deployment: Deployment, config: dict[str, Any], wait_for: list[str]
) -> dict[str, Any]:
    step: dict[str, Any] = {
        "name": "step",
        "image": container.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", _escape(container.script(retries=False)), "scanflow-step"],
        "args": [_escape(a) for a in container.argv],
        "workingDir": WORK_MOUNT,
        "env": _env(container.env),
        "volumeMounts": [
            {"name": "run", "mountPath": RUN_MOUNT},
            {"name": "work", "mountPath": WORK_MOUNT, "readOnly": True},
        ],
    }
    resources = _resources(container)
    if resources:
        step["resources"] = resources
    if container.port is not None:
        step["ports"] = [{"name": "http", "containerPort": container.port}]
        step["readinessProbe"] = {"tcpSocket": {"port": container.port}, "periodSeconds": 5}
    init: list[dict[str, Any]] = []
    if wait_for:
        init.append(
            {
                "name": "wait-upstream",
                "image": container.image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "\n".join(wait_lines(wait_for)) + "\n"],
                "volumeMounts": [{"name": "run", "mountPath": RUN_MOUNT}],
            }
        )
    per_pod = [s for s in deployment.sidecars if not s.shared]
    init.extend(_pod_sidecar(s) for s in per_pod)
    pod: dict[str, Any] = {}
    if init:
        pod["initContainers"] = init
    pod["containers"] = [step]
    pod["volumes"] = [
        {"name": "run", "persistentVolumeClaim": {"claimName": f"{deployment.name}-run"}},
        {"name": "work", "configMap": config},
    ]
    if per_pod:
        pod["hostAliases"] = [{"ip": "127.0.0.1", "hostnames": [s.name for s in per_pod]}]
    return pod


def manifests(
    deployment: Deployment,
    *,
    namespace: str | None = None,
    replicas: int = 1,
    storage: str = DEFAULT_STORAGE,
) -> list[dict[str, Any]]:
    """Every object, in the order ``kubectl apply`` should create them.

    Args:
        deployment: the planned deployment (made with ``inputs_root=INPUTS_ROOT``).
        namespace: put every object in this namespace (and create it); default: the context's.
        replicas: the number of pods of each serving step.
        storage: the size of the run volume's claim (and of the tracker's).
    """
    labels = deployment.labels()
    docs: list[dict[str, Any]] = []
    if namespace:
        docs.append(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels}}
        )
    files = spec_files(deployment)
    config_name = dns_name(f"{deployment.name}-spec")
    docs.append(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _meta(config_name, labels, namespace),
            "data": {_config_key(path): text for path, text in files.items()},
        }
    )
    config = {"name": config_name, "items": [{"key": _config_key(p), "path": p} for p in files]}
    docs.append(_claim(f"{deployment.name}-run", labels, namespace, "ReadWriteMany", storage))
    for sidecar in deployment.sidecars:
        if sidecar.shared:
            docs.extend(_shared_sidecar(sidecar, deployment, namespace, storage))
    by_step = {c.step: c for c in deployment.steps}
    for container in deployment.steps:
        name = dns_name(f"{deployment.name}-{container.name}")
        step_labels = deployment.labels(container)
        wait_for = [by_step[n].done_file for n in container.needs if not by_step[n].serving]
        wait_for += [item.target for item in container.input_files]
        template = {
            "metadata": {"labels": step_labels},
            "spec": _pod(container, deployment, config, wait_for),
        }
        if container.serving:
            docs.append(
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": _meta(name, step_labels, namespace),
                    "spec": {
                        "replicas": replicas,
                        "selector": {"matchLabels": step_labels},
                        "template": template,
                    },
                }
            )
            docs.append(_service(name, step_labels, namespace, [container.port or 0]))
            continue
        template["spec"]["restartPolicy"] = "Never"
        job: dict[str, Any] = {"backoffLimit": container.retries}
        if container.timeout is not None and not wait_for:
            job["activeDeadlineSeconds"] = math.ceil(container.timeout) * (container.retries + 1)
        job["template"] = template
        docs.append(
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": _meta(name, step_labels, namespace),
                "spec": job,
            }
        )
    return docs
