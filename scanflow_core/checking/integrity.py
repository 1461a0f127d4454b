"""``use: integrity``: a step reads exactly what its upstream steps recorded and attested.

For each input (the target when it is an input; every input of the step otherwise, once), the
digest the step read (``step_run.input_records``) is compared with

* the digest its producer recorded (``steps/<producer>/step.json`` → ``outputs.<name>.digest``);
* the digest its producer attested, when ``attestations/<producer>.intoto.jsonl`` exists: each
  line a DSSE envelope whose base64 payload is an in-toto statement with
  ``subject: [{name, digest: {sha256}}]``, the name being the file's path in the run directory.

Signatures are not verified here (``scanflow verify`` does that); this check catches a file
changed or swapped between the step that wrote it and the step that reads it.

Options:
    require_attestation: fail when the producer left no attestation (default ``false``).

One result per input (its target is the input's name): passed when every digest matches.
Metrics: ``mismatches``; details: the file, its artifact and producer, the digest found, recorded
and attested, and each mismatch (file, what it was compared with, expected, found). A workflow
input (made by no step) has nothing to compare with and passes.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Any

from scanflow_core.checking.data import option
from scanflow_core.digests import digest_path
from scanflow_core.records import CheckResult

__all__ = ["attested_digests", "check"]

PROVENANCE = "https://slsa.dev/provenance/v1"
CHECKER = "integrity"


def check(step_run: Any, check: Any, target: str, path: Path) -> list[CheckResult]:
    require = option(check.options, "require_attestation", bool, False, check=check.label)
    if target in step_run.inputs:
        names = [target]
    else:
        # Targeted at an output (the default targets of a check): verify every input, once.
        done = step_run.state.setdefault("scanflow.integrity", set())
        if id(check) in done:
            return []
        done.add(id(check))
        names = list(step_run.inputs)
        if not names:
            return [CheckResult(CHECKER, target, True, "the step reads no inputs: nothing to verify")]
    return [_verify(step_run, name, require) for name in names]


def _verify(step_run: Any, name: str, require: bool) -> CheckResult:
    run = step_run.run
    artifact_name = step_run.step.inputs[name]
    artifact = run.plan.artifacts[artifact_name]
    path = Path(step_run.inputs[name])
    file = _relative(path, run.directory)
    record = next((r for r in step_run.input_records if r.name == name), None)
    found = record.digest if record is not None else digest_path(path)
    details: dict[str, Any] = {
        "file": file,
        "artifact": artifact_name,
        "producer": artifact.producer,
        "found": found,
    }
    if artifact.producer is None:
        details.update(recorded=None, attested=None, mismatches=[])
        return CheckResult(
            CHECKER,
            name,
            True,
            f"{file} is a workflow input: no upstream step recorded or attested it",
            metrics={"mismatches": 0.0},
            details=details,
        )

    producer = artifact.producer
    mismatches: list[dict[str, Any]] = []
    summary = run.step_summary(producer) or {}
    recorded = ((summary.get("outputs") or {}).get(artifact.output) or {}).get("digest")
    details["recorded"] = recorded
    if recorded is None:
        mismatches.append(_mismatch(file, f"step {producer!r} recorded no digest of it", None, found))
    elif recorded != found:
        mismatches.append(_mismatch(file, f"the digest step {producer!r} recorded", recorded, found))

    statements = run.directory / "attestations" / f"{producer}.intoto.jsonl"
    details["attestation"] = _relative(statements, run.directory)
    if not statements.exists():
        details["attested"] = None
        if require:
            mismatches.append(
                _mismatch(
                    file, f"no attestation of step {producer!r} ({details['attestation']})", None, found
                )
            )
    else:
        try:
            subjects = attested_digests(statements)
        except ValueError as exc:
            details["attested"] = None
            mismatches.append(_mismatch(file, f"unreadable attestation: {exc}", None, found))
        else:
            attested = subjects.get(file)
            details["attested"] = sorted(attested) if attested else None
            if not attested:
                where = details["attestation"]
                mismatches.append(_mismatch(file, f"{where} names no subject {file!r}", None, found))
            else:
                for digest in sorted(attested):
                    if digest != found:
                        mismatches.append(
                            _mismatch(file, f"the digest attested in {details['attestation']}", digest, found)
                        )

    details["mismatches"] = mismatches
    if mismatches:
        text = f"{file} does not match what step {producer!r} left: " + "; ".join(
            _describe(m) for m in mismatches
        )
    else:
        what = "recorded and attested" if details.get("attested") else "recorded"
        text = f"{file} is what step {producer!r} {what} ({found[:19]}…)"
    return CheckResult(
        CHECKER, name, not mismatches, text, metrics={"mismatches": float(len(mismatches))}, details=details
    )


def attested_digests(path: Path) -> dict[str, set[str]]:
    """Subject name → ``sha256:<hex>`` digests in a ``.intoto.jsonl`` file (signatures unchecked).

    Provenance statements are read when there are any (a check-result statement about an input
    names another step's file); otherwise every statement's subjects.

    Raises:
        ValueError: a line is not a DSSE envelope holding an in-toto statement.
    """
    statements = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            envelope = json.loads(line)
            statement = json.loads(base64.b64decode(envelope["payload"], validate=True))
            subjects = statement["subject"]
            if not isinstance(subjects, list):
                raise TypeError("'subject' is not a list")
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise ValueError(f"{path.name} line {number}: {type(exc).__name__}: {exc}") from None
        statements.append(statement)
    chosen = [s for s in statements if s.get("predicateType") == PROVENANCE] or statements
    digests: dict[str, set[str]] = {}
    for statement in chosen:
        for subject in statement["subject"]:
            if not isinstance(subject, dict):
                continue
            hexdigest = (subject.get("digest") or {}).get("sha256")
            if isinstance(subject.get("name"), str) and isinstance(hexdigest, str):
                digests.setdefault(subject["name"], set()).add(f"sha256:{hexdigest}")
    return digests


def _relative(path: Path, base: Path) -> str:
    return path.relative_to(base).as_posix() if path.is_relative_to(base) else path.as_posix()


def _mismatch(file: str, against: str, expected: str | None, found: str) -> dict[str, Any]:
    return {"file": file, "against": against, "expected": expected, "found": found}


def _describe(mismatch: dict[str, Any]) -> str:
    if mismatch["expected"] is None:
        return str(mismatch["against"])
    return f"{mismatch['against']} is {mismatch['expected'][:19]}…, found {mismatch['found'][:19]}…"
