"""Helpers shared by the Prefect tests: small workflows, and what a flow run left in Prefect and in
the run directory."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any
from uuid import UUID

SMALL = """\
apiVersion: scanflow/v1
name: small
params: {rows: 5, fail: false, flaky: ""}
steps:
  - name: make
    stage: data_ingestion
    call: STEPS:make
    outputs: [table]
    retries: 1
    checks: [{use: row_limits, on: [table], min: 2}]
  - {name: count, stage: evaluation, call: STEPS:count, inputs: [table]}
  - {name: side, stage: logging, call: STEPS:side, outputs: [note]}
  - {name: big_only, stage: monitoring, call: STEPS:count, inputs: [table], when: "params.rows > 100"}
  - {name: after_big, stage: monitoring, call: STEPS:count, needs: [big_only], inputs: [table]}
"""

SMALL_STEPS = """\
from pathlib import Path


def make(table, rows, fail, flaky):
    if fail:
        raise RuntimeError("make was told to fail")
    if flaky and not Path(flaky).exists():
        Path(flaky).write_text("failed once")
        raise RuntimeError("make fails the first time")
    table.write_text("x\\n" * rows)
    return {"rows": rows}


def count(table):
    return {"n": len(table.read_text().splitlines())}


def side(note):
    note.write_text("independent")
"""


def write_small(folder: Path) -> Path:
    """The small workflow and its step module (named after the folder) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    module = f"small_steps_{folder.name.replace('-', '_')}"
    (folder / f"{module}.py").write_text(SMALL_STEPS, encoding="utf-8")
    spec = folder / "scanflow.yaml"
    spec.write_text(SMALL.replace("STEPS", module), encoding="utf-8")
    return spec


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def steps(home: Path, run_id: str) -> dict[str, dict[str, Any]]:
    """Each step's record in the run directory, by step name."""
    run_dir = home / "runs" / run_id
    return {p.parent.name: json.loads(p.read_text()) for p in (run_dir / "steps").glob("*/step.json")}


def manifest(home: Path, run_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((home / "runs" / run_id / "run.json").read_text())
    return data


def flow_run(state: Any) -> Any:
    """The flow run a final state belongs to, read back from the Prefect server."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(state.state_details.flow_run_id)


def task_runs(flow_run_id: UUID) -> dict[str, Any]:
    """The flow run's task runs by name, read back from the Prefect server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {r.name: r for r in runs}


def artifacts(flow_run_id: UUID) -> list[Any]:
    """The flow run's markdown artifacts (not its results), read back from the Prefect server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType

    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
                type=ArtifactFilterType(any_=["markdown"]),
            )
        )


def mlflow_runs(uri: str, experiment: str, run_id: str) -> tuple[Any, dict[str, Any]]:
    """The parent run and the child runs (by step name) of a Scanflow run in MLflow."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r}"
    runs = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`scanflow.run_id` = '{run_id}'", max_results=1000
    )
    parents = [r for r in runs if r.data.tags.get("scanflow.kind") == "workflow"]
    assert len(parents) == 1, f"expected one parent run, found {len(parents)}"
    children = {r.data.tags["scanflow.step"]: r for r in runs if r.data.tags.get("scanflow.kind") == "step"}
    assert len(children) == len(runs) - 1, "a step has more than one child run"
    return parents[0], children
