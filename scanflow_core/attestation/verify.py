"""Verify a run's attestations: signatures, every subject digest, the chain, the spec digest.

:func:`verify_run` checks a run directory, :func:`verify_attestation` a run directory or a bundle;
both return a :class:`Verification` with one :class:`Finding` per thing checked. It holds when no
finding failed:

- every envelope is a DSSE envelope of an in-toto statement, signed by a trusted key, about this
  run (its ``invocationId``) and the step its file is named after;
- every subject names an output of its step (none added, none removed) whose file has the attested
  digest;
- each step's inputs (``resolvedDependencies``) have the digests its upstream steps attested;
- the spec has the digest the run recorded and every statement names; a step with a spec of its
  own (``steps/<step>/spec.yaml``, written for each call of a decorated task, see
  :mod:`scanflow_core.tasks`) is checked against that file instead, and a run made only of
  decorated tasks (``"kind": "tasks"`` in ``run.json``) has no run-wide spec to check.
"""

from __future__ import annotations

import json
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scanflow_core.digests import digest_path
from scanflow_core.errors import AttestationError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

__all__ = ["Finding", "Verification", "verify_attestation", "verify_run"]

SUFFIX = ".intoto.jsonl"
STEP_SPEC = "spec.yaml"  # a step's own one-step spec (a decorated task's call)
RUN = "-"  # the "step" of findings about the run as a whole (its spec, its attestations folder)


@dataclass(frozen=True)
class Finding:
    """One thing checked: about which step and file, whether it holds, and why (one line)."""

    step: str
    file: str
    ok: bool
    reason: str
    kind: str = ""  # signature, subject, chain, spec, statement, bundle

    def __str__(self) -> str:
        return f"{'ok' if self.ok else 'FAILED'}  {self.step}  {self.file}: {self.reason}"


@dataclass
class Verification:
    """The outcome of verifying one run: every finding, the key ids used, notes for people."""

    run_dir: Path
    run_id: str
    findings: list[Finding] = field(default_factory=list)
    keyids: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.findings) and all(f.ok for f in self.findings)

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok]

    def steps(self) -> list[str]:
        return sorted({f.step for f in self.findings if f.step != RUN})

    def table(self) -> str:
        """A short table: per step, how many statements, subjects and inputs held."""
        rows = [("step", "statements", "subjects", "inputs", "result")]
        for step in self.steps():
            mine = [f for f in self.findings if f.step == step]

            def count(kind: str, found: list[Finding] = mine) -> str:
                return str(sum(f.ok for f in found if f.kind == kind))

            failed = sum(not f.ok for f in mine)
            rows.append(
                (
                    step,
                    count("signature"),
                    count("subject"),
                    count("chain"),
                    "ok" if not failed else f"FAILED ({failed})",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
        for finding in self.findings:
            if finding.step == RUN and finding.ok:
                lines.append(f"{finding.file}: {finding.reason}")
        return "\n".join(lines)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


def _trusted_keys(run_dir: Path, key: Path | None, notes: list[str]) -> dict[str, PublicKeyTypes]:
    from scanflow_core.attestation.keys import PUBLIC_KEY_NAME, key_id, load_public_key

    if key is not None:
        public = load_public_key(key)
        return {key_id(public): public}
    bundled = run_dir / "bundle" / PUBLIC_KEY_NAME
    if bundled.is_file():
        public = load_public_key(bundled)
        notes.append(
            f"verified with the public key inside the bundle ({key_id(public)}); "
            "pass --key PUB to check it against a key you trust"
        )
        return {key_id(public): public}
    home_key = run_dir.parent.parent / "keys" / PUBLIC_KEY_NAME
    if home_key.is_file():
        public = load_public_key(home_key)
        notes.append(f"verified with {home_key} (pass --key PUB to pin another)")
        return {key_id(public): public}
    raise AttestationError(
        f"no public key to verify {run_dir} with: pass --key PUB (the scanflow.pub of the key that signed)"
    )


class _Checker:
    def __init__(
        self, run_dir: Path, run_id: str, keys: Mapping[str, PublicKeyTypes], spec_digest: str
    ) -> None:
        self.run_dir = run_dir
        self.run_id = run_id
        self.keys = keys
        self.spec_digest = spec_digest
        self.tasks_only = False  # a run made of decorated tasks: every step has its own spec
        self.findings: list[Finding] = []
        self.provenance: dict[str, dict[str, Any]] = {}
        self._digests: dict[Path, str] = {}

    def add(self, step: str, file: str, ok: bool, reason: str, kind: str) -> bool:
        self.findings.append(Finding(step, file, ok, reason, kind))
        return ok

    def digest(self, path: Path) -> str:
        if path not in self._digests:
            self._digests[path] = digest_path(path)
        return self._digests[path]

    # ---------------------------------------------------------------------------- envelopes

    def envelope(self, step: str, where: str, line: str) -> dict[str, Any] | None:
        """The statement of one envelope line when its signature and identity hold, else ``None``."""
        from scanflow_core.attestation.dsse import EnvelopeError, verify_envelope
        from scanflow_core.attestation.statements import PROVENANCE, STATEMENT_TYPE, TEST_RESULT

        try:
            envelope = json.loads(line)
        except ValueError:
            return self._fail(step, where, "not a JSON line (a DSSE envelope per line expected)")
        try:
            payload, keyid = verify_envelope(envelope, self.keys)
        except EnvelopeError as exc:
            return self._fail(step, where, exc.reason, "signature")
        try:
            statement = json.loads(payload)
        except ValueError:
            return self._fail(step, where, "the signed payload is not JSON")
        if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
            return self._fail(step, where, f"the payload is not an in-toto Statement v1 ({STATEMENT_TYPE})")
        kind = statement.get("predicateType")
        predicate = statement.get("predicate") or {}
        if kind == PROVENANCE:
            about = predicate.get("buildDefinition", {}).get("externalParameters", {}).get("step")
            invocation = predicate.get("runDetails", {}).get("metadata", {}).get("invocationId")
        elif kind == TEST_RESULT:
            about = predicate.get("scanflow", {}).get("step")
            invocation = predicate.get("scanflow", {}).get("invocationId")
        else:
            return self._fail(step, where, f"unknown predicateType {kind!r}")
        if invocation != self.run_id:
            return self._fail(
                step,
                where,
                f"the statement is from run {invocation}, not this run {self.run_id} "
                "(an envelope of another run)",
                "statement",
            )
        if about != step:
            return self._fail(
                step, where, f"the statement is about step {about!r}, not {step!r}", "statement"
            )
        self.add(
            step, where, True, f"signature ok ({kind.rsplit('/', 2)[-2]}, key {_short(keyid)})", "signature"
        )
        return statement

    def _fail(self, step: str, where: str, reason: str, kind: str = "statement") -> dict[str, Any] | None:
        """Record a failed envelope; ``None``, its statement not to be trusted further."""
        self.add(step, where, False, reason, kind)
        return None

    # ---------------------------------------------------------------------------- subjects

    def subjects(self, step: str, statement: dict[str, Any], recorded: set[str] | None) -> None:
        """Every subject is an output of ``step`` with the attested digest; every output is a subject."""
        outputs_dir = f"steps/{step}/outputs/"
        names: list[str] = []
        for subject in statement.get("subject") or []:
            name = str(subject.get("name", ""))
            names.append(name)
            expected = (subject.get("digest") or {}).get("sha256")
            if (
                not name.startswith(outputs_dir)
                or ".." in Path(name).parts
                or (recorded is not None and name not in recorded)
            ):
                self.add(
                    step, name, False, f"a subject that is not an output of step {step!r} (added)", "subject"
                )
            elif not expected:
                self.add(step, name, False, "the subject has no sha256 digest", "subject")
            else:
                self.file_digest(step, name, self.run_dir / name, str(expected))
        on_disk = self.run_dir / outputs_dir
        wanted = set(recorded or ())
        if on_disk.is_dir():
            wanted |= {p.relative_to(self.run_dir).as_posix() for p in on_disk.rglob("*") if p.is_file()}
        for output in sorted(wanted):
            if not any(output == n or output.startswith(n.rstrip("/") + "/") for n in names):
                self.add(
                    step,
                    output,
                    False,
                    f"an output of step {step!r} that is not a subject (removed)",
                    "subject",
                )

    def file_digest(self, step: str, name: str, path: Path, expected: str) -> bool:
        if not path.exists():
            return self.add(step, name, False, "the attested file is missing", "subject")
        actual = self.digest(path)
        if actual.split(":", 1)[-1] != expected:
            return self.add(
                step,
                name,
                False,
                f"sha256 {_short(actual)}… differs from the attested {expected[:12]}… "
                "(the file changed after the step)",
                "subject",
            )
        return self.add(step, name, True, "digest matches", "subject")

    def check_subjects(self, step: str, statement: dict[str, Any]) -> None:
        """A check statement's subjects: files in the run must match; files outside it when present."""
        for subject in statement.get("subject") or []:
            name = str(subject.get("name", ""))
            expected = str((subject.get("digest") or {}).get("sha256", ""))
            path = Path(name) if Path(name).is_absolute() else self.run_dir / name
            if not Path(name).is_absolute() and ".." in Path(name).parts:
                self.add(step, name, False, "a subject outside the run directory", "subject")
            elif Path(name).is_absolute() and not path.exists():
                self.add(step, name, True, "a workflow input not present here; not checked", "input")
            else:
                self.file_digest(step, name, path, expected)

    def spec(self, step: str, where: str, statement: dict[str, Any]) -> None:
        spec = statement["predicate"].get("buildDefinition", {}).get("externalParameters", {}).get("spec", {})
        named = (spec.get("digest") or {}).get("sha256")
        own = self.run_dir / "steps" / step / STEP_SPEC
        if own.is_file():
            actual, whose = self.digest(own), f"the step's own {STEP_SPEC}"
        elif self.tasks_only:
            self.add(step, where, False, f"the step's spec steps/{step}/{STEP_SPEC} is missing", "spec")
            return
        else:
            actual, whose = self.spec_digest, "the run's spec"
        if named != actual.split(":", 1)[-1]:
            self.add(
                step,
                where,
                False,
                f"the statement names spec sha256 {str(named)[:12]}…, {whose} is {_short(actual)}…",
                "spec",
            )
        elif own.is_file():
            self.add(step, f"steps/{step}/{STEP_SPEC}", True, f"spec digest {actual} matches", "spec")

    # ---------------------------------------------------------------------------- chain

    def chain(self) -> None:
        """Each input a step resolved has the digest its upstream step attested for that file."""
        for step, statement in sorted(self.provenance.items()):
            deps = statement["predicate"].get("buildDefinition", {}).get("resolvedDependencies") or []
            for dep in deps:
                notes = dep.get("annotations") or {}
                if notes.get("scanflow.role") == "image":
                    continue
                name = str(dep.get("name", ""))
                digest = str((dep.get("digest") or {}).get("sha256", ""))
                producer = notes.get("scanflow.producer") or self.producer_in_run(step, name)
                if producer is None:
                    path = Path(name) if Path(name).is_absolute() else self.run_dir / name
                    if path.exists():
                        actual = self.digest(path).split(":", 1)[-1]
                        ok = actual == digest
                        reason = (
                            "workflow input matches"
                            if ok
                            else (
                                f"workflow input sha256 {actual[:12]}… is not "
                                f"the {digest[:12]}… the step read"
                            )
                        )
                        self.add(step, name, ok, reason, "chain")
                    else:
                        self.add(step, name, True, "a workflow input not present here; not checked", "input")
                    continue
                upstream = self.provenance.get(producer)
                if upstream is None:
                    self.add(
                        step, name, False, f"its producer {producer!r} has no verified attestation", "chain"
                    )
                    continue
                attested = {
                    s.get("name"): (s.get("digest") or {}).get("sha256")
                    for s in upstream.get("subject") or []
                }
                if name not in attested:
                    self.add(
                        step,
                        name,
                        False,
                        f"step {producer!r} attested no such output (chain broken)",
                        "chain",
                    )
                elif attested[name] != digest:
                    self.add(
                        step,
                        name,
                        False,
                        f"the input's sha256 {digest[:12]}… is not the {str(attested[name])[:12]}… "
                        f"step {producer!r} attested (chain broken)",
                        "chain",
                    )
                else:
                    self.add(step, name, True, f"matches what step {producer!r} attested", "chain")

    def producer_in_run(self, step: str, name: str) -> str | None:
        """The step of this run that attested ``name`` as an output, for an input a decorated task read
        (its one-step spec names the file as a workflow input, with no producer)."""
        parts = Path(name).parts
        if len(parts) < 4 or parts[0] != "steps" or parts[2] != "outputs" or parts[1] == step:
            return None
        upstream = self.provenance.get(parts[1]) or {}
        return parts[1] if any(s.get("name") == name for s in upstream.get("subject") or []) else None


def _step_records(run_dir: Path) -> dict[str, dict[str, Any]]:
    records = {}
    for path in sorted((run_dir / "steps").glob("*/step.json")):
        data = _read_json(path)
        if isinstance(data, dict):
            records[path.parent.name] = data
    return records


def verify_run(
    run_dir: str | Path, *, key: str | Path | None = None, spec: str | Path | None = None
) -> Verification:
    """Verify the attestations of the run in ``run_dir``.

    Args:
        key: the trusted public key (PEM); default ``<home>/keys/scanflow.pub`` beside the run's
            ``runs`` folder, else the one a bundle carries.
        spec: where the spec is now (default: the path ``run.json`` recorded).

    Raises:
        AttestationError: not a run directory, or no public key to verify with.
    """
    run_dir = Path(run_dir).absolute()
    manifest = _read_json(run_dir / "run.json")
    if not isinstance(manifest, dict):
        raise AttestationError(f"{run_dir} is not a run directory (no readable run.json)")
    run_id = str(manifest.get("run_id") or run_dir.name)
    result = Verification(run_dir, run_id)
    keys = _trusted_keys(run_dir, Path(key) if key is not None else None, result.notes)
    result.keyids = list(keys)
    spec_digest = str(manifest.get("spec_digest", ""))
    checker = _Checker(run_dir, run_id, keys, spec_digest)

    checker.tasks_only = manifest.get("kind") == "tasks" and spec is None
    spec_path = Path(spec) if spec is not None else Path(str(manifest.get("spec", "")))
    if checker.tasks_only:
        checker.add(
            RUN,
            "run.json",
            True,
            f"a run of decorated tasks: each step is checked against its own steps/<step>/{STEP_SPEC}",
            "spec",
        )
    elif not spec_path.is_file():
        checker.add(
            RUN, str(spec_path), False, "the spec is not here: verify a bundle, or pass its path", "spec"
        )
    elif (actual := digest_path(spec_path)) != spec_digest:
        checker.add(
            RUN,
            spec_path.name,
            False,
            f"the spec's sha256 {_short(actual)}… is not the {_short(spec_digest)}… "
            "the run used (edited since)",
            "spec",
        )
    else:
        checker.add(RUN, spec_path.name, True, f"spec digest {spec_digest} matches", "spec")

    records = _step_records(run_dir)
    files = sorted((run_dir / "attestations").glob(f"*{SUFFIX}"))
    if not files:
        checker.add(
            RUN,
            "attestations/",
            False,
            "the run has no attestations (was attestation disabled?)",
            "statement",
        )
    attested = set()
    for file in files:
        step = file.name[: -len(SUFFIX)]
        attested.add(step)
        rel = file.relative_to(run_dir).as_posix()
        provenance = []
        lines = [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
        for number, line in enumerate(lines, 1):
            statement = checker.envelope(step, f"{rel}:{number}", line)
            if statement is None:
                continue
            from scanflow_core.attestation.statements import PROVENANCE

            if statement.get("predicateType") == PROVENANCE:
                provenance.append(statement)
                checker.spec(step, f"{rel}:{number}", statement)
                recorded = records.get(step, {}).get("outputs")
                paths = (
                    {str(o.get("path")) for o in recorded.values()} if isinstance(recorded, dict) else None
                )
                checker.subjects(step, statement, paths)
            else:
                checker.check_subjects(step, statement)
        if len(provenance) == 1:
            checker.provenance[step] = provenance[0]
        elif not any(f.file.startswith(rel) and not f.ok for f in checker.findings):
            checker.add(step, rel, False, "no provenance statement for the step", "statement")
        elif len(provenance) > 1:
            checker.add(
                step, rel, False, f"{len(provenance)} provenance statements; one expected", "statement"
            )
    if files:
        for step, record in records.items():
            if record.get("status") == "succeeded" and step not in attested:
                checker.add(
                    step,
                    f"attestations/{step}{SUFFIX}",
                    False,
                    "the step succeeded but has no attestation",
                    "statement",
                )
    checker.chain()
    result.findings = checker.findings
    return result


@contextmanager
def _opened(path: Path) -> Iterator[Path]:
    """The run directory a bundle holds, extracted to a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="scanflow-verify-") as tmp:
        try:
            with tarfile.open(path, "r:*") as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise AttestationError(f"{path} is not a readable bundle: {exc}") from None
        runs = [p.parent for p in Path(tmp).glob("*/run.json")]
        if len(runs) != 1:
            raise AttestationError(f"{path} is not a Scanflow bundle (one <run_id>/run.json expected)")
        yield runs[0]


def verify_attestation(path: str | Path, *, key: str | Path | None = None) -> Verification:
    """Verify a run directory, or a bundle made by ``scanflow bundle`` (a ``.tar.gz``)."""
    path = Path(path)
    if path.is_dir():
        return verify_run(path, key=key)
    if not path.is_file():
        raise AttestationError(f"{path}: no such run directory or bundle")
    from scanflow_core.attestation.bundle import bundle_findings, bundled_spec

    with _opened(path) as run_dir:
        result = verify_run(run_dir, key=key, spec=bundled_spec(run_dir))
        result.findings.extend(bundle_findings(run_dir))
        result.run_dir = path
        return result
