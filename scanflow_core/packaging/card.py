"""The model card: what :func:`write_model_card` gathers from a run and writes beside a model.

See :mod:`scanflow_core.packaging` for what the card holds.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scanflow_core.digests import digest_path, path_size
from scanflow_core.errors import ScanflowError
from scanflow_core.packaging.markdown import render_model_card

if TYPE_CHECKING:
    from scanflow_core.runs import StepRun, WorkflowRun

__all__ = [
    "ATTESTATION_TAG",
    "CARD_SCHEMA",
    "HYPERPARAMETER_STAGES",
    "METRIC_STAGES",
    "load_model_card",
    "model_card",
    "pipeline_digest",
    "write_model_card",
]

#: The ``schema`` field of every card this module writes.
CARD_SCHEMA = "scanflow/model-card/v1"
#: The tag on a registered version naming its pipeline's digest (what ``scanflow serve`` reads).
ATTESTATION_TAG = "scanflow.attestation_digest"
#: Upstream stages whose params are the model's hyperparameters, and whose metrics are its metrics.
HYPERPARAMETER_STAGES = ("training",)
METRIC_STAGES = ("training", "evaluation", "test")


def write_model_card(
    ctx: StepRun | None,
    model: str | Path,
    card: str | Path,
    markdown: str | Path | None = None,
    *,
    name: str | None = None,
    description: str = "",
    hyperparameters: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Mapping[str, float]] | None = None,
    signature: Mapping[str, Any] | None = None,
    packages: Sequence[str] | None = None,
    resources: Mapping[str, Any] | None = None,
    registry: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the model card of ``model`` as JSON to ``card`` and as Markdown to ``markdown``.

    Args:
        ctx: the running packaging step (the ``ctx`` argument Scanflow passes to a step function);
            ``None`` in a child process, where ``$SCANFLOW_RUN_DIR`` and ``$SCANFLOW_STEP`` say which.
        model: the packaged model (a file or folder, usually an output of the step).
        card: where ``model_card.json`` goes.
        markdown: where ``model_card.md`` goes (default: ``card`` with the suffix ``.md``).
        name: the model's name (default: the workflow's).
        description: a sentence or two about the model.
        hyperparameters: ``{step: {param: value}}`` (default: the params of the upstream training steps).
        metrics: ``{step: {metric: value}}`` (default: the metrics of the upstream training,
            evaluation and test steps).
        signature: ``{"inputs": [...], "outputs": [...]}`` (default: the MLflow model's signature).
        packages: distributions the model needs, their versions taken from this environment
            (default: the MLflow model's ``requirements.txt``).
        resources: ``{"cpu": 1, "memory": "512Mi", "gpu": 0}`` the model needs (default: the
            packaging step's ``resources`` in the spec).
        registry: where the model is registered (``{"name": ..., "version": ..., "uri": ...}``).

    Returns:
        The card, as written to ``card``.

    Raises:
        ScanflowError: no step context, the model is missing, no signature can be found, or a
            package is not installed (each named).

    Examples:
        >>> write_model_card(ctx, outputs / "model", outputs / "model_card.json")  # doctest: +SKIP
    """
    content = model_card(
        ctx,
        model,
        name=name,
        description=description,
        hyperparameters=hyperparameters,
        metrics=metrics,
        signature=signature,
        packages=packages,
        resources=resources,
        registry=registry,
    )
    card_path = Path(card)
    markdown_path = Path(markdown) if markdown is not None else card_path.with_suffix(".md")
    card_path.parent.mkdir(parents=True, exist_ok=True)
    card_path.write_text(json.dumps(content, indent=2, default=str) + "\n", encoding="utf-8")
    markdown_path.parent.mkdir(parents=True, exist_ok=True)
    markdown_path.write_text(render_model_card(content), encoding="utf-8")
    return content


def model_card(
    ctx: StepRun | None,
    model: str | Path,
    *,
    name: str | None = None,
    description: str = "",
    hyperparameters: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Mapping[str, float]] | None = None,
    signature: Mapping[str, Any] | None = None,
    packages: Sequence[str] | None = None,
    resources: Mapping[str, Any] | None = None,
    registry: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The card :func:`write_model_card` writes, as a dict (same arguments, nothing written)."""
    run, step = _context(ctx)
    model_path = Path(model)
    if not model_path.exists():
        raise ScanflowError(f"model card of step {step!r}: the model {model_path} does not exist")
    upstream = [n for n in run.plan.steps if n in run.plan.ancestors(step)]
    records = {n: run.step_summary(n) or {} for n in upstream}
    mlmodel = _mlmodel(model_path)
    found_signature = dict(signature) if signature is not None else _mlflow_signature(mlmodel)
    if found_signature is None:
        raise ScanflowError(
            f"model card of step {step!r}: no signature for {model_path.name}: pass signature="
            "{'inputs': [...], 'outputs': [...]} or save the MLflow model with a signature"
        )
    return {
        "schema": CARD_SCHEMA,
        "name": name or run.workflow.name,
        "description": description or run.workflow.description.strip(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": _model_entry(model_path, run, mlmodel),
        "registry": dict(registry) if registry else None,
        "provenance": _provenance(run, step, upstream, records),
        "hyperparameters": _by_stage(run, records, HYPERPARAMETER_STAGES, "params", hyperparameters),
        "metrics": _by_stage(run, records, METRIC_STAGES, "metrics", metrics),
        "objectives": _objectives(run, set(upstream)),
        "data": _data(run, records),
        "signature": found_signature,
        "infrastructure": _infrastructure(run, step, model_path, packages, resources),
    }


def load_model_card(path: str | Path) -> dict[str, Any]:
    """Read a card written by :func:`write_model_card`.

    Raises:
        ScanflowError: the file is missing, not JSON, or not a Scanflow model card.
    """
    file = Path(path)
    try:
        card = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScanflowError(f"no model card at {file}") from None
    except ValueError as exc:
        raise ScanflowError(f"{file}: not JSON ({exc})") from None
    if not isinstance(card, dict) or card.get("schema") != CARD_SCHEMA:
        found = card.get("schema") if isinstance(card, dict) else type(card).__name__
        raise ScanflowError(f"{file}: not a model card (schema {found!r}, expected {CARD_SCHEMA!r})")
    return card


# ------------------------------------------------------------------------------------------ context


def _context(ctx: StepRun | None) -> tuple[WorkflowRun, str]:
    """The run and the packaging step's name: from ``ctx``, else from the child process's environment."""
    if ctx is not None:
        if not hasattr(ctx, "run") or not hasattr(ctx, "name"):
            raise ScanflowError(
                f"model card: ctx must be the running step (a StepRun), not {type(ctx).__name__}"
            )
        return ctx.run, ctx.name
    run_dir, step = os.environ.get("SCANFLOW_RUN_DIR"), os.environ.get("SCANFLOW_STEP")
    if not run_dir or not step:
        raise ScanflowError(
            "model card: no step context: call it from a step with its ctx argument, or from a step's "
            "process, where $SCANFLOW_RUN_DIR and $SCANFLOW_STEP are set"
        )
    from scanflow_core.runs import WorkflowRun
    from scanflow_core.spec import load_workflow

    directory = Path(run_dir)
    try:
        manifest = json.loads((directory / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ScanflowError(
            f"model card: $SCANFLOW_RUN_DIR={run_dir} is not a run directory ({exc})"
        ) from None
    if not isinstance(manifest, dict) or not manifest.get("spec"):
        raise ScanflowError(f"model card: the run in {run_dir} names no workflow spec to read its steps from")
    params = manifest.get("params") or {}
    workflow = load_workflow(manifest["spec"], params)
    run = WorkflowRun(workflow, run_id=manifest["run_id"], home=directory.parent.parent, params=params)
    return run, step


# ------------------------------------------------------------------------------------------ sections


def _mlmodel(path: Path) -> dict[str, Any] | None:
    """The MLflow ``MLmodel`` file of a model folder, parsed (``None`` when it is not one)."""
    import yaml

    file = path / "MLmodel" if path.is_dir() else None
    if file is None or not file.is_file():
        return None
    data = yaml.safe_load(file.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else None


def _mlflow_signature(mlmodel: Mapping[str, Any] | None) -> dict[str, Any] | None:
    signature = (mlmodel or {}).get("signature")
    if not isinstance(signature, dict):
        return None
    out: dict[str, Any] = {}
    for part in ("inputs", "outputs", "params"):
        value = signature.get(part)
        out[part] = json.loads(value) if isinstance(value, str) else value
    return out


def _relative(path: Path, base: Path) -> str:
    absolute = path.absolute()
    return absolute.relative_to(base).as_posix() if absolute.is_relative_to(base) else str(absolute)


def _model_entry(path: Path, run: WorkflowRun, mlmodel: Mapping[str, Any] | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "path": _relative(path, run.directory),
        "digest": digest_path(path),
        "size": path_size(path),
        "format": "mlflow" if mlmodel is not None else (path.suffix.lstrip(".") or "folder"),
    }
    if mlmodel is not None:
        entry["flavors"] = sorted(mlmodel.get("flavors") or {})
        entry["mlflow_version"] = mlmodel.get("mlflow_version")
    return entry


def _provenance(
    run: WorkflowRun, step: str, upstream: list[str], records: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    steps = []
    for name in upstream:
        record = records[name]
        attestation = run.attestation_dir / f"{name}.intoto.jsonl"
        steps.append(
            {
                "name": name,
                "stage": run.plan[name].stage,
                "status": record.get("status", "not run"),
                "outputs": {k: v.get("digest") for k, v in (record.get("outputs") or {}).items()},
                "attestation": _relative(attestation, run.directory) if attestation.is_file() else None,
                "attestation_digest": digest_path(attestation) if attestation.is_file() else None,
            }
        )
    return {
        "workflow": run.workflow.name,
        "run_id": run.run_id,
        "spec": Path(run.workflow.file).name,
        "spec_digest": run.workflow.digest,
        "params": {**run.workflow.params, **run.params},
        "packaged_by": step,
        "orchestrator": run.orchestrator,
        "attested": bool(steps) and all(s["attestation_digest"] for s in steps),
        "pipeline_digest": pipeline_digest(run, step),
        "steps": steps,
        "verify": f"scanflow verify {run.directory}",
    }


def pipeline_digest(run: WorkflowRun, step: str) -> str | None:
    """The digest of the attested pipeline that produced what ``step`` packages: SHA-256 over the
    attestation files of every step upstream of it, concatenated in file-name order (``None`` when
    none is attested). ``scanflow serve`` shows it in ``/varz`` and in every log line.

    Examples:
        >>> pipeline_digest(ctx.run, "package")  # doctest: +SKIP
        'sha256:4be1…'
    """
    import hashlib

    upstream = run.plan.ancestors(step)
    files = sorted(
        (
            p
            for p in run.attestation_dir.glob("*.intoto.jsonl")
            if p.name[: -len(".intoto.jsonl")] in upstream
        ),
        key=lambda p: p.name,
    )
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.read_bytes())
    return "sha256:" + digest.hexdigest()


def _by_stage(
    run: WorkflowRun,
    records: Mapping[str, Mapping[str, Any]],
    stages: Sequence[str],
    field: str,
    given: Mapping[str, Mapping[str, Any]] | None,
) -> dict[str, dict[str, Any]]:
    if given is not None:
        for key, value in given.items():
            if not isinstance(value, Mapping):
                raise ScanflowError(
                    f"model card: {field}[{key!r}] must be a mapping of names to values "
                    f"({{step: {{name: value}}}}), not {type(value).__name__}"
                )
        return {str(k): dict(v) for k, v in given.items()}
    return {
        name: dict(record.get(field) or {})
        for name, record in records.items()
        if run.plan[name].stage in stages and record.get(field)
    }


def _objectives(run: WorkflowRun, upstream: set[str]) -> list[dict[str, Any]]:
    from scanflow_core.runner import evaluate_objectives

    return [o.to_dict() for o in evaluate_objectives(run, upstream)]


def _data(run: WorkflowRun, records: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    data = []
    for name, record in records.items():
        for output, entry in (record.get("outputs") or {}).items():
            if entry.get("kind") == "data":
                data.append(
                    {
                        "artifact": run.plan[name].artifact(output),
                        "step": name,
                        "path": entry.get("path"),
                        "digest": entry.get("digest"),
                        "size": entry.get("size"),
                    }
                )
    return data


def _infrastructure(
    run: WorkflowRun,
    step: str,
    model: Path,
    packages: Sequence[str] | None,
    resources: Mapping[str, Any] | None,
) -> dict[str, Any]:
    if resources is None:
        declared = run.plan[step].spec.resources
        needs: dict[str, Any] = {"cpu": declared.cpu, "memory": declared.memory, "gpu": declared.gpu}
    else:
        unknown = sorted(set(resources) - {"cpu", "memory", "gpu"})
        if unknown:
            raise ScanflowError(f"model card: resources {unknown} unknown; expected cpu, memory and gpu")
        needs = {"cpu": None, "memory": None, "gpu": 0, **resources}
    return {
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}".strip(),
        "device": "gpu" if needs.get("gpu") else "cpu",
        "resources": needs,
        "packages": _packages(model, packages),
    }


def _packages(model: Path, names: Sequence[str] | None) -> dict[str, str]:
    """``{distribution: version}``: the given names at the versions installed here, else the MLflow
    model's pinned ``requirements.txt``."""
    if names is None:
        requirements = model / "requirements.txt" if model.is_dir() else None
        if requirements is None or not requirements.is_file():
            return {}
        pinned = {}
        for line in requirements.read_text(encoding="utf-8").splitlines():
            text = line.split("#", 1)[0].strip()
            if text and not text.startswith("-"):
                name, _, version = text.partition("==")
                pinned[name.strip()] = version.strip() or "*"
        return pinned
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            raise ScanflowError(f"model card: package {name!r} is not installed here") from None
    return found
