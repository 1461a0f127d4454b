"""``use: leakage``: planted exact and near duplicates are counted exactly; a clean split passes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scanflow_core.checking.leakage import shared_rows
from scanflow_core.plugins import get_plugin_manager
from scanflow_core.runner import run_workflow
from scanflow_core.runs import WorkflowRun
from scanflow_core.spec import load_workflow

PLANTED = """
import numpy as np

def save(path, x, y):
    with path.open("wb") as file:
        np.savez(file, X=x, y=y)

def split(train, eval, test):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(400, 6)), rng.integers(0, 3, 400)
    x_train, y_train = x[:300], y[:300]
    # eval: 50 fresh rows and 1 exact copy of train row 20
    save(eval, np.vstack([x[300:350], x_train[[20]]]), np.append(y[300:350], y_train[20]))
    # test: 50 fresh rows, 3 exact copies of train rows 0-2 (relabelled), 4 near copies of rows 10-13
    planted = np.vstack([x_train[[0, 1, 2]], x_train[10:14] + 0.01])
    labels = np.concatenate([(y_train[[0, 1, 2]] + 1) % 3, y_train[10:14]])
    save(test, np.vstack([x[350:], planted]), np.append(y[350:], labels))
    save(train, x_train, y_train)
"""

CLEAN = """
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

def split(train, test):
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x / 16, y, test_size=0.2, stratify=y, random_state=0)
    for path, xs, ys in ((train, x_train, y_train), (test, x_test, y_test)):
        with path.open("wb") as file:
            np.savez(file, X=xs, y=ys)
"""


def _run(
    write_spec: Any, checks: str, code: str, outputs: tuple[str, ...] = ("train", "eval", "test")
) -> WorkflowRun:
    spec = write_spec(
        f"""
        apiVersion: scanflow/v1
        name: leaky
        steps:
          - name: split
            stage: data_splitting
            call: MOD:split
            outputs: {{{", ".join(f"{o}: {{path: {o}.npz}}" for o in outputs)}}}
            checks: {checks}
        """,
        code=code,
    )
    return run_workflow(load_workflow(spec), pm=get_plugin_manager(autoload=False))


def _results(run: WorkflowRun, step: str = "split") -> dict[tuple[str, str], dict[str, Any]]:
    report = json.loads((run.step_dir(step) / "checks.json").read_text())
    return {(r["check"], r["target"]): r for r in report}


def test_planted_exact_and_near_duplicates_are_counted_and_fail_the_split(
    write_spec: Any, home: Path
) -> None:
    run = _run(
        write_spec,
        """
              - {use: leakage, on: [eval, test], against: [train, eval]}
              - {use: leakage, name: exact_only, on: test, against: train, near: false, max_shared: 3,
                 policy: warn}
              - {use: leakage, name: share, on: test, against: train, max_share: 0.2, policy: warn}
        """,
        PLANTED,
    )

    assert run.status == "failed"
    assert "leakage" in run.step_summary("split")["reason"]  # type: ignore[index]
    results = _results(run)
    on_eval, on_test = results["leakage", "eval"], results["leakage", "test"]
    assert not on_eval["passed"] and not on_test["passed"]
    assert on_eval["metrics"]["train.exact"] == 1 and on_eval["metrics"]["train.near"] == 0
    assert "eval.exact" not in on_eval["metrics"]  # the target is not compared with itself
    assert on_test["metrics"]["train.exact"] == 3  # relabelled copies count: labels are ignored
    assert on_test["metrics"]["train.near"] == 4
    assert on_test["metrics"]["train.shared"] == 7
    assert on_test["metrics"]["train.share"] == round(7 / 57, 6)
    assert on_test["metrics"]["eval.shared"] == 0
    pair = on_test["details"]["pairs"]["train"]
    assert pair["exact_examples"] == [[50, 0], [51, 1], [52, 2]]
    assert pair["near_examples"] == [[53, 10], [54, 11], [55, 12], [56, 13]]
    assert "7 of 57 rows of 'test' also in 'train' (3 exact, 4 near)" in on_test["summary"]

    exact_only = results["exact_only", "test"]
    assert exact_only["passed"] and exact_only["metrics"]["train.near"] == 0
    assert results["share", "test"]["passed"]  # 7/57 = 12% <= 20%, and no count limit then


def test_a_clean_stratified_split_of_real_data_passes(write_spec: Any, home: Path) -> None:
    run = _run(write_spec, "[{use: leakage, on: test, against: train}]", CLEAN, outputs=("train", "test"))

    assert run.status == "succeeded"
    result = _results(run)["leakage", "test"]
    assert result["passed"], result["summary"]
    assert result["metrics"]["rows"] == 360
    assert result["metrics"]["train.exact"] == 0 and result["metrics"]["train.near"] == 0


def test_tables_compare_numbers_within_tolerance_and_other_columns_exactly() -> None:
    frame = pd.DataFrame(
        {
            "n": [1, 1, 7, 3],  # integers here, floats in the other table: equal values still match
            "b": [2.0, 2.0, 5.0, 4.0],
            "city": ["x", "y", "x", "x"],
            "m": [0.5, 0.5, np.nan, 0.25],
        }
    )
    other = pd.DataFrame(
        {
            "n": [1.0, 7.0, 3.0, 3.0],
            "b": [2.0, 5.0, 4.0, 4.0005],
            "city": ["x", "x", "z", "x"],
            "m": [0.5, np.nan, 0.25, 0.25],
        }
    )

    found = shared_rows(frame, other, tolerance=0.1)

    # row 0 = other 0, row 2 = other 1 (NaN meets NaN); row 3 is near other 3 (same city) but not
    # other 2 (another city); row 1 is nothing: its city differs from every close row's
    assert found["exact_count"] == 2 and found["exact_examples"] == [[0, 0], [2, 1]]
    assert found["near_count"] == 1 and found["near_examples"] == [[3, 3]]
    assert shared_rows(frame, other, tolerance=None)["near_count"] == 0


def test_digits_sized_splits_take_well_under_a_second() -> None:
    from sklearn.datasets import load_digits

    x = load_digits().data / 16
    rng = np.random.default_rng(0)
    x = x + rng.normal(scale=1e-4, size=x.shape)  # only near duplicates of itself
    frame, other = pd.DataFrame(x[:300]), pd.DataFrame(np.vstack([x[300:], x[:50]]))
    started = time.perf_counter()
    found = shared_rows(frame, other, tolerance=0.1)
    elapsed = time.perf_counter() - started

    assert found["exact_count"] == 50 and found["near_count"] == 0
    assert elapsed < 0.5, f"{elapsed:.3f}s"


def test_bad_options_give_failed_results_naming_the_option(write_spec: Any, home: Path) -> None:
    run = _run(
        write_spec,
        """
              - {use: leakage, name: none, on: test, policy: warn}
              - {use: leakage, name: tolerance, on: test, against: train, tolerance: -1, policy: warn}
              - {use: leakage, name: near, on: test, against: train, near: "yes", policy: warn}
              - {use: leakage, name: max_shared, on: test, against: train, max_shared: 0.5, policy: warn}
              - {use: leakage, name: nowhere, on: test, against: [train, nowhere], policy: warn}
              - {use: leakage, name: ignore, on: test, against: train, ignore: [f0, f1, f2, f3, f4, f5, label],
                 policy: warn}
        """,
        PLANTED,
    )

    assert run.status == "succeeded"  # policy warn: the step goes on
    results = _results(run)
    expected = {
        "none": "needs the option 'against'",
        "tolerance": "option 'tolerance' must be >= 0",
        "near": "option 'near' must be bool",
        "max_shared": "option 'max_shared' must be int",
        "nowhere": "no artifact or file named 'nowhere'",
        "ignore": "no columns left to compare",
    }
    for name, words in expected.items():
        result = results[name, "test"]
        assert not result["passed"] and result["policy"] == "warn"
        assert words in result["summary"], result["summary"]
