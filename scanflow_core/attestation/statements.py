"""in-toto Statements v1 for a finished step: SLSA Provenance v1, and one test result per check.

The step's statement::

    _type          https://in-toto.io/Statement/v1
    subject        every output: {"name": "steps/<step>/outputs/<file>", "digest": {"sha256": hex}}
    predicateType  https://slsa.dev/provenance/v1
    predicate      buildDefinition: buildType, externalParameters (workflow, step, stage, spec digest,
                   params), internalParameters (runtime, attempt, orchestrator), resolvedDependencies
                   (every input and the container image, with digests)
                   runDetails: builder id, metadata (invocationId = run id, startedOn, finishedOn)

Each check result gets its own statement (predicate ``https://in-toto.io/attestation/test-result/v0.1``)
whose subject is the artifact it checked. Names are paths relative to the run directory, so a verifier
finds the files; params whose names say they are secrets are redacted, and nothing is read from the
environment.
"""

from __future__ import annotations

import json
import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scanflow_core.records import ArtifactRecord, CheckResult
    from scanflow_core.runs import StepRun

__all__ = [
    "BUILD_TYPE",
    "PROVENANCE",
    "REDACTED",
    "STATEMENT_TYPE",
    "TEST_RESULT",
    "check_statements",
    "digest_set",
    "redact_params",
    "resource_name",
    "serialize",
    "step_statement",
]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PROVENANCE = "https://slsa.dev/provenance/v1"
TEST_RESULT = "https://in-toto.io/attestation/test-result/v0.1"
BUILD_TYPE = "https://scanflow.dev/step/v1"
BUILDER_ID = "https://scanflow.dev/builder/"
REDACTED = "[redacted]"

_SECRET_NAME = re.compile(
    r"secret|token|passw(or)?d|passphrase|api_?key|private_?key|credential|(^|_)auth($|_)", re.IGNORECASE
)


def digest_set(digest: str) -> dict[str, str]:
    """``sha256:<hex>`` → ``{"sha256": hex}`` (the form in-toto's ResourceDescriptor uses)."""
    algorithm, sep, value = digest.rpartition(":")
    if not sep:
        return {"sha256": digest}
    return {algorithm.rsplit("@", 1)[-1] or "sha256": value}


def resource_name(path: str | Path, run_dir: Path) -> str:
    """A file's name in a statement: its path relative to the run directory (absolute if outside)."""
    p = Path(path)
    return p.relative_to(run_dir).as_posix() if p.is_relative_to(run_dir) else p.as_posix()


def redact_params(params: dict[str, Any]) -> dict[str, Any]:
    """Params as JSON would hold them, with the value of any secret-looking name replaced."""
    plain: dict[str, Any] = json.loads(json.dumps(params, default=str))
    return {k: REDACTED if _SECRET_NAME.search(k) else v for k, v in plain.items()}


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def serialize(statement: dict[str, Any]) -> bytes:
    """The payload bytes of a statement: compact JSON with sorted keys."""
    return json.dumps(statement, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _subject(record: ArtifactRecord, run_dir: Path, role: str) -> dict[str, Any]:
    return {
        "name": resource_name(record.path, run_dir),
        "digest": digest_set(record.digest),
        "annotations": {f"scanflow.{role}": record.name, "scanflow.kind": record.kind},
    }


def _dependencies(step_run: StepRun) -> list[dict[str, Any]]:
    run = step_run.run
    deps = []
    for record in step_run.input_records:
        artifact = step_run.step.inputs[record.name]
        dep = _subject(record, run.directory, "input")
        dep["annotations"]["scanflow.artifact"] = artifact
        dep["annotations"]["scanflow.producer"] = run.plan.artifacts[artifact].producer
        deps.append(dep)
    details = step_run.execution.details if step_run.execution else {}
    ran_in_container = step_run.execution is not None and step_run.execution.runtime == "docker"
    image = details.get("image") or (step_run.step.spec.image if ran_in_container else None)
    if image:
        dep = {"name": str(image), "uri": f"docker://{image}", "annotations": {"scanflow.role": "image"}}
        image_digest = details.get("image_digest")
        if image_digest:
            dep["digest"] = digest_set(str(image_digest))
        deps.append(dep)
    return deps


def step_statement(step_run: StepRun, finished_at: float | None = None) -> dict[str, Any]:
    """The provenance of a finished step: its outputs as subjects, how they were made as predicate."""
    run = step_run.run
    workflow = run.workflow
    execution = step_run.execution
    external = {
        "workflow": workflow.name,
        "step": step_run.name,
        "stage": step_run.stage,
        "spec": {"name": os.path.basename(workflow.file), "digest": digest_set(workflow.digest)},
        "params": redact_params(step_run.params),
    }
    internal: dict[str, Any] = {
        "runtime": execution.runtime if execution else None,
        "attempt": step_run.attempt,
        "orchestrator": run.orchestrator,
    }
    if execution is not None and execution.exit_code is not None:
        internal["exitCode"] = execution.exit_code
    from scanflow_core import __version__

    return {
        "_type": STATEMENT_TYPE,
        "subject": [_subject(r, run.directory, "output") for r in step_run.output_records],
        "predicateType": PROVENANCE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": external,
                "internalParameters": internal,
                "resolvedDependencies": _dependencies(step_run),
            },
            "runDetails": {
                "builder": {"id": BUILDER_ID + run.orchestrator, "version": {"scanflow": __version__}},
                "metadata": {
                    "invocationId": run.run_id,
                    "startedOn": rfc3339(step_run.started_at),
                    "finishedOn": rfc3339(finished_at if finished_at is not None else time.time()),
                },
            },
        },
    }


def _verdict(result: CheckResult) -> str:
    if result.passed:
        return "PASSED"
    return "WARNED" if result.policy == "warn" else "FAILED"


def check_statements(step_run: StepRun) -> list[dict[str, Any]]:
    """One test-result statement per check result of the step, about the artifact it checked."""
    run = step_run.run
    records = {("inputs", r.name): r for r in step_run.input_records}
    records.update({("outputs", r.name): r for r in step_run.output_records})
    statements = []
    for result in step_run.checks:
        record = records.get((result.phase, result.target))
        role = "input" if result.phase == "inputs" else "output"
        subjects = (
            [_subject(record, run.directory, role)]
            if record
            else [_subject(r, run.directory, "output") for r in step_run.output_records]
        )
        label = result.check or result.checker
        verdict = _verdict(result)
        statements.append(
            {
                "_type": STATEMENT_TYPE,
                "subject": subjects,
                "predicateType": TEST_RESULT,
                "predicate": {
                    "result": verdict,
                    "configuration": [
                        {
                            "name": f"{Path(run.workflow.file).name}#steps.{step_run.name}.checks.{label}",
                            "digest": digest_set(run.workflow.digest),
                        }
                    ],
                    "passedTests": [label] if verdict == "PASSED" else [],
                    "warnedTests": [label] if verdict == "WARNED" else [],
                    "failedTests": [label] if verdict == "FAILED" else [],
                    "scanflow": {
                        "invocationId": run.run_id,
                        "step": step_run.name,
                        "checker": result.checker,
                        "target": result.target,
                        "phase": result.phase,
                        "summary": result.summary,
                        "policy": result.policy,
                        "severity": result.severity,
                        "metrics": dict(result.metrics),
                    },
                },
            }
        )
    return statements
