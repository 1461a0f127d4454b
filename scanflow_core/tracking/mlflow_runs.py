"""Where a workflow run is tracked, and which MLflow runs are its: the half of the tracker that knows
MLflow's experiments and runs, but not what is logged to them.

:class:`Target` names the store, the experiment and the Scanflow run. The store is, first that is set:
the spec's ``tracker.uri``, ``$MLFLOW_TRACKING_URI``, else the embedded ``sqlite:///<home>/mlflow.db``
(:func:`resolve_uri`); ``tracker.uri: sidecar`` is the MLflow server the Docker runtime starts beside
the run (:mod:`scanflow_core.runtimes.sidecars`).

:class:`MlflowRuns` maps a Scanflow run to MLflow's: the workflow's experiment (created when missing,
restored when deleted), one parent run per workflow run and a child run per step, found by their
``scanflow.*`` tags or created. Their ids are kept in ``<run>/tracking/parent.json``, written under a
file lock, so every process working on the run finds the same ones. It also lists and deletes them
(``scanflow wipe``). The tracker (:class:`scanflow_core.tracking.mlflow_tracker.Tracker`) builds on it
to deliver records. mlflow is imported by the first call that needs a client, never at import time.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from scanflow_core.runs import WorkflowRun

__all__ = ["SIDECAR_URI", "URI_ENV", "MlflowRuns", "Target", "redact", "resolve_uri"]

URI_ENV = "MLFLOW_TRACKING_URI"
#: ``tracker.uri`` for the run's MLflow sidecar (the Docker runtime starts it).
SIDECAR_URI = "sidecar"


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


# ------------------------------------------------------------------------------------------ runs


class MlflowRuns:
    """The MLflow runs of one workflow run in one store, found or created; thread-safe.

    Args:
        target: the store, the experiment and the Scanflow run.

    Examples:
        >>> runs = MlflowRuns(Target.of(run))  # doctest: +SKIP
        >>> runs.mlflow_run_id("train", "training")  # the step's child run  # doctest: +SKIP
        '5d1c0b5e0f7e4d9c8a1b2c3d4e5f6a7b'
    """

    def __init__(self, target: Target) -> None:
        self.target = target
        self.tracking_dir = target.directory / "tracking"
        self._lock = threading.RLock()
        self._client: Any = None
        self._experiment_id: str | None = None
        self._parent: str | None = None
        self._children: dict[str, str] = {}

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
