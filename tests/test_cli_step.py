"""``scanflow step SPEC NAME --run-id ID``: exactly one step of a shared run, as an orchestrator's
container runs it (in process through ``cli.main``, and once as a real process)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from typing import Any

import pytest
from test_cli import REPO, TINY, TINY_CODE, run_cli, subprocess_env

from scanflow_core.cli import main


def step_json(stdout: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(stdout)
    return data


def test_a_step_runs_alone_and_reads_its_upstream_from_the_run(write_spec, home, capsys):
    spec = write_spec(TINY, TINY_CODE)

    # Nothing else runs: sum's upstream step has not, so its input is missing (exit 1, named).
    code, out, err = run_cli(capsys, "step", spec, "sum", "--run-id", "r1")
    assert code == 1
    assert "input 'data' is missing: step 'make' of run r1 should write" in err
    assert not (home / "runs" / "r1" / "steps" / "make").exists()

    code, out, err = run_cli(capsys, "step", spec, "make", "--run-id", "r1")
    assert code == 0, err
    assert out.startswith("step make of run r1: succeeded in ")
    assert f"data: {home / 'runs' / 'r1' / 'steps' / 'make' / 'outputs' / 'data'}" in out
    made = (home / "runs" / "r1" / "steps" / "make" / "step.json").read_text()

    code, out, err = run_cli(capsys, "step", spec, "sum", "--run-id", "r1", "--attempt", "2", "--json")
    assert code == 0, err
    record = step_json(out)
    assert record["status"] == "succeeded" and record["attempt"] == 2
    assert record["metrics"]["total"] == 45
    assert record["inputs"]["data"]["path"] == "steps/make/outputs/data"
    assert "step sum of run r1: succeeded" in err  # --json: the summary line goes to stderr
    # make was not run again, and the run stays open for the other steps.
    assert (home / "runs" / "r1" / "steps" / "make" / "step.json").read_text() == made
    manifest = json.loads((home / "runs" / "r1" / "run.json").read_text())
    assert manifest["status"] == "running"
    assert manifest["orchestrator"] == "local"


def test_params_and_the_orchestrator_are_recorded(write_spec, home, capsys):
    spec = write_spec(TINY, TINY_CODE)
    argv = ["--run-id", "r2", "--param", "n=4", "--orchestrator", "kubernetes"]

    assert run_cli(capsys, "step", spec, "make", *argv)[0] == 0
    code, out, err = run_cli(capsys, "step", spec, "sum", *argv, "--json")

    assert code == 0, err
    assert step_json(out)["metrics"]["total"] == 6  # 0+1+2+3
    manifest = json.loads((home / "runs" / "r2" / "run.json").read_text())
    assert manifest["params"] == {"n": 4}
    assert manifest["orchestrator"] == "kubernetes"


def test_an_unknown_step_exits_2_naming_the_close_one(write_spec, home, capsys):
    spec = write_spec(TINY, TINY_CODE)

    code, _, err = run_cli(capsys, "step", spec, "smu", "--run-id", "r1")

    assert code == 2
    assert f"error: {spec}: step smu: no step named 'smu'" in err
    assert "did you mean 'sum'?" in err
    assert not home.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--attempt", "0"], "attempt 0: the first attempt is 1"),
        (["--attempt", "two"], "'two' is not a whole number"),
        (["--skipped-exit-code", "300"], "exit code 300: give 0-255"),
    ],
)
def test_bad_arguments_exit_2(write_spec, home, capsys, argv, message):
    spec = write_spec(TINY, TINY_CODE)

    with pytest.raises(SystemExit) as exited:
        main(["step", str(spec), "make", "--run-id", "r1", *argv])

    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_the_run_id_is_required(write_spec, capsys):
    spec = write_spec(TINY, TINY_CODE)

    with pytest.raises(SystemExit):
        main(["step", str(spec), "make"])

    assert "--run-id" in capsys.readouterr().err


WHEN = """\
apiVersion: scanflow/v1
name: gated
params: {go: false}
steps:
  - {name: maybe, stage: training, call: MOD:maybe, when: "params.go"}
"""

WHEN_CODE = "def maybe():\n    return {'ran': 1}\n"


def test_a_skipped_step_exits_0_or_the_code_asked_for(write_spec, home, capsys):
    spec = write_spec(WHEN, WHEN_CODE)

    code, out, _ = run_cli(capsys, "step", spec, "maybe", "--run-id", "r1")
    assert code == 0
    assert "step maybe of run r1: skipped" in out and "(when: " in out

    code, out, _ = run_cli(capsys, "step", spec, "maybe", "--run-id", "r2", "--skipped-exit-code", "4")
    assert code == 4
    assert (
        json.loads((home / "runs" / "r2" / "steps" / "maybe" / "step.json").read_text())["status"]
        == "skipped"
    )

    code, out, _ = run_cli(
        capsys, "step", spec, "maybe", "--run-id", "r3", "-p", "go=true", "--skipped-exit-code", "4"
    )
    assert code == 0
    assert "succeeded" in out


CONTAINER = """\
apiVersion: scanflow/v1
name: boxed
steps:
  - {name: make, stage: data_ingestion, call: MOD:make, outputs: [data]}
  - name: shout
    stage: data_transformation
    image: registry.invalid/never-pulled:1
    command: ["sh", "-c", "tr a-z A-Z < {inputs.data} > {outputs.loud}"]
    inputs: [data]
    outputs: [loud]
"""

CONTAINER_CODE = "def make(data):\n    data.write_text('quiet')\n"


def test_in_image_runs_a_container_step_here_and_attests_its_image(write_spec, home, capsys, monkeypatch):
    """In a pod the process already runs in the step's image: nothing is pulled, no engine is asked."""
    spec = write_spec(CONTAINER, CONTAINER_CODE)
    monkeypatch.setenv("SCANFLOW_STEP_IMAGE", "registry.invalid/never-pulled@sha256:" + "ab" * 32)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")  # were Docker asked, it would fail
    assert run_cli(capsys, "step", spec, "make", "--run-id", "r1")[0] == 0

    code, out, err = run_cli(capsys, "step", spec, "shout", "--run-id", "r1", "--in-image", "--json")

    assert code == 0, err
    record = step_json(out)
    assert record["runtime"] == "in-image"
    loud = home / "runs" / "r1" / "steps" / "shout" / "outputs" / "loud"
    assert loud.read_text() == "QUIET"
    envelope = json.loads(
        (home / "runs" / "r1" / "attestations" / "shout.intoto.jsonl").read_text().splitlines()[0]
    )
    statement = json.loads(base64.b64decode(envelope["payload"]))
    build = statement["predicate"]["buildDefinition"]
    assert build["internalParameters"]["runtime"] == "in-image"
    images = [d for d in build["resolvedDependencies"] if d["annotations"].get("scanflow.role") == "image"]
    assert [d["name"] for d in images] == ["registry.invalid/never-pulled@sha256:" + "ab" * 32]


def test_an_image_step_without_a_command_cannot_run_in_image(write_spec, home, capsys):
    spec = write_spec(
        """\
        apiVersion: scanflow/v1
        name: bare
        steps:
          - {name: serve, stage: serving, image: "registry.invalid/server:1"}
        """
    )

    code, _, err = run_cli(capsys, "step", spec, "serve", "--run-id", "r1", "--in-image")

    assert code == 1
    assert "give the step a 'command' to run it inside its image" in err


@pytest.mark.slow
def test_tracker_uri_replaces_the_spec_sidecar_tracker(write_spec, home, capsys, monkeypatch, tmp_path):
    """``tracker.uri: sidecar`` means a Docker-started server; in a pod the tracker is the pod's sidecar,
    named by --tracker-uri. Without it this step would need a Docker engine to start one."""
    monkeypatch.delenv("SCANFLOW_TRACKER", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = write_spec(TINY.replace("steps:", "tracker: {uri: sidecar}\nsteps:", 1), TINY_CODE)
    store = f"sqlite:///{tmp_path / 'pod-tracker.db'}"

    for name in ("make", "sum"):
        code, _, err = run_cli(capsys, "step", spec, name, "--run-id", "tracked", "--tracker-uri", store)
        assert code == 0, err

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`scanflow.run_id` = 'tracked'")
    kinds = sorted((r.data.tags["scanflow.kind"], r.data.tags.get("scanflow.step", "")) for r in runs)
    assert kinds == [("step", "make"), ("step", "sum"), ("workflow", "")]
    (child,) = [r for r in runs if r.data.tags.get("scanflow.step") == "sum"]
    assert child.data.metrics["total"] == 45
    assert not (home / "runs" / "tracked" / "sidecars.json").exists()  # no Docker sidecar was started


def test_step_as_a_real_process(write_spec, tmp_path):
    spec = write_spec(TINY, TINY_CODE)
    home = tmp_path / "home"
    for name in ("make", "sum", "shell"):
        done = subprocess.run(
            [sys.executable, "-m", "scanflow_core", "step", str(spec), name, "--run-id", "proc"],
            capture_output=True,
            text=True,
            env=subprocess_env(home),
            cwd=REPO,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"step {name} of run proc: succeeded")
    assert (home / "runs" / "proc" / "steps" / "shell" / "step.log").read_text().split() == ["45", "10"]
