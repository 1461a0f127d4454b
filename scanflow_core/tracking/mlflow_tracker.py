"""The built-in tracker: MLflow, one experiment per workflow, one parent run per workflow run and a
nested child run per step, whichever process, container or orchestrator task runs the step.

Where it tracks (first that is set): the spec's ``tracker.uri``, ``$MLFLOW_TRACKING_URI``, else an
embedded store ``sqlite:///<home>/mlflow.db`` with artifacts under ``<home>/mlartifacts`` (no
server needed); ``tracker.uri: sidecar`` is the MLflow server the Docker runtime starts beside the run
(:mod:`scanflow_core.runtimes.sidecars`). ``tracker.enabled: false`` in the spec, or
``SCANFLOW_TRACKER=off``, switches it off.

One parent per run: its MLflow id is kept in ``<run>/tracking/parent.json``, written under a file
lock, so every process working on the run finds the same parent (and the same child per step); a
process that cannot see the file finds the parent by its tag ``scanflow.run_id``.

This module holds what is sent and when: the :class:`Tracker` (records, delivery, the spool) and the
hooks that drive it. Which store and which MLflow runs a workflow run maps to is in
:mod:`scanflow_core.tracking.mlflow_runs` (:class:`Target`, :func:`resolve_uri`, :func:`redact`,
re-exported here, and ``MlflowRuns``, the base of :class:`Tracker`).

Nothing is lost: when the store cannot be reached (or mlflow is not installed) a record goes to
the spool (:mod:`scanflow_core.tracking.spool`) and is replayed before the next batch, at the end
of the workflow, or by ``scanflow tracker sync``. After a failure the store is left alone for a
while (1 s, doubling up to 30 s) so that a step is not slowed down by an unreachable server.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scanflow_core.plugins import hookimpl
from scanflow_core.records import TrackingBatch, now_ms
from scanflow_core.tracking.mlflow_runs import SIDECAR_URI as SIDECAR_URI
from scanflow_core.tracking.mlflow_runs import URI_ENV as URI_ENV
from scanflow_core.tracking.mlflow_runs import MlflowRuns, Target, redact, resolve_uri
from scanflow_core.tracking.spool import Delivery, ReplayReport, Spool

if TYPE_CHECKING:
    from scanflow_core.runs import StepRun, WorkflowRun

__all__ = ["Target", "Tracker", "redact", "resolve_uri", "tracker_for"]

log = logging.getLogger("scanflow.tracking")

SWITCH_ENV = "SCANFLOW_TRACKER"
MAX_ARTIFACT_ENV = "SCANFLOW_TRACKER_MAX_ARTIFACT_MB"
DEFAULT_MAX_ARTIFACT_MB = 50.0
MAX_PARAM_LENGTH = 6000
TRUNCATED = "…[truncated]"
# MLflow's limits on one log_batch call.
MAX_METRICS, MAX_PARAMS_OR_TAGS, MAX_ENTITIES = 1000, 100, 1000
# Errors after which sending the same record again cannot succeed (a malformed value).
PERMANENT_ERRORS = frozenset({"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "INVALID_STATE"})
STATE_KEY = "scanflow.tracking"
BACKOFF_MAX_S = 30.0

_STATUS = {"succeeded": "FINISHED", "skipped": "FINISHED", "failed": "FAILED"}
_UNSAFE_KEY = re.compile(r"[^\w\-. /]")
_warned: set[str] = set()
_state_lock = threading.Lock()


# ------------------------------------------------------------------------------------------ switches


def enabled(spec_enabled: bool) -> bool:
    return spec_enabled and os.environ.get(SWITCH_ENV, "").lower() not in ("off", "0", "false", "no")


def max_artifact_bytes() -> float:
    try:
        return float(os.environ.get(MAX_ARTIFACT_ENV, DEFAULT_MAX_ARTIFACT_MB)) * 1024 * 1024
    except ValueError:
        return DEFAULT_MAX_ARTIFACT_MB * 1024 * 1024


# ------------------------------------------------------------------------------------------ tracker


class Tracker(MlflowRuns):
    """Talks to one MLflow store for one workflow run; thread-safe (parallel steps share it).

    It sends records to the runs that :class:`~scanflow_core.tracking.mlflow_runs.MlflowRuns` finds or
    creates, and spools what the store cannot take.
    """

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        self.spool = Spool(self.tracking_dir)
        self._down_until = 0.0
        self._backoff = 1.0
        self._keys: dict[str, str] = {}

    # ---------------------------------------------------------------- what the hooks call

    def send(self, step: str | None, stage: str, batch: TrackingBatch) -> None:
        """Log ``batch`` to the step's child run (or the parent), or spool it; never raises for the store."""
        record = self._record(step, stage, batch)
        if record is not None:
            self._deliver_or_spool(record)

    def set_status(self, step: str | None, stage: str, status: str) -> None:
        """End a child run (or the parent): ``FINISHED``, ``FAILED`` or ``KILLED``."""
        record = {"op": "status", "step": step, "stage": stage, "status": status, "end_ms": now_ms()}
        record["experiment"] = self.target.experiment
        self._deliver_or_spool(record)

    def open_child(self, step: str, stage: str) -> None:
        """Create the step's child run now (so it starts when the step does); best effort."""
        if not self._usable():
            return
        try:
            self._run_for(step, stage)
        except Exception as exc:  # created at the first batch or the replay instead
            self._down(exc)

    def sync(self) -> ReplayReport:
        """Replay the spool now (``scanflow tracker sync``, the end of a workflow)."""
        if _mlflow_missing():
            return ReplayReport(pending=len(self.spool.pending()), error="mlflow is not installed")
        report = self.spool.replay(self._deliver)
        if report.error is not None:
            self._down(RuntimeError(report.error))
        else:
            self._up()
        return report

    # ---------------------------------------------------------------- delivery

    def _deliver_or_spool(self, record: dict[str, Any]) -> None:
        if self._usable():
            if self.spool.maybe_pending():
                report = self.sync()
                if report.pending:
                    self.spool.append(record)
                    return
            try:
                self._deliver(record)
            except Delivery.Rejected as exc:
                log.warning(
                    "the tracking store refused a record for good (%s); kept in %s", exc, self.spool.path
                )
                self.spool.mark(self.spool.append(record), rejected=str(exc))
                return
            except Exception as exc:
                self._down(exc)
            else:
                self._up()
                return
        self.spool.append(record)

    def _usable(self) -> bool:
        return not _mlflow_missing(self.spool.path) and time.monotonic() >= self._down_until

    def _down(self, exc: BaseException) -> None:
        with self._lock:
            first = self._down_until == 0.0
            self._down_until = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)
        if first:
            log.warning(
                "cannot reach the tracking store %s (%s: %s); records are spooled to %s and replayed "
                "when it answers (or run `scanflow tracker sync %s`)",
                redact(self.target.uri),
                type(exc).__name__,
                str(exc).splitlines()[0][:300] if str(exc) else "",
                self.spool.path,
                self.target.run_id,
            )

    def _up(self) -> None:
        with self._lock:
            if self._down_until:
                log.info("the tracking store %s answers again", redact(self.target.uri))
            self._down_until = 0.0
            self._backoff = 1.0

    def _deliver(self, record: dict[str, Any]) -> None:
        """Send one record; raise :class:`Delivery.Rejected` when the store refuses it for good."""
        try:
            run_id = self._run_for(record.get("step"), record.get("stage") or "")
            if record["op"] == "status":
                self._deliver_status(run_id, record)
            else:
                self._deliver_batch(run_id, record)
        except Exception as exc:
            if getattr(exc, "error_code", None) in PERMANENT_ERRORS:
                raise Delivery.Rejected(f"{type(exc).__name__}: {exc}") from exc
            raise

    def _deliver_status(self, run_id: str, record: dict[str, Any]) -> None:
        self._mlflow().set_terminated(run_id, record["status"], end_time=record.get("end_ms"))

    def _deliver_batch(self, run_id: str, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        client = self._mlflow()
        params = [Param(self._key(k), _param_value(v)) for k, v in record.get("params", {}).items()]
        tags = [RunTag(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in record.get("tags", {}).items()]
        metrics = [Metric(self._key(k), v, t, s) for k, v, s, t in record.get("metrics", ())]
        while params or tags or metrics:
            p, params = params[:MAX_PARAMS_OR_TAGS], params[MAX_PARAMS_OR_TAGS:]
            t, tags = tags[:MAX_PARAMS_OR_TAGS], tags[MAX_PARAMS_OR_TAGS:]
            room = min(MAX_METRICS, MAX_ENTITIES - len(p) - len(t))
            m, metrics = metrics[:room], metrics[room:]
            client.log_batch(run_id, metrics=m, params=p, tags=t, synchronous=True)
        if record.get("objectives"):
            client.log_dict(run_id, record["objectives"], "objectives.json")
        if record.get("checks"):
            client.log_dict(run_id, record["checks"], f"checks/{record['id']}.json")
        outputs = [a for a in record.get("artifacts", ()) if a["role"] == "output"]
        if outputs:
            client.log_dict(run_id, {a["name"]: _output_entry(a) for a in outputs}, "outputs.json")
        for artifact in record.get("artifacts", ()):
            self._log_artifact(client, run_id, artifact)

    def _log_artifact(self, client: Any, run_id: str, artifact: Mapping[str, Any]) -> None:
        role, path = artifact["role"], Path(artifact["path"])
        if role == "input" or (role == "output" and not _output_entry(artifact)["logged"]):
            return
        if not path.exists():
            log.warning("not logging %s %s: %s is gone", role, artifact["name"], path)
            return
        folder = {"output": "outputs", "report": "reports", "attestation": "attestations"}.get(role, role)
        if path.is_dir():
            client.log_artifacts(run_id, str(path), f"{folder}/{artifact['name']}")
        else:
            client.log_artifact(run_id, str(path), folder)

    def _key(self, key: str) -> str:
        safe = self._keys.get(key)
        if safe is None:
            safe = self._keys[key] = _UNSAFE_KEY.sub("_", key)[:250] or "_"
        return safe

    # ---------------------------------------------------------------- records

    def _record(self, step: str | None, stage: str, batch: TrackingBatch) -> dict[str, Any] | None:
        metrics: list[tuple[str, float, int, int]] = [
            (m.key, m.value, m.step, m.timestamp) for m in batch.metrics
        ]
        for check in batch.checks:
            name = f"check.{check.checker}.{check.target}"
            stamp = now_ms()
            metrics.append((f"{name}.passed", float(check.passed), 0, stamp))
            metrics.extend((f"{name}.{k}", float(v), 0, stamp) for k, v in check.metrics.items())
        record: dict[str, Any] = {"op": "batch", "step": step, "stage": stage, "metrics": metrics}
        record["experiment"] = self.target.experiment
        if batch.params:
            record["params"] = {k: _jsonable(v) for k, v in batch.params.items()}
        if batch.tags:
            record["tags"] = dict(batch.tags)
        if batch.artifacts:
            record["artifacts"] = [
                {
                    "name": a.name,
                    "path": a.path,
                    "digest": a.digest,
                    "size": a.size,
                    "role": a.role,
                    "kind": a.kind,
                }
                for a in batch.artifacts
            ]
        if batch.checks:
            record["checks"] = [c.to_dict() for c in batch.checks]
        if batch.objectives:
            record["objectives"] = [o.to_dict() for o in batch.objectives]
        if not batch:
            return None
        record["id"] = os.urandom(16).hex()
        return record

    @staticmethod
    def spool_of(directory: Path) -> Spool:
        return Spool(directory / "tracking")


def _param_value(value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif value is None or isinstance(value, bool | int | float):
        text = str(value)
    else:
        text = json.dumps(value, default=str)
    if len(text) > MAX_PARAM_LENGTH:
        text = text[: MAX_PARAM_LENGTH - len(TRUNCATED)] + TRUNCATED
    return text


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return json.loads(json.dumps(value, default=str))


def _output_entry(artifact: Mapping[str, Any]) -> dict[str, Any]:
    logged = artifact["size"] <= max_artifact_bytes()
    entry = {k: artifact[k] for k in ("path", "digest", "size", "kind")}
    return entry | {"logged": logged}


def _mlflow_missing(spool: Path | None = None) -> bool:
    """True (and said once) when mlflow cannot be imported."""
    if "missing" in _warned:
        return True
    if "present" in _warned:
        return False
    try:
        import mlflow  # noqa: F401
    except ImportError:
        _warned.add("missing")
        log.warning(
            "mlflow is not installed (pip install 'scanflow[tracking]'): tracking records are spooled "
            "to the run directory%s and sent by `scanflow tracker sync` once it is",
            f" ({spool})" if spool else "",
        )
        return True
    _warned.add("present")
    return False


# ------------------------------------------------------------------------------------------ hooks


def tracker_for(run: WorkflowRun) -> Tracker | None:
    """The run's tracker in this process (``None`` when tracking is off)."""
    with _state_lock:
        if STATE_KEY not in run.state:
            on = enabled(run.workflow.tracker.enabled)
            run.state[STATE_KEY] = Tracker(Target.of(run)) if on else None
        tracker: Tracker | None = run.state[STATE_KEY]
        return tracker


@hookimpl
def scanflow_workflow_start(run: WorkflowRun) -> None:
    tracker = tracker_for(run)
    if tracker is not None:
        params = {**run.workflow.params, **run.params}
        tags = {"scanflow.orchestrator": run.orchestrator, "scanflow.status": "running"}
        tracker.send(None, "", TrackingBatch(params=params, tags=tags))


@hookimpl
def scanflow_step_start(step_run: StepRun) -> None:
    tracker = tracker_for(step_run.run)
    if tracker is not None:
        tracker.open_child(step_run.name, step_run.stage)


@hookimpl
def scanflow_track(run: WorkflowRun, step_run: StepRun | None, batch: TrackingBatch) -> None:
    tracker = tracker_for(run)
    if tracker is not None:
        if step_run is None:
            tracker.send(None, "", batch)
        else:
            tracker.send(step_run.name, step_run.stage, batch)


@hookimpl
def scanflow_step_finish(step_run: StepRun) -> None:
    tracker = tracker_for(step_run.run)
    if tracker is not None:
        tracker.set_status(step_run.name, step_run.stage, _STATUS.get(step_run.status, "FINISHED"))


@hookimpl
def scanflow_step_error(step_run: StepRun, error: BaseException) -> None:
    tracker = tracker_for(step_run.run)
    if tracker is not None:
        status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        tracker.set_status(step_run.name, step_run.stage, status)


@hookimpl
def scanflow_workflow_finish(run: WorkflowRun) -> None:
    tracker = tracker_for(run)
    if tracker is not None:
        tracker.send(None, "", TrackingBatch(tags={"scanflow.status": run.status}))
        tracker.set_status(None, "", _STATUS.get(run.status, "FAILED"))
        _final_sync(tracker, run)


@hookimpl
def scanflow_workflow_error(run: WorkflowRun, error: BaseException) -> None:
    tracker = tracker_for(run)
    if tracker is not None:
        tracker.set_status(None, "", "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        _final_sync(tracker, run)


def _final_sync(tracker: Tracker, run: WorkflowRun) -> None:
    """Replay what is spooled, then say in the run's notes where the records are."""
    target = tracker.target
    missing = _mlflow_missing()
    report = tracker.sync() if tracker.spool.maybe_pending() and not missing else None
    if missing or (report is not None and report.pending):
        what = f"{report.pending} tracking record(s)" if report is not None else "tracking records"
        why = report.error if report is not None else "mlflow is not installed"
        message = (
            f"{what} of run {target.run_id} are spooled in {tracker.tracking_dir} ({why}); "
            f"send them with: scanflow tracker sync {target.run_id}"
        )
        if not missing:  # a missing mlflow was said once already, when it was first needed
            log.warning("%s", message)
        run.notes.append(message)
    else:
        run.notes.append(f"tracked in MLflow: {target.uri} (experiment {target.experiment!r})")
