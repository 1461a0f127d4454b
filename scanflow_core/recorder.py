"""What a running step records (params, metrics, tags, progress), and the API step code calls.

Step code calls :func:`log_metric` / :func:`log_params` / :func:`set_progress`. In process they go
to the current step's :class:`Recorder` (a context variable, so parallel steps in threads don't mix).
In a child process (a ``command`` step, a container) they are appended as JSON lines to the
file named by ``SCANFLOW_RECORD_FILE``, which the parent reads back: nothing is lost either way.
"""

from __future__ import annotations

import contextvars
import functools
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from scanflow_core.records import Metric, TrackingBatch, now_ms

__all__ = ["Recorder", "log_metric", "log_metrics", "log_params", "set_progress", "set_tags"]

RECORD_FILE_ENV = "SCANFLOW_RECORD_FILE"
FLUSH_EVERY = 1000

_active: list[Recorder] = []  # the recorders of the steps running in this process
_active_lock = threading.Lock()
_current: contextvars.ContextVar[Recorder | None] = contextvars.ContextVar("scanflow_recorder", default=None)


class Recorder:
    """Collects one step's record; appends every point to ``metrics.jsonl`` and hands batches on.

    Args:
        journal: the step's ``metrics.jsonl`` (the durable record in the run directory).
        flush: called with a :class:`TrackingBatch` every :data:`FLUSH_EVERY` metric points and at
            the end (the tracking hook).
    """

    def __init__(
        self, journal: Path | None = None, flush: Callable[[TrackingBatch], None] | None = None
    ) -> None:
        self.params: dict[str, Any] = {}
        self.tags: dict[str, str] = {}
        self.latest: dict[str, float] = {}
        self.progress: float | None = None
        self.message: str = ""
        self.points = 0
        self._pending = TrackingBatch()
        self._journal = journal
        self._flush = flush
        self._lock = threading.Lock()
        self._file = journal.open("a", encoding="utf-8") if journal is not None else None

    def log_params(self, params: Mapping[str, Any]) -> None:
        with self._lock:
            self.params.update(params)
            self._pending.params.update(params)
            self._write({"params": dict(params)})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        with self._lock:
            clean = {k: str(v) for k, v in tags.items()}
            self.tags.update(clean)
            self._pending.tags.update(clean)
            self._write({"tags": clean})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        stamp = now_ms()
        at = int(step) if step is not None else 0
        with self._lock:
            pending, latest, lines = self._pending.metrics, self.latest, []
            for key, value in metrics.items():
                number = float(value)
                latest[key] = number
                pending.append(Metric(key, number, at, stamp))
                # The same line as json.dumps({"m": key, "v": number, "s": at, "t": stamp}), built
                # without it: this is the per-point hot path (see benchmarks/tracking.py).
                lines.append(
                    f'{{"m": {_json_key(key)}, "v": {_json_float(number)}, "s": {at}, "t": {stamp}}}\n'
                )
            if self._file is not None:
                self._file.write("".join(lines))
            self.points += len(metrics)
            due = len(self._pending.metrics) >= FLUSH_EVERY
        if due:
            self.flush()

    def set_progress(self, fraction: float, message: str = "") -> None:
        self.progress = min(max(float(fraction), 0.0), 1.0)
        self.message = message

    def take(self) -> TrackingBatch:
        """Hand over what was recorded since the last call."""
        with self._lock:
            batch, self._pending = self._pending, TrackingBatch()
            if self._file is not None:
                self._file.flush()
        return batch

    def flush(self) -> None:
        batch = self.take()
        if batch and self._flush is not None:
            self._flush(batch)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _write(self, record: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record, default=str) + "\n")

    def replay(self, path: Path) -> None:
        """Take in the records a child process appended to ``path`` (see ``SCANFLOW_RECORD_FILE``)."""
        if not path.exists():
            return
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line from a killed process
            if "m" in record:
                self.log_metrics({record["m"]: record["v"]}, step=record.get("s"))
            elif "params" in record:
                self.log_params(record["params"])
            elif "tags" in record:
                self.set_tags(record["tags"])
            elif "progress" in record:
                self.set_progress(record["progress"], record.get("message", ""))

    @contextmanager
    def active(self) -> Iterator[Recorder]:
        """Make this the recorder that :func:`log_metric` and friends write to, in this context."""
        token = _current.set(self)
        with _active_lock:
            _active.append(self)
        try:
            yield self
        finally:
            _current.reset(token)
            with _active_lock:
                _active.remove(self)


@functools.lru_cache(maxsize=4096)
def _json_key(key: str) -> str:
    return json.dumps(key)


def _json_float(number: float) -> str:
    return repr(number) if math.isfinite(number) else json.dumps(number)


class _FileRecorder:
    """The recorder of a child process: append-only JSON lines, read back by the parent."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = threading.Lock()

    def _append(self, record: dict[str, Any]) -> None:
        with self._lock, open(self._path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=str) + "\n")

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._append({"params": dict(params)})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._append({"tags": {k: str(v) for k, v in tags.items()}})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        stamp = now_ms()
        with self._lock, open(self._path, "a", encoding="utf-8") as f:
            for key, value in metrics.items():
                f.write(json.dumps({"m": key, "v": float(value), "s": step or 0, "t": stamp}) + "\n")

    def set_progress(self, fraction: float, message: str = "") -> None:
        self._append({"progress": fraction, "message": message, "t": time.time()})


def _recorder() -> Recorder | _FileRecorder | None:
    recorder = _current.get()
    if recorder is not None:
        return recorder
    with _active_lock:
        running = list(_active)
    if len(running) == 1:  # a thread the step started: it did not inherit the context
        return running[0]
    if running:
        raise RuntimeError(
            "log_metric was called outside any step's context while several steps run in this process; "
            "start threads inside a step with contextvars.copy_context().run(...) so they know their step"
        )
    path = os.environ.get(RECORD_FILE_ENV)
    return _FileRecorder(path) if path else None


def log_metric(key: str, value: float, step: int | None = None) -> None:
    """Record one metric point for the step that is running (no-op outside a step)."""
    recorder = _recorder()
    if recorder is not None:
        recorder.log_metrics({key: value}, step)


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Record several metrics at once for the step that is running."""
    recorder = _recorder()
    if recorder is not None:
        recorder.log_metrics(metrics, step)


def log_params(params: Mapping[str, Any]) -> None:
    """Record parameters (hyperparameters, seeds, split sizes) for the step that is running."""
    recorder = _recorder()
    if recorder is not None:
        recorder.log_params(params)


def set_tags(tags: Mapping[str, Any]) -> None:
    """Tag the step that is running."""
    recorder = _recorder()
    if recorder is not None:
        recorder.set_tags(tags)


def set_progress(fraction: float, message: str = "") -> None:
    """Say how far the running step is (0..1); shown by ``/varz`` and the progress display."""
    recorder = _recorder()
    if recorder is not None:
        recorder.set_progress(fraction, message)
