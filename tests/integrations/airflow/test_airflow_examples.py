"""The Airflow examples (``examples/airflow/``) run for real, as their README tells a user to run them:
linked into the DAGs folder, then ``airflow dags test`` (a subprocess on the same metadata database)
or ``dag.test()`` in this process."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scanflow_core.attestation.verify import verify_attestation
from scanflow_core.spec import load_workflow

pytestmark = [
    pytest.mark.airflow,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient` is deprecated"),
]

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "airflow"
DIGITS_STEPS = ["ingest", "validate", "split", "train", "evaluate", "test"]


@pytest.fixture
def linked(airflow_db: Path) -> Iterator[Any]:
    """``linked(name)`` → the example's link in the DAGs folder (removed after the test)."""
    links: list[Path] = []

    def link(name: str) -> Path:
        path = airflow_db / name
        path.unlink(missing_ok=True)
        path.symlink_to(EXAMPLES / name)
        links.append(path)
        return path

    yield link
    for path in links:
        path.unlink(missing_ok=True)


def test_the_digits_dag_runs_under_airflow_dags_test(linked: Any, tmp_path: Path) -> None:
    """``airflow dags test digits``, as the README says: every step of the spec succeeds, every
    objective holds, and the run's attestations verify."""
    linked("digits_dag.py")
    home = tmp_path / "home"
    env = {**os.environ, "SCANFLOW_HOME": str(home), "SCANFLOW_TRACKER": "off"}
    airflow = Path(sys.executable).with_name("airflow")
    conf = json.dumps({"scanflow_run_id": "cli-digits"})
    done = subprocess.run(
        [str(airflow), "dags", "test", "digits", "-c", conf],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=540,
    )

    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    manifest = json.loads((home / "runs" / "cli-digits" / "run.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["orchestrator"] == "airflow"
    steps = load_workflow(EXAMPLES.parent / "digits" / "scanflow.yaml").plan.steps
    assert {n: s["status"] for n, s in manifest["steps"].items()} == dict.fromkeys(steps, "succeeded")
    assert set(DIGITS_STEPS) <= set(steps)
    assert manifest["objectives"] and all(o["passed"] for o in manifest["objectives"]), manifest["objectives"]
    assert sum(manifest["steps"]["split"]["metrics"].values()) == 1797  # every digit in one split
    assert verify_attestation(home / "runs" / "cli-digits").ok


def test_the_digits_taskflow_dag_runs(linked: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The TaskFlow example under ``dag.test()``: the same steps, made from decorated tasks."""
    monkeypatch.setenv("SCANFLOW_HOME", str(tmp_path / "home"))
    path = linked("digits_taskflow_dag.py")
    spec = importlib.util.spec_from_file_location("digits_taskflow_dag", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    dag_run = module.dag.test(run_conf={"scanflow_run_id": "taskflow-digits"})

    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    assert str(dag_run.state) == "success", states
    run_dir = tmp_path / "home" / "runs" / "taskflow-digits"
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["kind"] == "tasks"
    assert sorted(manifest["steps"]) == sorted(DIGITS_STEPS)
    assert manifest["steps"]["test"]["metrics"]["accuracy"] >= 0.9
    split = json.loads((run_dir / "steps" / "split" / "checks.json").read_text())
    assert [(c["checker"], c["target"], c["passed"]) for c in split] == [
        ("leakage", "eval", True),
        ("leakage", "test", True),
    ]
    verification = verify_attestation(run_dir)
    assert verification.ok, verification.table()


def test_the_readme_taskflow_snippet_runs(
    airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DAG the README shows under "Writing your own", as written there."""
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    (snippet,) = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    monkeypatch.setenv("SCANFLOW_HOME", str(tmp_path / "home"))
    path = airflow_db / "readme_demo_dag.py"
    path.write_text(snippet, encoding="utf-8")
    try:
        spec = importlib.util.spec_from_file_location("readme_demo_dag", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        dag_run = module.dag.test(run_conf={"scanflow_run_id": "readme"})
    finally:
        path.unlink()

    assert str(dag_run.state) == "success"
    manifest = json.loads((tmp_path / "home" / "runs" / "readme" / "run.json").read_text())
    assert manifest["status"] == "succeeded" and list(manifest["steps"]) == ["make", "train"]
    assert manifest["steps"]["train"]["metrics"] == {"loss": 0.05}
