"""``scanflow export swarm``: the stack file maps the spec, and a real one-node swarm runs it to the end
(jobs completed in order, serving tasks N/N running, the steps' outputs on the run volume)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from scanflow_core.deploy.commands import export

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TEST_IMAGE = "scanflow-test/python:3.11-bookworm"


def missing(message: str) -> None:
    """No engine (or no swarm): skip here, fail in CI (``CI=true``), where these tests must run."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message + " (CI must run this test)")
    pytest.skip(message)


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data


def test_the_stack_maps_batch_steps_to_jobs_and_serving_to_replicas(
    serving_spec: Path, tmp_path: Path
) -> None:
    path, _ = export("swarm", serving_spec, tmp_path, replicas=2)
    stack = _load(path)
    assert stack["version"] == "3.9"
    services = stack["services"]
    assert list(services) == ["tracker", "prepare", "train", "serve"]
    prepare, train, serve = services["prepare"], services["train"], services["serve"]
    assert prepare["deploy"]["mode"] == "replicated-job"
    assert prepare["deploy"]["restart_policy"] == {"condition": "none"}
    assert prepare["deploy"]["resources"] == {"limits": {"cpus": "0.5", "memory": "256m"}}
    assert train["deploy"]["resources"]["reservations"]["generic_resources"] == [
        {"discrete_resource_spec": {"kind": "NVIDIA-GPU", "value": 1}}
    ]
    assert serve["deploy"] == {
        "labels": serve["labels"],
        "mode": "replicated",
        "replicas": 2,
        "restart_policy": {"condition": "any"},
        "resources": {"limits": {"memory": "512m"}},
    }
    assert serve["ports"] == [{"target": 9000, "published": 9000, "protocol": "tcp"}]
    assert "depends_on" not in train  # a stack ignores it: steps wait for their upstream markers
    assert "/scanflow/run/steps/prepare/.done" in train["entrypoint"][2]
    assert "/scanflow/run/steps/train/.done" in serve["entrypoint"][2]
    # The wrapper retries (a job's restart policy is none) and times out each attempt.
    assert 'timeout 90 "$$@"' in prepare["entrypoint"][2] and "-gt 2 ]" in prepare["entrypoint"][2]
    assert services["tracker"]["deploy"]["replicas"] == 1


# --------------------------------------------------------------------------------------- a real swarm


def _docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


@pytest.fixture(scope="module")
def test_image() -> str:
    """An engine that answers (``scripts/docker-engine.sh``) and the test base image on it."""
    image = os.environ.get("SCANFLOW_TEST_IMAGE") or DEFAULT_TEST_IMAGE
    env = {**os.environ, "SCANFLOW_TEST_IMAGE": image}
    for script in ("docker-engine.sh", "base-image.sh"):
        done = subprocess.run(
            ["bash", str(ROOT / "scripts" / script)], capture_output=True, text=True, env=env, timeout=900
        )
        if done.returncode != 0:
            missing(f"scripts/{script} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return image


@pytest.fixture(scope="module")
def swarm(test_image: str) -> Iterator[str]:
    """A swarm this engine manages: joined here (and left afterwards) when it was not in one."""
    state = _docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
    created = state == "inactive"
    if created:
        _docker("swarm", "init", "--advertise-addr", "127.0.0.1")
    elif state != "active":
        missing(f"this engine's swarm state is {state!r}")
    try:
        yield test_image
    finally:
        if created:
            _docker("swarm", "leave", "--force", check=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _replicas(stack: str) -> dict[str, str]:
    out = _docker("stack", "services", stack, "--format", "{{json .}}").stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    return {row["Name"].removeprefix(f"{stack}_"): row["Replicas"] for row in rows}


def _remove(stack: str) -> None:
    _docker("stack", "rm", stack, check=False)
    label = f"label=com.docker.stack.namespace={stack}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        running = _docker("ps", "-q", "--filter", label).stdout.split()
        if not running:
            break
        time.sleep(1)
    # Swarm leaves a finished job's containers behind; they hold the volume.
    leftovers = _docker("ps", "-aq", "--filter", label).stdout.split()
    if leftovers:
        _docker("rm", "-f", *leftovers, check=False)
    for volume in _docker("volume", "ls", "-q", "--filter", label).stdout.split():
        _docker("volume", "rm", volume, check=False)


SWARM_SPEC = """
apiVersion: scanflow/v1
name: swarm_demo
tracker: {enabled: false}
steps:
  - name: make
    stage: data_ingestion
    image: IMAGE
    command: ["python3", "-c", "import sys; open(sys.argv[1], 'w').write('21')", "{outputs.number}"]
    outputs: [number]
  - name: double
    stage: data_transformation
    image: IMAGE
    call: MOD:double
    inputs: [number]
    outputs:
      doubled: {path: out/doubled.txt}
    timeout: 60s
    retries: 1
  - name: serve
    stage: serving
    image: IMAGE
    command: ["python3", "-m", "http.server", "{params.port}", "--directory", "/scanflow/run/steps/double/outputs"]
    needs: [double]
    params: {port: PORT}
    resources: {cpu: 0.25, memory: 64Mi}
"""

DOUBLE = """
def double(number, doubled):
    value = 2 * int(number.read_text())
    doubled.write_text(str(value))
    return {"value": value}
"""


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_real_swarm_runs_the_stack(swarm: str, write_spec: Any, tmp_path: Path) -> None:
    spec_text = SWARM_SPEC.replace("IMAGE", swarm).replace("PORT", str(_free_port()))
    spec = write_spec(spec_text, code=DOUBLE)
    path, notes = export("swarm", spec, tmp_path / "out", replicas=2)
    assert notes == []
    stack = f"sftest-{secrets.token_hex(3)}"
    try:
        _docker("stack", "deploy", "--detach=true", "-c", str(path), stack)
        deadline = time.monotonic() + 180
        replicas: dict[str, str] = {}
        while time.monotonic() < deadline:
            replicas = _replicas(stack)
            done = replicas.get("make", "").endswith("(1/1 completed)") and replicas.get(
                "double", ""
            ).endswith("(1/1 completed)")
            if done and replicas.get("serve") == "2/2":
                break
            time.sleep(1)
        else:
            tasks = _docker("stack", "ps", stack, "--no-trunc", check=False).stdout
            pytest.fail(f"the stack did not reach its replicas: {replicas}\n{tasks}")
        # The call step ran with scanflow_core from the bind mount and wrote where the next step reads.
        volume = f"{stack}_run"
        shown = _docker(
            "run",
            "--rm",
            "-v",
            f"{volume}:/r:ro",
            swarm,
            "sh",
            "-c",
            "cat /r/steps/double/outputs/out/doubled.txt; ls /r/steps/make/.done /r/steps/double/.done; "
            "cat /r/steps/double/record.jsonl",
        ).stdout
        assert shown.startswith("42")
        assert '"value"' in shown
    finally:
        with contextlib.suppress(Exception):
            _remove(stack)
