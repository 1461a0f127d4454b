"""Run contexts and the run directory ``.scanflow/runs/<run_id>/``.

::

    run.json                          the manifest: spec, params, status, each step's summary
    steps/<step>/outputs/<name>       what the step wrote
    steps/<step>/step.log             what it printed
    steps/<step>/metrics.jsonl        every param / metric point it recorded, in order
    steps/<step>/checks.json          its check report
    steps/<step>/step.json            its full record
    attestations/<step>.intoto.jsonl  its signed statements

The directory is the shared state of a run: steps that run in other processes, containers or
orchestrator tasks find their inputs and upstream metrics here.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scanflow_core.recorder import Recorder
from scanflow_core.records import ArtifactRecord, CheckResult, ExecutionResult, ObjectiveResult, StageReport

if TYPE_CHECKING:
    import pluggy

    from scanflow_core.spec import Plan, PlannedStep, Workflow

__all__ = ["StepRun", "WorkflowRun", "new_run_id", "scanflow_home"]

HOME_ENV = "SCANFLOW_HOME"


def scanflow_home(home: str | Path | None = None) -> Path:
    """Where runs live: ``home``, else ``$SCANFLOW_HOME``, else ``./.scanflow``."""
    return Path(home or os.environ.get(HOME_ENV) or Path.cwd() / ".scanflow").absolute()


def new_run_id() -> str:
    """A sortable, unique run id: ``20261123-014512-3fa9c1``."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts is not None else None


def _atomic_write(path: Path, data: Any, indent: int | None = None) -> None:
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, indent=indent, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class WorkflowRun:
    """One run of a workflow: its id, directory, plugin manager and outcome.

    Several processes may open the same run (an orchestrator's tasks): :meth:`open` is idempotent
    and the manifest is updated under a file lock.
    """

    def __init__(
        self,
        workflow: Workflow,
        *,
        run_id: str | None = None,
        home: str | Path | None = None,
        pm: pluggy.PluginManager | None = None,
        params: Mapping[str, Any] | None = None,
        orchestrator: str = "local",
    ) -> None:
        from scanflow_core.plugins import get_plugin_manager

        self.workflow = workflow
        self.plan: Plan = workflow.plan
        self.run_id = run_id or new_run_id()
        self.home = scanflow_home(home)
        self.directory = self.home / "runs" / self.run_id
        self.pm = pm if pm is not None else get_plugin_manager()
        self.params = dict(params or {})
        self.orchestrator = orchestrator
        self.status = "running"
        self.objectives: list[ObjectiveResult] = []
        self.started_at = time.time()
        self.finished_at: float | None = None
        #: Plugins keep their per-run state here (a tracker's parent run id, a network name, …).
        self.state: dict[str, Any] = {}
        self._summaries: dict[str, dict[str, Any]] = {}
        #: The steps running in this process right now (read by the status endpoints).
        self.active: dict[str, StepRun] = {}
        #: Set when the run is interrupted: runtimes stop what they started (kill child processes).
        self.cancelled = threading.Event()
        #: Lines for people, added by plugins (where tracking went, how to verify); shown in the summary.
        self.notes: list[str] = []

    @property
    def manifest_path(self) -> Path:
        return self.directory / "run.json"

    def step_dir(self, name: str) -> Path:
        return self.directory / "steps" / name

    @property
    def attestation_dir(self) -> Path:
        return self.directory / "attestations"

    def open(self, manifest: Mapping[str, Any] | None = None) -> bool:
        """Create the run directory and manifest if they are not there; True if this call made them.

        Args:
            manifest: entries that replace or add to those of a new ``run.json`` (a run made of
                decorated tasks has no spec file of its own: ``{"spec": None, "kind": "tasks"}``).
        """
        extra = dict(manifest or {})
        existing = self.manifest()  # written atomically: no lock needed to read it
        if existing and (not self.params or existing.get("params") == self.params):
            self.started_at = existing.get("started_ts", self.started_at)
            return False  # already open, nothing to change: every task after the first comes here
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._locked() as current:
            if current:
                self.started_at = current.get("started_ts", self.started_at)
                if self.params and current.get("params") != self.params:
                    current.setdefault("earlier_params", []).append(current.get("params"))
                    current["params"] = self.params
                return False
            current.update(
                {
                    "run_id": self.run_id,
                    "workflow": self.workflow.name,
                    "spec": str(Path(self.workflow.file).absolute()),
                    "spec_digest": self.workflow.digest,
                    "params": self.params,
                    "orchestrator": self.orchestrator,
                    "started_at": iso(self.started_at),
                    "started_ts": self.started_at,
                    "status": "running",
                    "steps": {},
                    "objectives": [],
                    **extra,
                }
            )
            return True

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".run.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                manifest = self.manifest()
                yield manifest
                _atomic_write(self.manifest_path, manifest, indent=2)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def manifest(self) -> dict[str, Any]:
        """The manifest as it is on disk (``{}`` before :meth:`open`)."""
        try:
            data: dict[str, Any] = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        return data

    def record_step(self, name: str, summary: Mapping[str, Any]) -> None:
        """Write a step's record to ``steps/<name>/step.json`` (``run.json`` gathers them at the end)."""
        self._summaries[name] = dict(summary)
        directory = self.step_dir(name)
        if name not in self.active:  # a step that never started (blocked upstream) has no folder yet
            directory.mkdir(parents=True, exist_ok=True)
        _atomic_write(directory / "step.json", summary)

    def finish(self, status: str, objectives: list[ObjectiveResult]) -> None:
        self.status = status
        self.objectives = objectives
        self.finished_at = time.time()
        with self._locked() as manifest:
            manifest["status"] = status
            manifest["finished_at"] = iso(self.finished_at)
            manifest["duration_s"] = round(self.finished_at - self.started_at, 3)
            manifest["objectives"] = [o.to_dict() for o in objectives]
            manifest["steps"] = self.step_summaries()

    def step_summary(self, name: str) -> dict[str, Any] | None:
        """A step's record in this run, whichever process ran it (``None`` if it has not finished)."""
        if name not in self._summaries:
            try:
                text = (self.step_dir(name) / "step.json").read_text(encoding="utf-8")
            except FileNotFoundError:
                return None
            self._summaries[name] = json.loads(text)
        return self._summaries[name]

    def step_summaries(self) -> dict[str, dict[str, Any]]:
        """Every step's record: the plan's steps in plan order, then any other step recorded in the
        run directory (the decorated tasks of a run, each with its own one-step spec), in the order
        they started."""
        out = {}
        for name in self.plan.steps:
            summary = self.step_summary(name)
            if summary is not None:
                out[name] = summary
        others = {}
        for path in (self.directory / "steps").glob("*/step.json"):
            name = path.parent.name
            if name not in out:
                summary = self.step_summary(name)
                if summary is not None:
                    others[name] = summary
        for name in sorted(others, key=lambda n: (str(others[n].get("started_at") or "~"), n)):
            out[name] = others[name]
        return out

    def metrics(self) -> Mapping[str, Mapping[str, float]]:
        """The latest metrics of every finished step, by step name (read lazily, step by step)."""
        return _RunMetrics(self)

    def artifact_path(self, artifact: str) -> Path:
        """Where a qualified artifact of this run lives (a step output or a workflow input file)."""
        art = self.plan.artifacts[artifact]
        if art.producer is None:
            if art.path is None:
                raise KeyError(f"workflow input {artifact!r} has no path")
            return art.path
        producer = self.plan[art.producer]
        return self.step_dir(producer.name) / "outputs" / (art.spec.path or art.output)


class _RunMetrics(Mapping[str, Mapping[str, float]]):
    def __init__(self, run: WorkflowRun) -> None:
        self._run = run

    def __getitem__(self, name: str) -> Mapping[str, float]:
        summary = self._run.step_summary(name) if name in self._run.plan.steps else None
        if summary is None:
            raise KeyError(name)
        metrics: Mapping[str, float] = summary.get("metrics", {})
        return metrics

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._run.plan.steps

    def __iter__(self) -> Iterator[str]:
        return iter(self._run.plan.steps)

    def __len__(self) -> int:
        return len(self._run.plan.steps)


class StepRun:
    """One attempt at one step of a workflow run: what hooks and runtimes receive.

    Attributes:
        run: the workflow run.
        step: the planned step (``step.spec`` is the step as the spec gives it).
        inputs / outputs: input and output names → paths.
        params: the resolved parameters (workflow params, step params, overrides).
        recorder: where metrics and params go while the step runs.
        state: scratch space for plugins (per step run).
    """

    def __init__(self, run: WorkflowRun, step: PlannedStep, attempt: int = 1) -> None:
        self.run = run
        self.step = step
        self.name = step.name
        self.attempt = attempt
        self.directory = run.step_dir(step.name)
        self.output_dir = self.directory / "outputs"
        self.log_path = self.directory / "step.log"
        self.inputs: dict[str, Path] = {local: run.artifact_path(a) for local, a in step.inputs.items()}
        self.outputs: dict[str, Path] = {
            name: self.output_dir / (spec.path or name) for name, spec in step.outputs.items()
        }
        self.params: dict[str, Any] = dict(step.params)
        self.timeout: float | None = step.spec.timeout
        self.env: dict[str, str] = dict(step.spec.env)
        self.status = "pending"
        self.reason: str | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.execution: ExecutionResult | None = None
        self.checks: list[CheckResult] = []
        self.stage_report: StageReport | None = None
        self.input_records: list[ArtifactRecord] = []
        self.output_records: list[ArtifactRecord] = []
        self.attestations: list[Path] = []
        self.recorder = Recorder()
        self.state: dict[str, Any] = {}

    @property
    def stage(self) -> str:
        return self.step.stage

    def open_recorder(self, flush: Callable[[Any], None]) -> Recorder:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.recorder = Recorder(self.directory / "metrics.jsonl", flush)
        return self.recorder

    def _used_params(self) -> list[str] | None:
        """The params the step's code received, when its runtime knows (a callable); else all."""
        if self.execution is None or self.execution.used_params is None:
            return None
        return sorted(self.execution.used_params)

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return round(self.finished_at - self.started_at, 4)

    def summary(self) -> dict[str, Any]:
        """The step's entry in ``run.json`` (and the body of ``step.json``)."""
        rel = self.run.directory
        return {
            "status": self.status,
            "stage": self.stage,
            "attempt": self.attempt,
            "runtime": self.execution.runtime if self.execution else None,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "duration_s": self.duration_s,
            "reason": self.reason,
            "params": dict(self.recorder.params),
            "used_params": self._used_params(),
            "metrics": dict(self.recorder.latest),
            "inputs": {r.name: _artifact_entry(r, rel) for r in self.input_records},
            "outputs": {r.name: _artifact_entry(r, rel) for r in self.output_records},
            "checks": {
                "passed": sum(r.passed for r in self.checks),
                "failed": sum(not r.passed and r.policy == "fail" for r in self.checks),
                "warned": sum(not r.passed and r.policy == "warn" for r in self.checks),
            },
            "stage_metadata": self.stage_report.to_dict() if self.stage_report else None,
            "attestations": [_relative(p, rel) for p in self.attestations],
        }


def _relative(path: str | Path, base: Path) -> str:
    """``path`` relative to ``base`` when it lies under it (both absolute and normalised), else as it is."""
    text, prefix = str(path), str(base).rstrip(os.sep) + os.sep
    return text[len(prefix) :] if text.startswith(prefix) else text


def _artifact_entry(record: ArtifactRecord, base: Path) -> dict[str, Any]:
    return {
        "path": _relative(record.path, base),
        "digest": record.digest,
        "size": record.size,
        "kind": record.kind,
    }
