"""A real Docker engine and a Python base image, for the tests of the Docker runtime.

The session fixture starts an engine when none answers (``scripts/docker-engine.sh``) and builds the
test base image when it is missing (``scripts/base-image.sh``: Debian bookworm by debootstrap, no
registry). In CI (``CI=true``) a missing engine or image fails the tests; elsewhere they are skipped
with the reason (say, not root and no engine running).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from scanflow_core.runtimes import docker as docker_runtime

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TEST_IMAGE = "scanflow-test/python:3.11-bookworm"


def _script(name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / name)], capture_output=True, text=True, env=env, timeout=900
    )


@pytest.fixture(scope="session")
def test_image() -> str:
    """The name of the test base image, on an engine that answers."""
    image = os.environ.get("SCANFLOW_TEST_IMAGE") or DEFAULT_TEST_IMAGE
    env = {**os.environ, "SCANFLOW_TEST_IMAGE": image}
    for script in ("docker-engine.sh", "base-image.sh"):
        done = _script(script, env)
        if done.returncode != 0:
            message = f"scripts/{script} failed ({done.returncode}): {done.stderr.strip()[-2000:]}"
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(message)
            pytest.skip(message)
    return image


@pytest.fixture
def engine(test_image: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An engine that answers, with the test image as every build's base; yields the image name."""
    monkeypatch.setenv("SCANFLOW_BASE_IMAGE", test_image)
    monkeypatch.delenv("SCANFLOW_DOCKER_NETWORK", raising=False)
    monkeypatch.delenv("SCANFLOW_DOCKER_USER", raising=False)
    assert docker_runtime.engine_available(), "the engine stopped answering"
    yield test_image
    docker_runtime.release_runs()  # the networks of runs a test ran steps of but never finished
