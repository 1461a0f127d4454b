"""The Docker runtime against a real engine: mounts, metrics, attestation, limits, failures, fallback."""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from scanflow_core.errors import StepFailed
from scanflow_core.plugins import get_plugin_manager
from scanflow_core.runner import run_workflow
from scanflow_core.runs import WorkflowRun
from scanflow_core.runtimes import docker as docker_runtime
from scanflow_core.spec import Resources, load_workflow
from scanflow_core.steps import run_step

pytestmark = pytest.mark.docker


def _run(spec: Path, step: str, **kwargs: Any) -> Any:
    run = WorkflowRun(load_workflow(spec), pm=get_plugin_manager(autoload=False), **kwargs)
    run.open()
    return run, run_step(run, step)


def _step_containers(run_id: str) -> list[str]:
    """The step containers of a run still on the engine (its network holder is not one)."""
    out = subprocess.run(
        [
            "docker",
            "ps",
            "-aq",
            "--filter",
            f"label=scanflow.run_id={run_id}",
            "--filter",
            "label=scanflow.step",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


# ------------------------------------------------------------------------------------------ unit


def test_memory_sizes_follow_kubernetes_upper_case_and_docker_lower_case() -> None:
    assert docker_runtime.memory_bytes("512Mi") == 512 * 2**20
    assert docker_runtime.memory_bytes("512m") == 512 * 2**20
    assert docker_runtime.memory_bytes("1G") == 10**9
    assert docker_runtime.memory_bytes("1.5Gi") == int(1.5 * 2**30)
    assert docker_runtime.memory_bytes("64MB") == 64 * 10**6
    assert docker_runtime.memory_bytes("4096") == 4096
    with pytest.raises(ValueError, match="512Mi"):
        docker_runtime.memory_bytes("lots")


def test_resources_map_to_limits_and_gpus_to_device_requests() -> None:
    assert docker_runtime.limits(Resources()) == {}
    limits = docker_runtime.limits(Resources(cpu=1.5, memory="256Mi", gpu=2))
    assert limits["nano_cpus"] == 1_500_000_000
    assert limits["mem_limit"] == limits["memswap_limit"] == 256 * 2**20  # no swap on top
    (request,) = limits["device_requests"]
    assert request["Count"] == 2
    assert request["Capabilities"] == [["gpu"]]
    assert docker_runtime.device_requests(Resources(gpu=0)) == []


# ------------------------------------------------------------------------------------------ engine

IO_SPEC = """
apiVersion: scanflow/v1
name: io
params: {greeting: hello}
inputs: {raw: {path: raw.csv}}
steps:
  - name: copy
    stage: data_transformation
    image: IMAGE
    inputs: {raw: raw}
    outputs: [data]
    command: ["sh", "-c", "echo {inputs.raw} $SCANFLOW_OUTPUT_DATA; tr a-z A-Z < {inputs.raw} > {outputs.data}; echo {params.greeting} >> {outputs.data}"]
  - name: vandal
    stage: data_transformation
    image: IMAGE
    inputs: {raw: raw}
    command: ["sh", "-c", "echo scribble > {inputs.raw}"]
"""


def test_a_command_step_reads_its_input_read_only_and_writes_its_output(
    engine: str, write_spec: Any, home: Path, tmp_path: Path
) -> None:
    (tmp_path / "raw.csv").write_text("a,b\n1,2\n")
    spec = write_spec(IO_SPEC.replace("IMAGE", engine))

    run, step_run = _run(spec, "copy")

    output = step_run.outputs["data"]
    assert output.read_text() == "A,B\n1,2\nhello\n"
    assert output.stat().st_uid == __import__("os").getuid()  # the caller's, not the container's root
    assert step_run.log_path.read_text().splitlines()[0] == (
        "/scanflow/inputs/raw.csv /scanflow/outputs/data"
    )  # placeholders and SCANFLOW_* carry the paths inside the container
    assert step_run.execution.runtime == "docker"
    assert step_run.recorder.tags["scanflow.runtime"] == "docker"

    with pytest.raises(StepFailed, match=r"exited with code") as failed:
        run_step(run, "vandal")
    assert "Read-only file system" in failed.value.logs
    assert (tmp_path / "raw.csv").read_text() == "a,b\n1,2\n"
    docker_runtime.wait_removed(run)
    assert _step_containers(run.run_id) == []  # each step's container is gone


CALL_SPEC = """
apiVersion: scanflow/v1
name: calls
params: {n: 4}
steps:
  - name: fit
    stage: training
    image: IMAGE
    call: MOD:fit
    outputs: {model: {kind: model}}
"""

CALL_CODE = """
import sys
from scanflow_core import log_metric
def fit(n, model):
    for i in range(n):
        log_metric("loss", 1.0 / (i + 1), step=i)
    model.write_text(f"{sys.version_info[0]}.{sys.version_info[1]} {model}")
    print("fitted")
    return {"accuracy": 0.75}
"""


def test_metrics_of_a_call_in_a_container_reach_the_record_and_the_image_is_attested(
    engine: str, write_spec: Any, home: Path
) -> None:
    spec = write_spec(CALL_SPEC.replace("IMAGE", engine), code=CALL_CODE)

    run = run_workflow(load_workflow(spec), pm=get_plugin_manager(autoload=False))

    assert run.status == "succeeded"
    record = run.step_summary("fit")
    assert record is not None
    assert record["runtime"] == "docker"
    assert record["metrics"] == {"loss": 0.25, "accuracy": 0.75}
    losses = [
        json.loads(line)
        for line in (run.step_dir("fit") / "metrics.jsonl").read_text().splitlines()
        if '"loss"' in line
    ]
    assert len(losses) == 4
    model = run.step_dir("fit") / "outputs" / "model"
    assert model.read_text() == "3.11 /scanflow/outputs/model"
    assert "fitted" in (run.step_dir("fit") / "step.log").read_text()

    image_id = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", engine],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    envelope = json.loads((run.attestation_dir / "fit.intoto.jsonl").read_text().splitlines()[0])
    statement = json.loads(base64.b64decode(envelope["payload"]))
    (image,) = [
        d
        for d in statement["predicate"]["buildDefinition"]["resolvedDependencies"]
        if d["annotations"].get("scanflow.role") == "image"
    ]
    assert image["name"] == engine
    assert image["digest"] == {"sha256": image_id.removeprefix("sha256:")}
    assert statement["predicate"]["buildDefinition"]["internalParameters"]["runtime"] == "docker"


def test_the_execution_result_names_the_image_and_its_digest(
    engine: str, write_spec: Any, home: Path
) -> None:
    spec = write_spec(CALL_SPEC.replace("IMAGE", engine), code=CALL_CODE)

    _, step_run = _run(spec, "fit")

    details = step_run.execution.details
    assert details["image"] == engine
    assert details["image_digest"].startswith("sha256:")
    assert details["image_digest"] == details["image_id"]  # imported: no registry digest
    assert details["built"] is False


LIMITS_SPEC = """
apiVersion: scanflow/v1
name: limits
steps:
  - name: sleepy
    stage: training
    image: IMAGE
    command: ["sh", "-c", "echo started; sleep 2; echo woke; sleep 60"]
    timeout: 4
  - name: noisy
    stage: training
    image: IMAGE
    command: ["sh", "-c", "for i in $(seq 1 30); do echo line $i; done; exit 3"]
  - name: greedy
    stage: training
    image: IMAGE
    resources: {memory: 64Mi, cpu: 0.5}
    command: ["python3", "-c", "b = bytearray(400 * 2**20); print('allocated', len(b))"]
"""


def test_a_timeout_kills_the_container_and_its_output_streams_while_it_runs(
    engine: str, write_spec: Any, home: Path
) -> None:
    spec = write_spec(LIMITS_SPEC.replace("IMAGE", engine))
    run = WorkflowRun(load_workflow(spec), pm=get_plugin_manager(autoload=False))
    run.open()
    seen: dict[str, float] = {}
    log = run.step_dir("sleepy") / "step.log"

    def watch() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "woke" not in seen:
            text = log.read_text() if log.exists() else ""
            for word in ("started", "woke"):
                if word in text and word not in seen:
                    seen[word] = time.monotonic()
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.monotonic()
    with pytest.raises(StepFailed, match=r"timed out after 4s and was killed") as failed:
        run_step(run, "sleepy")
    took = time.monotonic() - started
    watcher.join()

    assert 4 <= took < 10
    assert seen["started"] - started < 3  # in the log while the container still ran
    assert "woke" in failed.value.logs
    docker_runtime.wait_removed(run)
    assert _step_containers(run.run_id) == []


def test_a_non_zero_exit_fails_the_step_with_the_last_log_lines(
    engine: str, write_spec: Any, home: Path
) -> None:
    spec = write_spec(LIMITS_SPEC.replace("IMAGE", engine))

    with pytest.raises(StepFailed, match=r"the container exited with code 3") as failed:
        _run(spec, "noisy")

    lines = failed.value.logs.splitlines()
    assert lines[-1] == "line 30"
    assert "line 1" not in lines  # only the tail


def test_a_step_over_its_memory_limit_is_killed_and_says_so(engine: str, write_spec: Any, home: Path) -> None:
    spec = write_spec(LIMITS_SPEC.replace("IMAGE", engine))

    with pytest.raises(StepFailed, match=r"ran out of memory .*resources.memory: 64Mi") as failed:
        _run(spec, "greedy")

    assert "allocated" not in failed.value.logs


DEFAULT_IMAGE_SPEC = """
apiVersion: scanflow/v1
name: plain
steps:
  - {name: where, stage: training, runtime: docker, command: ["sh", "-c", "cat /etc/debian_version > {outputs.v}"], outputs: [v]}
"""


def test_runtime_docker_without_an_image_runs_in_the_base_image(
    engine: str, write_spec: Any, home: Path
) -> None:
    spec = write_spec(DEFAULT_IMAGE_SPEC)

    _, step_run = _run(spec, "where")

    assert step_run.execution.details["image"] == engine
    assert step_run.outputs["v"].read_text().startswith("12.")


# ------------------------------------------------------------------------------------------ no engine

AUTO_SPEC = """
apiVersion: scanflow/v1
name: auto
steps:
  - {name: both, stage: training, image: "python:3.11-slim", command: ["sh", "-c", "echo ran > {outputs.out}"], outputs: [out]}
  - {name: boxed, stage: training, image: "python:3.11-slim"}
  - {name: forced, stage: training, runtime: docker, command: "true"}
"""


def test_runtime_auto_falls_back_to_a_local_process_without_an_engine_and_says_so(
    write_spec: Any, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    assert not docker_runtime.engine_available()
    spec = write_spec(AUTO_SPEC)

    run, step_run = _run(spec, "both")

    assert step_run.execution.runtime == "local"
    assert step_run.execution.details["fallback_from"] == "docker"
    assert step_run.recorder.tags["scanflow.runtime"] == "local"
    assert step_run.outputs["out"].read_text() == "ran\n"
    assert "no Docker engine answers" in step_run.log_path.read_text()
    assert run.step_summary("both")["runtime"] == "local"  # type: ignore[index]

    with pytest.raises(StepFailed, match=r"runs in python:3.11-slim, and no Docker engine answers"):
        run_step(run, "boxed")
    with pytest.raises(StepFailed, match=r"runtime: docker, .*scripts/docker-engine.sh"):
        run_step(run, "forced")
