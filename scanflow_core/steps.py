"""The one step path: every adapter and the local runner run a step through :func:`run_step`.

before-hooks → ``when:`` → checks on inputs → execute → outputs present → checks on outputs →
stage metadata → attest → track → after-hooks. Whatever happens, the step's record lands in the
run directory first, so a failing tracker or checker never loses it.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import platform
import shutil
import sys
import time
import traceback
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from scanflow_core.digests import digest_path, path_size
from scanflow_core.errors import CheckFailed, ScanflowError, StepFailed
from scanflow_core.records import ArtifactRecord, CheckResult, ObjectiveResult
from scanflow_core.runs import StepRun, WorkflowRun
from scanflow_core.spec import CheckSpec

__all__ = ["evaluate_condition", "run_step", "system_values"]

DEFAULT_CHECK_TIMEOUT = 600.0


def run_step(run: WorkflowRun, name: str, *, attempt: int = 1) -> StepRun:
    """Run one step of ``run`` and return its record; raise :class:`StepFailed` if it failed.

    The caller has opened the run (:meth:`WorkflowRun.open`) and run the step's upstream steps,
    in this process or elsewhere: inputs are read from the run directory.
    """
    step_run = StepRun(run, run.plan[name], attempt)
    hook = run.pm.hook
    step_run.open_recorder(lambda batch: hook.scanflow_track(run=run, step_run=step_run, batch=batch))
    step_run.started_at = time.time()
    step_run.status = "running"
    run.active[name] = step_run
    try:
        return _run(step_run)
    finally:
        run.active.pop(name, None)


def _run(step_run: StepRun) -> StepRun:
    run, name, hook = step_run.run, step_run.name, step_run.run.pm.hook
    try:
        condition = _condition(step_run)
        if condition is not None and not condition.passed:
            step_run.status = "skipped"
            step_run.reason = f"when: {condition}"
            _finish(step_run)
            hook.scanflow_step_finish(step_run=step_run)
            return step_run
        _prepare(step_run)
        hook.scanflow_step_start(step_run=step_run)
        _run_checks(step_run, "inputs")
        step_run.execution = hook.scanflow_execute_step(step_run=step_run)
        if step_run.execution is None:
            raise StepFailed(name, run.run_id, _no_runtime(step_run))

        step_run.output_records = _outputs(step_run)
        _run_checks(step_run, "outputs")
        _stage_metadata(step_run)
        step_run.attestations = [
            p for paths in hook.scanflow_attest_step(step_run=step_run) for p in paths or ()
        ]
        step_run.status = "succeeded"
    except BaseException as exc:
        step_run.status = "failed"
        # Whatever went wrong inside the step fails the step, never the whole run: a ScanflowError
        # raised by the step's own code (or a checker, a runtime) keeps its message.
        error = exc if isinstance(exc, StepFailed | KeyboardInterrupt) else _as_step_failed(step_run, exc)
        step_run.reason = (
            "interrupted" if isinstance(exc, KeyboardInterrupt) else str(getattr(error, "reason", error))
        )
        _finish(step_run)
        try:
            hook.scanflow_step_error(step_run=step_run, error=error)
        finally:
            if error is exc:
                raise
            raise error from exc
    _finish(step_run)
    hook.scanflow_step_finish(step_run=step_run)
    return step_run


def _as_step_failed(step_run: StepRun, exc: BaseException) -> StepFailed:
    reason = str(exc) if isinstance(exc, ScanflowError) else f"{type(exc).__name__}: {exc}"
    return StepFailed(step_run.name, step_run.run.run_id, reason, _tail(step_run.log_path))


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _prepare(step_run: StepRun) -> None:
    """Inputs must exist (named with the step that should have made them); outputs start empty."""
    for local, path in step_run.inputs.items():
        if not path.exists():
            artifact = step_run.step.inputs[local]
            producer = step_run.run.plan.artifacts[artifact].producer
            if producer:
                reason = f"input {local!r} is missing: step {producer!r} of run {step_run.run.run_id} "
                reason += f"should write {path}"
            else:  # a workflow input, or the file a decorated task's argument named
                reason = f"input {local!r} is missing: there is no file {path}"
            raise StepFailed(step_run.name, step_run.run.run_id, reason)
        step_run.input_records.append(
            _artifact(
                local, path, step_run.run.plan.artifacts[step_run.step.inputs[local]].spec.kind, "input"
            )
        )
    if step_run.output_dir.exists():
        shutil.rmtree(step_run.output_dir)  # outputs of an earlier attempt must not pass for new ones
    step_run.output_dir.mkdir()
    for path in step_run.outputs.values():
        if path.parent != step_run.output_dir:
            path.parent.mkdir(parents=True, exist_ok=True)
    step_run.recorder.log_params(step_run.params)


def _artifact(name: str, path: Path, kind: str, role: Any) -> ArtifactRecord:
    return ArtifactRecord(name, str(path), digest_path(path), path_size(path), kind, role)


def _outputs(step_run: StepRun) -> list[ArtifactRecord]:
    records = []
    for name, path in step_run.outputs.items():
        if not path.exists():
            raise StepFailed(
                step_run.name,
                step_run.run.run_id,
                f"the step did not write its output {name!r} (expected at {path})",
                _tail(step_run.log_path),
            )
        records.append(_artifact(name, path, step_run.step.outputs[name].kind, "output"))
    return records


def _no_runtime(step_run: StepRun) -> str:
    spec = step_run.step.spec
    if spec.kind == "container":
        image = spec.image or "a built image"
        return f"it runs in {image}, and no registered runtime runs containers (install scanflow[docker])"
    return f"no registered runtime runs a {spec.kind!r} step with runtime {spec.runtime!r}"


# ------------------------------------------------------------------------------------------ when:


@cache
def system_values() -> dict[str, Any]:
    """What ``when:`` can ask about the machine: ``system.device``, ``.gpus``, ``.cpus``, …"""
    gpus = _gpu_count()
    return {
        "device": "cuda" if gpus else "cpu",
        "gpus": gpus,
        "cpus": os.cpu_count() or 1,
        "platform": sys.platform,
        "python": platform.python_version(),
    }


def _gpu_count() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    return len(list(Path("/dev").glob("nvidia[0-9]*")))


def evaluate_condition(
    expr: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, Mapping[str, float]],
    name: str = "when",
    scope: str = "",
) -> ObjectiveResult:
    """Evaluate an objective or ``when:`` expression against params, system values and metrics."""
    from scanflow_core.expressions import parse
    from scanflow_core.spec.plan import resolve_step_name

    system = system_values()

    def resolve(dotted: str) -> object:
        head, _, rest = dotted.partition(".")
        if head == "params":
            return params[rest]
        if head == "system" and rest in system:
            return system[rest]
        found = resolve_step_name(scope + dotted, metrics)
        if found is None:
            raise KeyError(dotted)
        step, metric = found
        return metrics[step][metric]

    outcome = parse(expr).check(resolve)
    return ObjectiveResult(name, expr, outcome.passed, True, dict(outcome.observed), outcome.reason)


def _condition(step_run: StepRun) -> ObjectiveResult | None:
    """The first ``when:`` (of the step, or of a nested workflow holding it) that does not hold."""
    result = None
    for condition in step_run.step.conditions:
        result = evaluate_condition(
            condition.expr, condition.params, step_run.run.metrics(), scope=condition.scope
        )
        if not result.passed:
            return result
    return result


# ------------------------------------------------------------------------------------------ checks


def _targets(step_run: StepRun, check: CheckSpec, phase: str) -> list[str]:
    names = check.on or (list(step_run.outputs) or list(step_run.inputs))
    pool = step_run.inputs if phase == "inputs" else step_run.outputs
    return [n for n in names if n in pool]


def _run_checks(step_run: StepRun, phase: str) -> None:
    hook = step_run.run.pm.hook
    pool = step_run.inputs if phase == "inputs" else step_run.outputs
    results: list[CheckResult] = []
    for check in step_run.step.spec.checks:
        for target in _targets(step_run, check, phase):
            results.extend(_one_check(hook, step_run, check, target, pool[target], phase))
    if not results:
        return
    step_run.checks.extend(results)
    report = step_run.directory / "checks.json"
    report.write_text(
        json.dumps([r.to_dict() for r in step_run.checks], indent=2, default=str), encoding="utf-8"
    )
    if any(r.blocking for r in results):
        raise CheckFailed(step_run.name, step_run.run.run_id, step_run.checks)


def _one_check(
    hook: Any, step_run: StepRun, check: CheckSpec, target: str, path: Path, phase: Any
) -> list[CheckResult]:
    started = time.perf_counter()
    timeout = check.timeout or DEFAULT_CHECK_TIMEOUT

    def failed(summary: str) -> list[CheckResult]:
        return [CheckResult(check.use, target, False, summary, details={"error": summary})]

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"check-{check.use}")
    future = pool.submit(hook.scanflow_check, step_run=step_run, check=check, target=target, path=path)
    try:
        answer = future.result(timeout=timeout)
        if answer is None:
            known = sorted({n for names in hook.scanflow_checker_names() for n in names or ()})
            raw = failed(
                f"no checker named {check.use!r} is registered (registered: {', '.join(known) or 'none'})"
            )
        else:
            raw = list(answer) if isinstance(answer, list) else [answer]
    except concurrent.futures.TimeoutError:
        raw = failed(f"the checker did not answer within {timeout:g}s")
    except Exception as exc:  # a crashing checker yields a failed result, never a lost step
        raw = failed(f"the checker crashed: {type(exc).__name__}: {exc}")
        raw[0].details["traceback"] = traceback.format_exc()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    duration = time.perf_counter() - started
    return [_apply_policy(r, check, phase, duration) for r in raw]


def _apply_policy(result: CheckResult, check: CheckSpec, phase: Any, duration: float) -> CheckResult:
    from dataclasses import replace

    return replace(
        result,
        policy=check.policy,
        severity=check.severity,
        check=check.label,
        phase=phase,
        duration_s=round(duration, 4),
    )


# ------------------------------------------------------------------------------------------ stage metadata


def _stage_metadata(step_run: StepRun) -> None:
    policy = step_run.run.workflow.stage_metadata
    if policy == "off":
        return
    from scanflow_core.stages import compare

    requirements = [
        r
        for reqs in step_run.run.pm.hook.scanflow_stage_requirements(stage=step_run.stage)
        for r in reqs or ()
    ]
    report = compare(step_run, requirements)
    step_run.stage_report = report
    if not report.complete and policy == "fail":
        problems = "; ".join(report.missing + report.mistyped)
        raise StepFailed(
            step_run.name, step_run.run.run_id, f"stage metadata of {step_run.stage!r} incomplete: {problems}"
        )


# ------------------------------------------------------------------------------------------ finish


def _finish(step_run: StepRun) -> None:
    """Write the step's record to the run directory, then hand it to the trackers."""
    run = step_run.run
    step_run.finished_at = time.time()
    run.record_step(step_run.name, step_run.summary())
    batch = step_run.recorder.take()
    batch.tags.update(
        {
            "scanflow.run_id": run.run_id,
            "scanflow.step": step_run.name,
            "scanflow.stage": step_run.stage,
            "scanflow.spec_digest": run.workflow.digest,
            "scanflow.status": step_run.status,
        }
    )
    reports = [step_run.directory / "checks.json", step_run.directory / "step.json", step_run.log_path]
    batch.artifacts.extend(step_run.output_records)
    batch.artifacts.extend(r for r in (_report(p, "report") for p in reports) if r is not None)
    batch.artifacts.extend(r for r in (_report(p, "attestation") for p in step_run.attestations) if r)
    batch.checks.extend(step_run.checks)
    step_run.recorder.close()
    run.pm.hook.scanflow_track(run=run, step_run=step_run, batch=batch)


def _report(path: Path, role: Any) -> ArtifactRecord | None:
    """A report or attestation file to log (not digested: it is the record, not a subject); ``None``
    if the step did not write it."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return None
    return ArtifactRecord(path.name, str(path), "", size, "report", role)
