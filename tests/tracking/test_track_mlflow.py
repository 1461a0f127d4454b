"""The MLflow tracker against the embedded store: one experiment per workflow, one parent run per
workflow run, one child per step (also when steps run in separate processes), what each holds."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from tracking_helpers import client, runs_of

from scanflow_core.runner import run_workflow
from scanflow_core.spec import load_workflow
from scanflow_core.tracking import mlflow_tracker
from scanflow_core.tracking.spool import Spool

SPEC = """
apiVersion: scanflow/v1
name: tracked
params: {n: 5, lr: 0.1}
objectives:
  - {name: fits, expr: "train.loss <= 1"}
TRACKER
steps:
  - {name: make, stage: data_ingestion, call: MOD:make, outputs: [data]}
  - name: train
    stage: training
    call: MOD:train
    params: {lr: 0.1, note: NOTE}
    inputs: [data]
    outputs: {model: {kind: model}}
"""

CODE = """
from scanflow_core import log_metric, log_params
def make(n, data):
    data.write_text(" ".join(str(i) for i in range(n)))
    return {"rows": n}
def train(data, model, lr, note):
    log_params({f"extra_{i}": i for i in range(150)})
    values = [int(v) for v in data.read_text().split()]
    for i, v in enumerate(values):
        log_metric("loss", 1.0 / (v + 1), step=i)
    model.write_text("weights" * 100)
    return {"trained": 1}
"""


def spec(write_spec: Any, tracker: str = "", note: str = "short") -> Path:
    return write_spec(SPEC.replace("TRACKER", tracker).replace("NOTE", note), CODE)


def test_embedded_store_has_one_parent_and_a_child_per_step(write_spec: Any, tracked_home: Path) -> None:
    long_note = "x" * 7000
    run = run_workflow(load_workflow(spec(write_spec, note=long_note)), home=tracked_home)
    assert run.status == "succeeded"
    uri = f"sqlite:///{tracked_home / 'mlflow.db'}"
    experiments = [e.name for e in client(uri).search_experiments()]
    assert "tracked" in experiments

    parent, children = runs_of(uri, "tracked", run.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["scanflow.run_id"] == run.run_id
    assert parent.data.tags["scanflow.spec_digest"] == run.workflow.digest
    assert parent.data.params["n"] == "5"
    assert parent.data.metrics["objective.fits"] == 1.0
    parent_files = [a.path for a in client(uri).list_artifacts(parent.info.run_id)]
    assert "objectives.json" in parent_files

    assert set(children) == {"make", "train"}
    train = children["train"]
    assert train.info.status == "FINISHED"
    assert train.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert train.data.tags["scanflow.run_id"] == run.run_id
    assert train.data.tags["scanflow.stage"] == "training"
    assert train.data.tags["scanflow.spec_digest"] == run.workflow.digest
    assert train.data.params["lr"] == "0.1"
    assert len([k for k in train.data.params if k.startswith("extra_")]) == 150  # over MLflow's 100 per call
    note = train.data.params["note"]
    assert len(note) == 6000 and note.endswith(mlflow_tracker.TRUNCATED)
    history = client(uri).get_metric_history(train.info.run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(i, 1.0 / (i + 1)) for i in range(5)]
    assert train.data.metrics["trained"] == 1.0

    c = client(uri)
    top = {a.path for a in c.list_artifacts(train.info.run_id)}
    assert {"outputs", "outputs.json", "reports"} <= top
    assert {a.path for a in c.list_artifacts(train.info.run_id, "outputs")} == {"outputs/model"}
    assert "reports/step.json" in {a.path for a in c.list_artifacts(train.info.run_id, "reports")}
    ids = json.loads((run.directory / "tracking" / "parent.json").read_text())
    assert ids["parent_run_id"] == parent.info.run_id
    assert ids["steps"] == {name: r.info.run_id for name, r in children.items()}
    assert not (run.directory / "tracking" / "spool.jsonl").exists()


def test_outputs_over_the_size_limit_are_described_not_logged(
    write_spec: Any, tracked_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCANFLOW_TRACKER_MAX_ARTIFACT_MB", "0.0001")  # about 100 bytes
    run = run_workflow(load_workflow(spec(write_spec)), home=tracked_home)
    uri = f"sqlite:///{tracked_home / 'mlflow.db'}"
    _, children = runs_of(uri, "tracked", run.run_id)
    c = client(uri)
    train = children["train"].info.run_id
    assert c.list_artifacts(train, "outputs") == []  # the model is 700 bytes
    described = json.loads(Path(c.download_artifacts(train, "outputs.json")).read_text())
    assert described["model"]["logged"] is False
    assert described["model"]["digest"].startswith("sha256:")
    make = children["make"].info.run_id
    assert [a.path for a in c.list_artifacts(make, "outputs")] == ["outputs/data"]


def test_tracker_disabled_in_the_spec_writes_nothing(write_spec: Any, home: Path) -> None:
    run = run_workflow(load_workflow(spec(write_spec, "tracker: {enabled: false}")), home=home)
    assert run.status == "succeeded"
    assert not (home / "mlflow.db").exists()
    assert not (run.directory / "tracking").exists()


STEP_SCRIPT = """
import sys
from scanflow_core.runs import WorkflowRun
from scanflow_core.spec import load_workflow
from scanflow_core.steps import run_step
spec, run_id, step = sys.argv[1:]
run = WorkflowRun(load_workflow(spec), run_id=run_id)
run.open()
run_step(run, step)
"""

PARALLEL = """
apiVersion: scanflow/v1
name: spread
steps:
  - {name: left, stage: training, call: MOD:work}
  - {name: right, stage: evaluation, call: MOD:work}
"""

PARALLEL_CODE = """
from scanflow_core import log_metric
def work():
    for i in range(3):
        log_metric("x", i, step=i)
"""


@pytest.mark.slow
def test_steps_in_separate_processes_share_one_parent(
    write_spec: Any, tracked_home: Path, tmp_path: Path
) -> None:
    path = write_spec(PARALLEL, PARALLEL_CODE)
    script = tmp_path / "one_step.py"
    script.write_text(textwrap.dedent(STEP_SCRIPT))
    run_id = "20260101-000000-shared"
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(path), run_id, step],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for step in ("left", "right")
    ]  # at the same time: both race to create the parent
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out.decode()
    uri = f"sqlite:///{tracked_home / 'mlflow.db'}"
    parent, children = runs_of(uri, "spread", run_id)
    assert set(children) == {"left", "right"}
    for child in children.values():
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED"
        assert len(client(uri).get_metric_history(child.info.run_id, "x")) == 3


def test_without_mlflow_records_are_spooled_then_synced(
    write_spec: Any,
    tracked_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    monkeypatch.setattr(mlflow_tracker, "_warned", set())
    run = run_workflow(load_workflow(spec(write_spec)), home=tracked_home)
    assert run.status == "succeeded"
    said = [r for r in caplog.records if "mlflow is not installed" in r.getMessage()]
    assert len(said) == 1
    spool = Spool(run.directory / "tracking")
    assert len(spool.pending()) >= 6  # parent batch, child batches and statuses, objectives

    monkeypatch.delitem(sys.modules, "mlflow")
    monkeypatch.setattr(mlflow_tracker, "_warned", set())
    from scanflow_core.cli import main

    assert main(["tracker", "sync", run.run_id, "--home", str(tracked_home)]) == 0
    assert spool.pending() == []
    uri = f"sqlite:///{tracked_home / 'mlflow.db'}"
    parent, children = runs_of(uri, "tracked", run.run_id)
    assert parent.info.status == "FINISHED"
    assert children["train"].info.status == "FINISHED"
    assert len(client(uri).get_metric_history(children["train"].info.run_id, "loss")) == 5


def test_the_sidecar_uri_is_the_port_the_run_recorded(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tracker sidecar has not started"):
        mlflow_tracker.resolve_uri("sidecar", tmp_path, tmp_path)
    (tmp_path / "sidecars.json").write_text(json.dumps({"tracker": {"url": "http://127.0.0.1:4321"}}))
    assert mlflow_tracker.resolve_uri("sidecar", tmp_path, tmp_path) == "http://127.0.0.1:4321"
    assert mlflow_tracker.resolve_uri("http://elsewhere:5000", tmp_path, tmp_path) == "http://elsewhere:5000"
