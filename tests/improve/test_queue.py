"""The label queue: durable, checked labels, leases, and two processes labelling one file at once."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from scanflow_core.improve import LabelQueue, QueueError, answer_with

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def queue(tmp_path: Path) -> LabelQueue:
    q = LabelQueue(tmp_path / "labels.db", classes=range(10))
    rng = np.random.default_rng(0)
    q.enqueue_many(
        rng.random((5, 64)).astype(np.float32),
        ids=[f"s{i}" for i in range(5)],
        metadata=[{"index": i} for i in range(5)],
        priorities=[0.1, 0.9, 0.5, 0.7, 0.3],
    )
    return q


def test_samples_come_most_informative_first_and_keep_their_data(queue):
    first = queue.next("alice")

    assert first is not None and first.id == "s1" and first.claimed_by == "alice"
    assert first.data is not None and first.data.shape == (64,) and first.data.dtype == np.float32
    assert first.metadata == {"index": 1}
    assert queue.next("bob").id == "s3"  # s1 is alice's for now
    assert queue.next("alice").id == "s1"  # alice gets hers back (a page reload)


def test_a_submitted_label_is_stored_as_the_class_it_names(queue):
    sample = queue.next("alice")

    assert queue.submit(sample.id, "7", labeller="alice") == 7
    stored = queue.get(sample.id)
    assert stored.label == 7 and stored.labelled_by == "alice" and stored.labelled_at is not None
    assert queue.counts() == {"total": 5, "labelled": 1, "unlabelled": 4, "claimed": 0}


@pytest.mark.parametrize("label", ["10", "seven", "", 3.5, True, None])
def test_a_label_outside_the_classes_is_refused_with_the_classes(queue, label):
    with pytest.raises(QueueError, match=r"is not one of the classes: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9"):
        queue.submit("s0", label)
    assert queue.get("s0").label is None


def test_an_unknown_sample_and_a_second_label_are_refused(queue):
    with pytest.raises(QueueError, match="no sample 'nope' in the queue"):
        queue.submit("nope", 1)
    queue.submit("s0", 1)
    with pytest.raises(QueueError, match="sample 's0' is already labelled 1; pass overwrite=True"):
        queue.submit("s0", 2)
    assert queue.submit("s0", 2, overwrite=True) == 2


def test_skipped_samples_go_behind_the_others(queue):
    queue.skip(queue.next("alice").id, "alice")

    order = []
    while (sample := queue.next("alice")) is not None:
        order.append(sample.id)
        queue.submit(sample.id, 0, labeller="alice")
    assert order == ["s3", "s2", "s4", "s0", "s1"]


def test_an_expired_lease_frees_the_sample(tmp_path):
    q = LabelQueue(tmp_path / "q.db", classes=["cat", "dog"], lease_s=0.2)
    q.enqueue("only", ref="images/only.png")

    assert q.next("alice").id == "only"
    assert q.next("bob") is None
    time.sleep(0.3)
    taken = q.next("bob")
    assert taken is not None and taken.id == "only" and taken.ref == "images/only.png" and taken.data is None


def test_the_queue_outlives_its_process_and_keeps_its_classes(tmp_path, queue):
    queue.submit("s2", 4)
    queue.close()

    again = LabelQueue(tmp_path / "labels.db")
    assert again.classes == list(range(10))
    assert again.get("s2").label == 4
    with pytest.raises(QueueError, match=r"has the classes \[0, 1, .* not \['a', 'b'\]"):
        LabelQueue(tmp_path / "labels.db", classes=["a", "b"])
    with pytest.raises(QueueError, match=r"no label queue at .*missing\.db"):
        LabelQueue(tmp_path / "missing.db", create=False)


def test_a_file_that_is_not_a_queue_is_named(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("not a database, just text " * 100)

    with pytest.raises(QueueError, match=r"notes\.db is not a label queue"):
        LabelQueue(path)


def test_a_queue_without_classes_refuses_labels(tmp_path):
    q = LabelQueue(tmp_path / "q.db")
    q.enqueue("a", [1.0, 2.0])

    with pytest.raises(QueueError, match="has no classes"):
        q.submit("a", "x")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda q: q.enqueue("", [1.0]), "a sample id must be a non-empty string"),
        (lambda q: q.enqueue("x"), "sample 'x' needs data"),
        (lambda q: q.enqueue("x", [1.0], priority=float("nan")), "priority nan"),
        (lambda q: q.enqueue("x", [1.0], metadata={"f": object()}), "metadata must be JSON-serialisable"),
        (lambda q: q.enqueue("x", np.array([object()])), "data must be a numeric array"),
        (lambda q: q.enqueue_many(np.zeros((2, 3)), ids=["a"]), "data has 2 entries for 1 ids"),
    ],
)
def test_bad_samples_are_refused(tmp_path, call, message):
    with pytest.raises(ValueError, match=message):
        call(LabelQueue(tmp_path / "q.db", classes=[0, 1]))


def test_export_and_answer_with(tmp_path, queue):
    truth = {f"s{i}": i % 3 for i in range(5)}

    assert queue.enqueue("s0", [0.0]) is False  # already queued: left as it was
    assert answer_with(queue, truth) == 5
    pairs = queue.export(tmp_path / "labelled.npz")

    assert pairs.ids == ["s0", "s1", "s2", "s3", "s4"]
    assert pairs.y.tolist() == [0, 1, 2, 0, 1] and pairs.x.shape == (5, 64)
    with np.load(tmp_path / "labelled.npz") as saved:
        assert saved["y"].tolist() == [0, 1, 2, 0, 1] and saved["X"].shape == (5, 64)
    assert {s.labelled_by for s in queue.samples(labelled=True)} == {"oracle"}


def test_answer_with_names_a_sample_it_has_no_label_for(queue):
    with pytest.raises(QueueError, match="true_labels has no label for sample 's1'"):
        answer_with(queue, {"s0": 1})


def test_answer_with_a_callable(queue):
    assert answer_with(queue, lambda sample: np.int64(sample.metadata["index"])) == 5
    assert queue.export().y.tolist() == [0, 1, 2, 3, 4]


LABELLER = textwrap.dedent(
    """\
    import sys, time
    from pathlib import Path
    from scanflow_core.improve import LabelQueue

    path, name, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    queue = LabelQueue(path)
    Path(f"{go}.{name}").touch()  # ready: imported and connected
    while not go.exists():
        time.sleep(0.01)
    done = 0
    while (sample := queue.next(name)) is not None:
        queue.submit(sample.id, sample.metadata["truth"], labeller=name)  # raises if already labelled
        done += 1
        time.sleep(0.005)  # a person takes a while per sample: neither labeller can take the whole queue
    print(done)
    """
)


@pytest.mark.slow
def test_two_processes_label_one_queue_without_ever_taking_the_same_sample(tmp_path):
    path = tmp_path / "shared.db"
    q = LabelQueue(path, classes=range(10))
    count = 120
    q.enqueue_many(
        np.zeros((count, 4)),
        ids=[f"s{i}" for i in range(count)],
        metadata=[{"truth": i % 10} for i in range(count)],
        priorities=np.linspace(0, 1, count),
    )
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", LABELLER, str(path), name, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for name in ("left", "right")
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"go.{name}").exists() for name in ("left", "right")):
        assert time.monotonic() < deadline, "the labellers did not start"
        assert all(w.poll() is None for w in workers), [w.communicate() for w in workers]
        time.sleep(0.05)
    go.touch()
    results = [w.communicate(timeout=240) for w in workers]

    assert [w.returncode for w in workers] == [0, 0], [err for _, err in results]
    done = [int(out.strip()) for out, _ in results]
    assert sum(done) == count and min(done) > 0
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows = db.execute("SELECT labelled_by, COUNT(*) FROM samples GROUP BY labelled_by").fetchall()
        assert dict(rows) == {"left": done[0], "right": done[1]}
        wrong = db.execute("SELECT COUNT(*) FROM samples WHERE label != json_extract(metadata, '$.truth')")
        assert wrong.fetchone()[0] == 0
