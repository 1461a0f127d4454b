"""``scanflow tracker sync`` and ``scanflow wipe``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tracking_helpers import client

from scanflow_core.cli import main
from scanflow_core.plugins import get_plugin_manager, hookimpl
from scanflow_core.records import CheckResult
from scanflow_core.runner import run_workflow
from scanflow_core.spec import load_workflow

SPEC = """
apiVersion: scanflow/v1
name: wiped
steps:
  - name: make
    stage: data_ingestion
    call: MOD:make
    outputs: [data]
    checks: [{use: probe}]
"""

CODE = """
from scanflow_core import log_metric
def make(data):
    log_metric("rows", 3)
    data.write_text("abc")
"""


class Probe:
    @hookimpl
    def scanflow_checker_names(self) -> list[str]:
        return ["probe"]

    @hookimpl
    def scanflow_check(self, step_run: Any, check: Any, target: str, path: Path) -> CheckResult | None:
        return (
            CheckResult("probe", target, True, "fine", metrics={"size": 3.0})
            if check.use == "probe"
            else None
        )


def _runs(uri: str) -> dict[str, list[Any]]:
    c = client(uri)
    exp = c.get_experiment_by_name("wiped")
    by_run: dict[str, list[Any]] = {}
    for r in c.search_runs([exp.experiment_id], max_results=1000):
        by_run.setdefault(r.data.tags["scanflow.run_id"], []).append(r)
    return by_run


def _two_runs(write_spec: Any, home: Path) -> tuple[Any, Any]:
    workflow = load_workflow(write_spec(SPEC, CODE))
    runs = [
        run_workflow(workflow, home=home, pm=get_plugin_manager([Probe()], autoload=False)) for _ in range(2)
    ]
    return runs[0], runs[1]


def test_wipe_a_run_deletes_its_mlflow_runs_and_metadata(write_spec: Any, tracked_home: Path) -> None:
    first, second = _two_runs(write_spec, tracked_home)
    uri = f"sqlite:///{tracked_home / 'mlflow.db'}"
    before = _runs(uri)
    assert len(before[first.run_id]) == 2 and len(before[second.run_id]) == 2
    child = next(r for r in before[first.run_id] if r.data.tags["scanflow.kind"] == "step")
    assert child.data.metrics["check.probe.data.passed"] == 1.0
    assert child.data.metrics["check.probe.data.size"] == 3.0
    assert (first.directory / "steps" / "make" / "checks.json").exists()
    artifacts = Path(child.info.artifact_uri.removeprefix("file://"))
    assert artifacts.exists()

    assert main(["wipe", first.run_id, "--yes", "--home", str(tracked_home)]) == 0
    after = _runs(uri)
    assert first.run_id not in after and len(after[second.run_id]) == 2
    with pytest.raises(Exception, match="not found"):
        client(uri).get_run(child.info.run_id)  # purged, not only marked deleted
    assert not artifacts.exists()
    assert not (first.directory / "tracking").exists()
    assert not (first.directory / "steps" / "make" / "checks.json").exists()
    assert not (first.directory / "attestations").exists()
    # the run's own record stays
    assert json.loads((first.directory / "run.json").read_text())["status"] == "succeeded"
    assert (first.directory / "steps" / "make" / "metrics.jsonl").exists()
    assert (second.directory / "steps" / "make" / "checks.json").exists()


def test_wipe_a_workflow_and_confirmation(
    write_spec: Any, tracked_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, second = _two_runs(write_spec, tracked_home)
    uri = f"sqlite:///{tracked_home / 'mlflow.db'}"
    assert main(["wipe", "--workflow", "wiped", "--home", str(tracked_home)]) == 1  # not a tty, no --yes
    assert "--yes" in capsys.readouterr().err
    assert len(_runs(uri)) == 2
    assert main(["wipe", "--workflow", "wiped", "--yes", "--home", str(tracked_home)]) == 0
    assert _runs(uri) == {}
    assert not (second.directory / "tracking").exists()
    assert main(["wipe", "nope", "--yes", "--home", str(tracked_home)]) == 2


def test_sync_with_nothing_spooled(tracked_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tracked_home / "runs").mkdir(parents=True)
    assert main(["tracker", "sync", "--home", str(tracked_home)]) == 0
    assert "nothing spooled" in capsys.readouterr().out
