"""``use: integrity``: inputs carry exactly the digests their producers recorded and attested."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from scanflow_core.checking.integrity import attested_digests
from scanflow_core.errors import CheckFailed
from scanflow_core.plugins import PluginManager, get_plugin_manager
from scanflow_core.runner import run_workflow
from scanflow_core.runs import WorkflowRun
from scanflow_core.spec import load_workflow
from scanflow_core.steps import run_step

SPEC = """
apiVersion: scanflow/v1
name: chain
inputs: {labels: {path: labels.txt}}
steps:
  - {name: make, stage: data_ingestion, call: MOD:make, outputs: [data]}
  - name: fit
    stage: training
    call: MOD:fit
    inputs: [data, labels]
    outputs: {model: {kind: model}}
    checks: CHECKS
"""

CODE = """
def make(data):
    data.write_text("1 2 3 4")
    return {"rows": 4}

def fit(data, labels, model):
    model.write_text(str(sum(int(v) for v in data.read_text().split())))
    return {"loss": 0.1}
"""


@pytest.fixture(autouse=True)
def _own_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCANFLOW_SIGNING_KEY", raising=False)


def _manager(attest: bool) -> PluginManager:
    pm = get_plugin_manager(autoload=False)
    from scanflow_core.attestation import plugin as attestation

    if attest and not pm.is_registered(attestation):
        pm.register(attestation)
    if not attest and pm.is_registered(attestation):
        pm.unregister(attestation)
    return pm


def _open(write_spec: Any, checks: str, *, attest: bool = True) -> WorkflowRun:
    spec = write_spec(SPEC.replace("CHECKS", checks), code=CODE)
    (spec.parent / "labels.txt").write_text("a b a b")
    run = WorkflowRun(load_workflow(spec), pm=_manager(attest))
    run.open()
    return run


def _edit_attested_digest(run: WorkflowRun, step: str, new_hex: str) -> None:
    """Rewrite the provenance of ``step`` with another subject digest (the signature no longer fits)."""
    path = run.attestation_dir / f"{step}.intoto.jsonl"
    envelopes = [json.loads(line) for line in path.read_text().splitlines()]
    statement = json.loads(base64.b64decode(envelopes[0]["payload"]))
    statement["subject"][0]["digest"]["sha256"] = new_hex
    envelopes[0]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    path.write_text("".join(json.dumps(e) + "\n" for e in envelopes))


def test_an_untouched_chain_passes_with_recorded_and_attested_digests(write_spec: Any, home: Path) -> None:
    spec = write_spec(SPEC.replace("CHECKS", "[{use: integrity, on: [data, labels]}]"), code=CODE)
    (spec.parent / "labels.txt").write_text("a b a b")
    run = run_workflow(load_workflow(spec), pm=_manager(attest=True))

    assert run.status == "succeeded"
    data, labels = json.loads((run.step_dir("fit") / "checks.json").read_text())
    assert data["passed"] and data["phase"] == "inputs" and data["metrics"] == {"mismatches": 0}
    found = run.step_summary("fit")["inputs"]["data"]["digest"]  # type: ignore[index]
    details = data["details"]
    assert details["file"] == "steps/make/outputs/data" and details["producer"] == "make"
    assert details["found"] == details["recorded"] == found and details["attested"] == [found]
    assert data["summary"].startswith("steps/make/outputs/data is what step 'make' recorded and attested")
    assert labels["passed"] and labels["details"]["producer"] is None
    assert "is a workflow input" in labels["summary"]


def test_a_file_changed_between_steps_stops_the_reader(write_spec: Any, home: Path) -> None:
    run = _open(write_spec, "[{use: integrity, on: data}]")
    run_step(run, "make")
    recorded = run.step_summary("make")["outputs"]["data"]["digest"]  # type: ignore[index]
    (run.step_dir("make") / "outputs" / "data").write_text("1 2 3 400")  # tampered after attestation

    with pytest.raises(CheckFailed) as caught:
        run_step(run, "fit")

    [result] = caught.value.report
    assert not result.passed and result.target == "data" and result.metrics == {"mismatches": 2}
    found = result.details["found"]
    assert found != recorded
    assert result.details["mismatches"] == [
        {
            "file": "steps/make/outputs/data",
            "against": "the digest step 'make' recorded",
            "expected": recorded,
            "found": found,
        },
        {
            "file": "steps/make/outputs/data",
            "against": "the digest attested in attestations/make.intoto.jsonl",
            "expected": recorded,
            "found": found,
        },
    ]
    assert "steps/make/outputs/data does not match what step 'make' left" in str(caught.value)
    assert not (run.step_dir("fit") / "outputs" / "model").exists()  # it never ran on tampered data


def test_a_forged_attestation_is_a_mismatch_too(write_spec: Any, home: Path) -> None:
    run = _open(write_spec, "[{use: integrity, on: data, policy: warn}]")
    run_step(run, "make")
    _edit_attested_digest(run, "make", "0" * 64)

    step_run = run_step(run, "fit")

    [result] = step_run.checks
    assert not result.passed and step_run.status == "succeeded"  # warn: recorded, not stopped
    [mismatch] = result.details["mismatches"]
    assert mismatch["against"] == "the digest attested in attestations/make.intoto.jsonl"
    assert mismatch["expected"] == "sha256:" + "0" * 64 and mismatch["found"] == result.details["recorded"]


def test_without_attestations_only_the_record_is_compared_unless_required(
    write_spec: Any, home: Path
) -> None:
    checks = """
      - {use: integrity, on: data, policy: warn}
      - {use: integrity, name: strict, on: data, require_attestation: true, policy: warn}
    """
    run = _open(write_spec, checks, attest=False)
    run_step(run, "make")
    lenient, strict = run_step(run, "fit").checks

    assert lenient.passed and lenient.details["attested"] is None
    assert lenient.summary.startswith("steps/make/outputs/data is what step 'make' recorded (sha256:")
    assert not strict.passed and strict.check == "strict"
    assert "no attestation of step 'make' (attestations/make.intoto.jsonl)" in strict.summary


def test_without_on_every_input_is_checked_once(write_spec: Any, home: Path) -> None:
    run = _open(write_spec, "[{use: integrity}]")
    run_step(run, "make")
    step_run = run_step(run, "fit")

    assert [(r.target, r.phase, r.passed) for r in step_run.checks] == [
        ("data", "outputs", True),
        ("labels", "outputs", True),
    ]


def test_attested_digests_reads_the_provenance_and_rejects_garbage(write_spec: Any, home: Path) -> None:
    run = _open(write_spec, "[]")
    run_step(run, "make")
    path = run.attestation_dir / "make.intoto.jsonl"
    recorded = run.step_summary("make")["outputs"]["data"]["digest"]  # type: ignore[index]
    assert attested_digests(path) == {"steps/make/outputs/data": {recorded}}

    path.write_text('{"payload": "not base64!", "payloadType": "x", "signatures": []}\n')
    with pytest.raises(ValueError, match=r"make.intoto.jsonl line 1"):
        attested_digests(path)
