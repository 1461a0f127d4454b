"""What a run report shows, read from a run directory: steps, checks, objectives, plots, lineage,
attestation status, model cards and where the run was tracked.

Everything is read from files (``run.json``, ``steps/*/step.json``, ``steps/*/checks.json``, the
attestations); nothing here trusts them to be well-formed: a missing or broken file becomes a note
in the report, never an exception, except when the folder is no run directory at all.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scanflow_core.errors import ScanflowError

__all__ = ["Artifact", "Check", "Plot", "RunData", "collect"]

#: The largest picture embedded in a report (bytes); larger ones are named, not embedded.
MAX_PLOT_BYTES = 5 * 1024 * 1024
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Check:
    """One check result, with its verdict in words: ``pass``, ``warn`` or ``fail``."""

    step: str
    label: str
    checker: str
    target: str
    phase: str
    verdict: str
    summary: str
    metrics: dict[str, float]
    severity: str


@dataclass(frozen=True)
class Plot:
    """A PNG a checker wrote, ready to embed (``data`` is its base64 text, empty when not embedded)."""

    step: str
    title: str
    path: str
    data: str
    note: str = ""


@dataclass
class Artifact:
    """An output of a step: who made it, its digest, and which steps read it."""

    name: str
    step: str
    path: str
    digest: str
    size: int | None
    kind: str
    read_by: list[str] = field(default_factory=list)


@dataclass
class RunData:
    """Everything the report shows about one run."""

    directory: Path
    manifest: dict[str, Any]
    steps: dict[str, dict[str, Any]]
    stages: dict[str, str]
    checks: list[Check]
    objectives: list[dict[str, Any]]
    plots: list[Plot]
    artifacts: list[Artifact]
    lineage_svg: str | None
    lineage_note: str
    verification: Any  # a scanflow_core.attestation.verify.Verification, or None
    verification_error: str | None
    model_cards: list[dict[str, Any]]
    tracking: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id") or self.directory.name)

    @property
    def workflow(self) -> str:
        return str(self.manifest.get("workflow") or "?")


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def collect(run_dir: str | Path, *, key: str | Path | None = None, verify: bool = True) -> RunData:
    """Read the run in ``run_dir`` for a report.

    Args:
        run_dir: the run's directory (``<home>/runs/<run id>``).
        key: the public key to verify the attestations with (default: the one beside the run).
        verify: verify the attestations (``scanflow verify``); off, the report says it did not.

    Raises:
        ScanflowError: ``run_dir`` holds no readable ``run.json``.
    """
    directory = Path(run_dir).absolute()
    manifest = _json(directory / "run.json")
    if not isinstance(manifest, dict):
        raise ScanflowError(f"{directory} is not a run directory (no readable run.json)")
    notes: list[str] = []
    workflow, lineage_note = _workflow(manifest, notes)
    steps = _steps(directory, manifest, workflow)
    stages = {name: str(record.get("stage") or "") for name, record in steps.items()}
    checks, plots = _checks(directory, steps, notes)
    verification, verification_error = _verification(directory, key) if verify else (None, "not verified")
    return RunData(
        directory=directory,
        manifest=manifest,
        steps=steps,
        stages=stages,
        checks=checks,
        objectives=[o for o in manifest.get("objectives") or [] if isinstance(o, dict)],
        plots=plots,
        artifacts=_artifacts(steps),
        lineage_svg=_svg(workflow) if workflow is not None else None,
        lineage_note=lineage_note,
        verification=verification,
        verification_error=verification_error,
        model_cards=_model_cards(directory, steps, notes),
        tracking=_tracking(directory),
        notes=notes,
    )


def _workflow(manifest: dict[str, Any], notes: list[str]) -> tuple[Any, str]:
    """The run's workflow, loaded from its spec (for the plan order and the lineage graph)."""
    from scanflow_core.digests import digest_path
    from scanflow_core.spec import load_workflow

    spec = Path(str(manifest.get("spec") or ""))
    if not manifest.get("spec"):
        return None, "this run has no workflow spec (a run of decorated tasks): no graph to draw"
    if not spec.is_file():
        return None, f"the spec {spec} is not here any more: no graph to draw"
    try:
        workflow = load_workflow(spec, manifest.get("params") or {})
    except ScanflowError as exc:
        return None, f"the spec {spec} does not load any more: {str(exc).splitlines()[0]}"
    if digest_path(spec) != manifest.get("spec_digest"):
        note = f"the spec {spec.name} changed after the run: the graph is drawn from the spec as it is now"
        notes.append(note)
        return workflow, note
    return workflow, f"drawn from {spec.name} ({manifest.get('spec_digest')})"


def _steps(directory: Path, manifest: dict[str, Any], workflow: Any) -> dict[str, dict[str, Any]]:
    """Every step's record, in plan order when the workflow loads (``run.json`` while the run is on)."""
    records: dict[str, dict[str, Any]] = {}
    for path in sorted((directory / "steps").glob("*/step.json")):
        data = _json(path)
        if isinstance(data, dict):
            records[path.parent.name] = data
    for name, data in (manifest.get("steps") or {}).items():
        if isinstance(data, dict):
            records.setdefault(str(name), data)
    if workflow is not None:
        order = list(workflow.plan.steps)
        planned = {n: records.get(n, {"status": "not run", "stage": workflow.plan[n].stage}) for n in order}
        return planned | {n: r for n, r in records.items() if n not in planned}
    return dict(sorted(records.items(), key=lambda item: str(item[1].get("started_at") or "~")))


def _verdict(result: dict[str, Any]) -> str:
    if result.get("passed"):
        return "pass"
    return "warn" if result.get("policy") == "warn" else "fail"


def _checks(
    directory: Path, steps: dict[str, dict[str, Any]], notes: list[str]
) -> tuple[list[Check], list[Plot]]:
    checks: list[Check] = []
    plots: list[Plot] = []
    for step in steps:
        path = directory / "steps" / step / "checks.json"
        if not path.exists():
            continue
        results = _json(path)
        if not isinstance(results, list):
            notes.append(f"steps/{step}/checks.json is not a list of check results; its checks are not shown")
            continue
        for result in (r for r in results if isinstance(r, dict)):
            metrics = {
                str(k): float(v)
                for k, v in (result.get("metrics") or {}).items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            }
            checks.append(
                Check(
                    step=step,
                    label=str(result.get("check") or result.get("checker") or "?"),
                    checker=str(result.get("checker") or "?"),
                    target=str(result.get("target") or ""),
                    phase=str(result.get("phase") or ""),
                    verdict=_verdict(result),
                    summary=str(result.get("summary") or ""),
                    metrics=metrics,
                    severity=str(result.get("severity") or ""),
                )
            )
            details = result.get("details")
            details = details if isinstance(details, dict) else {}
            for image in details.get("artifacts") or []:
                if isinstance(image, str) and image.lower().endswith(".png"):
                    title = f"{step}: {result.get('checker')} on {result.get('target')}"
                    plots.append(_plot(directory, step, title, image))
    return checks, plots


def _plot(directory: Path, step: str, title: str, recorded: str) -> Plot:
    """Embed a checker's PNG: only a file inside the run directory (found again if the run moved)."""
    path = Path(recorded)
    candidates = [path] if path.is_absolute() else [directory / path]
    parts = path.parts
    if "steps" in parts:  # the run directory was moved or bundled: look under this one
        candidates.append(directory.joinpath(*parts[len(parts) - parts[::-1].index("steps") - 1 :]))
    shown = path.name
    for candidate in candidates:
        resolved = candidate.resolve()
        if not resolved.is_relative_to(directory.resolve()) or not resolved.is_file():
            continue
        shown = resolved.relative_to(directory.resolve()).as_posix()
        size = resolved.stat().st_size
        if size > MAX_PLOT_BYTES:
            return Plot(step, title, shown, "", f"not embedded: {size} bytes is over {MAX_PLOT_BYTES}")
        data = resolved.read_bytes()
        if not data.startswith(PNG_MAGIC):
            return Plot(step, title, shown, "", "not embedded: not a PNG file")
        return Plot(step, title, shown, base64.b64encode(data).decode("ascii"))
    return Plot(step, title, shown, "", "not embedded: the file is not in the run directory")


def _artifacts(steps: dict[str, dict[str, Any]]) -> list[Artifact]:
    made: dict[str, Artifact] = {}
    for step, record in steps.items():
        for name, entry in (record.get("outputs") or {}).items():
            if isinstance(entry, dict):
                path = str(entry.get("path") or "")
                made[path] = Artifact(
                    name=str(name),
                    step=step,
                    path=path,
                    digest=str(entry.get("digest") or ""),
                    size=entry.get("size") if isinstance(entry.get("size"), int) else None,
                    kind=str(entry.get("kind") or ""),
                )
    for step, record in steps.items():
        for entry in (record.get("inputs") or {}).values():
            if isinstance(entry, dict) and str(entry.get("path")) in made:
                made[str(entry.get("path"))].read_by.append(step)
    return list(made.values())


def _svg(workflow: Any) -> str:
    from scanflow_core.graph import to_svg

    svg = to_svg(workflow)
    return svg.split("?>", 1)[-1].strip()  # inline: no XML declaration


def _verification(directory: Path, key: str | Path | None) -> tuple[Any, str | None]:
    from scanflow_core.attestation.verify import verify_run

    try:
        return verify_run(directory, key=key), None
    except ScanflowError as exc:
        return None, str(exc)


def _model_cards(directory: Path, steps: dict[str, dict[str, Any]], notes: list[str]) -> list[dict[str, Any]]:
    from scanflow_core.packaging import load_model_card

    cards = []
    for step, record in steps.items():
        for entry in (record.get("outputs") or {}).values():
            path = str((entry or {}).get("path") or "") if isinstance(entry, dict) else ""
            if path.endswith("model_card.json"):
                try:
                    cards.append({"step": step, "path": path, **load_model_card(directory / path)})
                except ScanflowError as exc:
                    notes.append(f"{path}: {exc}")
    return cards


def _tracking(directory: Path) -> dict[str, Any] | None:
    ids = _json(directory / "tracking" / "parent.json")
    return ids if isinstance(ids, dict) else None
