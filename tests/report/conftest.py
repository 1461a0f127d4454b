"""The run every report test reads: made once per module (see report_helpers)."""

from __future__ import annotations

import pytest
from report_helpers import ShoutyChecker, write_workflow

from scanflow_core import load_workflow, run_workflow
from scanflow_core.plugins import get_plugin_manager
from scanflow_core.runs import WorkflowRun


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> WorkflowRun:
    folder = tmp_path_factory.mktemp("report-run")
    pm = get_plugin_manager(autoload=False)
    pm.register(ShoutyChecker(), name="shouty")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SCANFLOW_TRACKER", "off")
        run = run_workflow(load_workflow(write_workflow(folder)), home=folder / ".scanflow", pm=pm)
    assert run.status == "failed"
    assert {n: s["status"] for n, s in run.step_summaries().items()} == {
        "make": "succeeded",
        "fit": "succeeded",
        "broken": "failed",
        "after": "upstream_failed",
        "guarded": "failed",  # its input failed a check whose policy is fail
    }
    return run
