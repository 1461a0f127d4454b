"""Helpers shared by the tracking tests: read back what a Scanflow run left in MLflow."""

from __future__ import annotations

import os
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> None:
    """Fail in CI (a real-engine test must never be skipped there), skip elsewhere."""
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


def client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def runs_of(uri: str, experiment: str, run_id: str | None = None) -> tuple[Any, dict[str, Any]]:
    """The parent run and the child runs (by step name) of a Scanflow run (or of the only one)."""
    c = client(uri)
    exp = c.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r}"
    query = f"tags.`scanflow.run_id` = '{run_id}'" if run_id else ""
    runs = c.search_runs([exp.experiment_id], filter_string=query, max_results=1000)
    parents = [r for r in runs if r.data.tags.get("scanflow.kind") == "workflow"]
    assert len(parents) == 1, f"expected one parent run, found {len(parents)}"
    children = {r.data.tags["scanflow.step"]: r for r in runs if r.data.tags.get("scanflow.kind") == "step"}
    assert len(children) == len(runs) - 1, "a step has more than one child run"
    return parents[0], children
