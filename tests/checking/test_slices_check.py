"""``use: slices``: a planted gap between slices fails, a fair model passes, the four-fifths rule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scanflow_core.checking.slices import slice_metric
from scanflow_core.plugins import get_plugin_manager
from scanflow_core.runner import run_workflow
from scanflow_core.runs import WorkflowRun
from scanflow_core.spec import load_workflow

CODE = """
import numpy as np
import pandas as pd

def block(group, n, correct, region=None):
    label = np.arange(n) % 2
    prediction = label.copy()
    prediction[correct:] = 1 - prediction[correct:]
    return pd.DataFrame({"group": group, "region": region, "label": label, "prediction": prediction})

def predict(unfair, fair, selection, digits):
    # accuracy: A 190/200, B 140/200, C 0/5 (too small to count); region: north, south, missing
    pd.concat(
        [block("A", 200, 190, "north"), block("B", 200, 140, "south"), block("C", 5, 0)]
    ).to_csv(unfair, index=False)
    pd.concat([block("A", 200, 180), block("B", 200, 176)]).to_csv(fair, index=False)
    # selection rates: A 100/200 = 0.5, B 70/200 = 0.35: ratio 0.7, under the four-fifths rule
    picked = [1] * 100 + [0] * 100 + [1] * 70 + [0] * 130
    pd.DataFrame({"group": ["A"] * 200 + ["B"] * 200, "label": 0, "prediction": picked}).to_csv(
        selection, index=False
    )
    labels = np.arange(300) % 10
    pd.DataFrame({"group": np.arange(300) % 3, "label": labels, "prediction": labels}).to_csv(
        digits, index=False
    )
"""


def _run(write_spec: Any, checks: str) -> WorkflowRun:
    spec = write_spec(
        f"""
        apiVersion: scanflow/v1
        name: sliced
        steps:
          - name: predict
            stage: evaluation
            call: MOD:predict
            outputs:
              unfair: {{kind: metrics, path: unfair.csv}}
              fair: {{kind: metrics, path: fair.csv}}
              selection: {{kind: metrics, path: selection.csv}}
              digits: {{kind: metrics, path: digits.csv}}
            checks: {checks}
        """,
        code=CODE,
    )
    return run_workflow(load_workflow(spec), pm=get_plugin_manager(autoload=False))


def _results(run: WorkflowRun) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = json.loads((run.step_dir("predict") / "checks.json").read_text())
    return results


def test_a_planted_disparity_fails_and_a_fair_model_passes(write_spec: Any, home: Path) -> None:
    run = _run(
        write_spec,
        """
              - {use: slices, on: fair, slice: group}
              - {use: slices, on: unfair, slice: [group, region], policy: warn}
        """,
    )

    assert run.status == "succeeded"
    fair, by_group, by_region = _results(run)
    assert fair["passed"], fair["summary"]
    assert fair["metrics"]["disparity"] == pytest.approx(0.02)
    assert fair["metrics"]["accuracy.A"] == 0.9 and fair["metrics"]["accuracy.B"] == 0.88

    assert not by_group["passed"] and by_group["policy"] == "warn"
    assert by_group["metrics"]["disparity"] == pytest.approx(0.25)
    assert by_group["metrics"]["ratio"] == pytest.approx(0.7 / 0.95)
    assert by_group["metrics"]["accuracy.C"] == 0.0  # reported ...
    slices = {row["value"]: row for row in by_group["details"]["slices"]}
    assert slices["C"]["rows"] == 5 and not slices["C"]["counted"]  # ... but too small to count
    assert by_group["details"]["worst"] == "B" and by_group["details"]["best"] == "A"
    assert "disparity 0.250 > 0.1" in by_group["summary"]

    assert by_region["details"]["column"] == "region"
    assert {row["value"] for row in by_region["details"]["slices"]} == {"north", "south", "<missing>"}


def test_the_four_fifths_rule_on_selection_rates(write_spec: Any, home: Path) -> None:
    run = _run(
        write_spec,
        """
              - {use: slices, on: selection, slice: group, metric: positive_rate, max_disparity: 0.2,
                 min_ratio: 0.8}
        """,
    )

    assert run.status == "failed"
    (result,) = _results(run)
    assert result["metrics"]["positive_rate.A"] == 0.5 and result["metrics"]["positive_rate.B"] == 0.35
    assert result["metrics"]["ratio"] == pytest.approx(0.7)
    assert "ratio 0.700 < 0.8" in result["summary"] and "disparity" not in result["summary"].split(":")[-1]


@pytest.mark.parametrize("metric", ["f1", "precision", "recall"])
@pytest.mark.parametrize("classes", [2, 4])
def test_metrics_agree_with_scikit_learn(metric: str, classes: int) -> None:
    from sklearn import metrics

    rng = np.random.default_rng(classes)
    truth, predicted = rng.integers(0, classes, 300), rng.integers(0, classes, 300)
    scorer = {"f1": metrics.f1_score, "precision": metrics.precision_score, "recall": metrics.recall_score}
    average = "binary" if classes == 2 else "macro"
    expected = scorer[metric](truth, predicted, average=average, zero_division=0)

    assert slice_metric(metric, truth, predicted, 1 if classes == 2 else None) == pytest.approx(expected)


def test_bad_options_give_failed_results_naming_the_option(write_spec: Any, home: Path) -> None:
    run = _run(
        write_spec,
        """
              - {use: slices, name: none, on: fair, policy: warn}
              - {use: slices, name: metric, on: fair, slice: group, metric: auc, policy: warn}
              - {use: slices, name: column, on: fair, slice: sex, policy: warn}
              - {use: slices, name: min_size, on: fair, slice: group, min_size: ten, policy: warn}
              - {use: slices, name: positive, on: digits, slice: group, metric: positive_rate, policy: warn}
        """,
    )

    expected = {
        "none": "needs the option 'slice'",
        "metric": "option 'metric' must be one of",
        "column": "has no column 'sex'",
        "min_size": "option 'min_size' must be int",
        "positive": "needs the option 'positive'",
    }
    results = {r["check"]: r for r in _results(run)}
    for name, words in expected.items():
        assert not results[name]["passed"]
        assert words in results[name]["summary"], results[name]["summary"]
