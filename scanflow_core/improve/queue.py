"""A durable queue of samples waiting for a human label: one SQLite file, safe across processes.

The file is in WAL mode, so labellers (the terminal, the web page, a script) read while another writes;
every change is one short ``BEGIN IMMEDIATE`` transaction, so two processes never claim the same sample.
:meth:`LabelQueue.next` *claims* the most informative unlabelled sample for a labeller for a while (a
lease, 5 minutes by default): others skip it until the lease runs out, and the same labeller gets it back
(a page reload shows the same image). A sample holds an array (stored as ``.npy`` bytes, never pickled)
and/or a reference (a path or URI), with JSON metadata and a priority (its informativeness).

Labels are checked against the queue's classes, kept in the file with the samples: ``3`` and ``"3"`` both
name class ``3``, anything else is refused with the list of classes.

Example::

    queue = LabelQueue("labels.db", classes=range(10))
    queue.enqueue_many(pool[chosen], ids=[f"pool-{i}" for i in chosen], priorities=scores[chosen])
    sample = queue.next("alice")              # claimed for alice for 5 minutes
    queue.submit(sample.id, 7, labeller="alice")
    pairs = queue.export()                    # LabelledSet: ids, x, y
"""

from __future__ import annotations

import io
import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scanflow_core.errors import ScanflowError

__all__ = ["LabelQueue", "LabelledSet", "QueueError", "Sample", "answer_with"]

FORMAT = 1
DEFAULT_LEASE_S = 300.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS samples (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    data BLOB,
    ref TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    priority REAL NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,
    claimed_by TEXT,
    claimed_until REAL,
    label TEXT,
    labelled_by TEXT,
    labelled_at REAL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_waiting ON samples (label, skipped, priority);
"""
_COLUMNS = "id, data, ref, metadata, priority, label, labelled_by, labelled_at, claimed_by"


class QueueError(ScanflowError):
    """A label queue that cannot do what was asked: says which sample, label or file, and what to do."""


@dataclass(frozen=True)
class Sample:
    """One queued sample. ``data`` is the array (or None when only ``ref`` names where it lives);
    ``label`` is None until someone labels it."""

    id: str
    data: np.ndarray | None = field(repr=False)
    ref: str | None
    metadata: dict[str, Any]
    priority: float
    label: Any = None
    labelled_by: str | None = None
    labelled_at: float | None = None
    claimed_by: str | None = None


@dataclass(frozen=True)
class LabelledSet:
    """The labelled samples, in the order they were queued: ``x`` stacks their arrays (None when a
    sample has only a reference), ``y`` their labels."""

    ids: list[str]
    x: np.ndarray | None
    y: np.ndarray
    refs: list[str | None]
    metadata: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.ids)

    def save(self, path: str | Path) -> Path:
        """Write ``X``, ``y`` and ``ids`` to an ``.npz`` file (the digits example's format)."""
        if self.x is None:
            raise QueueError("some labelled samples have no array (only a reference): nothing to stack as X")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as handle:
            np.savez(handle, X=self.x, y=self.y, ids=np.array(self.ids, dtype=str))
        return target


class LabelQueue:
    """A queue of samples to label in the SQLite file ``path`` (made when missing).

    Args:
        path: the database file.
        classes: the allowed labels. A new queue keeps them; an existing one must have the same (or none
            yet, then these are stored). Without classes, :meth:`submit` refuses every label.
        lease_s: how long :meth:`next` keeps a sample for one labeller.
        timeout_s: how long to wait for another process's write before giving up.
        create: False refuses to make a new file (the ``scanflow label`` command).

    Raises:
        QueueError: the file is not a label queue, the classes differ from the stored ones, or it is
            missing and ``create`` is False.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        classes: Iterable[Any] | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        timeout_s: float = 30.0,
        create: bool = True,
    ) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise QueueError(f"no label queue at {self.path}: make one with LabelQueue(path, classes=...)")
        if not lease_s > 0:
            raise ValueError(f"lease_s must be positive, not {lease_s!r}")
        self.lease_s = float(lease_s)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(
                self.path, timeout=timeout_s, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            with self._write() as db:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                stored = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
                if stored is None:
                    db.execute("INSERT INTO meta VALUES ('format', ?)", (str(FORMAT),))
                elif stored[0] != str(FORMAT):
                    raise QueueError(f"{self.path} is label queue format {stored[0]}, not {FORMAT}")
        except sqlite3.DatabaseError as exc:
            raise QueueError(f"{self.path} is not a label queue (SQLite said: {exc})") from None
        self._classes = self._stored_classes()
        if classes is not None:
            self._set_classes(list(classes))

    # ------------------------------------------------------------------------------------------ setup

    def close(self) -> None:
        """Close the connection (the file stays)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> LabelQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed when the block ends, rolled back on error."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    @property
    def classes(self) -> list[Any] | None:
        """The allowed labels, or None when none are set."""
        return None if self._classes is None else list(self._classes)

    def _stored_classes(self) -> list[Any] | None:
        rows = self._read("SELECT value FROM meta WHERE key = 'classes'")
        return json.loads(rows[0][0]) if rows else None

    def _set_classes(self, classes: list[Any]) -> None:
        if not classes:
            raise ValueError("classes must name at least one label")
        if any(not isinstance(c, str | int) or isinstance(c, bool) for c in classes):
            raise ValueError(f"classes must be strings or whole numbers, not {classes!r}")
        if len({str(c) for c in classes}) != len(classes):
            raise ValueError(f"classes must be distinct, not {classes!r}")
        with self._write() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'classes'").fetchone()
            if row is not None and json.loads(row[0]) != classes:
                raise QueueError(
                    f"{self.path} has the classes {json.loads(row[0])}, not {classes}: "
                    "leave classes out to use the stored ones"
                )
            if row is None:
                db.execute("INSERT INTO meta VALUES ('classes', ?)", (json.dumps(classes),))
        self._classes = classes

    # ------------------------------------------------------------------------------------------ enqueue

    def enqueue(
        self,
        id: str,
        data: Any = None,
        *,
        ref: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        priority: float = 0.0,
    ) -> bool:
        """Queue one sample; returns False (and changes nothing) when ``id`` is already queued.

        Args:
            id: a unique name for the sample (say ``"pool-17"``).
            data: the sample as an array (stored as ``.npy``; object arrays are refused).
            ref: where the sample lives instead (or as well): a path or URI.
            metadata: JSON-serialisable details shown to the labeller.
            priority: higher is labelled sooner (say the informativeness score).
        """
        return (
            self.enqueue_many([data], ids=[id], refs=[ref], metadata=[metadata or {}], priorities=[priority])
            == 1
        )

    def enqueue_many(
        self,
        data: Any = None,
        *,
        ids: Sequence[str],
        refs: Sequence[str | None] | None = None,
        metadata: Sequence[Mapping[str, Any]] | None = None,
        priorities: Sequence[float] | np.ndarray | None = None,
    ) -> int:
        """Queue several samples (``data`` row by row, or only ``refs``) in one transaction; returns how
        many were new (ids already queued are left as they are)."""
        count = len(ids)
        rows_data = [None] * count if data is None else list(data)
        refs = [None] * count if refs is None else list(refs)
        metas = [{}] * count if metadata is None else list(metadata)
        prios = [0.0] * count if priorities is None else [float(p) for p in priorities]
        for name, values in (("data", rows_data), ("refs", refs), ("metadata", metas), ("priorities", prios)):
            if len(values) != count:
                raise ValueError(f"{name} has {len(values)} entries for {count} ids")
        now = time.time()
        records = []
        for sample_id, array, ref, meta, prio in zip(ids, rows_data, refs, metas, prios, strict=True):
            if not isinstance(sample_id, str) or not sample_id:
                raise ValueError(f"a sample id must be a non-empty string, not {sample_id!r}")
            if array is None and ref is None:
                raise ValueError(f"sample {sample_id!r} needs data (an array) or ref (where it lives)")
            if not math.isfinite(prio):
                raise ValueError(f"sample {sample_id!r} has priority {prio}; give a finite number")
            try:
                meta_text = json.dumps(dict(meta))
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"sample {sample_id!r}: metadata must be JSON-serialisable ({exc})"
                ) from None
            records.append((sample_id, _to_blob(sample_id, array), ref, meta_text, prio, now))
        with self._write() as db:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO samples (id, data, ref, metadata, priority, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                records,
            )
            return db.total_changes - before

    # ------------------------------------------------------------------------------------------ label

    def next(self, labeller: str = "anonymous") -> Sample | None:
        """Claim the next unlabelled sample for ``labeller`` (renewing the lease of one it already
        holds), or None when every sample is labelled or claimed by someone else. The order: fewest
        skips, then highest priority, then first queued."""
        now = time.time()
        with self._write() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM samples WHERE label IS NULL AND claimed_by = ? "
                "AND claimed_until >= ? ORDER BY position LIMIT 1",
                (labeller, now),
            ).fetchone()
            if row is None:
                row = db.execute(
                    f"SELECT {_COLUMNS} FROM samples WHERE label IS NULL "
                    "AND (claimed_until IS NULL OR claimed_until < ?) "
                    "ORDER BY skipped, priority DESC, position LIMIT 1",
                    (now,),
                ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE samples SET claimed_by = ?, claimed_until = ? WHERE id = ?",
                (labeller, now + self.lease_s, row[0]),
            )
        return _sample((*row[:-1], labeller))

    def skip(self, id: str, labeller: str = "anonymous") -> None:
        """Give a claimed sample back and send it behind the others not yet skipped."""
        with self._write() as db:
            self._existing(db, id)
            db.execute(
                "UPDATE samples SET skipped = skipped + 1, claimed_by = NULL, claimed_until = NULL "
                "WHERE id = ? AND label IS NULL",
                (id,),
            )

    def release(self, id: str, labeller: str = "anonymous") -> None:
        """Give back a sample ``labeller`` holds, without counting a skip (say, the labeller quit)."""
        with self._write() as db:
            self._existing(db, id)
            db.execute(
                "UPDATE samples SET claimed_by = NULL, claimed_until = NULL WHERE id = ? AND claimed_by = ?",
                (id, labeller),
            )

    def submit(self, id: str, label: Any, *, labeller: str = "anonymous", overwrite: bool = False) -> Any:
        """Label sample ``id``; returns the label as the queue's class (``"3"`` becomes ``3``).

        Raises:
            QueueError: no such sample; the label is not one of the classes (or the queue has none);
                the sample is already labelled (unless ``overwrite``).
        """
        value = self.check_label(label)
        with self._write() as db:
            current = self._existing(db, id)
            if current is not None and not overwrite:
                raise QueueError(
                    f"sample {id!r} is already labelled {json.loads(current)!r}; "
                    "pass overwrite=True to change it"
                )
            db.execute(
                "UPDATE samples SET label = ?, labelled_by = ?, labelled_at = ?, claimed_by = NULL, "
                "claimed_until = NULL WHERE id = ?",
                (json.dumps(value), labeller, time.time(), id),
            )
        return value

    def check_label(self, label: Any) -> Any:
        """The class that ``label`` names (``"3"`` names class ``3``).

        Raises:
            QueueError: the queue has no classes, or ``label`` is not one of them.
        """
        if self._classes is None:
            self._classes = self._stored_classes()
        if self._classes is None:
            raise QueueError(f"{self.path} has no classes: set them with LabelQueue(..., classes=[...])")
        text = str(label).strip() if isinstance(label, str | int | np.integer) else None
        for value in self._classes:
            if text is not None and text == str(value) and not isinstance(label, bool):
                return value
        shown = ", ".join(map(str, self._classes))
        raise QueueError(f"label {label!r} is not one of the classes: {shown}")

    @staticmethod
    def _existing(db: sqlite3.Connection, id: str) -> str | None:
        row = db.execute("SELECT label FROM samples WHERE id = ?", (id,)).fetchone()
        if row is None:
            raise QueueError(f"no sample {id!r} in the queue")
        label: str | None = row[0]
        return label

    # ------------------------------------------------------------------------------------------ read

    def get(self, id: str) -> Sample:
        """One sample by id (``QueueError`` when there is none)."""
        rows = self._read(f"SELECT {_COLUMNS} FROM samples WHERE id = ?", (id,))
        if not rows:
            raise QueueError(f"no sample {id!r} in the queue")
        return _sample(rows[0])

    def counts(self) -> dict[str, int]:
        """``total``, ``labelled``, ``unlabelled`` and ``claimed`` (unlabelled, lease running)."""
        total, labelled, claimed = self._read(
            "SELECT COUNT(*), COUNT(label), "
            "COALESCE(SUM(label IS NULL AND claimed_until >= ?), 0) FROM samples",
            (time.time(),),
        )[0]
        return {"total": total, "labelled": labelled, "unlabelled": total - labelled, "claimed": claimed}

    def samples(self, *, labelled: bool | None = None) -> list[Sample]:
        """Every sample in queue order; only the labelled (True) or unlabelled (False) ones."""
        where = {None: "", True: " WHERE label IS NOT NULL", False: " WHERE label IS NULL"}[labelled]
        return [_sample(r) for r in self._read(f"SELECT {_COLUMNS} FROM samples{where} ORDER BY position")]

    def export(self, path: str | Path | None = None) -> LabelledSet:
        """The labelled pairs (in queue order); also written to ``path`` as ``.npz`` when given."""
        done = self.samples(labelled=True)
        arrays = [s.data for s in done]
        x = None
        if done and all(a is not None for a in arrays):
            x = np.stack([a for a in arrays if a is not None])
        elif not done:
            x = np.empty((0,))
        pairs = LabelledSet(
            ids=[s.id for s in done],
            x=x,
            y=np.asarray([s.label for s in done]),
            refs=[s.ref for s in done],
            metadata=[s.metadata for s in done],
        )
        if path is not None:
            pairs.save(path)
        return pairs


def answer_with(
    queue: LabelQueue,
    true_labels: Mapping[str, Any] | Callable[[Sample], Any],
    *,
    labeller: str = "oracle",
) -> int:
    """Label every unlabelled sample with its known label (the demo's stand-in for a human); returns
    how many were labelled.

    Args:
        queue: the queue to answer.
        true_labels: the label of each sample id, or a callable given the :class:`Sample`.
        labeller: recorded as who labelled them.

    Examples:
        >>> answer_with(queue, lambda sample: y_pool[sample.metadata["index"]])  # doctest: +SKIP
        20
    """
    answered = 0
    for sample in queue.samples(labelled=False):
        if callable(true_labels):
            label = true_labels(sample)
        elif sample.id in true_labels:
            label = true_labels[sample.id]
        else:
            raise QueueError(f"true_labels has no label for sample {sample.id!r}")
        queue.submit(sample.id, label.item() if hasattr(label, "item") else label, labeller=labeller)
        answered += 1
    return answered


def _to_blob(sample_id: str, array: Any) -> bytes | None:
    if array is None:
        return None
    value = np.asarray(array)
    if value.dtype == object:
        raise ValueError(f"sample {sample_id!r}: data must be a numeric array, not of objects")
    buffer = io.BytesIO()
    np.save(buffer, value, allow_pickle=False)
    return buffer.getvalue()


def _sample(row: Sequence[Any]) -> Sample:
    sample_id, blob, ref, meta, priority, label, labelled_by, labelled_at, claimed_by = row
    data = np.load(io.BytesIO(blob), allow_pickle=False) if blob is not None else None
    return Sample(
        id=sample_id,
        data=data,
        ref=ref,
        metadata=json.loads(meta),
        priority=float(priority),
        label=json.loads(label) if label is not None else None,
        labelled_by=labelled_by,
        labelled_at=labelled_at,
        claimed_by=claimed_by,
    )
