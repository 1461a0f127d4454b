"""Prefect runs in this process against one temporary server (``prefect_test_harness``) per session.

Prefect reads its settings when it is first imported, so its home and switches are set here, when
pytest imports this file, before any test module imports Prefect.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DEFAULT_TEST_IMAGE = "scanflow-test/python:3.11-bookworm"

_PREFECT_HOME = Path(tempfile.mkdtemp(prefix="scanflow-prefect-home-"))
os.environ.update(
    {
        "PREFECT_HOME": str(_PREFECT_HOME),
        # Results (a failed flow's exception, say) go here; by default they would go to ~/.prefect.
        "PREFECT_LOCAL_STORAGE_PATH": str(_PREFECT_HOME / "storage"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # no telemetry calls from the test server
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
)


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """One temporary Prefect server and database for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, fully migrated MLflow SQLite database, made once (migrations take seconds)."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def tracked_home(tmp_path: Path, mlflow_db: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Tracking on, into an embedded store under the test's folder (a copy of the template)."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(mlflow_db, home / "mlflow.db")
    monkeypatch.delenv("SCANFLOW_TRACKER", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("SCANFLOW_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def test_image() -> str:
    """The test base image on a Docker engine that answers (as in tests/docker: the scripts start
    the engine and build the image when missing; in CI a failure fails, elsewhere it skips)."""
    image = os.environ.get("SCANFLOW_TEST_IMAGE") or DEFAULT_TEST_IMAGE
    env = {**os.environ, "SCANFLOW_TEST_IMAGE": image}
    for script in ("docker-engine.sh", "base-image.sh"):
        done = subprocess.run(
            ["bash", str(ROOT / "scripts" / script)], capture_output=True, text=True, env=env, timeout=900
        )
        if done.returncode != 0:
            message = f"scripts/{script} failed ({done.returncode}): {done.stderr.strip()[-2000:]}"
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(message)
            pytest.skip(message)
    return image
