"""The built-in sidecars of the Docker runtime: the MLflow tracker and the drift checker.

Both start on the run's network before its first container step (the tracker: when the run starts),
are health-checked, and are removed with the run's other containers.

* **Tracker** — when the workflow says ``tracker: {uri: sidecar}``. An MLflow server
  (image ``scanflow/tracker:<digest12>``: the base image plus the host's ``mlflow`` version) reachable
  by the steps as ``http://tracker:5000`` (``MLFLOW_TRACKING_URI`` is injected into every step), and
  published to ``127.0.0.1:<free port>`` for the host-side tracker (the URL is kept in
  ``run.state["docker"].published`` and ``<run>/sidecars.json``, where
  :func:`~scanflow_core.tracking.mlflow_tracker.resolve_uri` finds it). Its store lives on the
  volume ``scanflow-tracker-<workflow>`` (labelled ``scanflow.data=tracker``), which outlives the
  run on purpose: the workflow's tracking history, like a tracking server's. ``docker volume rm``
  removes it.
* **Checker** — when ``$SCANFLOW_CHECKER_REFERENCE`` names a reference table (a path, relative to
  the spec's folder; any format ``load_frame`` reads) in the process that runs the workflow. A
  :class:`~scanflow_core.checking.drift.DriftDetector` is fitted on it on the host at run start
  (``$SCANFLOW_CHECKER_ALPHA``, default 0.05), saved under ``<run>/sidecars/checker/detector`` and
  mounted read-only into ``scanflow/checker:<digest12>`` (the base image plus numpy and scipy; this
  package is mounted, not copied), which serves :mod:`scanflow_core.checking.service` at
  ``http://checker:8080`` (``SCANFLOW_CHECKER_URL`` is injected into every step).

Images are built once and tagged by the digest of the base image's id and their Dockerfile; the
builds use the host network and the host CA bundle, as step builds do (the MLflow one takes a few
minutes the first time).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import threading
from pathlib import Path

from scanflow_core.plugins import hookimpl
from scanflow_core.records import SidecarSpec
from scanflow_core.runs import WorkflowRun

__all__ = [
    "CHECKER_PORT",
    "CHECKER_REFERENCE_ENV",
    "SIDECAR_URI",
    "TRACKER_PORT",
    "checker_image",
    "published_url",
    "tracker_image",
    "tracker_volume",
]

#: ``tracker.uri`` that asks for the tracker sidecar.
SIDECAR_URI = "sidecar"
TRACKER_PORT = 5000
CHECKER_PORT = 8080
CHECKER_REFERENCE_ENV = "SCANFLOW_CHECKER_REFERENCE"
CHECKER_ALPHA_ENV = "SCANFLOW_CHECKER_ALPHA"
TRACKER_DATA = "/scanflow/tracker"
CHECKER_DETECTOR = "/scanflow/detector"
LIB = "/scanflow/lib"
VENV = "/opt/scanflow/venv"
CORE_DIR = Path(__file__).resolve().parents[1]
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
STATE_FILE = "sidecars.json"
_HEALTH = (
    "python -c \"import urllib.request; urllib.request.urlopen('http://localhost:{port}{path}', timeout=5)\""
)

_build_guard = threading.Lock()
_build_locks: dict[str, threading.Lock] = {}


# ------------------------------------------------------------------------------------------ the hooks


@hookimpl(tryfirst=True)
def scanflow_workflow_start(run: WorkflowRun) -> None:
    """Start the run's network and sidecars now when the tracker is a sidecar: the host-side tracker
    (whose ``scanflow_workflow_start`` runs after this one) logs to it from the start."""
    if not _wants_tracker(run):
        return
    from scanflow_core.runtimes.docker_engine import engine_available, engine_client, run_network, run_state
    from scanflow_core.runtimes.docker_images import BASE_IMAGE_ENV, DEFAULT_BASE_IMAGE

    if not engine_available():
        raise RuntimeError(
            f"tracker.uri: {SIDECAR_URI} needs a Docker engine, and none answers"
            " (scripts/docker-engine.sh starts one)"
        )
    base = os.environ.get(BASE_IMAGE_ENV) or DEFAULT_BASE_IMAGE
    run_network(engine_client(), run, run_state(run), base)


@hookimpl
def scanflow_sidecars(run: WorkflowRun) -> list[SidecarSpec] | None:
    """The tracker and checker sidecars this run asks for (images built when missing).

    Only for the Docker runtime (a run with ``run.state["docker"]``): the images are local builds,
    which an exported deployment could not pull.
    """
    if "docker" not in getattr(run, "state", {}):
        return None
    specs = []
    if _wants_tracker(run):
        specs.append(_tracker(run))
    reference = os.environ.get(CHECKER_REFERENCE_ENV)
    if reference:
        specs.append(_checker(run, reference))
    return specs


def _wants_tracker(run: WorkflowRun) -> bool:
    from scanflow_core.tracking.mlflow_tracker import enabled

    tracker = run.workflow.tracker
    return tracker.uri == SIDECAR_URI and enabled(tracker.enabled)


# ------------------------------------------------------------------------------------------ the tracker


def tracker_volume(workflow: str) -> str:
    return "scanflow-tracker-" + "".join(c if c.isalnum() or c in "_.-" else "-" for c in workflow.lower())


def _tracker(run: WorkflowRun) -> SidecarSpec:
    hosts = "tracker,tracker:*,localhost,localhost:*,127.0.0.1,127.0.0.1:*"
    return SidecarSpec(
        name="tracker",
        image=tracker_image(run),
        command=[
            "mlflow",
            "server",
            "--host=0.0.0.0",
            f"--port={TRACKER_PORT}",
            f"--backend-store-uri=sqlite:///{TRACKER_DATA}/mlflow.db",
            f"--artifacts-destination={TRACKER_DATA}/artifacts",
            f"--allowed-hosts={hosts}",
        ],
        ports={TRACKER_PORT: None},
        healthcheck=_HEALTH.format(port=TRACKER_PORT, path="/health"),
        inject_env={"MLFLOW_TRACKING_URI": f"http://tracker:{TRACKER_PORT}"},
        volumes={TRACKER_DATA: tracker_volume(run.workflow.name)},
    )


def tracker_image(run: WorkflowRun) -> str:
    """``scanflow/tracker:<digest12>``: the base image with the host's MLflow version (built if missing)."""
    return _ensure_image(run, "tracker", [f"mlflow=={_version('mlflow')}"])


def published_url(run_directory: Path, name: str) -> str | None:
    """The host URL of a sidecar's published port, as the runtime recorded it for the run."""
    try:
        data = json.loads((run_directory / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    url = data.get(name, {}).get("url")
    return url if isinstance(url, str) else None


# ------------------------------------------------------------------------------------------ the checker


def _checker(run: WorkflowRun, reference: str) -> SidecarSpec:
    path = Path(reference)
    if not path.is_absolute():
        path = Path(run.workflow.file).parent / path
    folder = run.directory / "sidecars" / "checker" / "detector"
    _fit_detector(path, folder)
    return SidecarSpec(
        name="checker",
        image=checker_image(run),
        command=[
            "python",
            "-m",
            "scanflow_core.checking.service",
            "--detector",
            CHECKER_DETECTOR,
            "--port",
            str(CHECKER_PORT),
        ],
        env={"PYTHONPATH": LIB, "PYTHONDONTWRITEBYTECODE": "1"},
        healthcheck=_HEALTH.format(port=CHECKER_PORT, path="/ok"),
        inject_env={"SCANFLOW_CHECKER_URL": f"http://checker:{CHECKER_PORT}"},
        binds={CHECKER_DETECTOR: str(folder), f"{LIB}/scanflow_core": str(CORE_DIR)},
    )


def _fit_detector(reference: Path, folder: Path) -> None:
    from scanflow_core.checking.data import load_frame
    from scanflow_core.checking.drift import DriftDetector

    if not reference.exists():
        raise FileNotFoundError(f"${CHECKER_REFERENCE_ENV}: no reference at {reference}")
    alpha = float(os.environ.get(CHECKER_ALPHA_ENV) or 0.05)
    frame = load_frame(reference)
    labels = frame.pop("label") if "label" in frame.columns else None
    DriftDetector(alpha=alpha).fit(frame, labels).save(folder)


def checker_image(run: WorkflowRun) -> str:
    """``scanflow/checker:<digest12>``: the base image with the host's numpy and scipy versions."""
    return _ensure_image(run, "checker", [f"numpy=={_version('numpy')}", f"scipy=={_version('scipy')}"])


# ------------------------------------------------------------------------------------------ images


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        pass
    constraints = CORE_DIR.parent / "constraints.txt"
    if constraints.is_file():
        for line in constraints.read_text(encoding="utf-8").splitlines():
            name, _, version = line.partition("==")
            if name.strip().lower() == package and version:
                return version.split(";")[0].strip()
    raise RuntimeError(f"{package} is not installed here nor pinned in {constraints}: which version?")


def _dockerfile(packages: list[str], with_ca: bool) -> str:
    cert = "PIP_CERT=/scanflow/ca-certificates.crt " if with_ca else ""
    lines = [
        "ARG BASE_IMAGE",
        "FROM ${BASE_IMAGE}",
        *(["COPY ca-certificates.crt /scanflow/ca-certificates.crt"] if with_ca else []),
        f"RUN python3 -m venv {VENV} && {cert}PIP_DISABLE_PIP_VERSION_CHECK=1"
        f" {VENV}/bin/python -m pip install --no-cache-dir {' '.join(packages)}",
        f"ENV VIRTUAL_ENV={VENV} PATH={VENV}/bin:$PATH",
    ]
    return "\n".join(lines) + "\n"


def _ensure_image(run: WorkflowRun, name: str, packages: list[str]) -> str:
    """The tag of the sidecar's image, built when the engine lacks it."""
    import docker.errors

    from scanflow_core.runtimes.docker_engine import engine_client
    from scanflow_core.runtimes.docker_images import (
        BASE_IMAGE_ENV,
        DEFAULT_BASE_IMAGE,
        IMAGE_LABEL,
        run_build,
    )

    client = engine_client()
    base = os.environ.get(BASE_IMAGE_ENV) or DEFAULT_BASE_IMAGE
    try:
        base_id = client.api.inspect_image(base)["Id"]
    except docker.errors.ImageNotFound:
        client.images.pull(base)
        base_id = client.api.inspect_image(base)["Id"]
    with_ca = HOST_CA_BUNDLE.is_file()
    dockerfile = _dockerfile(packages, with_ca)
    digest = hashlib.sha256(f"{base_id}\0{dockerfile}".encode()).hexdigest()
    tag = f"scanflow/{name}:{digest[:12]}"
    with _build_guard:
        lock = _build_locks.setdefault(tag, threading.Lock())
    with lock:
        try:
            client.api.inspect_image(tag)
            return tag
        except docker.errors.ImageNotFound:
            pass
        files = {"Dockerfile": dockerfile.encode()}
        if with_ca:
            files["ca-certificates.crt"] = HOST_CA_BUNDLE.read_bytes()
        log_path = run.directory / "sidecars" / f"{name}.build.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a", encoding="utf-8") as log:
            log.write(f"scanflow: building {tag} from {base}: {' '.join(packages)}\n")
            error = run_build(
                client,
                files,
                "Dockerfile",
                tag,
                buildargs={"BASE_IMAGE": base},
                labels={IMAGE_LABEL: "1", "scanflow.digest": f"sha256:{digest}", "scanflow.sidecar": name},
                log=log,
            )
        if error is not None:
            raise RuntimeError(f"building the {name} sidecar's image {tag} failed: {error} (log: {log_path})")
    return tag
