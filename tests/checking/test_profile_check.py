"""``use: profile``: exact statistics per column and per slice, planted outliers found, thresholds."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from scanflow_core.checking.profile import profile_frame
from scanflow_core.errors import CheckFailed
from scanflow_core.plugins import get_plugin_manager
from scanflow_core.runner import run_workflow
from scanflow_core.runs import WorkflowRun
from scanflow_core.spec import load_workflow
from scanflow_core.steps import run_step

SPEC = """
apiVersion: scanflow/v1
name: analysis
steps:
  - {name: ingest, stage: data_ingestion, call: MOD:ingest, outputs: {table: {path: table.csv}}}
  - name: analyse
    stage: data_analysis
    call: MOD:analyse
    inputs: [table]
    outputs: [summary]
    checks: CHECKS
"""

# 40 rows, two regions of 20; ``x`` is 1..40 plus one planted outlier (1000) in the south;
# ``y`` misses 4 values (all in the north).
CODE = """
import pandas as pd

def ingest(table):
    x = list(range(1, 40)) + [1000]
    y = [None if i < 4 else float(i % 7) for i in range(40)]
    region = ["north"] * 20 + ["south"] * 20
    pd.DataFrame({"x": x, "y": y, "region": region}).to_csv(table, index=False)
    return {"rows": 40}

def analyse(table, summary):
    summary.write_text(str(len(pd.read_csv(table))))
    return {"rows": 40}
"""


def _run(write_spec: Any, checks: str) -> WorkflowRun:
    spec = write_spec(SPEC.replace("CHECKS", checks), code=CODE)
    return run_workflow(load_workflow(spec), pm=get_plugin_manager(autoload=False))


def _result(run: WorkflowRun) -> dict[str, Any]:
    [result] = json.loads((run.step_dir("analyse") / "checks.json").read_text())
    assert isinstance(result, dict)
    return result


def test_profile_reports_columns_slices_and_the_planted_outlier(write_spec: Any, home: Path) -> None:
    run = _run(write_spec, "[{use: profile, on: table, slice: region}]")

    assert run.status == "succeeded"
    result = _result(run)
    assert result["passed"] is True and result["phase"] == "inputs"
    assert result["metrics"] == {
        "rows": 40,
        "columns": 3,
        "missing_share": round(4 / 120, 6),
        "outlier_share": round(1 / 76, 6),  # 1 outlier among 40 x and 36 y values
        "max_column_missing_share": 0.1,
        "max_column_outlier_share": 0.025,
        "slices": 2,
    }
    x = result["details"]["columns"]["x"]
    expected = pd.Series([*range(1, 40), 1000], dtype=float)
    assert x["count"] == 40 and x["missing"] == 0 and x["distinct"] == 40
    assert x["mean"] == pytest.approx(expected.mean()) and x["std"] == pytest.approx(expected.std())
    assert (x["min"], x["q1"], x["median"], x["q3"], x["max"]) == (1.0, 10.75, 20.5, 30.25, 1000.0)
    assert x["outliers"] == 1 and x["outlier_bounds"] == [10.75 - 1.5 * 19.5, 30.25 + 1.5 * 19.5]
    y = result["details"]["columns"]["y"]
    assert (y["count"], y["missing"], y["missing_share"]) == (36, 4, 0.1)
    region = result["details"]["columns"]["region"]
    assert region["top"] == [{"value": "north", "count": 20}, {"value": "south", "count": 20}]
    assert "mean" not in region

    north, south = result["details"]["slices"]["north"], result["details"]["slices"]["south"]
    assert (north["rows"], north["share"], south["rows"]) == (20, 0.5, 20)
    assert north["missing_share"] == pytest.approx(4 / 60, abs=1e-6) and south["missing_share"] == 0
    assert north["outlier_share"] == 0 and south["outlier_share"] == pytest.approx(1 / 40)
    assert north["means"]["x"] == 10.5 and south["means"]["x"] == pytest.approx(
        (sum(range(21, 40)) + 1000) / 20
    )
    assert "3 slices" not in result["summary"] and "2 slices by 'region'" in result["summary"]

    [artifact] = result["details"]["artifacts"]
    assert artifact == str(run.step_dir("analyse") / "checks" / "profile-table.json")

    def no_nan(text: str) -> None:
        raise AssertionError(f"{text} in the profile JSON")

    full = json.loads(Path(artifact).read_text(), parse_constant=no_nan)
    assert full["slices"]["south"]["column_stats"]["x"]["outliers"] == 1
    assert full["slices"]["north"]["column_stats"]["y"]["missing"] == 4


def test_thresholds_fail_the_check_and_name_the_columns(write_spec: Any, home: Path) -> None:
    spec = write_spec(
        SPEC.replace("CHECKS", "[{use: profile, on: table, max_missing: 0.05, max_outliers: 0.01}]"),
        code=CODE,
    )
    run = WorkflowRun(load_workflow(spec), pm=get_plugin_manager(autoload=False))
    run.open()
    run_step(run, "ingest")
    with pytest.raises(CheckFailed) as caught:
        run_step(run, "analyse")
    [result] = caught.value.report
    assert not result.passed
    assert result.details["over_threshold"] == [
        {"column": "y", "missing_share": 0.1, "max_missing": 0.05},
        {"column": "x", "outlier_share": 0.025, "max_outliers": 0.01},
    ]
    assert "over the threshold: y (10.0% missing), x (2.5% outliers)" in str(caught.value)


def test_zscore_outliers_and_bad_options(write_spec: Any, home: Path) -> None:
    checks = """
      - {use: profile, on: table, outliers: zscore, factor: 3, policy: warn}
      - {use: profile, name: bogus, on: table, outliers: isolation_forest, policy: warn}
      - {use: profile, name: sliced, on: table, slice: country, policy: warn}
    """
    run = _run(write_spec, checks)
    zscore, bogus, sliced = json.loads((run.step_dir("analyse") / "checks.json").read_text())
    assert zscore["passed"] and zscore["details"]["columns"]["x"]["outliers"] == 1
    assert zscore["details"]["outliers"] == {"method": "zscore", "factor": 3.0}
    assert (
        not bogus["passed"]
        and "option 'outliers' must be one of ('iqr', 'zscore', 'none')" in bogus["summary"]
    )
    assert not sliced["passed"] and "has no column 'country'" in sliced["summary"]


def test_profile_frame_copes_with_empty_and_odd_columns() -> None:
    frame = pd.DataFrame(
        {
            "empty": [np.nan] * 4,
            "flag": [True, False, True, True],
            "when": pd.to_datetime(["2024-01-01", "2024-02-01", None, "2024-03-01"]),
            "inf": [1.0, np.inf, 2.0, 3.0],
        }
    )
    profile = profile_frame(frame, outliers="none")
    stats = profile["column_stats"]
    assert stats["empty"]["count"] == 0 and stats["empty"]["mean"] is None
    assert "mean" not in stats["flag"] and stats["flag"]["top"][0] == {"value": True, "count": 3}
    assert stats["when"]["min"].startswith("2024-01-01") and stats["when"]["missing"] == 1
    assert stats["inf"]["infinite"] == 1 and stats["inf"]["max"] == 3.0  # statistics of the finite values
    assert "outliers" not in stats["inf"] and profile["outlier_share"] == 0.0
    json.dumps(profile, allow_nan=False)
    assert not any(isinstance(v, float) and math.isnan(v) for v in profile.values())
