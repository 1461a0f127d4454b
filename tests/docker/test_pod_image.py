"""``scanflow image build``: the default step-pod image (:mod:`scanflow_core.deploy.image`).

The unit tests need no engine (``--print-dockerfile``, the pins, bad extras). The engine tests build the
image once per module FROM the test base image (``scripts/base-image.sh``; pip inside reaches PyPI), run
``scanflow`` in it, and rebuild it to show the layer cache: nothing changed, nothing re-runs; changed
code re-runs no ``pip install``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scanflow_core import __version__
from scanflow_core.cli import main
from scanflow_core.deploy.image import (
    ImageBuildFailed,
    ImageRequirementError,
    build_pod_image,
    image_recipe,
    pinned_requirements,
)
from scanflow_core.deploy.pods import DEFAULT_POD_IMAGE
from scanflow_core.runtimes.docker_engine import ENGINE_SCRIPT, engine_client

ROOT = Path(__file__).resolve().parents[2]
#: The tag the engine tests build (tests/docker/test_step_pods.py runs its pods in it too).
# One tag per checkout: two clones on one engine (a CI run beside a working tree) must not swap images.
TEST_TAG = "scanflow-test/scanflow:" + hashlib.sha256(str(Path(__file__).resolve()).encode()).hexdigest()[:12]


def _pins(out: str) -> dict[str, str]:
    requirements = out.split("# requirements.txt\n", 1)[1]
    return dict(line.split("==", 1) for line in requirements.splitlines() if line)


# ------------------------------------------------------------------------------------------ no engine


def test_the_default_tag_follows_the_scanflow_version() -> None:
    assert f"scanflow/scanflow:{__version__}" == DEFAULT_POD_IMAGE
    assert image_recipe(base="python:3.11-slim").tag == DEFAULT_POD_IMAGE


def test_print_dockerfile_pins_the_installed_versions_and_builds_from_the_base(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nowhere/docker.sock")  # no engine needed
    assert (
        main(["image", "build", "--base", "example.org/py:3.11", "--extra", "tracking", "--print-dockerfile"])
        == 0
    )
    out = capsys.readouterr().out
    dockerfile = out.split("# requirements.txt")[0]
    assert "\nFROM example.org/py:3.11\n" in "\n" + dockerfile
    assert "/opt/scanflow/venv" in dockerfile and "VIRTUAL_ENV=/opt/scanflow/venv" in dockerfile
    assert f'org.opencontainers.image.version="{__version__}"' in dockerfile
    assert 'scanflow.built="1"' in dockerfile and 'scanflow.requirements="sha256:' in dockerfile
    pins = _pins(out)
    # the runtime requirements and the tracking extra's, each at the version installed here
    for name in ("pluggy", "pydantic", "PyYAML", "cryptography", "mlflow", "psycopg2-binary"):
        assert pins[name] == importlib.metadata.version(name), name
    assert "torch" not in pins  # only the extras asked for


def test_the_base_defaults_to_scanflow_base_image(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCANFLOW_BASE_IMAGE", "registry.example.org/base:7")
    assert main(["image", "build", "--print-dockerfile"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Dockerfile\nFROM registry.example.org/base:7\n")
    assert "mlflow" not in _pins(out)


def test_an_unknown_extra_is_a_bad_argument_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["image", "build", "--extra", "trackin", "--print-dockerfile"]) == 2
    err = capsys.readouterr().err
    assert "--extra trackin: scanflow has no such extra" in err and "did you mean 'tracking'" in err


def test_a_requirement_not_installed_here_is_named_with_its_extra() -> None:
    declared = {"": ["pluggy>=1.5"], "gpu": ["scanflow-no-such-package>=1"]}
    assert pinned_requirements([], declared) == [f"pluggy=={importlib.metadata.version('pluggy')}"]
    with pytest.raises(
        ImageRequirementError,
        match=r"scanflow-no-such-package \(a requirement of scanflow's gpu extra\) is not installed",
    ):
        pinned_requirements(["gpu"], declared)
    # a marker for another platform: not installed here, left to pip in the image
    declared["win"] = ['scanflow-no-such-package>=1; sys_platform == "win32"']
    assert pinned_requirements(["win"], declared) == [f"pluggy=={importlib.metadata.version('pluggy')}"]


def test_a_pip_installed_scanflow_s_requirements_come_from_its_metadata() -> None:
    from scanflow_core.deploy.image import _metadata_requirements

    declared = _metadata_requirements()  # what a scanflow installed from a wheel has
    assert {"pluggy>=1.5", "pyyaml>=6"} <= set(declared[""])
    assert "mlflow>=3" in declared["tracking"] and "psycopg2-binary" in declared["tracking"]
    tracking = pinned_requirements(["tracking"], declared)
    assert f"mlflow=={importlib.metadata.version('mlflow')}" in tracking
    assert f"pluggy=={importlib.metadata.version('pluggy')}" in tracking
    lines = [
        "a>=1",
        "b; extra == 'x'",
        'c; python_version < "3.12" and extra == "x"',
        "d; extra == 'x' and os_name == 'nt'",
        'e; sys_platform == "linux"',
    ]
    assert _metadata_requirements(lines) == {
        "": ["a>=1", 'e; sys_platform == "linux"'],
        "x": ["b", 'c; python_version < "3.12"', "d; os_name == 'nt'"],
    }


def test_extras_of_extras_are_followed_and_an_editable_requirement_is_refused() -> None:
    declared = {"": [], "tracking": ["mlflow>=3"], "both": ["scanflow[tracking]", "PyYAML"]}
    assert pinned_requirements(["both"], declared) == [
        f"mlflow=={importlib.metadata.version('mlflow')}",
        f"PyYAML=={importlib.metadata.version('pyyaml')}",
    ]
    # scanflow-airflow is installed from this checkout: no index has it for pip in the image
    with pytest.raises(ImageRequirementError, match=r"scanflow-airflow .* installed here from file:"):
        pinned_requirements(["airflow"])


def test_the_context_holds_the_core_without_caches_and_the_console_script() -> None:
    recipe = image_recipe(base="python:3.11-slim")
    assert "scanflow_core/cli.py" in recipe.files and "scanflow_core/py.typed" in recipe.files
    assert not [f for f in recipe.files if "__pycache__" in f or f.endswith(".pyc")]
    assert recipe.files["scanflow"].startswith(b"#!/opt/scanflow/venv/bin/python\n")
    assert b"from scanflow_core.cli import entry" in recipe.files["scanflow"]
    assert recipe.files["scanflow_core/cli.py"] == (ROOT / "scanflow_core" / "cli.py").read_bytes()


def test_no_engine_is_exit_2_with_the_runtime_s_advice(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/docker.sock")
    assert main(["image", "build", "--base", "python:3.11-slim", "--quiet"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert (
        f"no Docker engine answers at unix://{tmp_path}/docker.sock: start one with {ENGINE_SCRIPT}"
        in captured.err
    )


# ------------------------------------------------------------------------------------------ the engine


def _build(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scanflow_core", "image", "build", *argv],
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def pod_image(test_image: str) -> tuple[str, float]:
    """The image built by ``scanflow image build``, and how long the build took."""
    started = time.perf_counter()
    done = _build("--base", test_image, "--tag", TEST_TAG, "--extra", "tracking")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{TEST_TAG}\n"
    assert f"scanflow: building {TEST_TAG} from {test_image}" in done.stderr
    return TEST_TAG, time.perf_counter() - started


@pytest.fixture
def removed() -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    if made:
        subprocess.run(["docker", "rmi", "-f", *made], capture_output=True, check=False)


def _run(image: str, *command: str) -> str:
    done = subprocess.run(
        ["docker", "run", "--rm", "--user", "1000:1000", "-e", "HOME=/tmp", image, *command],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.docker
@pytest.mark.slow
def test_the_built_image_runs_scanflow_from_its_venv(pod_image: tuple[str, float]) -> None:
    tag, _ = pod_image
    assert _run(tag, "scanflow", "--version") == f"scanflow {__version__}\n"
    found = _run(
        tag,
        "python3",
        "-c",
        "import sys, scanflow_core, mlflow, cryptography; print(sys.prefix, scanflow_core.__file__, mlflow.__version__)",
    )
    assert found.split() == [
        "/opt/scanflow/venv",
        "/opt/scanflow/lib/scanflow_core/__init__.py",
        importlib.metadata.version("mlflow"),
    ]
    labels = engine_client().api.inspect_image(tag)["Config"]["Labels"]
    assert labels["scanflow.built"] == "1" and labels["org.opencontainers.image.version"] == __version__
    assert labels["scanflow.requirements"].startswith("sha256:")


@pytest.mark.docker
@pytest.mark.slow
def test_a_rebuild_with_nothing_changed_is_all_cache(pod_image: tuple[str, float], test_image: str) -> None:
    tag, _ = pod_image
    # One recipe built twice (another process editing the checkout meanwhile changes nothing here).
    recipe = image_recipe(base=test_image, tag=tag, extras=["tracking"])
    first = build_pod_image(recipe, io.StringIO())
    log = io.StringIO()
    started = time.perf_counter()
    assert build_pod_image(recipe, log) == first
    print(f"cached rebuild: {time.perf_counter() - started:.2f}s")
    output = log.getvalue()
    steps = re.findall(r"^Step \d+/\d+ : (\w+)", output, re.MULTILINE)
    assert steps[0] == "FROM" and "RUN" in steps
    assert output.count("Using cache") == len(steps) - 1, output  # every step after FROM
    assert "Running in" not in output, output  # no RUN step ran again


@pytest.mark.docker
@pytest.mark.slow
def test_changed_code_rebuilds_without_pip(
    pod_image: tuple[str, float], test_image: str, removed: list[str]
) -> None:
    recipe = image_recipe(base=test_image, tag="scanflow-test/scanflow:changed", extras=["tracking"])
    recipe.files["scanflow_core/_changed.py"] = b"CHANGED = True\n"
    removed.append(recipe.tag)
    log = io.StringIO()
    build_pod_image(recipe, log)
    steps = log.getvalue().split("\nStep ")
    (pip,) = [s for s in steps if "pip install" in s.splitlines()[0]]
    (copy,) = [s for s in steps if "COPY scanflow_core" in s.splitlines()[0]]
    assert "Using cache" in pip and "Using cache" not in copy
    assert (
        _run(recipe.tag, "python3", "-c", "import scanflow_core._changed as c; print(c.CHANGED)") == "True\n"
    )


@pytest.mark.docker
@pytest.mark.slow
def test_a_failed_build_exits_1_with_the_end_of_its_log(test_image: str, removed: list[str]) -> None:
    # An image without a shell: the build's first RUN cannot start.
    shell_less = "scanflow-test/no-shell:1"
    removed += [shell_less, "scanflow-test/scanflow:failed"]
    from scanflow_core.runtimes.docker_images import run_build

    assert (
        run_build(
            engine_client(),
            {"Dockerfile": b"FROM scratch\nLABEL a=b\n"},
            "Dockerfile",
            shell_less,
            log=io.StringIO(),
        )
        is None
    )
    done = _build("--base", shell_less, "--tag", "scanflow-test/scanflow:failed")
    assert done.returncode == 1 and done.stdout == ""
    assert "error: building scanflow-test/scanflow:failed failed:" in done.stderr
    assert "Step 4/9 : RUN python3 -m venv" in done.stderr  # the end of the build's output
    with pytest.raises(ImageBuildFailed, match="is not on the engine"):
        build_pod_image(
            image_recipe(base="scanflow-test/no-such-base:1", tag="scanflow-test/scanflow:failed"),
            io.StringIO(),
        )
