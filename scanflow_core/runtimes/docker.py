"""The Docker runtime: a container step runs in its image, through the Docker SDK, on its run's network.

It answers for container steps (``image`` or ``build``) and for every ``runtime: docker`` step (a
``command`` or ``call`` without an image runs in the base image, ``$SCANFLOW_BASE_IMAGE``). With
``runtime: auto`` a container step uses Docker when an engine answers; otherwise a step that also has a
``command`` or ``call`` runs as a local process, and says so in its log, its ``scanflow.runtime`` tag and
``ExecutionResult.runtime``. ``scripts/docker-engine.sh`` starts an engine.

Inside the container (the step's placeholders and ``SCANFLOW_*`` variables carry these paths)::

    /scanflow/inputs/<name>        each input, read-only (a file keeps its extension: <name>.csv)
    /scanflow/outputs              the step's output folder, read-write
    /scanflow/record.jsonl         SCANFLOW_RECORD_FILE: metrics the step logs, read back after it
    /scanflow/work                 the spec's folder, read-only: the working directory
    /scanflow/run                  the run folder, read-only (upstream records)
    /scanflow/lib/scanflow_core    this package, read-only, on PYTHONPATH: a ``call`` runs with
                                   ``python3 -m scanflow_core.exec`` and only needs the standard library

The container runs as the caller's uid:gid, so what it writes is the caller's; ``resources`` become
CPU and memory limits and GPU device requests; ``timeout`` and an interrupt (``run.cancelled``) kill
it; its output streams into the step log while it runs.

Each run gets a network of its own (``scanflow-<run id>``; sidecars from ``scanflow_sidecars`` join
it), and its steps share one network namespace on it, like the containers of a pod (two steps
running at once cannot both listen on the same port). Every container, network and volume is
labelled ``scanflow=1`` and ``scanflow.run_id=<id>``: a step's container is removed after it (in the
background, while its outputs are digested: :func:`wait_removed`), the rest when the run finishes or
fails (:func:`cleanup`); a sidecar's data volume (the MLflow tracker's, :mod:`.sidecars`) is labelled
``scanflow.data=<sidecar>`` instead and kept. The engine side lives in
:mod:`scanflow_core.runtimes.docker_engine`, image builds in :mod:`scanflow_core.runtimes.docker_images`.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from scanflow_core.errors import StepFailed
from scanflow_core.plugins import hookimpl
from scanflow_core.records import ExecutionResult
from scanflow_core.runs import StepRun, WorkflowRun
from scanflow_core.runtimes.docker_engine import (
    ENGINE_SCRIPT,
    LABEL,
    RUN_LABEL,
    RunState,
    cleanup,
    close_run,
    engine_available,
    engine_client,
    labels,
    no_engine,
    release_runs,
    remove_soon,
    run_network,
    run_state,
    wait_removed,
    where,
)
from scanflow_core.runtimes.docker_images import base_image, build_image, ensure_image
from scanflow_core.runtimes.local import command_argv, log_tail, run_local, step_environment
from scanflow_core.spec import Resources

__all__ = [
    "ENGINE_SCRIPT",
    "LABEL",
    "RUN_LABEL",
    "cleanup",
    "device_requests",
    "engine_available",
    "limits",
    "memory_bytes",
    "release_runs",
    "run_container",
    "wait_removed",
]

STEP_LABEL = "scanflow.step"
#: ``uid:gid`` to run as; empty: the image's user. Default: the caller's uid:gid.
USER_ENV = "SCANFLOW_DOCKER_USER"

ROOT = "/scanflow"
INPUTS, OUTPUTS, WORK, RUN_DIR = f"{ROOT}/inputs", f"{ROOT}/outputs", f"{ROOT}/work", f"{ROOT}/run"
RECORD, LIB = f"{ROOT}/record.jsonl", f"{ROOT}/lib"
CORE_DIR = Path(__file__).resolve().parents[1]
_POLL_S = 0.1

# ------------------------------------------------------------------------------------------ the hooks


@hookimpl(tryfirst=True)
def scanflow_execute_step(step_run: StepRun) -> ExecutionResult | None:
    spec = step_run.step.spec
    if spec.runtime == "docker" and spec.kind != "workflow":
        if not engine_available():
            raise no_engine(step_run, "it has runtime: docker")
        return run_container(step_run)
    if spec.kind != "container" or spec.runtime != "auto":
        return None
    if engine_available():
        return run_container(step_run)
    image = spec.image or "a built image"
    if spec.command is None and spec.call is None:
        raise no_engine(step_run, f"it runs in {image}")
    with step_run.log_path.open("a", encoding="utf-8") as log:
        log.write(
            f"scanflow: no Docker engine answers at {where()}; running this step as a local process"
            f" (runtime: local) instead of in {image}\n"
        )
    step_run.recorder.set_tags({"scanflow.runtime": "local"})
    result = run_local(step_run)
    details = {**result.details, "fallback_from": "docker"}
    return ExecutionResult("local", result.exit_code, result.value, details, result.used_params)


@hookimpl
def scanflow_workflow_finish(run: WorkflowRun) -> None:
    close_run(run)


@hookimpl
def scanflow_workflow_error(run: WorkflowRun, error: BaseException) -> None:
    close_run(run)


# ------------------------------------------------------------------------------------------ resources


def memory_bytes(text: str) -> int:
    """``"512Mi"``/``"512m"`` → 512 MiB, ``"1G"`` → 10**9, ``"1Gi"``/``"1g"`` → 2**30, ``"100"`` → bytes.

    Kubernetes' rule for upper-case units (``M`` decimal, ``Mi`` binary); Docker's lower-case units
    (``m``, ``g``) are binary as in ``docker run --memory``.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGTkmgt]?)(i?)[Bb]?\s*", text)
    if match is None:
        raise ValueError(f"a memory size like 512Mi, 512m or 2G, not {text!r}")
    number, unit, binary = float(match.group(1)), match.group(2), match.group(3)
    if not unit:
        return int(number)
    base = 1024 if binary or unit.islower() else 1000
    return int(number * base ** ("KMGT".index(unit.upper()) + 1))


def device_requests(resources: Resources) -> list[Any]:
    """``gpu: N`` → one request for N GPUs (``docker run --gpus N``); none without GPUs."""
    if not resources.gpu:
        return []
    from docker.types import DeviceRequest

    return [DeviceRequest(count=resources.gpu, capabilities=[["gpu"]])]


def limits(resources: Resources) -> dict[str, Any]:
    """The host-config arguments for a step's ``resources`` (memory without swap on top)."""
    out: dict[str, Any] = {}
    if resources.cpu is not None:
        out["nano_cpus"] = int(resources.cpu * 1e9)
    if resources.memory is not None:
        out["mem_limit"] = out["memswap_limit"] = memory_bytes(resources.memory)
    requests = device_requests(resources)
    if requests:
        out["device_requests"] = requests
    return out


# ------------------------------------------------------------------------------------------ mounts


class _Mounts:
    """The binds of one step and where a host path is seen inside the container."""

    def __init__(self, step_run: StepRun, record_file: Path) -> None:
        self.mounts: list[Any] = []
        self._map: list[tuple[Path, str]] = []
        step = step_run.step
        self._add(step.directory, WORK, read_only=True)
        self._add(step_run.run.directory, RUN_DIR, read_only=True)
        self._add(step_run.output_dir, OUTPUTS, read_only=False)
        self._add(record_file, RECORD, read_only=False)
        self._add(CORE_DIR, f"{LIB}/scanflow_core", read_only=True)
        for name, path in step_run.inputs.items():
            suffix = "".join(path.suffixes) if path.is_file() else ""
            self._add(path, f"{INPUTS}/{name}{suffix}", read_only=True)
        if step.spec.call is not None:
            for i, entry in enumerate(step.workflow.python_path):
                folder = _norm(step.directory / entry)
                if not folder.is_relative_to(_norm(step.directory)) and folder.is_dir():
                    self._add(folder, f"{ROOT}/python_path/{i}", read_only=True)

    def _add(self, host: Path, target: str, *, read_only: bool) -> None:
        from docker.types import Mount

        source = _norm(host)
        self.mounts.append(Mount(target, str(source), type="bind", read_only=read_only))
        self._map.append((source, target))

    def container_path(self, path: Path) -> str:
        """Where ``path`` is seen in the container (itself when no mount holds it)."""
        path = _norm(path)
        best: tuple[Path, str] | None = None
        for host, target in self._map:
            if path.is_relative_to(host) and (best is None or len(host.parts) > len(best[0].parts)):
                best = (host, target)
        if best is None:
            return str(path)
        rest = path.relative_to(best[0])
        return best[1] if rest == Path() else f"{best[1]}/{rest.as_posix()}"


def _norm(path: Path) -> Path:
    return Path(os.path.normpath(path.absolute()))


# ------------------------------------------------------------------------------------------ running


def run_container(step_run: StepRun) -> ExecutionResult:
    """Run the step in its container and return what ran; raise :class:`StepFailed` when it fails."""
    spec = step_run.step.spec
    run = step_run.run
    client = engine_client()
    state = run_state(run)
    built = False
    if spec.build is not None:
        image, built = build_image(client, step_run)
    else:
        image = spec.image or base_image(step_run)
    image_id, image_digest = _image_identity(client, step_run, state, image)
    _stop_if_cancelled(step_run, state)
    network, network_mode = run_network(client, run, state, image)

    record_file = step_run.directory / "record.jsonl"
    record_file.unlink(missing_ok=True)
    record_file.touch()  # a bind of a missing file would make a folder
    mounts = _Mounts(step_run, record_file)
    argv = None
    if spec.command is not None or spec.call is not None:
        argv = command_argv(step_run, mounts.container_path, python="python3")
    env = {**state.env, **step_environment(step_run, record_file, mounts.container_path)}
    env["PYTHONPATH"] = ":".join(p for p in (LIB, step_run.env.get("PYTHONPATH", "")) if p)
    user = _user()
    if user and not user.startswith("0:") and "HOME" not in step_run.env:
        env["HOME"] = "/tmp"  # the caller's uid has no home in the image

    host_config = client.api.create_host_config(
        mounts=mounts.mounts, network_mode=network_mode, **limits(spec.resources)
    )
    container_name = f"scanflow-{run.run_id}-{step_run.name}-{secrets.token_hex(3)}"
    created = client.api.create_container(
        image,
        command=argv,
        environment=env,
        working_dir=WORK,
        user=user or None,
        labels=labels(run.run_id, **{STEP_LABEL: step_run.name}),
        name=container_name,
        host_config=host_config,
    )
    container = created["Id"]
    step_run.recorder.set_tags({"scanflow.runtime": "docker"})
    try:
        _stop_if_cancelled(step_run, state)
        client.api.start(container)
        code, oom = _follow(client, step_run, container)
    except BaseException:
        step_run.recorder.replay(record_file)
        raise
    finally:
        remove_soon(client, state, container)
    step_run.recorder.replay(record_file)
    if code != 0:
        reason = _exit_reason(code, oom, spec.resources)
        raise StepFailed(step_run.name, run.run_id, reason, log_tail(step_run))
    details = {
        "image": image,
        "image_id": image_id,
        "image_digest": image_digest,
        "built": built,
        "container": container_name,
        "network": network,
        "argv": argv,
    }
    return ExecutionResult("docker", exit_code=code, details=details)


def _user() -> str:
    configured = os.environ.get(USER_ENV)
    if configured is not None:
        return configured
    return f"{os.getuid()}:{os.getgid()}"


def _image_identity(client: Any, step_run: StepRun, state: RunState, image: str) -> tuple[str, str]:
    """The image's id and the digest to attest: the registry digest when it came from one, else its id."""
    with state.lock:
        known = state.images.get(image)
    if known is not None:
        return known
    image_id = ensure_image(client, step_run, image)
    repo_digests = client.api.inspect_image(image_id).get("RepoDigests") or []
    digest = repo_digests[0].rpartition("@")[2] if repo_digests else image_id
    with state.lock:
        state.images[image] = (image_id, digest)
    return image_id, digest


def _stop_if_cancelled(step_run: StepRun, state: RunState) -> None:
    if step_run.run.cancelled.is_set() or state.closed:
        raise StepFailed(step_run.name, step_run.run.run_id, "interrupted", log_tail(step_run))


def _follow(client: Any, step_run: StepRun, container: str) -> tuple[int, bool]:
    """Stream the container's output into the step log until it exits; kill it on timeout or interrupt.

    Returns the exit code, and whether the kernel killed it for want of memory.
    """
    outcome: dict[str, Any] = {}
    exited = threading.Event()

    def stream_logs() -> None:
        with contextlib.suppress(Exception), step_run.log_path.open("ab") as log:
            for chunk in client.api.logs(container, stream=True, follow=True):
                log.write(chunk)
                log.flush()

    def wait() -> None:
        try:
            outcome["code"] = int(client.api.wait(container, timeout=None)["StatusCode"])
        except Exception as exc:
            outcome["error"] = exc
        finally:
            exited.set()

    logs = threading.Thread(target=stream_logs, name=f"logs-{step_run.name}", daemon=True)
    waiter = threading.Thread(target=wait, name=f"wait-{step_run.name}", daemon=True)
    logs.start()
    waiter.start()
    deadline = None if step_run.timeout is None else time.monotonic() + step_run.timeout
    reason = None
    while not exited.wait(_POLL_S):
        if step_run.run.cancelled.is_set():
            reason = "interrupted"
        elif deadline is not None and time.monotonic() >= deadline:
            reason = f"timed out after {step_run.timeout:g}s and was killed"
        if reason is not None:
            _kill(client, container)
            exited.wait(10)
            break
    logs.join(10)
    if reason is not None:
        raise StepFailed(step_run.name, step_run.run.run_id, reason, log_tail(step_run))
    if "error" in outcome:
        raise StepFailed(
            step_run.name,
            step_run.run.run_id,
            f"lost the container: {outcome['error']}",
            log_tail(step_run),
        )
    code: int = outcome["code"]
    oom = False
    if code != 0:
        with contextlib.suppress(Exception):
            oom = bool(client.api.inspect_container(container)["State"].get("OOMKilled"))
    return code, oom


def _kill(client: Any, container: str) -> None:
    with contextlib.suppress(Exception):
        client.api.kill(container)


def _exit_reason(code: int, oom: bool, resources: Resources) -> str:
    if oom:
        limit = f" (resources.memory: {resources.memory})" if resources.memory else ""
        return f"the container ran out of memory and was killed (OOM, exit code {code}){limit}"
    if code == 137:
        return "the container was killed (exit code 137: SIGKILL)"
    return f"the container exited with code {code}"
