"""The built-in attestation plugin: sign each finished step's statements with Ed25519.

``scanflow_attest_step`` writes ``<run>/attestations/<step>.intoto.jsonl`` (one DSSE envelope per
line: the step's provenance first, then one per check result) unless the spec says
``attestation: {enabled: false}``. Envelopes are made through ``scanflow_sign``: this plugin's signer
answers last (``trylast``), so a KMS or Sigstore signer registered by another plugin replaces it.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from contextvars import ContextVar
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scanflow_core.errors import AttestationError
from scanflow_core.plugins import hookimpl

if TYPE_CHECKING:
    from scanflow_core.attestation.keys import SigningKey
    from scanflow_core.runs import StepRun, WorkflowRun

__all__ = [
    "attest_step",
    "attestation_path",
    "scanflow_attest_step",
    "scanflow_sign",
    "scanflow_step_start",
]

#: The key of the step being attested, resolved only if the built-in signer is the one that signs.
_current_key: ContextVar[Callable[[], SigningKey] | None] = ContextVar("scanflow_signing_key", default=None)


def attestation_path(step_run: StepRun) -> Path:
    return step_run.run.attestation_dir / f"{step_run.name}.intoto.jsonl"


#: Key resolvers of the runs this process signed for, by run directory and key source: a run made of
#: decorated tasks has a ``WorkflowRun`` per call, and its steps sign with one key like any run's.
_run_keys: dict[tuple[Path, str | None, str | None], Callable[[], SigningKey]] = {}
_RUN_KEYS_KEPT = 1000


def _key_for(step_run: StepRun) -> Callable[[], SigningKey]:
    """The run's key, resolved on first use and then kept for the run's other steps."""
    run = step_run.run
    resolver: Callable[[], SigningKey] | None = run.state.get("attestation.key")
    if resolver is None:
        spec_key = run.workflow.attestation.key  # a path relative to the spec's folder, if given
        where = (run.directory, spec_key, str(Path(run.workflow.file).parent) if spec_key else None)
        resolver = _run_keys.get(where)
    if resolver is None:

        @cache
        def resolve() -> SigningKey:
            from scanflow_core.attestation.keys import resolve_signing_key

            return resolve_signing_key(
                spec_file=run.workflow.file, spec_key=run.workflow.attestation.key, home=run.home
            )

        if len(_run_keys) >= _RUN_KEYS_KEPT:  # a long-lived worker: older runs resolve again if needed
            _run_keys.clear()
        resolver = _run_keys.setdefault(where, resolve)
    run.state["attestation.key"] = resolver
    return resolver


def attest_step(step_run: StepRun, *, finished_at: float | None = None) -> Path:
    """Sign the step's statements through ``scanflow_sign`` and write them; return the file."""
    from scanflow_core.attestation.dsse import PAYLOAD_TYPE
    from scanflow_core.attestation.statements import check_statements, serialize, step_statement

    hook = step_run.run.pm.hook
    statements = [step_statement(step_run, finished_at), *check_statements(step_run)]
    lines = []
    token = _current_key.set(_key_for(step_run))
    try:
        for statement in statements:
            envelope = hook.scanflow_sign(payload=serialize(statement), payload_type=PAYLOAD_TYPE)
            if envelope is None:
                raise AttestationError(f"no plugin signed the attestation of step {step_run.name!r}")
            lines.append(json.dumps(envelope, separators=(",", ":")) + "\n")
    finally:
        _current_key.reset(token)
    path = attestation_path(step_run)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    data = "".join(lines).encode("utf-8")
    try:
        tmp.write_bytes(data)
    except FileNotFoundError:  # the run's first attestation
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


@hookimpl
def scanflow_step_start(step_run: StepRun) -> None:
    """A step that runs again (a retry, a resumed run) must not keep the attestation of its old outputs."""
    attestation_path(step_run).unlink(missing_ok=True)


@hookimpl
def scanflow_attest_step(step_run: StepRun) -> list[Path] | None:
    if not step_run.run.workflow.attestation.enabled:
        return None
    return [attest_step(step_run)]


@hookimpl
def scanflow_workflow_finish(run: WorkflowRun) -> None:
    envelopes = sorted(run.attestation_dir.glob("*.intoto.jsonl")) if run.attestation_dir.is_dir() else []
    if envelopes:
        run.notes.append(f"attested: {len(envelopes)} step(s); check with: scanflow verify {run.directory}")


@hookimpl(trylast=True)
def scanflow_sign(payload: bytes, payload_type: str) -> dict[str, Any]:
    """Ed25519 over DSSE's PAE with the run's key (see :mod:`scanflow_core.attestation.keys`)."""
    from scanflow_core.attestation.dsse import sign_envelope
    from scanflow_core.attestation.keys import resolve_signing_key
    from scanflow_core.runs import scanflow_home

    resolve = _current_key.get()
    key = (
        resolve()
        if resolve is not None
        else resolve_signing_key(spec_file=None, spec_key=None, home=scanflow_home())
    )
    return sign_envelope(payload, payload_type, key)
