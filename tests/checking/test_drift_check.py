"""The ``drift`` checker in real workflows: results recorded, plots written, detectors cached, policies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scanflow_core.errors import CheckFailed
from scanflow_core.plugins import get_plugin_manager
from scanflow_core.runner import run_workflow
from scanflow_core.runs import WorkflowRun
from scanflow_core.spec import load_workflow
from scanflow_core.steps import run_step

SPEC = """
apiVersion: scanflow/v1
name: drift
params: {noise: 0.0}
steps:
  - name: make
    stage: data_ingestion
    call: MOD:make
    outputs:
      train: {kind: data, path: train.npz}
  - name: collect
    stage: monitoring
    call: MOD:collect
    needs: [make]
    outputs:
      batch: {kind: data, path: batch.npz}
      again: {kind: data, path: again.npz}
    checks: CHECKS
"""

CODE = """
import numpy as np
from sklearn.datasets import load_digits

def _digits():
    bunch = load_digits()
    order = np.random.default_rng(0).permutation(len(bunch.target))  # rows are grouped by writer
    return (bunch.data[order] / 16.0).astype(np.float32), bunch.target[order].astype(np.int64)

def _save(path, x, y):
    with path.open("wb") as file:
        np.savez(file, X=x, y=y)

def make(train):
    x, y = _digits()
    _save(train, x[:800], y[:800])
    return {"rows": 800}

def collect(batch, again, noise=0.0):
    x, y = _digits()
    rng = np.random.default_rng(0)
    rows = rng.choice(np.arange(800, len(x)), size=100, replace=False)
    shifted = np.clip(x[rows] + rng.normal(0, noise, x[rows].shape), 0, 1).astype(np.float32)
    _save(batch, shifted, y[rows])
    _save(again, shifted, y[rows])
    return {"rows": 100}
"""


def _workflow(write_spec: Any, checks: str, **params: Any) -> Any:
    spec = write_spec(SPEC.replace("CHECKS", checks), code=CODE)
    return load_workflow(spec, params or None)


def _checks(run: WorkflowRun, step: str = "collect") -> list[dict[str, Any]]:
    report: list[dict[str, Any]] = json.loads((run.step_dir(step) / "checks.json").read_text())
    return report


def test_an_unshifted_batch_passes_and_the_result_is_recorded(write_spec: Any, home: Path) -> None:
    checks = "[{use: drift, on: [batch, again], reference: train, policy: warn}]"
    run = run_workflow(_workflow(write_spec, checks), pm=get_plugin_manager(autoload=False))
    assert run.status == "succeeded"
    first, second = _checks(run)
    assert (first["checker"], first["target"], first["passed"], first["policy"]) == (
        "drift",
        "batch",
        True,
        "warn",
    )
    assert first["summary"].startswith("no drift in 100 samples")
    metrics = first["metrics"]
    assert 0.05 <= metrics["p_value"] <= 1.0
    assert {
        "score",
        "reference_score",
        "anomalous_share",
        "p_autoencoder",
        "p_features",
        "p_class_balance",
    } <= set(metrics)
    details = first["details"]
    assert details["class_balance"]["p_value"] > 0.05  # the npz's labels are used by default
    assert len(details["features"]) == 64
    png = Path(details["artifacts"][0])
    assert png == run.step_dir("collect") / "checks" / "drift-batch.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the detector was fitted once, cached in the run directory, and reused for the second target
    assert details["fitted"] is True and second["details"]["fitted"] is False
    cache = Path(details["detector"])
    assert cache.parent == run.directory / "checks" / "drift"
    assert sorted(p.name for p in cache.iterdir()) == ["arrays.npz", "detector.json", "weights.pt"]
    assert second["metrics"]["p_value"] == metrics["p_value"]


def test_a_shifted_batch_fails_the_step_when_the_policy_is_fail(write_spec: Any, home: Path) -> None:
    checks = "[{use: drift, on: batch, reference: train, policy: fail, plot: false}]"
    run = WorkflowRun(_workflow(write_spec, checks, noise=0.2), pm=get_plugin_manager(autoload=False))
    run.open()
    run_step(run, "make")
    with pytest.raises(CheckFailed) as failure:
        run_step(run, "collect")
    (result,) = failure.value.report
    assert not result.passed and result.checker == "drift"
    assert result.summary.startswith("drift in 100 samples")
    assert result.metrics["p_value"] < 1e-6 and result.metrics["anomalous_share"] > 0.5
    assert "artifacts" not in result.details
    assert "check failed: drift on batch: drift in 100 samples" in str(failure.value)


def test_a_missing_reference_option_is_a_failed_result_naming_it(write_spec: Any, home: Path) -> None:
    run = run_workflow(
        _workflow(write_spec, "[{use: drift, on: batch, policy: warn}]"),
        pm=get_plugin_manager(autoload=False),
    )
    (result,) = _checks(run)
    assert not result["passed"]
    assert "'reference'" in result["summary"]
    assert result["details"]["error"] == result["summary"]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ("reference: nowhere", "no artifact or file named 'nowhere'"),
        ("reference: train, alpha: 2", "'alpha' must lie in (0, 1)"),
        ("reference: train, features: [f0, nope]", "lacks the columns ['nope']"),
        ("reference: train, plot: maybe", "'plot' must be bool"),
        ("detector: saved, features: [f0]", "give 'features' or 'detector', not both"),
    ],
)
def test_bad_options_are_failed_results(write_spec: Any, home: Path, options: str, expected: str) -> None:
    run = run_workflow(
        _workflow(write_spec, f"[{{use: drift, on: batch, policy: warn, {options}}}]"),
        pm=get_plugin_manager(autoload=False),
    )
    (result,) = _checks(run)
    assert not result["passed"] and expected in result["summary"]


def test_a_saved_detector_is_reused_instead_of_fitting(write_spec: Any, home: Path, tmp_path: Path) -> None:
    import numpy as np
    import pandas as pd
    from sklearn.datasets import load_digits

    from scanflow_core.checking.drift import DriftDetector

    order = np.random.default_rng(0).permutation(1797)
    x = (load_digits().data[order][:800] / 16.0).astype(np.float32)
    columns = [f"f{i}" for i in range(64)]

    DriftDetector(seed=1, epochs=10).fit(pd.DataFrame(x, columns=columns)).save(tmp_path / "saved")
    checks = f"[{{use: drift, on: batch, detector: {tmp_path / 'saved'}, alpha: 0.01}}]"
    run = run_workflow(_workflow(write_spec, checks), pm=get_plugin_manager(autoload=False))
    (result,) = _checks(run)
    assert result["passed"], result["summary"]
    assert result["details"]["detector"] == str(tmp_path / "saved")
    assert result["details"]["alpha"] == 0.01
    assert "p_class_balance" not in result["metrics"]  # the saved detector knows no classes
    assert not (run.directory / "checks" / "drift").exists()


def test_unlabelled_new_data_is_checked_against_a_labelled_reference(write_spec: Any, home: Path) -> None:
    # Production data comes without labels: the reference's label column is no feature, and the
    # class-balance test is left out instead of the check failing on a missing column.
    code = CODE.replace(
        "_save(again, shifted, y[rows])",
        'with again.open("wb") as file:\n        np.savez(file, X=shifted)',
    )
    checks = "[{use: drift, on: again, reference: train, policy: warn, plot: false}]"
    spec = write_spec(SPEC.replace("CHECKS", checks), code=code)
    run = run_workflow(load_workflow(spec), pm=get_plugin_manager(autoload=False))

    assert run.status == "succeeded"
    (result,) = _checks(run)
    assert result["passed"] is True, result["summary"]
    assert len(result["details"]["features"]) == 64  # the 64 pixels, not the label
    assert result["details"].get("class_balance") is None
