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

Nothing is lost: when the store cannot be reached (or mlflow is not installed) a record goes to
the spool (:mod:`scanflow_core.tracking.spool`) and is replayed before the next batch, at the end
of the workflow, or by ``scanflow tracker sync``. After a failure the store is left alone for a
while (1 s, doubling up to 30 s) so that a step is not slowed down by an unreachable server.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from scanflow_core.plugins import hookimpl
from scanflow_core.records import TrackingBatch, now_ms
from scanflow_core.tracking.spool import Delivery, ReplayReport, Spool

if TYPE_CHECKING:
    from scanflow_core.runs import StepRun, WorkflowRun

__all__ = ["Target", "Tracker", "redact", "resolve_uri", "tracker_for"]

log = logging.getLogger("scanflow.tracking")

URI_ENV = "MLFLOW_TRACKING_URI"
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
#: ``tracker.uri`` for the run's MLflow sidecar (the Docker runtime starts it).
SIDECAR_URI = "sidecar"
BACKOFF_MAX_S = 30.0

_STATUS = {"succeeded": "FINISHED", "skipped": "FINISHED", "failed": "FAILED"}
_UNSAFE_KEY = re.compile(r"[^\w\-. /]")
_warned: set[str] = set()
_state_lock = threading.Lock()


# ------------------------------------------------------------------------------------------ where


def resolve_uri(spec_uri: str | None, home: Path, run_dir: Path | None = None) -> str:
    """The tracking URI: the spec's, else ``$MLFLOW_TRACKING_URI``, else the embedded store.

    The spec's ``sidecar`` is the run's tracker sidecar (:mod:`scanflow_core.runtimes.sidecars`):
    the host URL its port is published on, as recorded in the run directory ``run_dir``.
    """
    if spec_uri == SIDECAR_URI:
        from scanflow_core.runtimes.sidecars import published_url

        url = published_url(run_dir, "tracker") if run_dir is not None else None
        if url is None:
            raise ValueError(
                f"tracker.uri: {SIDECAR_URI}: the run's tracker sidecar has not started"
                f" ({run_dir or 'no run directory'} records none); it starts with the run when a"
                " Docker engine answers"
            )
        return url
    return spec_uri or os.environ.get(URI_ENV) or f"sqlite:///{home / 'mlflow.db'}"


def redact(uri: str) -> str:
    """``uri`` without its password (safe to write to the run directory and to logs)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def enabled(spec_enabled: bool) -> bool:
    return spec_enabled and os.environ.get(SWITCH_ENV, "").lower() not in ("off", "0", "false", "no")


def max_artifact_bytes() -> float:
    try:
        return float(os.environ.get(MAX_ARTIFACT_ENV, DEFAULT_MAX_ARTIFACT_MB)) * 1024 * 1024
    except ValueError:
        return DEFAULT_MAX_ARTIFACT_MB * 1024 * 1024


@dataclass(frozen=True)
class Target:
    """Which store, which experiment, which run: all a tracker needs, from a run or from the CLI."""

    run_id: str
    directory: Path
    home: Path
    uri: str
    experiment: str
    workflow: str = ""
    spec_digest: str = ""

    @classmethod
    def of(cls, run: WorkflowRun) -> Target:
        spec = run.workflow.tracker
        return cls(
            run_id=run.run_id,
            directory=run.directory,
            home=run.home,
            uri=resolve_uri(spec.uri, run.home, run.directory),
            experiment=spec.experiment or run.workflow.name,
            workflow=run.workflow.name,
            spec_digest=run.workflow.digest,
        )

    @property
    def artifact_location(self) -> str | None:
        """Where a new experiment keeps artifacts: under the home for a database we talk to directly
        (MLflow's default would be ``./mlruns`` of whatever the working directory is); a server
        decides for itself."""
        if urlsplit(self.uri).scheme in ("http", "https", "databricks", "uc"):
            return None
        return (self.home / "mlartifacts" / _safe_name(self.experiment)).as_uri()


def _safe_name(name: str) -> str:
    return re.sub(r"[^\w.-]", "_", name) or "default"


# ------------------------------------------------------------------------------------------ tracker


class Tracker:
    """Talks to one MLflow store for one workflow run; thread-safe (parallel steps share it)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.tracking_dir = target.directory / "tracking"
        self.spool = Spool(self.tracking_dir)
        self._lock = threading.RLock()
        self._client: Any = None
        self._experiment_id: str | None = None
        self._parent: str | None = None
        self._children: dict[str, str] = {}
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

    # ---------------------------------------------------------------- runs

    def _mlflow(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    from mlflow import MlflowClient

                    if urlsplit(self.target.uri).scheme in ("http", "https"):
                        # Fail fast and spool rather than retry for minutes (MLflow's defaults: 7
                        # retries with exponential back-off, 120 s timeout); the user's settings win.
                        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
                        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
                    self._client = MlflowClient(tracking_uri=self.target.uri)
        return self._client

    def experiment_id(self, create: bool = True) -> str | None:
        """The workflow's experiment (created when missing, restored when deleted)."""
        if self._experiment_id is not None:
            return self._experiment_id
        client = self._mlflow()
        experiment = client.get_experiment_by_name(self.target.experiment)
        if experiment is None and create:
            with contextlib.suppress(Exception):  # another process created it first
                client.create_experiment(
                    self.target.experiment, artifact_location=self.target.artifact_location
                )
            experiment = client.get_experiment_by_name(self.target.experiment)
        if experiment is None:
            return None
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        self._experiment_id = str(experiment.experiment_id)
        return self._experiment_id

    def mlflow_run_id(self, step: str | None = None, stage: str = "") -> str:
        """The MLflow run id of the run's parent run (``step=None``) or of a step's child run, found
        or created: where a plugin logs what belongs with the step (a registered model's files)."""
        return self._run_for(step, stage)

    def _run_for(self, step: str | None, stage: str) -> str:
        """The MLflow run id of the parent (``step=None``) or of the step's child: found or created."""
        with self._lock:
            if step is None and self._parent is not None:
                return self._parent
            if step is not None and step in self._children:
                return self._children[step]
            with self._ids() as ids:
                parent = self._find_or_create_parent(ids)
                if step is None:
                    return parent
                child = ids["steps"].get(step) or self._find_or_create_child(parent, step, stage)
                ids["steps"][step] = self._children[step] = child
                return child

    def _find_or_create_parent(self, ids: dict[str, Any]) -> str:
        if self._parent is None:
            self._parent = ids.get("parent_run_id") or self._search(kind="workflow")
            if self._parent is None:
                tags = self._tags("workflow") | {"mlflow.runName": self.target.run_id}
                run = self._mlflow().create_run(self.experiment_id(), tags=tags, run_name=self.target.run_id)
                self._parent = str(run.info.run_id)
            ids["parent_run_id"] = self._parent
            ids["experiment_id"] = self.experiment_id()
        return self._parent

    def _find_or_create_child(self, parent: str, step: str, stage: str) -> str:
        found = self._search(kind="step", step=step)
        if found is not None:
            return found
        tags = self._tags("step") | {
            "mlflow.parentRunId": parent,
            "scanflow.step": step,
            "scanflow.stage": stage,
        }
        run = self._mlflow().create_run(self.experiment_id(), tags=tags, run_name=step)
        return str(run.info.run_id)

    def _tags(self, kind: str) -> dict[str, str]:
        tags = {"scanflow.run_id": self.target.run_id, "scanflow.kind": kind}
        if self.target.workflow:
            tags["scanflow.workflow"] = self.target.workflow
        if self.target.spec_digest:
            tags["scanflow.spec_digest"] = self.target.spec_digest
        return tags

    def _search(self, kind: str, step: str | None = None) -> str | None:
        query = f"tags.`scanflow.run_id` = '{self.target.run_id}' and tags.`scanflow.kind` = '{kind}'"
        if step is not None:
            query += f" and tags.`scanflow.step` = '{step}'"
        found = self._mlflow().search_runs([self.experiment_id()], filter_string=query, max_results=1)
        return str(found[0].info.run_id) if found else None

    def mlflow_run_ids(self) -> list[str]:
        """Every MLflow run of this workflow run (the parent and its children), for ``wipe``."""
        ids: set[str] = set()
        experiment = self.experiment_id(create=False)
        if experiment is not None:
            query = f"tags.`scanflow.run_id` = '{self.target.run_id}'"
            token = None
            while True:
                page = self._mlflow().search_runs([experiment], filter_string=query, page_token=token)
                ids.update(str(r.info.run_id) for r in page)
                token = page.token
                if not token:
                    break
        saved = self._read_ids()
        ids.update(v for v in [saved.get("parent_run_id"), *saved.get("steps", {}).values()] if v)
        return sorted(ids)

    def scanflow_run_ids(self) -> list[str]:
        """The Scanflow run ids that have a parent run in the workflow's experiment."""
        experiment = self.experiment_id(create=False)
        if experiment is None:
            return []
        found: set[str] = set()
        token = None
        while True:
            page = self._mlflow().search_runs(
                [experiment], filter_string="tags.`scanflow.kind` = 'workflow'", page_token=token
            )
            found.update(
                str(r.data.tags.get("scanflow.run_id")) for r in page if r.data.tags.get("scanflow.run_id")
            )
            token = page.token
            if not token:
                return sorted(found)

    def delete_runs(self, run_ids: list[str]) -> None:
        """Delete MLflow runs; with a database we talk to directly, purge them and their local artifacts."""
        import shutil
        from urllib.request import url2pathname

        client = self._mlflow()
        store = getattr(getattr(client, "_tracking_client", None), "store", None)
        purge = getattr(store, "_hard_delete_run", None)
        for run_id in run_ids:
            try:
                info = client.get_run(run_id).info
            except Exception:  # already purged
                continue
            if info.lifecycle_stage != "deleted":
                client.delete_run(run_id)
            if purge is not None:
                purge(run_id)
                if info.artifact_uri and info.artifact_uri.startswith("file:"):
                    shutil.rmtree(url2pathname(urlsplit(info.artifact_uri).path), ignore_errors=True)
        with self._lock:
            self._parent = None
            self._children.clear()

    @staticmethod
    def spool_of(directory: Path) -> Spool:
        return Spool(directory / "tracking")

    @contextmanager
    def _ids(self) -> Iterator[dict[str, Any]]:
        """``parent.json`` under an exclusive file lock: the run's MLflow ids in this store."""
        self.tracking_dir.mkdir(parents=True, exist_ok=True)
        with open(self.tracking_dir / "parent.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                ids = self._read_ids()
                before = json.dumps(ids, sort_keys=True)
                ids.setdefault("steps", {})
                yield ids
                if json.dumps(ids, sort_keys=True) != before:
                    ids["uri"] = redact(self.target.uri)
                    tmp = self.tracking_dir / f"parent.json.{os.getpid()}.tmp"
                    tmp.write_text(json.dumps(ids, indent=2) + "\n", encoding="utf-8")
                    os.replace(tmp, self.tracking_dir / "parent.json")
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read_ids(self) -> dict[str, Any]:
        try:
            ids: dict[str, Any] = json.loads((self.tracking_dir / "parent.json").read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return {}
        if ids.get("uri") != redact(self.target.uri):
            return {}  # ids in another store
        return ids


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
