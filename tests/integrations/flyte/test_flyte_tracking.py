"""Tracking under Flyte: one MLflow parent run per workflow execution, a child run per task (real store)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flyte_helpers import FLYTEKIT_CHECKPOINT_WARNING

pytestmark = [pytest.mark.flyte, pytest.mark.slow, pytest.mark.filterwarnings(FLYTEKIT_CHECKPOINT_WARNING)]

SPEC = """\
apiVersion: scanflow/v1
name: tracked
params: {rows: 4}
steps:
  - {name: make, stage: data_ingestion, call: STEPS:make, outputs: [table]}
  - {name: count, stage: evaluation, call: STEPS:count, inputs: [table]}
"""

STEPS = """\
def make(table, rows):
    table.write_text("x\\n" * rows)


def count(table):
    return {"n": len(table.read_text().splitlines())}
"""


def _runs_of(home: Path, experiment: str, run_id: str) -> tuple[Any, dict[str, Any]]:
    """The parent MLflow run and the child runs (by step) of Scanflow run ``run_id``."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r}"
    runs = client.search_runs([found.experiment_id], filter_string=f"tags.`scanflow.run_id` = '{run_id}'")
    parents = [r for r in runs if r.data.tags.get("scanflow.kind") == "workflow"]
    assert len(parents) == 1, f"expected one parent run, found {len(parents)}"
    children = {r.data.tags["scanflow.step"]: r for r in runs if r.data.tags.get("scanflow.kind") == "step"}
    assert len(children) == len(runs) - 1, "a step has more than one child run"
    return parents[0], children


def test_a_workflow_from_a_spec_is_one_parent_run(tracked_home: Path, tmp_path: Path) -> None:
    from scanflow_flyte import workflow_from_spec

    module = f"tracked_steps_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(STEPS)
    spec = tmp_path / "scanflow.yaml"
    spec.write_text(SPEC.replace("STEPS", module))
    workflow_from_spec(spec, home=tracked_home)(run_id="tracked-1")

    parent, children = _runs_of(tracked_home, "tracked", "tracked-1")
    assert parent.info.status == "FINISHED"
    assert set(children) == {"make", "count"}
    for child in children.values():
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED"
    assert children["count"].data.metrics["n"] == 4.0
    assert children["make"].data.params["rows"] == "4"


def test_a_workflow_of_decorated_tasks_is_one_parent_run(tracked_home: Path) -> None:
    import test_flyte_tasks as tasks

    assert tasks.pipeline(rows=3).accuracy == 1.0

    [run_dir] = (tracked_home / "runs").iterdir()
    parent, children = _runs_of(tracked_home, tasks.MODULE, run_dir.name)
    assert parent.info.status == "FINISHED"  # closed by the workflow's last node
    assert set(children) == {"make", "train", "score"}
    assert {c.data.tags["mlflow.parentRunId"] for c in children.values()} == {parent.info.run_id}
    assert children["score"].data.metrics["accuracy"] == 1.0
    assert children["train"].data.params["lr"] == "0.5"


def test_a_failed_execution_ends_its_parent_run_failed(tracked_home: Path) -> None:
    import test_flyte_tasks as tasks

    from scanflow_flyte import ScanflowStepFailed

    with pytest.raises(ScanflowStepFailed):
        tasks.broken_pipeline(rows=2)

    [run_dir] = (tracked_home / "runs").iterdir()
    parent, children = _runs_of(tracked_home, tasks.MODULE, run_dir.name)
    assert parent.info.status == "FAILED"
    assert children["make"].info.status == "FAILED"
