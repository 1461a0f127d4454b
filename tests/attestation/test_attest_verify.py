"""Attesting a real run, verifying it, and every way of tampering with it, each with its own reason."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from scanflow_core.attestation.dsse import PAYLOAD_TYPE, make_envelope, sign_envelope
from scanflow_core.attestation.keys import generate_key_pair
from scanflow_core.attestation.statements import PROVENANCE, TEST_RESULT, serialize
from scanflow_core.attestation.verify import Verification, verify_attestation
from scanflow_core.plugins import hookimpl
from scanflow_core.records import TrackingBatch


def failures(result: Verification) -> list[tuple[str, str, str]]:
    return [(f.step, f.file, f.reason) for f in result.failures]


def only_failure(result: Verification, step: str) -> tuple[str, str, str]:
    """The one failure of ``step``; other steps may fail only because their input's chain is broken."""
    found = failures(result)
    mine = [f for f in found if f[0] == step]
    assert len(mine) == 1, found
    assert all(
        reason.endswith("(chain broken)") or "no verified attestation" in reason
        for other, _, reason in found
        if other != step
    ), found
    return mine[0]


# ------------------------------------------------------------------------------------------ statements


def test_each_step_gets_a_provenance_statement_and_each_check_its_own(attested: Any) -> None:
    run = attested.run
    assert sorted(p.name for p in (run.directory / "attestations").iterdir()) == [
        "fit.intoto.jsonl",
        "make.intoto.jsonl",
        "score.intoto.jsonl",
    ]
    fit = [attested.statement(e) for e in attested.envelopes("fit")]
    assert [s["predicateType"] for s in fit] == [PROVENANCE, TEST_RESULT]
    assert all(e["payloadType"] == PAYLOAD_TYPE for e in attested.envelopes("fit"))
    provenance = fit[0]
    assert provenance["_type"] == "https://in-toto.io/Statement/v1"
    model = run.step_summary("fit")["outputs"]["model"]
    assert provenance["subject"] == [
        {
            "name": "steps/fit/outputs/model",
            "digest": {"sha256": model["digest"].removeprefix("sha256:")},
            "annotations": {"scanflow.output": "model", "scanflow.kind": "model"},
        }
    ]
    build = provenance["predicate"]["buildDefinition"]
    assert build["externalParameters"]["params"] == {"n": 5}
    assert build["externalParameters"]["spec"]["digest"] == {"sha256": run.workflow.digest[7:]}
    [data] = build["resolvedDependencies"]
    assert data["name"] == "steps/make/outputs/data"
    assert data["annotations"]["scanflow.producer"] == "make"
    metadata = provenance["predicate"]["runDetails"]["metadata"]
    assert metadata["invocationId"] == run.run_id
    assert metadata["startedOn"] <= metadata["finishedOn"]
    check = fit[1]["predicate"]
    assert check["result"] == "PASSED" and check["passedTests"] == ["nonempty"]
    assert fit[1]["subject"] == provenance["subject"]
    assert run.step_summary("fit")["attestations"] == ["attestations/fit.intoto.jsonl"]


def test_outputs_are_hashed_once_not_again_for_the_attestation(
    run_attested: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import scanflow_core.steps as steps

    calls: list[str] = []
    real = steps.digest_path
    monkeypatch.setattr(steps, "digest_path", lambda p: calls.append(Path(p).name) or real(p))
    run_attested()
    assert sorted(calls) == sorted(["data", "data", "model", "data", "model", "report"])  # inputs + outputs


def test_the_container_image_and_its_digest_are_resolved_dependencies(attested: Any) -> None:
    from scanflow_core.attestation.statements import step_statement
    from scanflow_core.records import ExecutionResult
    from scanflow_core.runs import StepRun

    step_run = StepRun(attested.run, attested.run.plan["fit"])
    step_run.execution = ExecutionResult(
        "docker", 0, details={"image": "python:3.11-slim", "image_digest": "sha256:" + "ab" * 32}
    )
    deps = step_statement(step_run)["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert deps == [
        {
            "name": "python:3.11-slim",
            "uri": "docker://python:3.11-slim",
            "digest": {"sha256": "ab" * 32},
            "annotations": {"scanflow.role": "image"},
        }
    ]


def test_attestations_go_to_the_trackers(run_attested: Any) -> None:
    class Tracker:
        def __init__(self) -> None:
            self.artifacts: list[tuple[str, str]] = []

        @hookimpl
        def scanflow_track(self, run: Any, step_run: Any, batch: TrackingBatch) -> None:
            self.artifacts += [(a.name, a.role) for a in batch.artifacts]

    tracker = Tracker()
    run_attested(plugins=(tracker,))
    logged = {name for name, role in tracker.artifacts if role == "attestation"}
    assert logged == {"make.intoto.jsonl", "fit.intoto.jsonl", "score.intoto.jsonl"}


def test_attestation_can_be_switched_off(run_attested: Any, base_spec: str, tmp_path: Path) -> None:
    done = run_attested(base_spec.replace("params:", "attestation: {enabled: false}\nparams:"))
    assert not (done.directory / "attestations").exists()
    assert not (done.home / "keys").exists()  # and no key was made for nothing
    generate_key_pair(tmp_path / "any.key")
    result = verify_attestation(done.directory, key=tmp_path / "any.pub")
    assert ("-", "attestations/", "the run has no attestations (was attestation disabled?)") in failures(
        result
    )


def test_another_signer_replaces_the_built_in_one(run_attested: Any, tmp_path: Path) -> None:
    kms = generate_key_pair(tmp_path / "kms.key")

    class Kms:
        signed = 0

        @hookimpl(tryfirst=True)
        def scanflow_sign(self, payload: bytes, payload_type: str) -> dict[str, Any]:
            Kms.signed += 1
            return sign_envelope(payload, payload_type, kms)

    done = run_attested(plugins=(Kms(),))
    assert Kms.signed == 4
    assert not (done.home / "keys").exists()  # the built-in key was never needed
    assert verify_attestation(done.directory, key=tmp_path / "kms.pub").ok


# ------------------------------------------------------------------------------------------ verify


def test_an_untouched_run_verifies(attested: Any) -> None:
    result = verify_attestation(attested.directory)
    assert result.ok, failures(result)
    assert result.steps() == ["fit", "make", "score"]
    table = result.table()
    assert table.splitlines()[0].split() == ["step", "statements", "subjects", "inputs", "result"]
    assert "fit    2           2         1       ok" in table


def test_a_flipped_byte_in_an_output(attested: Any) -> None:
    model = attested.directory / "steps" / "fit" / "outputs" / "model"
    data = bytearray(model.read_bytes())
    data[0] ^= 0x01
    model.write_bytes(bytes(data))
    found = failures(verify_attestation(attested.directory))
    assert {(step, file) for step, file, _ in found} == {("fit", "steps/fit/outputs/model")}
    assert all(
        "differs from the attested" in reason and "changed after the step" in reason for *_, reason in found
    )


def test_a_removed_subject(attested: Any) -> None:
    attested.resign("make", lambda s: s["subject"].clear())
    step, file, reason = only_failure(verify_attestation(attested.directory), "make")
    assert (step, file) == ("make", "steps/make/outputs/data")
    assert reason == "an output of step 'make' that is not a subject (removed)"


def test_an_added_subject(attested: Any) -> None:
    def add(statement: dict[str, Any]) -> None:
        statement["subject"].append({"name": "steps/make/step.log", "digest": {"sha256": "00" * 32}})

    attested.resign("make", add)
    step, file, reason = only_failure(verify_attestation(attested.directory), "make")
    assert (step, file) == ("make", "steps/make/step.log")
    assert reason == "a subject that is not an output of step 'make' (added)"


def test_an_edited_predicate(attested: Any) -> None:
    envelopes = attested.envelopes("fit")
    statement = attested.statement(envelopes[0])
    statement["predicate"]["buildDefinition"]["externalParameters"]["params"]["n"] = 6
    envelopes[0]["payload"] = base64.b64encode(serialize(statement)).decode()
    attested.write_envelopes("fit", envelopes)
    step, file, reason = only_failure(verify_attestation(attested.directory), "fit")
    assert (step, file) == ("fit", "attestations/fit.intoto.jsonl:1")
    assert "the statement was changed after signing" in reason


def test_a_signature_from_another_key(attested: Any, tmp_path: Path) -> None:
    intruder = generate_key_pair(tmp_path / "intruder.key")
    attested.write_envelopes(
        "score",
        [
            sign_envelope(base64.b64decode(e["payload"]), PAYLOAD_TYPE, intruder)
            for e in attested.envelopes("score")
        ],
    )
    found = failures(verify_attestation(attested.directory))
    assert (
        "score",
        "attestations/score.intoto.jsonl:1",
        f"signed by another key ({intruder.keyid}), not by the trusted key ({attested.key.keyid})",
    ) in found
    # verifying with the intruder's key instead: every other step is then the one signed by another key
    other = verify_attestation(attested.directory, key=tmp_path / "intruder.pub")
    assert {step for step, file, reason in failures(other) if "signed by another key" in reason} == {
        "make",
        "fit",
    }


def test_a_changed_payload_type(attested: Any) -> None:
    envelopes = attested.envelopes("make")
    envelopes[0]["payloadType"] = "application/json"
    attested.write_envelopes("make", envelopes)
    found = failures(verify_attestation(attested.directory))
    assert (
        "make",
        "attestations/make.intoto.jsonl:1",
        "payloadType is 'application/json', expected 'application/vnd.in-toto+json'",
    ) in found


def test_an_envelope_replaced_by_another_runs(run_attested: Any) -> None:
    first, second = run_attested(), run_attested()
    shutil.copy(second.directory / "attestations" / "fit.intoto.jsonl", first.directory / "attestations")
    found = failures(verify_attestation(first.directory))
    reason = (
        f"the statement is from run {second.run.run_id}, not this run {first.run.run_id} "
        "(an envelope of another run)"
    )
    assert ("fit", "attestations/fit.intoto.jsonl:1", reason) in found


def test_an_envelope_of_another_step(attested: Any) -> None:
    shutil.copy(
        attested.directory / "attestations" / "make.intoto.jsonl",
        attested.directory / "attestations" / "score.intoto.jsonl",
    )
    found = failures(verify_attestation(attested.directory))
    assert (
        "score",
        "attestations/score.intoto.jsonl:1",
        "the statement is about step 'make', not 'score'",
    ) in found


def test_a_broken_chain(attested: Any) -> None:
    """An insider rewrites make's output and re-signs make's statement: make holds, its consumers do not."""
    data = attested.directory / "steps" / "make" / "outputs" / "data"
    data.write_text("9 9 9")
    from scanflow_core.digests import digest_path

    new = digest_path(data)[7:]

    def rewrite(statement: dict[str, Any]) -> None:
        statement["subject"][0]["digest"]["sha256"] = new

    attested.resign("make", rewrite)
    found = failures(verify_attestation(attested.directory))
    assert {(step, file) for step, file, _ in found} == {
        ("fit", "steps/make/outputs/data"),
        ("score", "steps/make/outputs/data"),
    }
    assert all(reason.endswith("step 'make' attested (chain broken)") for *_, reason in found)


def test_a_downstream_statement_that_names_other_inputs(attested: Any) -> None:
    def rewrite(statement: dict[str, Any]) -> None:
        statement["predicate"]["buildDefinition"]["resolvedDependencies"][0]["digest"]["sha256"] = "11" * 32

    attested.resign("fit", rewrite)
    step, file, reason = only_failure(verify_attestation(attested.directory), "fit")
    assert (step, file) == ("fit", "steps/make/outputs/data")
    assert "is not the" in reason and reason.endswith("(chain broken)")


def test_a_missing_attestation_and_an_edited_spec(attested: Any) -> None:
    (attested.directory / "attestations" / "make.intoto.jsonl").unlink()
    attested.spec.write_text(attested.spec.read_text() + "\n# edited\n")
    found = failures(verify_attestation(attested.directory))
    assert ("make", "attestations/make.intoto.jsonl", "the step succeeded but has no attestation") in found
    assert ("fit", "steps/make/outputs/data", "its producer 'make' has no verified attestation") in found
    assert any(step == "-" and "edited since" in reason for step, _, reason in found)


def test_a_statement_not_signed_at_all(attested: Any) -> None:
    envelope = attested.envelopes("make")[0]
    unsigned = make_envelope(base64.b64decode(envelope["payload"]), PAYLOAD_TYPE, [])
    attested.write_envelopes("make", [unsigned])
    assert ("make", "attestations/make.intoto.jsonl:1", "the envelope has no signatures") in failures(
        verify_attestation(attested.directory)
    )


# ------------------------------------------------------------------------------------------ secrets


def test_secrets_never_reach_the_run_directory(
    run_attested: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    canary = "CANARY-7f3a9c21-do-not-leak"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", canary)
    key = generate_key_pair(tmp_path / "ci.key")
    pem = (tmp_path / "ci.key").read_text()
    monkeypatch.setenv("SCANFLOW_SIGNING_KEY", pem)  # the key itself in the environment
    spec = f"""
    apiVersion: scanflow/v1
    name: secretive
    steps:
      - {{name: make, stage: data_ingestion, call: MOD:make, outputs: [data], env: {{TOKEN: {canary}}}}}
      - name: shell
        stage: evaluation
        command: "sh -c 'wc -c < {{inputs.data}} > {{outputs.count}}'"
        inputs: [data]
        outputs: [count]
        env: {{TOKEN: {canary}}}
    """
    code = """
    import os
    def make(data):
        data.write_text(str(len(os.environ.get("TOKEN", ""))))
    """
    done = run_attested(spec, code)
    texts = []
    for path in done.directory.rglob("*"):
        if path.is_file():
            texts.append(path.read_text(errors="replace"))
    for line in "".join(
        (done.directory / "attestations" / f).read_text() for f in ("make.intoto.jsonl", "shell.intoto.jsonl")
    ).splitlines():
        texts.append(base64.b64decode(json.loads(line)["payload"]).decode())
    body = pem.splitlines()[1]
    assert not [t for t in texts if canary in t or body in t]
    assert verify_attestation(done.directory, key=tmp_path / "ci.pub").ok
    assert key.keyid in (done.directory / "attestations" / "make.intoto.jsonl").read_text()


def test_a_step_that_runs_again_and_fails_keeps_no_stale_attestation(attested: Any) -> None:
    from scanflow_core.errors import StepFailed
    from scanflow_core.steps import run_step

    run = attested.run
    (run.directory / "steps" / "make" / "outputs" / "data").write_text("1 x 3")  # fit will crash on it
    with pytest.raises(StepFailed):
        run_step(run, "fit")
    assert not (run.directory / "attestations" / "fit.intoto.jsonl").exists()
