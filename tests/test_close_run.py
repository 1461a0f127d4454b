"""close_run: how an orchestrator adapter finishes a run whose steps ran in its own tasks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scanflow_core.errors import StepFailed
from scanflow_core.plugins import PluginManager
from scanflow_core.runner import close_run
from scanflow_core.runs import WorkflowRun
from scanflow_core.spec import load_workflow
from scanflow_core.steps import run_step
from tests.conftest import SpecWriter

SPEC = """\
apiVersion: scanflow/v1
name: closing
params: {fail: false}
objectives:
  - {name: enough, expr: "make.rows >= 3"}
  - {name: soft, expr: "make.rows >= 100", blocking: false}
steps:
  - {name: make, stage: data_ingestion, call: MOD:make, outputs: [table]}
  - {name: count, stage: data_analysis, call: MOD:count, inputs: [table]}
  - {name: later, stage: logging, call: MOD:count, inputs: [table], needs: [count]}
"""

CODE = """\
def make(table, fail):
    if fail:
        raise RuntimeError("make was told to fail")
    table.write_text("a\\nb\\nc\\n")
    return {"rows": 3}


def count(table):
    return {"lines": len(table.read_text().splitlines())}
"""


def _run(spec: Path, home: Path, pm: PluginManager, **params: object) -> WorkflowRun:
    run = WorkflowRun(load_workflow(spec, params), run_id="r1", home=home, pm=pm, orchestrator="test")
    run.open()
    return run


def test_a_run_whose_steps_all_ran_succeeds_and_judges_its_objectives(
    write_spec: SpecWriter, home: Path, pm: PluginManager
) -> None:
    run = _run(write_spec(SPEC, CODE), home, pm)
    for name in ("make", "count", "later"):
        run_step(run, name)

    outcome = close_run(run)

    assert outcome.status == "succeeded" and outcome.ok and outcome.failed_steps == []
    assert {o.name: o.passed for o in outcome.objectives} == {"enough": True, "soft": False}
    assert outcome.missed == []  # "soft" is not blocking
    manifest = json.loads((run.directory / "run.json").read_text())
    assert manifest["status"] == "succeeded" and set(manifest["steps"]) == {"make", "count", "later"}
    assert [o["name"] for o in manifest["objectives"]] == ["enough", "soft"]


def test_steps_whose_tasks_never_ran_are_recorded_and_named_in_the_message(
    write_spec: SpecWriter, home: Path, pm: PluginManager
) -> None:
    run = _run(write_spec(SPEC, CODE), home, pm, fail=True)
    with pytest.raises(StepFailed):
        run_step(run, "make")

    outcome = close_run(run)

    assert outcome.status == "failed" and not outcome.ok
    assert outcome.failed_steps == ["make", "count", "later"]
    steps = json.loads((run.directory / "run.json").read_text())["steps"]
    assert steps["count"] == {
        "status": "upstream_failed",
        "stage": "data_analysis",
        "reason": "upstream step 'make' failed",
        "metrics": {},
        "outputs": {},
    }
    assert steps["later"]["reason"] == "upstream step 'count' failed"
    assert outcome.message.startswith("Scanflow run r1 failed: steps not succeeded: make, count, later")
    # An objective about a step that did not succeed is not judged, and says so.
    assert "objective enough not met: not judged: make failed" in outcome.message
