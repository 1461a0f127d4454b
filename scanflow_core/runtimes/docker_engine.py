"""The Docker engine and what a run holds on it: the client, the run's network, its sidecars, cleanup.

Used by :mod:`scanflow_core.runtimes.docker`. Every container, network and volume made here is
labelled ``scanflow=1`` and ``scanflow.run_id=<id>``; :func:`cleanup` removes them by label.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from scanflow_core.errors import StepFailed
from scanflow_core.runs import StepRun, WorkflowRun

__all__ = [
    "ENGINE_SCRIPT",
    "LABEL",
    "NETWORK_ENV",
    "RUN_LABEL",
    "RunState",
    "cleanup",
    "close_run",
    "engine_available",
    "engine_client",
    "labels",
    "no_engine",
    "release_runs",
    "remove_soon",
    "run_network",
    "run_state",
    "wait_removed",
    "where",
]

LABEL = "scanflow"
RUN_LABEL = "scanflow.run_id"
ENGINE_SCRIPT = "scripts/docker-engine.sh"
#: ``host`` (say) runs steps on that network instead of the run's own (pip at run time needs it).
NETWORK_ENV = "SCANFLOW_DOCKER_NETWORK"
API_TIMEOUT_S = 120
PING_TIMEOUT_S = 3
#: A missing engine is looked for again after this long (one that answered is trusted for the process).
RETRY_ENGINE_S = 10.0

# ------------------------------------------------------------------------------------------ the engine

_engine_guard = threading.Lock()
_engines: dict[str, tuple[bool, float]] = {}  # DOCKER_HOST → (answers, when we asked)
_clients: dict[str, Any] = {}


def _engine_key() -> str:
    return os.environ.get("DOCKER_HOST", "")


def engine_available() -> bool:
    """Whether a Docker engine answers a ping (``$DOCKER_HOST``, else the default socket); cached."""
    key = _engine_key()
    with _engine_guard:
        known = _engines.get(key)
    if known is not None and (known[0] or time.monotonic() - known[1] < RETRY_ENGINE_S):
        return known[0]
    answers = False
    try:
        if not _reachable(where()):
            raise ConnectionError(where())
        import docker

        probe = docker.from_env(timeout=PING_TIMEOUT_S)  # asks the engine for its API version
        try:
            answers = bool(probe.ping())
        finally:
            probe.close()
    except Exception:  # no SDK, no socket, a refused or silent engine: all mean "no engine"
        answers = False
    with _engine_guard:
        _engines[key] = (answers, time.monotonic())
    return answers


def _reachable(url: str) -> bool:
    """Whether anything listens at the engine's address (a cheap look before the SDK, whose failed
    connections leave their sockets open)."""
    if url.startswith("unix://"):
        address: Any = url.removeprefix("unix://")
        family = socket.AF_UNIX
    elif url.startswith(("tcp://", "http://", "https://")):
        parsed = urllib.parse.urlsplit(url.replace("tcp://", "http://", 1))
        address, family = (parsed.hostname or "localhost", parsed.port or 2375), socket.AF_INET
    else:
        return True  # ssh:// and the like: the SDK knows how
    try:
        if family == socket.AF_UNIX:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(PING_TIMEOUT_S)
                probe.connect(address)
        else:
            socket.create_connection(address, timeout=PING_TIMEOUT_S).close()
    except OSError:
        return False
    return True


def engine_client() -> Any:
    key = _engine_key()
    with _engine_guard:
        client = _clients.get(key)
        if client is None:
            import docker

            client = _clients[key] = docker.from_env(timeout=API_TIMEOUT_S, max_pool_size=64)
        return client


def where() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def no_engine(step_run: StepRun, what: str) -> StepFailed:
    return StepFailed(
        step_run.name,
        step_run.run.run_id,
        f"{what}, and no Docker engine answers at {where()}: start one with {ENGINE_SCRIPT}"
        " (it installs and starts Debian's docker.io when missing) or point DOCKER_HOST at one",
    )


def close_run(run: WorkflowRun) -> None:
    """Remove what the run left on the engine (at its end, failed or not, and on an interrupt).

    An engine that stopped answering is no reason to fail the run's end: a warning names the run,
    and ``cleanup(run_id)`` can be called later.
    """
    state: RunState | None = run.state.get("docker")
    if state is None:
        # Containers of this run may have run in other processes (an orchestrator's tasks).
        if not _may_use_docker(run) or not engine_available():
            return
    else:
        with state.lock:
            state.closed = True
        wait_removed(run)
    with _state_guard:
        _open_runs.discard(run.run_id)
    try:
        cleanup(run.run_id)
    except Exception as exc:
        print(
            f"scanflow: could not remove the containers and network of run {run.run_id} ({exc});"
            f" call scanflow_core.runtimes.docker.cleanup({run.run_id!r}) once the engine answers",
            file=sys.stderr,
        )


def release_runs() -> None:
    """Remove what the runs this process used and did not finish left on the engine.

    A caller that runs steps with :func:`~scanflow_core.steps.run_step` but never ends the run
    (no ``scanflow_workflow_finish``) leaves the run's network behind; this runs at exit too.
    """
    with _state_guard:
        run_ids = sorted(_open_runs)
        _open_runs.clear()
    for run_id in run_ids:
        with contextlib.suppress(Exception):
            cleanup(run_id)


def _may_use_docker(run: WorkflowRun) -> bool:
    return any(s.spec.kind == "container" or s.spec.runtime == "docker" for s in run.plan.steps.values())


# ------------------------------------------------------------------------------------------ per run


@dataclass
class RunState:
    lock: threading.Lock = field(default_factory=threading.Lock)
    network: str | None = None
    mode: str | None = None  # the steps' network mode: container:<holder>, else the network
    env: dict[str, str] = field(default_factory=dict)  # what sidecars inject into every step
    published: dict[str, str] = field(default_factory=dict)  # sidecar → its host URL (127.0.0.1)
    images: dict[str, tuple[str, str]] = field(default_factory=dict)  # name → (id, digest)
    closed: bool = False
    removals: list[threading.Thread] = field(default_factory=list)  # containers being removed


_state_guard = threading.Lock()
_open_runs: set[str] = set()  # runs whose network this process made and that have not finished
atexit.register(release_runs)


def run_state(run: WorkflowRun) -> RunState:
    with _state_guard:
        state: RunState = run.state.setdefault("docker", RunState())
        return state


def labels(run_id: str, **more: str) -> dict[str, str]:
    return {LABEL: "1", RUN_LABEL: run_id, **more}


def run_network(client: Any, run: WorkflowRun, state: RunState, image: str) -> tuple[str, str]:
    """The run's network, and the network mode of its steps (``container:<holder>``).

    The first container step of the run in this process makes them: the network (409: another
    process of the run made it), its sidecars, and a holder, a sleeping container on the network
    whose network namespace every step joins, as the containers of a pod do. A step then starts
    without a network setup of its own (a user-defined network costs each container ~60 ms of DNS
    and veth setup), reaches the sidecars by name, and the steps of other runs not at all.
    """
    override = os.environ.get(NETWORK_ENV)
    if override:
        return override, override
    with state.lock:
        if state.network is not None and state.mode is not None:
            return state.network, state.mode
        import docker.errors

        name = f"scanflow-{run.run_id}"
        try:
            client.api.create_network(name, driver="bridge", labels=labels(run.run_id), check_duplicate=True)
        except docker.errors.APIError as exc:
            if exc.status_code != 409:
                raise
        state.network = name
        with _state_guard:
            _open_runs.add(run.run_id)
        _start_sidecars(client, run, state, name)
        state.mode = _holder(client, run, name, image)
        return name, state.mode


def _holder(client: Any, run: WorkflowRun, network: str, image: str) -> str:
    """Start the run's network holder (in ``image``); an image without ``sleep`` gets none: its steps
    then join the network themselves."""
    import docker.errors

    name = f"scanflow-{run.run_id}-net"
    try:
        created = client.api.create_container(
            image,
            entrypoint=["sleep"],
            command=["2147483647"],
            name=name,
            labels=labels(run.run_id, **{"scanflow.role": "network"}),
            host_config=client.api.create_host_config(network_mode=network),
        )
    except docker.errors.APIError as exc:
        if exc.status_code == 409:  # another process of this run started it
            return f"container:{name}"
        return network
    try:
        client.api.start(created["Id"])
    except docker.errors.APIError:
        _remove(client, created["Id"])
        return network
    return f"container:{name}"


def _start_sidecars(client: Any, run: WorkflowRun, state: RunState, network: str) -> None:
    """Start the plugins' sidecars on ``network`` (reachable by their names), wait until each is
    healthy, publish their ports to ``127.0.0.1`` (a free port unless the spec names one) and record
    the host URLs in ``state.published`` and ``<run>/sidecars.json``."""
    import docker.errors

    specs = [s for found in run.pm.hook.scanflow_sidecars(run=run) for s in found or ()]
    for sidecar in specs:
        binds: dict[str, dict[str, str]] = {}
        for target, volume in sidecar.volumes.items():
            _ensure_volume(client, volume, sidecar.name)
            binds[volume] = {"bind": target, "mode": "rw"}
        for target, host in sidecar.binds.items():
            binds[host] = {"bind": target, "mode": "ro"}
        host_config = client.api.create_host_config(
            network_mode=network,
            port_bindings={p: ("127.0.0.1", h) if h else ("127.0.0.1",) for p, h in sidecar.ports.items()}
            or None,
            binds=binds or None,
        )
        name = f"scanflow-{run.run_id}-{sidecar.name}"
        try:
            created = client.api.create_container(
                sidecar.image,
                command=sidecar.command or None,
                environment=sidecar.env,
                labels=labels(run.run_id, **{"scanflow.sidecar": sidecar.name}),
                name=name,
                ports=list(sidecar.ports) or None,
                host_config=host_config,
                networking_config=client.api.create_networking_config(
                    {network: client.api.create_endpoint_config(aliases=[sidecar.name])}
                ),
            )
            client.api.start(created["Id"])
            container = created["Id"]
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: another process of this run started it
                raise
            container = name
        if sidecar.healthcheck:
            _wait_healthy(client, container, sidecar.name, sidecar.healthcheck)
        if sidecar.ports:
            _record_published(client, run, state, sidecar.name, container)
        state.env.update(sidecar.inject_env)


def _ensure_volume(client: Any, volume: str, sidecar: str) -> None:
    """A sidecar's data volume: labelled ``scanflow.data=<sidecar>``, not with the run (it is kept)."""
    import docker.errors

    try:
        client.api.inspect_volume(volume)
    except docker.errors.NotFound:
        client.api.create_volume(volume, labels={"scanflow.data": sidecar})


def _record_published(client: Any, run: WorkflowRun, state: RunState, name: str, container: str) -> None:
    ports = client.api.inspect_container(container)["NetworkSettings"]["Ports"] or {}
    published = {}
    for key, bindings in ports.items():
        if bindings:
            binding = bindings[0]
            published[key] = f"http://{binding.get('HostIp') or '127.0.0.1'}:{binding['HostPort']}"
    if not published:
        return
    url = next(iter(published.values()))
    state.published[name] = url
    path = run.directory / "sidecars.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    data[name] = {"url": url, "ports": published}
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def _wait_healthy(client: Any, container: str, name: str, check: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probe = client.api.exec_create(container, ["sh", "-c", check])
        client.api.exec_start(probe["Id"])
        if client.api.exec_inspect(probe["Id"]).get("ExitCode") == 0:
            return
        time.sleep(0.5)
    raise RuntimeError(f"sidecar {name!r} was not healthy within {timeout:g}s ({check})")


def remove_soon(client: Any, state: RunState, container: str) -> None:
    """Remove a finished step's container while the step's outputs are digested and attested.

    The thread is not a daemon: the process does not exit before the container is gone.
    """
    remover = threading.Thread(target=_remove, args=(client, container), name="scanflow-docker-rm")
    remover.start()
    with state.lock:
        state.removals = [t for t in state.removals if t.is_alive()] + [remover]


def wait_removed(run: WorkflowRun, timeout: float = 30.0) -> None:
    """Wait until the containers of the run's finished steps (in this process) are removed."""
    state: RunState | None = run.state.get("docker")
    if state is None:
        return
    with state.lock:
        removals = list(state.removals)
    deadline = time.monotonic() + timeout
    for remover in removals:
        remover.join(max(0.0, deadline - time.monotonic()))


def _remove(client: Any, container: str) -> None:
    with contextlib.suppress(Exception):
        client.api.remove_container(container, v=True, force=True)


# ------------------------------------------------------------------------------------------ cleanup


def cleanup(run_id: str | None = None) -> dict[str, int]:
    """Remove the containers, networks and volumes Scanflow made: a run's, or all (``run_id=None``).

    Returns how many of each were removed. Built images stay (they are a cache, tagged by digest).
    """
    import docker.errors

    client = engine_client()
    labels = [f"{LABEL}=1"] + ([f"{RUN_LABEL}={run_id}"] if run_id is not None else [])
    filters: Mapping[str, Any] = {"label": labels}
    removed = {"containers": 0, "networks": 0, "volumes": 0}
    for container in client.api.containers(all=True, filters=filters):
        try:
            client.api.remove_container(container["Id"], v=True, force=True)
            removed["containers"] += 1
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError:  # 409: a removal already in progress (a step's own)
            _wait_gone(client, container["Id"])
    for network in client.api.networks(filters=filters):
        for attempt in range(20):  # a container still leaving holds its endpoint for a moment
            try:
                client.api.remove_network(network["Id"])
                removed["networks"] += 1
                break
            except docker.errors.NotFound:
                break
            except docker.errors.APIError:
                if attempt == 19:
                    raise
                time.sleep(0.25)
    for volume in client.api.volumes(filters=filters).get("Volumes") or []:
        with contextlib.suppress(docker.errors.NotFound):
            client.api.remove_volume(volume["Name"], force=True)
            removed["volumes"] += 1
    return removed


def _wait_gone(client: Any, container: str, timeout: float = 30.0) -> None:
    import docker.errors

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            client.api.inspect_container(container)
        except docker.errors.NotFound:
            return
        time.sleep(0.1)
