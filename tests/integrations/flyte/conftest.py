"""flytekit runs in this process (local execution), with its sandbox in a throwaway folder.

flytekit reads its configuration when it is first imported, so the environment is set here, when
pytest imports this file, before any test module imports flytekit.
"""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scanflow_core.plugins import hookimpl
from scanflow_core.records import CheckResult

ROOT = Path(__file__).resolve().parents[3]
IN_CI = os.environ.get("CI", "").lower() == "true"
DEFAULT_TEST_IMAGE = "scanflow-test/python:3.11-bookworm"

os.environ["FLYTE_SDK_LOCAL_SANDBOX"] = tempfile.mkdtemp(prefix="scanflow-flyte-sandbox-")
os.environ["FLYTE_SDK_RICH_TRACEBACKS"] = "0"  # plain tracebacks in test output


@pytest.fixture(autouse=True)
def _collect_flytekit_checkpoints() -> Iterator[None]:
    """Free the cycles a failing task leaves at the end of its test, with flytekit's warning about them
    filtered (``flyte_helpers.FLYTEKIT_CHECKPOINT_WARNING``), rather than in whichever test or at
    whatever time the collector next runs."""
    yield
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Implicitly cleaning up <TemporaryDirectory", ResourceWarning)
        gc.collect()


def unavailable(reason: str) -> None:
    """Fail in CI (a real-engine test is never skipped there), skip elsewhere."""
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


class AlwaysFails:
    """A checker plugin: ``use: always_fails`` fails on every target it is given."""

    @hookimpl
    def scanflow_checker_names(self) -> list[str]:
        return ["always_fails"]

    @hookimpl
    def scanflow_check(self, step_run: Any, check: Any, target: str, path: Path) -> CheckResult | None:
        if check.use != "always_fails":
            return None
        return CheckResult("always_fails", target, False, f"{target} is never good enough")


@pytest.fixture
def failing_checker() -> Iterator[str]:
    """``always_fails`` registered on the plugin manager the Flyte tasks of this process share."""
    from scanflow_flyte.runs import plugin_manager

    pm = plugin_manager()
    plugin = AlwaysFails()
    pm.register(plugin, name="always_fails")
    try:
        yield "always_fails"
    finally:
        pm.unregister(plugin)


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow SQLite database, made once (migrations take seconds)."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def tracked_home(home: Path, mlflow_template: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A run home with the MLflow tracker switched on and its embedded store already made."""
    monkeypatch.delenv("SCANFLOW_TRACKER", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(mlflow_template, home / "mlflow.db")
    return home


@pytest.fixture(scope="session")
def test_image() -> str:
    """The test base image (``$SCANFLOW_TEST_IMAGE``) on a Docker engine that answers."""
    image = os.environ.get("SCANFLOW_TEST_IMAGE") or DEFAULT_TEST_IMAGE
    env = {**os.environ, "SCANFLOW_TEST_IMAGE": image}
    for script in ("docker-engine.sh", "base-image.sh"):
        done = subprocess.run(
            ["bash", str(ROOT / "scripts" / script)], capture_output=True, text=True, env=env, timeout=900
        )
        if done.returncode != 0:
            unavailable(f"scripts/{script} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return image


@pytest.fixture
def engine(test_image: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An engine that answers, with the test image as every build's base; yields the image name."""
    from scanflow_core.runtimes import docker as docker_runtime

    monkeypatch.setenv("SCANFLOW_BASE_IMAGE", test_image)
    monkeypatch.delenv("SCANFLOW_DOCKER_NETWORK", raising=False)
    monkeypatch.delenv("SCANFLOW_DOCKER_USER", raising=False)
    assert docker_runtime.engine_available(), "the engine stopped answering"
    yield test_image
    docker_runtime.release_runs()
