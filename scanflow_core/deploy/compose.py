"""Export a workflow as a docker-compose file (the Compose Specification; no ``version`` key, which
``docker compose`` v2 calls obsolete and ``docker-compose`` 1.27+ does not need).

Mapping:

* one service per step, named after it (``prep.ingest`` → ``prep-ingest``), in the step's image, with its
  command wrapped in ``sh -c`` (:meth:`StepContainer.script`: output folder, ``timeout``, ``retries``,
  the ``.done`` marker) under ``init: true`` (signals reach the step), its environment,
  ``cpus``/``mem_limit`` and, for ``gpu``, an NVIDIA device reservation;
* a batch step has ``restart: "no"`` and waits for each upstream step with
  ``depends_on: {STEP: {condition: service_completed_successfully}}``; a serving step
  (:data:`~scanflow_core.deploy.common.SERVING_STAGES`) restarts ``unless-stopped`` and publishes its port
  (the step's ``params.port``, default 8080);
* every step mounts the named volume ``run`` at ``/scanflow/run``, its spec folder at ``/scanflow/work``
  and ``scanflow_core`` at ``/scanflow/lib/scanflow_core`` (read-only binds of this machine's paths);
* sidecars (the MLflow ``tracker`` when the spec tracks and names no server, and whatever plugins return
  from ``scanflow_sidecars``) are services that the steps depend on (``service_healthy`` when they have a
  health check); the tracker keeps its store in the volume ``tracker``.

``$`` is written ``$$`` everywhere, so that Compose does not interpolate the steps' own text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scanflow_core.deploy.common import (
    LIB_MOUNT,
    RUN_MOUNT,
    WORK_MOUNT,
    Deployment,
    Sidecar,
    StepContainer,
    docker_memory,
)

__all__ = ["FILE_NAME", "compose_document", "core_source", "escape_dollars"]

FILE_NAME = "docker-compose.yml"
RUN_VOLUME = "run"


def core_source() -> Path:
    """The ``scanflow_core`` folder on this machine (mounted into every step's container)."""
    return Path(__file__).resolve().parents[1]


def escape_dollars(value: Any) -> Any:
    """Every ``$`` in the strings of ``value`` doubled (Compose's escape)."""
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, list):
        return [escape_dollars(v) for v in value]
    if isinstance(value, dict):
        return {k: escape_dollars(v) for k, v in value.items()}
    return value


def step_volumes(container: StepContainer) -> list[dict[str, Any]]:
    """The run volume, the spec folder, ``scanflow_core`` and the step's input files."""
    volumes: list[dict[str, Any]] = [
        {"type": "volume", "source": RUN_VOLUME, "target": RUN_MOUNT},
        {"type": "bind", "source": str(container.directory), "target": WORK_MOUNT, "read_only": True},
        {
            "type": "bind",
            "source": str(core_source()),
            "target": f"{LIB_MOUNT}/scanflow_core",
            "read_only": True,
        },
    ]
    for item in container.input_files:
        volumes.append({"type": "bind", "source": str(item.source), "target": item.target, "read_only": True})
    return volumes


def step_command(container: StepContainer, wait_for: list[str] | None = None) -> dict[str, Any]:
    """``entrypoint`` (the wrapper) and ``command`` (the step's own argv), escaped for Compose."""
    script = container.script(wait_for=wait_for or [])
    return {
        "entrypoint": escape_dollars(["sh", "-c", script, "scanflow-step"]),
        "command": escape_dollars(container.argv),
    }


def sidecar_service(sidecar: Sidecar, deployment: Deployment) -> dict[str, Any]:
    """A sidecar as a service: image, command, env, ports, health check, its data volume."""
    spec = sidecar.spec
    service: dict[str, Any] = {"image": spec.image, "labels": deployment.labels()}
    if spec.command:
        service["command"] = escape_dollars(list(spec.command))
    if spec.env:
        service["environment"] = escape_dollars(dict(spec.env))
    if spec.ports:
        service["ports"] = [
            f"{host}:{port}" if host is not None else str(port) for port, host in spec.ports.items()
        ]
    if spec.healthcheck:
        service["healthcheck"] = {
            "test": ["CMD-SHELL", escape_dollars(spec.healthcheck)],
            "interval": "5s",
            "timeout": "5s",
            "retries": 30,
            "start_period": "10s",
        }
    if sidecar.data_dir:
        service["volumes"] = [{"type": "volume", "source": sidecar.name, "target": sidecar.data_dir}]
    service["restart"] = "unless-stopped"
    return service


def _resources(container: StepContainer, service: dict[str, Any]) -> None:
    if container.cpu is not None:
        service["cpus"] = container.cpu
    if container.memory is not None:
        service["mem_limit"] = docker_memory(container.memory)
    if container.gpu:
        device = {"driver": "nvidia", "count": container.gpu, "capabilities": ["gpu"]}
        service["deploy"] = {"resources": {"reservations": {"devices": [device]}}}


def compose_document(deployment: Deployment) -> dict[str, Any]:
    """The whole compose file as a mapping (dump it with :func:`yaml.safe_dump`)."""
    services: dict[str, Any] = {}
    volumes: dict[str, Any] = {RUN_VOLUME: {"labels": deployment.labels()}}
    for sidecar in deployment.sidecars:
        services[sidecar.name] = sidecar_service(sidecar, deployment)
        if sidecar.data_dir:
            volumes[sidecar.name] = {"labels": deployment.labels()}
    by_step = {c.step: c for c in deployment.steps}
    for container in deployment.steps:
        service: dict[str, Any] = {
            "image": container.image,
            **step_command(container),
            "init": True,
            "working_dir": WORK_MOUNT,
            "environment": escape_dollars(container.env),
            "volumes": step_volumes(container),
            "labels": deployment.labels(container),
            "restart": "unless-stopped" if container.serving else "no",
        }
        depends: dict[str, Any] = {}
        for sidecar in deployment.sidecars:
            condition = "service_healthy" if sidecar.spec.healthcheck else "service_started"
            depends[sidecar.name] = {"condition": condition}
        for need in container.needs:
            upstream = by_step[need]
            condition = "service_started" if upstream.serving else "service_completed_successfully"
            depends[upstream.name] = {"condition": condition}
        if depends:
            service["depends_on"] = depends
        if container.port is not None:
            service["ports"] = [f"{container.port}:{container.port}"]
        _resources(container, service)
        services[container.name] = service
    return {"services": services, "volumes": volumes}
