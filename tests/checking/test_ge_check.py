"""``use: great_expectations``: real GE 1.x validations of CSV and Parquet artifacts in real runs.

GE takes seconds to import; every test here shares the one import of the process.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

from scanflow_core.checking.expectations import read_suite, validate_frame
from scanflow_core.errors import CheckFailed
from scanflow_core.plugins import get_plugin_manager, hookimpl
from scanflow_core.runner import run_workflow
from scanflow_core.runs import WorkflowRun
from scanflow_core.spec import load_workflow

SPEC = """
apiVersion: scanflow/v1
name: ge
steps:
  - name: make
    stage: data_ingestion
    call: MOD:make
    outputs: {table: {path: table.csv}, frame: {path: frame.parquet}}
  - name: use
    stage: data_validation
    call: MOD:use
    inputs: [table, frame]
    outputs: [report]
    checks: CHECKS
"""

CODE = """
import pandas as pd

def make(table, frame):
    data = pd.DataFrame({
        "age": [23, 35, 41, 52, 67, 29],
        "city": ["paris", "lyon", "paris", "nice", "lyon", "paris"],
        "income": [31.5, 42.0, None, 55.25, 61.0, 38.0],
    })
    data.to_csv(table, index=False)
    data.to_parquet(frame)
    return {"rows": len(data)}

def use(table, frame, report):
    report.write_text(str(len(pd.read_csv(table))))
    return {"rows": 6}
"""


class StepErrors:
    """Keeps the error each failed step raised (``run_workflow`` records it, never raises it)."""

    def __init__(self) -> None:
        self.errors: dict[str, BaseException] = {}

    @hookimpl
    def scanflow_step_error(self, step_run: Any, error: BaseException) -> None:
        self.errors[step_run.name] = error


def _run(write_spec: Any, checks: str, errors: StepErrors | None = None) -> WorkflowRun:
    spec = write_spec(SPEC.replace("CHECKS", checks), code=CODE)
    pm = get_plugin_manager([errors] if errors else [], autoload=False)
    return run_workflow(load_workflow(spec), pm=pm)


def _results(run: WorkflowRun, step: str = "use") -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((run.step_dir(step) / "checks.json").read_text())
    return data


def test_a_suite_file_in_ge_own_json_passes_on_a_csv(write_spec: Any, home: Path, tmp_path: Path) -> None:
    import great_expectations as gx

    suite = gx.ExpectationSuite(
        name="table",
        expectations=[
            gx.expectations.ExpectColumnToExist(column="age"),
            gx.expectations.ExpectColumnValuesToNotBeNull(column="city"),
            gx.expectations.ExpectColumnValuesToBeBetween(column="age", min_value=18, max_value=99),
            gx.expectations.ExpectColumnValuesToBeInSet(column="city", value_set=["paris", "lyon", "nice"]),
            gx.expectations.ExpectTableRowCountToBeBetween(min_value=1, max_value=100),
        ],
    )
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "table.json").write_text(json.dumps(suite.to_json_dict()))

    run = _run(write_spec, "[{use: great_expectations, on: table, suite: suites/table.json}]")

    assert run.status == "succeeded"
    [result] = _results(run)
    assert result["passed"] is True and result["phase"] == "inputs" and result["target"] == "table"
    assert result["metrics"] == {"evaluated": 5, "successful": 5, "unsuccessful": 0, "success_percent": 100.0}
    assert result["summary"] == "all 5 expectations of suite 'table' (suites/table.json) met"
    assert result["details"]["suite_source"] == "suites/table.json"
    [report] = result["details"]["artifacts"]
    full = json.loads(Path(report).read_text())
    assert full["success"] is True and full["statistics"]["evaluated_expectations"] == 5


def test_a_failing_expectation_with_policy_fail_stops_the_step(write_spec: Any, home: Path) -> None:
    errors = StepErrors()
    checks = """
      - use: great_expectations
        on: frame
        expectations:
          - {type: expect_column_values_to_not_be_null, kwargs: {column: income}}
          - {type: expect_column_values_to_be_between, column: age, max_value: 60}
          - {type: expect_column_values_to_be_in_set, column: city, value_set: [paris, lyon, nice]}
    """
    run = _run(write_spec, checks, errors)

    assert run.step_summary("use")["status"] == "failed"  # type: ignore[index]
    assert not (run.step_dir("use") / "outputs" / "report").exists()  # stopped before it ran
    error = errors.errors["use"]
    assert isinstance(error, CheckFailed)
    [result] = error.report
    assert not result.passed and result.policy == "fail" and result.target == "frame"
    assert result.metrics == {"evaluated": 3, "successful": 1, "unsuccessful": 2, "success_percent": 33.3333}
    assert "#0 expect_column_values_to_not_be_null(income): 1 unexpected of 6" in str(error)
    assert "#1 expect_column_values_to_be_between(age): 1 unexpected of 6" in str(error)
    null, between = result.details["failed"]
    assert (null["type"], null["column"]) == ("expect_column_values_to_not_be_null", "income")
    assert between["observed"]["unexpected_examples"] == [67]
    assert between["kwargs"] == {"column": "age", "max_value": 60}


def test_a_failing_expectation_with_policy_warn_records_and_continues(write_spec: Any, home: Path) -> None:
    checks = """
      - use: great_expectations
        on: [table, frame]
        policy: warn
        severity: warning
        suite:
          name: strict
          expectations: [{type: expect_column_max_to_be_between, kwargs: {column: income, max_value: 50}}]
    """
    run = _run(write_spec, checks)

    summary = run.step_summary("use")
    assert run.status == "succeeded" and summary is not None
    assert summary["checks"] == {"passed": 0, "failed": 0, "warned": 2}
    results = _results(run)
    assert [r["target"] for r in results] == ["table", "frame"]
    assert all(r["severity"] == "warning" for r in results)
    assert results[0]["details"]["failed"][0]["observed"] == 61.0
    assert "expect_column_max_to_be_between(income): observed 61.0" in results[0]["summary"]


def test_a_bad_suite_fails_naming_the_expectation_and_the_file(
    write_spec: Any, home: Path, tmp_path: Path
) -> None:
    (tmp_path / "bad.json").write_text(
        json.dumps(
            {
                "expectation_suite_name": "old_style",  # GE 0.x names: still read
                "expectations": [
                    {"expectation_type": "expect_column_to_exist", "kwargs": {"column": "age"}},
                    {
                        "expectation_type": "expect_column_values_to_be_unique_ish",
                        "kwargs": {"column": "age"},
                    },
                    {"expectation_type": "expect_column_values_to_not_be_null", "kwargs": {"column": "zip"}},
                    {"expectation_type": "expect_column_values_to_be_between", "kwargs": {"column": "age"}},
                ],
            }
        )
    )
    run = _run(write_spec, "[{use: great_expectations, on: table, suite: bad.json, policy: warn}]")

    [result] = _results(run)
    assert result["passed"] is False
    assert result["summary"].startswith("3 of 4 expectations of suite 'old_style' (bad.json) not met: ")
    unknown, missing, invalid = result["details"]["failed"]
    assert unknown["index"] == 1
    assert (
        "'expect_column_values_to_be_unique_ish' is not a Great Expectations expectation type"
        in unknown["error"]
    )
    assert "did you mean 'expect_column_values_to_be_unique'?" in unknown["error"]
    assert missing["column"] == "zip" and 'The column "zip" in BatchData does not exist' in missing["error"]
    assert invalid["error"].startswith("invalid kwargs:") and "min_value and max_value" in invalid["error"]
    assert result["details"]["invalid"] == [1, 3]


def test_a_crashing_or_slow_checker_is_a_failed_result_in_time(write_spec: Any, home: Path) -> None:
    errors = StepErrors()
    checks = """
      - {use: great_expectations, on: table, suite: no/such/suite.json, policy: warn}
      - {use: great_expectations, on: frame, expectations: [{type: expect_column_to_exist, column: age}], timeout: 0.001}
    """
    started = time.perf_counter()
    run = _run(write_spec, checks, errors)

    assert time.perf_counter() - started < 10
    crashed, slow = _results(run)
    assert crashed["passed"] is False and crashed["policy"] == "warn"
    assert crashed["summary"].startswith("the checker crashed: CheckOptionError: cannot read the suite ")
    assert "no/such/suite.json" in crashed["summary"]
    assert slow["passed"] is False and slow["summary"] == "the checker did not answer within 0.001s"
    assert isinstance(errors.errors["use"], CheckFailed)


def test_a_dataframe_in_memory_is_validated_too() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, float("nan")], "y": ["a", "b", "b"]})
    suite = read_suite(
        [
            {"type": "expect_column_values_to_be_in_set", "column": "y", "value_set": ["a", "b"]},
            {"type": "expect_column_values_to_not_be_null", "column": "x", "mostly": 0.5},
            {"type": "expect_column_mean_to_be_between", "column": "x", "min_value": 2},
        ]
    )
    result = validate_frame(frame, suite, target="memory")
    assert (result.passed, result.metrics["unsuccessful"]) == (False, 1)
    assert result.details["failed"][0]["observed"] == 1.5
