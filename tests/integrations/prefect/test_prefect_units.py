"""The Prefect adapter's small parts, without a Prefect server: run ids, step names, check tables."""

from __future__ import annotations

import json
import types
import uuid
from pathlib import Path

import pytest

from scanflow_core.records import CheckResult
from scanflow_prefect import artifacts, runs

pytestmark = pytest.mark.prefect


def test_a_flow_run_gives_a_readable_unique_run_id() -> None:
    run = types.SimpleNamespace(name="crimson-otter", id=uuid.UUID("3fa9c1d2-0000-4000-8000-000000000000"))
    assert runs.flow_run_scanflow_id(run) == "crimson-otter-3fa9c1d2"
    odd = types.SimpleNamespace(name="../étrange name/", id=run.id)
    assert runs.flow_run_scanflow_id(odd) == "trange-name-3fa9c1d2"
    assert runs.flow_run_scanflow_id(run, "nightly-7") == "nightly-7"
    with pytest.raises(ValueError, match=r"scanflow_run_id '\.hidden' is not a Scanflow run id"):
        runs.flow_run_scanflow_id(run, ".hidden", "scanflow_run_id")


def test_step_names_are_claimed_once_per_task_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = tmp_path / "runs" / "r1"
    assert runs.claim_step_name(run_dir, "train", "task-run-a") == "train"
    assert runs.claim_step_name(run_dir, "train", "task-run-b") == "train_2"
    assert runs.claim_step_name(run_dir, "train", "task-run-a") == "train"  # a retry keeps its name
    assert runs.claim_step_name(run_dir, "score", "task-run-c") == "score"
    # Another process knows none of these claims: the files keep the names apart.
    monkeypatch.setattr(runs, "_claimed", {})
    monkeypatch.setattr(runs, "_next_number", {})
    assert runs.claim_step_name(run_dir, "train", "task-run-d") == "train_3"
    assert runs.claim_step_name(run_dir, "train", "task-run-e") == "train_4"
    assert (run_dir / "prefect" / "train_2.task-run").read_text() == "task-run-b\n"


def test_check_results_are_a_markdown_table_with_a_link_to_the_tracker(tmp_path: Path) -> None:
    checks = [
        CheckResult("row_limits", "table", True, "12 rows, within [2, ]", check="enough", phase="outputs"),
        CheckResult("leakage", "test", False, "3 rows | shared\nwith train", policy="warn", check="leakage"),
    ]
    (tmp_path / "tracking").mkdir()
    (tmp_path / "tracking" / "parent.json").write_text(
        json.dumps({"uri": "http://mlflow:5000/", "experiment_id": "4", "steps": {"split": "abc123"}})
    )
    link = artifacts.tracker_link(tmp_path, "split")
    assert link == "Tracked in MLflow: [run abc123](http://mlflow:5000/#/experiments/4/runs/abc123)"
    assert artifacts.tracker_link(tmp_path, "other") is None
    text = artifacts.checks_markdown("r1", "split", checks, link)
    assert "1 passed, 0 failed, 1 warned." in text
    assert "| enough | table | outputs | fail | error | passed | 12 rows, within [2, ] |" in text
    assert "| leakage | test | outputs | warn | error | warned | 3 rows \\| shared with train |" in text
    assert text.rstrip().endswith(link)
    assert artifacts.artifact_key("Digits_2", "prep.clean") == "scanflow-checks-digits-2-prep-clean"
