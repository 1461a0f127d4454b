"""The Flyte examples, run for real: ``pyflyte run`` on the digits workflow, the decorated tasks in process."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.flyte, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "flyte"


def test_pyflyte_runs_the_digits_workflow(home: Path, tmp_path: Path) -> None:
    from scanflow_core.attestation.verify import verify_run
    from scanflow_core.spec import load_workflow

    pyflyte = Path(sys.executable).with_name("pyflyte")
    done = subprocess.run(
        [str(pyflyte), "run", str(EXAMPLES / "digits_workflow.py"), "digits", "--run_id", "flyte-digits"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "SCANFLOW_HOME": str(home)},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "flyte-digits"  # the workflow's output: the run id

    run_dir = home / "runs" / "flyte-digits"
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["orchestrator"] == "flyte"
    assert list(manifest["steps"]) == list(
        load_workflow(EXAMPLES.parent / "digits" / "scanflow.yaml").plan.steps
    )
    assert {s["status"] for s in manifest["steps"].values()} == {"succeeded"}
    assert manifest["objectives"] and all(o["passed"] for o in manifest["objectives"])
    assert manifest["steps"]["test"]["metrics"]["accuracy"] >= 0.88
    assert verify_run(run_dir).ok


def test_the_decorated_digits_tasks_run_in_process(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from scanflow_core.attestation.verify import verify_run

    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.delitem(sys.modules, "digits_tasks", raising=False)  # examples/prefect has one of that name
    example = importlib.import_module("digits_tasks")

    accuracy = example.digits_tasks(seed=0, epochs=5)

    assert accuracy >= 0.85
    [run_dir] = (home / "runs").iterdir()
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["workflow"] == "digits_tasks"
    assert list(manifest["steps"]) == ["ingest", "split", "train", "test"]
    assert manifest["steps"]["split"]["checks"] == {"passed": 1, "failed": 0, "warned": 0}  # leakage
    assert manifest["steps"]["train"]["outputs"]["o0"]["path"] == "steps/train/outputs/model.pt"
    assert manifest["steps"]["test"]["metrics"]["accuracy"] == accuracy
    assert manifest["steps"]["ingest"]["metrics"]["rows"] == 1797
    assert verify_run(run_dir).ok
