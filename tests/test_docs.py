"""The README's examples are real: its spec loads and its plugin example checks a real run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from scanflow_core.plugins import get_plugin_manager
from scanflow_core.runner import run_workflow
from scanflow_core.spec import load_workflow, load_workflow_text

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_the_readme_opens_with_a_spec_that_loads() -> None:
    spec = _blocks("yaml")[0]
    workflow = load_workflow_text(spec, file="README.md")
    assert [s.name for s in workflow.plan] == ["ingest", "split", "train", "evaluate"]
    assert len(spec.strip().splitlines()) <= 10


def test_the_readme_names_both_set_up_commands() -> None:
    console = "\n".join(_blocks("console"))
    assert "make demo" in console and "make test" in console


def test_the_readme_plugin_example_checks_a_real_run(write_spec: Any, home: Path) -> None:
    namespace: dict[str, Any] = {}
    exec(next(b for b in _blocks("python") if "class RowCount" in b), namespace)
    pm = get_plugin_manager([namespace["RowCount"]()], autoload=False)
    spec = write_spec(
        """
        apiVersion: scanflow/v1
        name: docs
        steps:
          - name: ingest
            stage: data_ingestion
            call: MOD:ingest
            outputs: [table]
            checks: [{use: row_count, on: table, min: 5, policy: warn}]
        """,
        code="def ingest(table):\n    table.write_text('a\\nb\\nc\\n')\n    return {'rows': 3}\n",
    )
    run = run_workflow(load_workflow(spec), pm=pm)
    checks = run.step_summary("ingest")["checks"]  # type: ignore[index]
    assert checks == {"passed": 0, "failed": 0, "warned": 1}
    report = (run.step_dir("ingest") / "checks.json").read_text()
    assert '"summary": "3 rows"' in report
