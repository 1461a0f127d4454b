"""``scanflow close SPEC --run-id ID``: the last task of an orchestrator closes a run whose steps ran
through ``scanflow step`` elsewhere (in process through ``cli.main``, and once as real processes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_cli import REPO, TINY, TINY_CODE, manifest_from, run_cli, subprocess_env

FAILING = """\
apiVersion: scanflow/v1
name: failing
objectives: ["sum.total >= 0"]
steps:
  - {name: make, stage: data_ingestion, call: MOD:broken, outputs: [data]}
  - {name: sum, stage: training, call: MOD:total, inputs: [data]}
"""

FAILING_CODE = """\
def broken(data):
    raise RuntimeError("no data today")


def total(data):
    return {"total": 1}
"""


def run_json(home: Path, run_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((home / "runs" / run_id / "run.json").read_text())
    return data


def test_a_run_whose_steps_ran_apart_is_closed_succeeded_with_its_objectives_judged(write_spec, home, capsys):
    spec = write_spec(TINY, TINY_CODE)
    for step in ("make", "sum", "shell"):
        assert run_cli(capsys, "step", spec, step, "--run-id", "r1", "--orchestrator", "airflow")[0] == 0
    assert run_json(home, "r1")["status"] == "running"

    code, out, err = run_cli(capsys, "close", spec, "--run-id", "r1", "--json")

    assert code == 0, err
    manifest = manifest_from(out)
    assert manifest == run_json(home, "r1")
    assert manifest["status"] == "succeeded" and manifest["orchestrator"] == "airflow"
    assert [(o["expr"], o["passed"]) for o in manifest["objectives"]] == [("sum.total >= 45", True)]
    assert {n: s["status"] for n, s in manifest["steps"].items()} == dict.fromkeys(
        ("make", "sum", "shell"), "succeeded"
    )
    assert err.startswith("run r1: succeeded in ")
    assert "✓ sum.total >= 45: met" in err


def test_a_missed_objective_exits_3_and_the_run_still_succeeds(write_spec, home, capsys):
    spec = write_spec(TINY, TINY_CODE)
    for step in ("make", "sum", "shell"):
        assert run_cli(capsys, "step", spec, step, "--run-id", "r2", "--param", "n=4")[0] == 0

    code, out, _ = run_cli(capsys, "close", spec, "--run-id", "r2", "--param", "n=4")

    assert code == 3
    manifest = run_json(home, "r2")
    assert manifest["status"] == "succeeded" and manifest["params"] == {"n": 4}
    assert [o["passed"] for o in manifest["objectives"]] == [False]
    assert "✗ sum.total >= 45" in out
    assert "Scanflow run r2 failed: objective" in out


def test_a_failed_step_exits_1_and_the_steps_after_it_are_recorded(write_spec, home, capsys):
    spec = write_spec(FAILING, FAILING_CODE)
    assert run_cli(capsys, "step", spec, "make", "--run-id", "r3")[0] == 1  # sum's task never runs

    code, out, _ = run_cli(capsys, "close", spec, "--run-id", "r3")

    assert code == 1
    manifest = run_json(home, "r3")
    assert manifest["status"] == "failed"
    assert manifest["steps"]["make"]["status"] == "failed"
    assert manifest["steps"]["sum"]["status"] == "upstream_failed"
    assert manifest["steps"]["sum"]["reason"] == "upstream step 'make' failed"
    assert "steps not succeeded: make, sum" in out


def test_a_step_whose_task_never_ran_is_recorded(write_spec, home, capsys):
    spec = write_spec(TINY, TINY_CODE)
    assert run_cli(capsys, "step", spec, "make", "--run-id", "r4")[0] == 0
    assert run_cli(capsys, "step", spec, "sum", "--run-id", "r4")[0] == 0

    code, _, _ = run_cli(capsys, "close", spec, "--run-id", "r4")

    assert code == 1
    shell = run_json(home, "r4")["steps"]["shell"]
    assert shell["status"] == "upstream_failed" and shell["reason"] == "its task did not run"


@pytest.mark.parametrize(
    ("run_id", "message"),
    [
        ("nope", "--run-id: no run 'nope' under "),
        ("../r5", "--run-id: '../r5' is not a run id"),
    ],
)
def test_a_bad_run_id_exits_2_naming_it(write_spec, home, capsys, run_id, message):
    spec = write_spec(TINY, TINY_CODE)
    assert run_cli(capsys, "step", spec, "make", "--run-id", "r5")[0] == 0

    code, _, err = run_cli(capsys, "close", spec, "--run-id", run_id)

    assert code == 2
    assert f"error: {spec}: {message}" in err
    assert run_json(home, "r5")["status"] == "running"  # nothing else touched


def test_a_run_of_another_workflow_exits_2(write_spec, home, capsys, tmp_path):
    other = write_spec(FAILING, FAILING_CODE, name="other.yaml")
    spec = write_spec(TINY, TINY_CODE)
    assert run_cli(capsys, "step", spec, "make", "--run-id", "r6")[0] == 0

    code, _, err = run_cli(capsys, "close", other, "--run-id", "r6")

    assert code == 2
    assert "run 'r6' is a run of workflow 'tiny', not 'failing'" in err


def test_a_bad_spec_exits_2_naming_the_file(write_spec, home, capsys, tmp_path):
    bad = write_spec("apiVersion: scanflow/v1\nname: bad\nsteps: []\n", name="bad.yaml")

    code, _, err = run_cli(capsys, "close", bad, "--run-id", "r7")

    assert code == 2
    assert f"error: {bad}" in err
    code, _, err = run_cli(capsys, "close", tmp_path / "missing.yaml", "--run-id", "r7")
    assert code == 2 and "missing.yaml" in err


@pytest.mark.slow
def test_real_processes_run_the_steps_and_close_the_run(write_spec, home):
    spec = write_spec(TINY, TINY_CODE)
    env = subprocess_env(home)

    def scanflow(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "scanflow_core", *argv],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            timeout=120,
        )

    for step in ("make", "sum", "shell"):
        assert scanflow("step", str(spec), step, "--run-id", "p1").returncode == 0
    done = scanflow("close", str(spec), "--run-id", "p1")

    assert done.returncode == 0, done.stderr
    assert run_json(home, "p1")["status"] == "succeeded"
    assert run_json(home, "p1")["objectives"][0]["passed"] is True
