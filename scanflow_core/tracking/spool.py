"""The tracking spool: what a tracker could not deliver, kept in the run directory until it can.

``<run>/tracking/spool.jsonl`` is append-only JSON lines, shared by every process that works on
the run (each orchestrator task, each container). Two kinds of line:

* a **record**: ``{"id": "<32 hex>", "op": "batch" | "status", "step": "train" | null, ...}`` —
  one undelivered operation, with everything needed to deliver it later (metric points keep
  the timestamp and step they were recorded with);
* a **mark**: ``{"done": "<id>"}`` once a record was delivered, or ``{"rejected": "<id>",
  "error": "..."}`` when the store refused it for good (a malformed value: retrying cannot help,
  and the record stays in the file for a person to read).

A record is pending until a mark names it. Nothing is ever rewritten in place: a crash can only
leave a torn last line, which readers skip, and writers end with a newline before appending.
Appends and replays hold an exclusive ``fcntl`` lock on ``spool.lock``, so two processes never
replay the same record at the same time.

Exactly once
------------
A crash between delivering a record and appending its ``done`` mark leaves the record pending,
and the next replay sends it again. That second delivery must not add anything, and it does not:
every metric point is replayed with its original key, step, timestamp and value, and MLflow's SQL
stores (the embedded SQLite store, PostgreSQL, MySQL, and every ``mlflow server`` backed by them)
make exactly that tuple the primary key of a point and drop a re-inserted one. Params are logged
again with the same value (allowed), tags and artifacts overwrite themselves, a status is set
again. So each replayed batch is idempotent by construction, with no extra query per batch and
no bookkeeping tags on the runs. (We chose this over checking what the server already has for the
child run, which costs a metric-history read per key per batch, and over per-batch marker tags,
which MLflow writes in a separate transaction from the metrics and so would not close the gap.)
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Delivery", "ReplayReport", "Spool"]


class Delivery:
    """What a delivery callback may answer for one record (besides returning normally)."""

    class Rejected(Exception):
        """The store refused the record for good; it is marked rejected and not retried."""


@dataclass
class ReplayReport:
    """What one replay did: records delivered, rejected, and still pending (with the last error)."""

    delivered: int = 0
    rejected: int = 0
    pending: int = 0
    error: str | None = None


class Spool:
    """The append-only spool of one run directory (``<run>/tracking/spool.jsonl``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "spool.jsonl"
        self._lock_path = directory / "spool.lock"
        self._thread_lock = threading.RLock()
        self._clean_size = -1  # the file's size when this process last saw nothing pending
        self._depth = 0

    # ------------------------------------------------------------------ writing

    def append(self, record: dict[str, Any]) -> str:
        """Add one record (an ``id`` is given if it has none); return its id."""
        record.setdefault("id", uuid.uuid4().hex)
        self._append_lines([record])
        return str(record["id"])

    def mark(self, record_id: str, *, rejected: str | None = None) -> None:
        """Say that a record was delivered (or, with ``rejected``, refused for good)."""
        line = {"done": record_id} if rejected is None else {"rejected": record_id, "error": rejected}
        self._append_lines([line])

    def _append_lines(self, lines: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(line, default=str, separators=(",", ":")) + "\n" for line in lines)
        with self.locked(), open(self.path, "ab") as f:
            if f.tell() > 0 and not _ends_with_newline(self.path):
                f.write(b"\n")  # the last writer crashed mid-line: keep our line whole
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())

    # ------------------------------------------------------------------ reading

    def records(self) -> Iterator[dict[str, Any]]:
        """Every line that parses, in order (a torn line is skipped)."""
        try:
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        value = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(value, dict):
                        yield value
        except FileNotFoundError:
            return

    def pending(self) -> list[dict[str, Any]]:
        """The records no mark names yet, in the order they were spooled."""
        records: dict[str, dict[str, Any]] = {}
        for line in self.records():
            if "id" in line:
                records[str(line["id"])] = line
            elif "done" in line:
                records.pop(str(line["done"]), None)
            elif "rejected" in line:
                records.pop(str(line["rejected"]), None)
        return list(records.values())

    def rejected(self) -> list[dict[str, Any]]:
        """The marks of records the store refused for good."""
        return [line for line in self.records() if "rejected" in line]

    def maybe_pending(self) -> bool:
        """Cheap test (one ``stat``): has the file changed since this process last replayed it all?"""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return False
        return size != self._clean_size

    # ------------------------------------------------------------------ replaying

    def replay(self, deliver: Callable[[dict[str, Any]], None]) -> ReplayReport:
        """Deliver the pending records in order, marking each one as it lands.

        ``deliver`` raises :class:`Delivery.Rejected` for a record the store refuses for good, and
        any other exception when the store cannot be reached: the replay then stops and the
        remaining records stay pending for the next one.
        """
        report = ReplayReport()
        with self.locked():
            todo = self.pending()
            for index, record in enumerate(todo):
                try:
                    deliver(record)
                except Delivery.Rejected as exc:
                    self.mark(str(record["id"]), rejected=str(exc))
                    report.rejected += 1
                    continue
                except Exception as exc:
                    report.pending = len(todo) - index
                    report.error = f"{type(exc).__name__}: {exc}"
                    return report
                self.mark(str(record["id"]))
                report.delivered += 1
            self._clean_size = self.path.stat().st_size if self.path.exists() else -1
        return report

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the spool's lock: across processes (``fcntl``) and across threads of this one.

        Re-entrant within a thread: while this thread holds the lock, nobody else is inside.
        """
        with self._thread_lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self.directory.mkdir(parents=True, exist_ok=True)
            with open(self._lock_path, "a+") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                self._depth = 1
                try:
                    yield
                finally:
                    self._depth = 0
                    fcntl.flock(lock, fcntl.LOCK_UN)


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"
