"""Images built from a step's requirements or Dockerfile: tagged by digest, built once, rebuilt on change."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scanflow_core.plugins import get_plugin_manager
from scanflow_core.runner import run_workflow
from scanflow_core.runtimes.docker_images import _ignored, image_tag
from scanflow_core.spec import load_workflow

pytestmark = pytest.mark.docker


def test_image_tags_are_lower_case_repository_names_with_the_digest() -> None:
    tag = image_tag("My_Flow", "_Train", "sha256:" + "ab" * 32)
    assert tag == "scanflow/my-flow-train:abababababab"


def test_dockerignore_patterns_last_match_wins_and_folders_hold_their_files() -> None:
    patterns = [(False, "data"), (False, "*.log"), (True, "keep.log"), (False, "**/*.tmp")]
    assert _ignored("data/big.csv", patterns)
    assert _ignored("run.log", patterns)
    assert not _ignored("keep.log", patterns)
    assert not _ignored("sub/run.log", patterns)  # '*' stays in its folder, as in Docker
    assert _ignored("a/b/c.tmp", patterns)
    assert _ignored("c.tmp", patterns)
    assert not _ignored("code.py", patterns)


REQUIREMENTS_SPEC = """
apiVersion: scanflow/v1
name: reqs
steps:
  - name: use_six
    stage: training
    build: {requirements: requirements.txt}
    command: ["sh", "-c", "python3 -c 'import six; print(six.__name__)' > {outputs.out}"]
    outputs: [out]
"""


@pytest.fixture
def images() -> Iterator[list[str]]:
    """Images a test built, removed after it (each test's files carry a token: a fresh digest)."""
    made: list[str] = []
    yield made
    if made:
        subprocess.run(["docker", "rmi", "-f", *made], capture_output=True, check=False)


def _built(spec: Path) -> tuple[str, bool, str]:
    """Run the one-step workflow; return the step's image, whether it was built, and its output."""
    pm = get_plugin_manager(autoload=False)
    seen: dict[str, Any] = {}

    def note(kind: str, name: str, step_run: Any, run: Any) -> None:
        if kind == "finish" and step_run is not None:
            seen.update(step_run.execution.details)

    run = run_workflow(load_workflow(spec), pm=pm, on_event=note)
    assert run.status == "succeeded", (run.directory / "steps").glob("*/step.log")
    (out,) = run.directory.glob("steps/*/outputs/*")
    return seen["image"], seen["built"], out.read_text().strip()


@pytest.mark.slow
def test_a_requirements_image_is_built_once_and_again_when_the_requirements_change(
    engine: str, write_spec: Any, home: Path, tmp_path: Path, images: list[str]
) -> None:
    token = secrets.token_hex(4)
    (tmp_path / "requirements.txt").write_text(f"six  # {token}\n")
    spec = write_spec(REQUIREMENTS_SPEC)

    image, built, out = _built(spec)
    images.append(image)
    assert (built, out) == (True, "six")
    assert image.startswith("scanflow/reqs-use-six:")
    labels = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", image],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert '"scanflow.built":"1"' in labels

    again, built_again, _ = _built(spec)
    assert (again, built_again) == (image, False)  # the same digest: reused, nothing built

    (tmp_path / "requirements.txt").write_text(f"six>=1.10  # {token}\n")
    changed, built_changed, out = _built(spec)
    images.append(changed)
    assert changed != image and built_changed and out == "six"


DOCKERFILE_SPEC = """
apiVersion: scanflow/v1
name: dockerfile
steps:
  - name: baked
    stage: training
    build: {dockerfile: image/Dockerfile, context: image}
    command: ["sh", "-c", "cat /opt/baked.txt > {outputs.out}"]
    outputs: [out]
"""

DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
COPY baked.txt /opt/baked.txt
"""


def test_a_dockerfile_image_is_tagged_by_its_context_and_rebuilt_when_it_changes(
    engine: str, write_spec: Any, home: Path, tmp_path: Path, images: list[str]
) -> None:
    context = tmp_path / "image"
    context.mkdir()
    (context / "token").write_text(secrets.token_hex(4))
    (context / "Dockerfile").write_text(DOCKERFILE)
    (context / "baked.txt").write_text("one")
    (context / "notes.log").write_text("ignored")
    (context / ".dockerignore").write_text("*.log\n")
    spec = write_spec(DOCKERFILE_SPEC)

    image, built, out = _built(spec)
    images.append(image)
    assert (built, out) == (True, "one")

    (context / "notes.log").write_text("ignored, and changed")
    assert _built(spec)[:2] == (image, False)  # an ignored file is not part of the image

    (context / "baked.txt").write_text("two")
    changed, built, out = _built(spec)
    images.append(changed)
    assert (built, out) == (True, "two") and changed != image
