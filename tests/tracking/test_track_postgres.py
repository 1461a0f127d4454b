"""PostgreSQL as the tracking store (a real server started by scripts/postgres.sh)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tracking_helpers import client, runs_of

from scanflow_core.runner import run_workflow
from scanflow_core.spec import load_workflow

SPEC = """
apiVersion: scanflow/v1
name: on_postgres
steps:
  - {name: make, stage: data_ingestion, call: MOD:make, params: {n: 40}, outputs: [data]}
"""

CODE = """
from scanflow_core import log_metric
def make(n, data):
    for i in range(n):
        log_metric("rows", i, step=i)
    data.write_text("x" * n)
"""


@pytest.mark.slow
def test_postgres_backend(
    write_spec: Any, home: Path, postgres_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", postgres_uri)
    run = run_workflow(load_workflow(write_spec(SPEC, CODE)), home=home)
    assert run.status == "succeeded"
    assert not (home / "mlflow.db").exists()
    parent, children = runs_of(postgres_uri, "on_postgres", run.run_id)
    assert parent.info.status == "FINISHED"
    make = children["make"]
    assert make.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert make.data.params["n"] == "40"
    history = client(postgres_uri).get_metric_history(make.info.run_id, "rows")
    assert sorted(m.step for m in history) == list(range(40))
    # artifacts of a database store we talk to directly live under the home, not ./mlruns
    assert make.info.artifact_uri.startswith((home / "mlartifacts").as_uri())
    assert [a.path for a in client(postgres_uri).list_artifacts(make.info.run_id, "outputs")] == [
        "outputs/data"
    ]
