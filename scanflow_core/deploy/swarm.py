"""Export a workflow as a Docker Swarm stack file (compose file format 3.9, ``docker stack deploy -c``).

Swarm services run until removed, and a stack cannot order its services (``depends_on`` is ignored), so:

* a batch step is a job: ``deploy.mode: replicated-job`` (Docker 20.10+), which runs one task to
  completion; ``restart_policy: {condition: none}``, as the wrapper script does the step's ``retries``
  and its ``timeout``. It waits for each upstream step's marker ``/scanflow/run/steps/<step>/.done``
  on the run volume before it starts, and writes its own when it succeeds, so the stack runs the steps in
  the plan's order; a failed step leaves its dependants waiting (``docker stack rm`` stops them);
* a serving step is a ``replicated`` service (``--replicas``, default 1, restarted on any exit) that
  publishes its port through the routing mesh; it waits for its upstream markers too;
* resources go to ``deploy.resources``: ``limits`` (cpus, memory) and, for ``gpu``, a
  ``generic_resources`` reservation of ``NVIDIA-GPU`` (the node must advertise it);
* the run volume is the named volume ``run``, local to a node: on a swarm of several nodes give it a
  shared driver (NFS, …) or pin the stack to one node; the spec folder and ``scanflow_core`` are bind
  mounts of this machine's absolute paths, which must exist on the node that runs the task;
* sidecars are ``replicated`` services with one replica.
"""

from __future__ import annotations

from typing import Any

from scanflow_core.deploy.common import WORK_MOUNT, Deployment, StepContainer, docker_memory
from scanflow_core.deploy.compose import (
    RUN_VOLUME,
    escape_dollars,
    sidecar_service,
    step_command,
    step_volumes,
)

__all__ = ["FILE_NAME", "stack_document"]

FILE_NAME = "stack.yml"
STACK_VERSION = "3.9"


def _resources(container: StepContainer) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    if container.cpu is not None:
        limits["cpus"] = f"{container.cpu:g}"
    if container.memory is not None:
        limits["memory"] = docker_memory(container.memory)
    resources: dict[str, Any] = {}
    if limits:
        resources["limits"] = limits
    if container.gpu:
        gpu = {"discrete_resource_spec": {"kind": "NVIDIA-GPU", "value": container.gpu}}
        resources["reservations"] = {"generic_resources": [gpu]}
    return resources


def stack_document(deployment: Deployment, replicas: int = 1) -> dict[str, Any]:
    """The whole stack file as a mapping; ``replicas`` is the number of tasks of each serving step."""
    services: dict[str, Any] = {}
    volumes: dict[str, Any] = {RUN_VOLUME: {"labels": deployment.labels()}}
    for sidecar in deployment.sidecars:
        sidecar_def = sidecar_service(sidecar, deployment)
        sidecar_def.pop("restart", None)
        labels = sidecar_def.pop("labels")
        sidecar_def["deploy"] = {
            "mode": "replicated",
            "replicas": 1,
            "labels": labels,
            "restart_policy": {"condition": "any"},
        }
        services[sidecar.name] = sidecar_def
        if sidecar.data_dir:
            volumes[sidecar.name] = {"labels": deployment.labels()}
    by_step = {c.step: c for c in deployment.steps}
    for container in deployment.steps:
        wait_for = [by_step[need].done_file for need in container.needs if not by_step[need].serving]
        deploy: dict[str, Any] = {"labels": deployment.labels(container)}
        if container.serving:
            deploy.update(mode="replicated", replicas=replicas, restart_policy={"condition": "any"})
        else:
            deploy.update(mode="replicated-job", restart_policy={"condition": "none"})
        resources = _resources(container)
        if resources:
            deploy["resources"] = resources
        service: dict[str, Any] = {
            "image": container.image,
            **step_command(container, wait_for),
            "init": True,
            "working_dir": WORK_MOUNT,
            "environment": escape_dollars(container.env),
            "volumes": step_volumes(container),
            "labels": deployment.labels(container),
            "deploy": deploy,
        }
        if container.port is not None:
            service["ports"] = [{"target": container.port, "published": container.port, "protocol": "tcp"}]
        services[container.name] = service
    return {"version": STACK_VERSION, "services": services, "volumes": volumes}
