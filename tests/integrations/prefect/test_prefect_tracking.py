"""Tracking under Prefect: one MLflow parent run per flow run, a child per task run (an embedded
SQLite store under the test's folder), and the check artifacts link to the child run."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect import flow
from prefect_helpers import artifacts, flow_run, mlflow_runs, write_small

from scanflow_prefect import flow_from_spec, scanflow_task

pytestmark = [
    pytest.mark.prefect,
    pytest.mark.slow,
    pytest.mark.usefixtures("prefect_server"),
    # MLflow's SQL store configures every SQLAlchemy mapper in the process when first imported, the
    # Prefect server's too (the harness loaded them); SQLAlchemy 2.1 warns about Prefect's UUID type.
    pytest.mark.filterwarnings(
        "ignore:Type object <class 'prefect.server.utilities.database.UUID'> does not refer to an OperatorClass"
        ":DeprecationWarning"
    ),
]


def test_a_flow_from_a_spec_has_one_parent_run_and_a_child_per_step(
    tracked_home: Path, tmp_path: Path
) -> None:
    state = flow_from_spec(write_small(tmp_path), home=tracked_home)(run_id="tracked", return_state=True)

    assert state.is_completed()
    uri = f"sqlite:///{tracked_home / 'mlflow.db'}"
    parent, children = mlflow_runs(uri, "small", "tracked")
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["scanflow.orchestrator"] == "prefect"
    # A child per step that ran (big_only was skipped by its when:); after_big never ran, as under
    # the local runner: its record says its upstream was skipped.
    assert set(children) == {"make", "count", "side", "big_only"}
    make = children["make"]
    assert make.info.status == "FINISHED" and make.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert make.data.metrics["rows"] == 5.0
    (artifact,) = artifacts(flow_run(state).id)
    assert (
        f"[run {make.info.run_id}](http://127.0.0.1:5000/#/experiments/{parent.info.experiment_id}/runs/"
        in (artifact.data)
    )
    assert f"mlflow ui --backend-store-uri {uri}" in artifact.data


@scanflow_task(stage="data_ingestion", outputs=["table"])
def make(table: Path, rows: int = 4) -> dict[str, float]:
    table.write_text("x\n" * rows)
    return {"rows": rows}


@scanflow_task(stage="evaluation")
def count(table: Path) -> dict[str, float]:
    return {"n": len(table.read_text().splitlines())}


def test_a_flow_of_scanflow_tasks_has_one_parent_run_and_a_child_per_task_run(tracked_home: Path) -> None:
    @flow(name="tracked-tasks")
    def tracked(scanflow_run_id: str | None = None) -> None:
        table = make()
        count(table=table)
        count(table=make(rows=6))

    tracked(scanflow_run_id="first")
    tracked(scanflow_run_id="second")

    uri = f"sqlite:///{tracked_home / 'mlflow.db'}"
    for run_id in ("first", "second"):
        parent, children = mlflow_runs(uri, "tracked_tasks", run_id)
        assert parent.info.status == "FINISHED"  # closed by the flow's completion hook
        assert set(children) == {"make", "make_2", "count", "count_2"}
        assert {c.data.tags["mlflow.parentRunId"] for c in children.values()} == {parent.info.run_id}
        assert children["count_2"].data.metrics["n"] == 6.0
        assert children["make_2"].data.params["rows"] == "6"
