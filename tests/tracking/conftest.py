"""Fixtures for the tracking tests: the tracker switched on, a pre-made embedded store, a real
``mlflow server`` that can be killed and restarted, and a throwaway PostgreSQL server.

In CI (``CI=true``) a missing ``mlflow server`` or PostgreSQL fails the test; elsewhere it skips.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tracking_helpers import unavailable

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _tracking_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCANFLOW_TRACKER", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SCANFLOW_TRACKER_MAX_ARTIFACT_MB", raising=False)


@pytest.fixture(scope="session")
def mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, fully migrated MLflow SQLite database, made once (migrations take seconds)."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def tracked_home(home: Path, mlflow_db: Path) -> Path:
    """A run home whose embedded store already exists (a copy of the template)."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(mlflow_db, home / "mlflow.db")
    return home


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MlflowServer:
    """``mlflow server`` in a subprocess, on a free port, with its own SQLite store."""

    def __init__(self, folder: Path, template: Path) -> None:
        self.folder = folder
        self.db = folder / "server.db"
        shutil.copy(template, self.db)
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = folder / "server.log"

    def start(self, timeout: float = 90.0) -> None:
        mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent))
        if mlflow is None:
            unavailable("the mlflow command is not installed (pip install 'scanflow[tracking]')")
        command = [
            str(mlflow), "server",
            "--backend-store-uri", f"sqlite:///{self.db}",
            "--artifacts-destination", str(self.folder / "artifacts"),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"mlflow server exited: {self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        self.kill()
        pytest.fail(f"mlflow server did not answer in {timeout}s: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the server and its workers (no graceful shutdown: an outage)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None


@pytest.fixture
def mlflow_server(tmp_path: Path, mlflow_db: Path) -> Iterator[MlflowServer]:
    (tmp_path / "server").mkdir()
    server = MlflowServer(tmp_path / "server", mlflow_db)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="session")
def postgres_uri() -> Iterator[str]:
    """A throwaway PostgreSQL server (scripts/postgres.sh), for the whole session."""
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        unavailable("psycopg2 is not installed (pip install 'scanflow[tracking]')")
    started = subprocess.run(
        ["bash", str(ROOT / "scripts" / "postgres.sh"), "start"], capture_output=True, text=True, timeout=600
    )
    if started.returncode != 0:
        unavailable(f"no PostgreSQL server could be started: {started.stderr[-2000:]}")
    uri, folder = started.stdout.strip().splitlines()[-2:]
    try:
        yield uri
    finally:
        subprocess.run(["bash", str(ROOT / "scripts" / "postgres.sh"), "stop", folder], capture_output=True)
