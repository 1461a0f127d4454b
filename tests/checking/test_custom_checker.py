"""A third-party checker through the entry-point group: the example package ``examples/checker_plugin``.

``make install`` installs it (editable) in every profile, so these tests load it as a user would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scanflow_core.errors import CheckFailed
from scanflow_core.plugins import describe_plugins, get_plugin_manager, hookimpl
from scanflow_core.runner import run_workflow
from scanflow_core.spec import load_workflow

SPEC = """
apiVersion: scanflow/v1
name: rows
steps:
  - name: ingest
    stage: data_ingestion
    call: MOD:ingest
    outputs: {table: {path: table.csv}}
    checks: CHECKS
"""

CODE = """
def ingest(table):
    table.write_text("a,b\\n1,x\\n2,y\\n3,z\\n")
    return {"rows": 3}
"""


class StepErrors:
    def __init__(self) -> None:
        self.errors: dict[str, BaseException] = {}

    @hookimpl
    def scanflow_step_error(self, step_run: Any, error: BaseException) -> None:
        self.errors[step_run.name] = error


@pytest.fixture(autouse=True)
def _autoload(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCANFLOW_DISABLE_PLUGIN_AUTOLOAD", raising=False)


def _checks(run: Any) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((run.step_dir("ingest") / "checks.json").read_text())
    return data


def test_the_entry_point_plugin_is_loaded_and_listed() -> None:
    pm = get_plugin_manager()
    [entry] = [p for p in describe_plugins(pm) if p["name"] == "row_limits"]
    assert entry == {
        "name": "row_limits",
        "source": "scanflow-row-limits 0.1.0",
        "hooks": ["scanflow_check", "scanflow_checker_names"],
    }
    assert "row_limits" in {n for names in pm.hook.scanflow_checker_names() for n in names or ()}


def test_a_workflow_runs_the_third_party_checker(write_spec: Any, home: Path) -> None:
    errors = StepErrors()
    spec = write_spec(
        SPEC.replace(
            "CHECKS",
            """
      - {use: row_limits, on: table, min: 2, max: 10}
      - {use: row_limits, name: big_enough, on: table, min: 100, severity: critical}
    """,
        ),
        code=CODE,
    )
    run = run_workflow(load_workflow(spec), pm=get_plugin_manager([errors]))

    assert run.status == "failed"
    within, too_few = _checks(run)
    assert (
        within["passed"]
        and within["summary"] == "3 rows, within [2, 10]"
        and within["metrics"] == {"rows": 3}
    )
    assert not too_few["passed"] and too_few["check"] == "big_enough" and too_few["severity"] == "critical"
    error = errors.errors["ingest"]
    assert isinstance(error, CheckFailed)
    assert "row_limits on table: 3 rows, fewer than 100" in str(error)


def test_a_crash_in_the_plugin_is_a_failed_result_and_warn_goes_on(write_spec: Any, home: Path) -> None:
    spec = write_spec(SPEC.replace("CHECKS", "[{use: row_limits, on: table, policy: warn}]"), code=CODE)
    run = run_workflow(load_workflow(spec), pm=get_plugin_manager())

    assert run.status == "succeeded"
    [result] = _checks(run)
    assert result["passed"] is False
    assert result["summary"] == (
        "the checker crashed: CheckOptionError: check 'row_limits' needs the option 'min', 'max' or both"
    )
    assert "Traceback" in result["details"]["traceback"]


def test_with_autoload_off_the_checker_is_absent(
    write_spec: Any, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCANFLOW_DISABLE_PLUGIN_AUTOLOAD", "1")
    pm = get_plugin_manager()
    assert "row_limits" not in {p["name"] for p in describe_plugins(pm)}

    spec = write_spec(SPEC.replace("CHECKS", "[{use: row_limits, on: table, min: 1}]"), code=CODE)
    run = run_workflow(load_workflow(spec), pm=pm)

    assert run.status == "failed"
    [result] = _checks(run)
    assert result["summary"].startswith("no checker named 'row_limits' is registered (registered: ")
    assert "great_expectations" in result["summary"]
