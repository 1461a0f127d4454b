"""The local runner: a whole workflow in this process, independent steps in parallel.

It is one client of the step path (:func:`scanflow_core.steps.run_step`), like every adapter:
it only decides which step runs when, retries, and what happens downstream of a failure.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scanflow_core.digests import digest_path
from scanflow_core.errors import CheckFailed, ScanflowError, StepFailed
from scanflow_core.records import Metric, ObjectiveResult, TrackingBatch
from scanflow_core.runs import StepRun, WorkflowRun
from scanflow_core.spec import Workflow
from scanflow_core.spec.plan import resolve_step_name
from scanflow_core.steps import evaluate_condition, run_step

__all__ = ["Event", "RunOutcome", "close_run", "evaluate_objectives", "run_workflow"]

#: How long an interrupt waits for running steps to stop before recording them as interrupted.
INTERRUPT_GRACE_S = 2.0

#: ``(kind, step name, step run or None, run)``; kinds: start, finish, reused, blocked, retry.
Event = Callable[[str, str, "StepRun | None", WorkflowRun], None]


def run_workflow(
    workflow: Workflow,
    *,
    steps: Iterable[str] | None = None,
    max_parallel: int | None = None,
    resume: str | None = None,
    run_id: str | None = None,
    home: str | Path | None = None,
    pm: Any = None,
    params: Mapping[str, Any] | None = None,
    on_event: Event | None = None,
    status_port: int | None = None,
) -> WorkflowRun:
    """Run ``workflow`` (or ``steps`` and what they need) and return the finished run.

    Args:
        steps: run only these steps and, upstream of them, what is not already complete.
        max_parallel: how many steps may run at once (default: the number of CPUs, at least 2).
        resume: the id of an earlier run to continue: its complete steps are reused.
        params: the ``--param`` overrides the workflow was loaded with (recorded in ``run.json``).
        on_event: called as steps start, finish, are reused or are blocked by a failure upstream.
        status_port: serve ``/ok``, ``/varz`` and ``/metrics`` for the running steps on this port.

    The run's outcome is in ``run.status`` (``succeeded`` / ``failed``) and ``run.objectives``;
    failed steps are not raised: read them from ``run.step_summaries()``.
    """
    run = WorkflowRun(workflow, run_id=resume or run_id, home=home, pm=pm, params=params)
    if resume is not None and not run.manifest_path.exists():
        raise ScanflowError(f"no run {resume!r} to resume under {run.home / 'runs'}")
    selected = workflow.plan.subset(steps) if steps else list(workflow.plan.steps)
    notify = on_event or (lambda *_: None)
    server = None
    if status_port is not None:  # before the run exists: a busy port leaves no run behind
        from scanflow_core.status import StatusServer

        server = StatusServer(run, status_port).start()
    run.open()
    run.pm.hook.scanflow_workflow_start(run=run)
    try:
        _schedule(run, selected, resume is not None, max_parallel or max(2, os.cpu_count() or 1), notify)
    except BaseException as exc:
        run.finish("failed", [])
        run.pm.hook.scanflow_workflow_error(run=run, error=exc)
        raise
    finally:
        if server is not None:
            server.stop()
    close_run(run, selected)
    return run


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended: what :func:`close_run` recorded.

    Attributes:
        run_id: the run.
        status: ``succeeded`` or ``failed``.
        objectives: every objective's outcome.
        failed_steps: the selected steps that neither succeeded nor were skipped.
    """

    run_id: str
    status: str
    objectives: list[ObjectiveResult] = field(default_factory=list)
    failed_steps: list[str] = field(default_factory=list)

    @property
    def missed(self) -> list[ObjectiveResult]:
        """The blocking objectives that did not hold."""
        return [o for o in self.objectives if o.blocking and not o.passed]

    @property
    def ok(self) -> bool:
        """The run succeeded and every blocking objective held."""
        return self.status == "succeeded" and not self.missed

    @property
    def message(self) -> str:
        """One line for people: ``Scanflow run X failed: steps not succeeded: fit; objective …``."""
        if self.ok:
            return f"Scanflow run {self.run_id} succeeded"
        parts = [f"steps not succeeded: {', '.join(self.failed_steps)}"] if self.failed_steps else []
        parts += [f"objective {o.name} not met: {o.reason or o.expr}" for o in self.missed]
        return f"Scanflow run {self.run_id} failed: " + "; ".join(parts)


def close_run(run: WorkflowRun, selected: Iterable[str] | None = None) -> RunOutcome:
    """Finish ``run`` once its steps are done, wherever they ran: judge the objectives, track them,
    write ``run.json`` and fire ``scanflow_workflow_finish``.

    Orchestrator adapters call it from their last task; a step whose task never ran (its upstream
    failed or was skipped) first gets the record the local runner would give it.

    Args:
        run: the opened run.
        selected: the steps that were meant to run (default: every step of the plan).

    Returns:
        The outcome; the run's status is ``failed`` when a selected step neither succeeded nor was
        skipped (a failed blocking objective is in ``outcome.missed`` but does not change the status).
    """
    chosen = list(selected) if selected is not None else list(run.plan.steps)
    _record_steps_that_never_ran(run, chosen)
    summaries = run.step_summaries()
    failed = [n for n in chosen if summaries.get(n, {}).get("status") not in ("succeeded", "skipped")]
    objectives = evaluate_objectives(run, set(chosen))
    if objectives:
        metrics = [Metric(f"objective.{o.name}", float(o.passed)) for o in objectives]
        run.pm.hook.scanflow_track(
            run=run, step_run=None, batch=TrackingBatch(metrics=metrics, objectives=objectives)
        )
    status = "failed" if failed else "succeeded"
    run.finish(status, objectives)
    run.pm.hook.scanflow_workflow_finish(run=run)
    return RunOutcome(run.run_id, status, objectives, failed)


def _record_steps_that_never_ran(run: WorkflowRun, chosen: list[str]) -> None:
    """A selected step with no record: ``upstream_failed`` or ``skipped``, naming the upstream step."""
    for name in chosen:
        if run.step_summary(name) is not None:
            continue
        planned = run.plan[name]
        upstream = {n: (run.step_summary(n) or {}).get("status") for n in planned.needs}
        skipped = [n for n, s in upstream.items() if s == "skipped"]
        failed = [n for n, s in upstream.items() if s not in ("succeeded", "skipped")]
        if failed:
            status, reason = "upstream_failed", f"upstream step {failed[0]!r} failed"
        elif skipped:
            status, reason = "skipped", f"upstream step {skipped[0]!r} was skipped"
        else:
            status, reason = "upstream_failed", "its task did not run"
        run.record_step(
            name, {"status": status, "stage": planned.stage, "reason": reason, "metrics": {}, "outputs": {}}
        )


def evaluate_objectives(run: WorkflowRun, ran: set[str] | None = None) -> list[ObjectiveResult]:
    """Each workflow objective against the run's metrics (only those about steps in ``ran``)."""
    from scanflow_core.expressions import parse

    results = []
    metrics = run.metrics()
    for objective in run.workflow.objectives:
        names = parse(objective.expr).names
        found = (resolve_step_name(n, run.plan.steps) for n in names)
        steps = {hit[0] for hit in found if hit is not None}
        if ran is not None and not steps <= ran:
            continue
        result = evaluate_condition(
            objective.expr, run.workflow.params | run.params, metrics, objective.label
        )
        reason = result.reason
        unfinished = sorted(s for s in steps if (run.step_summary(s) or {}).get("status") != "succeeded")
        if unfinished:
            statuses = ", ".join(
                f"{s} {(run.step_summary(s) or {}).get('status', 'not run')}" for s in unfinished
            )
            reason = f"not judged: {statuses}"
        results.append(
            ObjectiveResult(
                result.name, result.expr, result.passed, objective.blocking, result.observed, reason
            )
        )
    return results


def _complete(run: WorkflowRun, name: str) -> bool:
    """A step of an earlier run that can be reused: it succeeded with the same params, read the same
    inputs as are there now, and its outputs are all still there, unchanged."""
    summary = run.step_summary(name)
    if not summary or summary.get("status") != "succeeded":
        return False
    planned = run.plan[name]
    recorded = summary.get("params", {})
    used = summary.get("used_params")  # the params a callable received; None: all of them
    if any(recorded.get(k) != _jsonable(v) for k, v in planned.params.items() if used is None or k in used):
        return False
    for local, entry in summary.get("inputs", {}).items():
        if local not in planned.inputs:
            return False
        path = run.artifact_path(planned.inputs[local])
        if not path.exists() or digest_path(path) != entry["digest"]:
            return False
    outputs = summary.get("outputs", {})
    for output in outputs.values():
        path = run.directory / output["path"]
        if not path.exists() or digest_path(path) != output["digest"]:
            return False
    return len(outputs) == len(planned.outputs) and len(summary.get("inputs", {})) == len(planned.inputs)


def _jsonable(value: Any) -> Any:
    """A param as ``step.json`` holds it after a JSON round trip (tuples become lists, …)."""
    return json.loads(json.dumps(value, default=str))


def _attempt(run: WorkflowRun, name: str, notify: Event) -> StepRun:
    retries = run.plan[name].spec.retries
    for attempt in range(1, retries + 2):
        try:
            return run_step(run, name, attempt=attempt)
        except CheckFailed:
            raise
        except StepFailed:
            if attempt > retries:
                raise
            notify("retry", name, None, run)
            time.sleep(min(0.1 * 2**attempt, 5.0))
    raise AssertionError("unreachable")


def _schedule(run: WorkflowRun, selected: list[str], resuming: bool, workers: int, notify: Event) -> None:
    plan = run.plan
    chosen = set(selected)
    waiting = {n: {d for d in plan[n].needs if d in chosen} for n in selected}
    blocked: dict[str, str] = {}
    done: set[str] = set()

    def release(name: str, failed_reason: str | None) -> list[str]:
        done.add(name)
        ready = []
        for child in plan.downstream(name):
            if child not in waiting or child in done:
                continue
            if failed_reason is not None:
                blocked.setdefault(child, failed_reason)
            waiting[child].discard(name)
            if not waiting[child]:
                ready.append(child)
        return ready

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scanflow-step")
    running: dict[concurrent.futures.Future[StepRun], str] = {}
    queue = [n for n in selected if not waiting[n]]
    try:
        while queue or running:
            while queue:
                name = queue.pop(0)
                if name in blocked:
                    _record_blocked(run, name, blocked[name])
                    notify("blocked", name, None, run)
                    queue.extend(release(name, blocked[name]))
                elif resuming and _complete(run, name):
                    notify("reused", name, None, run)
                    queue.extend(release(name, None))
                else:
                    notify("start", name, None, run)
                    running[pool.submit(_attempt, run, name, notify)] = name
            finished, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in finished:
                name = running.pop(future)
                reason = None
                try:
                    step_run = future.result()
                    if step_run.status == "skipped":
                        reason = f"upstream step {name!r} was skipped"
                except StepFailed as exc:
                    step_run = exc  # type: ignore[assignment]
                    reason = f"upstream step {name!r} failed"
                notify("finish", name, step_run if isinstance(step_run, StepRun) else None, run)
                queue.extend(release(name, reason))
    except BaseException:
        _interrupt(run, running)
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _interrupt(run: WorkflowRun, running: Mapping[concurrent.futures.Future[StepRun], str]) -> None:
    """Stop what runs: child processes are killed (their runtimes watch ``run.cancelled``); a step
    still running in process after a grace period is recorded as interrupted and left behind."""
    run.cancelled.set()
    concurrent.futures.wait(running, timeout=INTERRUPT_GRACE_S)
    for future, name in running.items():
        future.cancel()
        if not future.done():
            run.record_step(
                name,
                {
                    "status": "failed",
                    "stage": run.plan[name].stage,
                    "reason": "interrupted",
                    "metrics": {},
                    "outputs": {},
                },
            )


def _record_blocked(run: WorkflowRun, name: str, reason: str) -> None:
    status = "skipped" if "skipped" in reason else "upstream_failed"
    run.record_step(
        name,
        {"status": status, "stage": run.plan[name].stage, "reason": reason, "metrics": {}, "outputs": {}},
    )
