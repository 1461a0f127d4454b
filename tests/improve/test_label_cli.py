"""``scanflow label``: the terminal prompt (ASCII digits), --export, --classes and clear errors."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scanflow_core.cli import main
from scanflow_core.improve import LabelQueue
from scanflow_core.improve.images import ascii_art, png_bytes

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def digits_queue(tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]) -> Path:
    x, _ = digits
    path = tmp_path / "labels.db"
    q = LabelQueue(path, classes=range(10))
    q.enqueue_many(
        x[:3], ids=["d0", "d1", "d2"], metadata=[{"index": i} for i in range(3)], priorities=[3, 2, 1]
    )
    q.close()
    return path


def run_label(monkeypatch, capsys, argv: list[str], typed: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(typed))
    code = main(["label", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_terminal_shows_each_digit_and_stores_the_typed_labels(digits_queue, digits, monkeypatch, capsys):
    x, y = digits

    code, out, _ = run_label(
        monkeypatch, capsys, [str(digits_queue), "--labeller", "ana"], f"{y[0]}\n12\ns\n{y[2]}\n{y[1]}\n"
    )

    assert code == 0
    assert "3 of 3 samples to label. Classes: 0 1 2 3 4 5 6 7 8 9" in out
    assert ascii_art(x[0]) in out  # the digit, drawn
    assert "label '12' is not one of the classes" in out  # asked again
    assert "every sample is labelled" in out and "3 labelled this time" in out
    q = LabelQueue(digits_queue)
    assert [(s.id, s.label, s.labelled_by) for s in q.samples()] == [
        ("d0", int(y[0]), "ana"),
        ("d1", int(y[1]), "ana"),
        ("d2", int(y[2]), "ana"),
    ]


def test_quitting_gives_the_sample_back(digits_queue, monkeypatch, capsys):
    code, out, _ = run_label(monkeypatch, capsys, [str(digits_queue), "--labeller", "ana"], "5\nq\n")

    assert code == 0 and "stopped: 1 labelled this time" in out
    q = LabelQueue(digits_queue)
    assert q.counts() == {"total": 3, "labelled": 1, "unlabelled": 2, "claimed": 0}


def test_end_of_input_stops_like_quit(digits_queue, monkeypatch, capsys):
    code, out, _ = run_label(monkeypatch, capsys, [str(digits_queue)], "")

    assert code == 0 and "stopped: 0 labelled this time" in out


def test_export_writes_the_labelled_pairs(digits_queue, tmp_path, monkeypatch, capsys):
    run_label(monkeypatch, capsys, [str(digits_queue)], "1\n2\n3\n")

    code, out, _ = run_label(
        monkeypatch, capsys, [str(digits_queue), "--export", str(tmp_path / "new.npz")], ""
    )

    assert code == 0 and "3 labelled samples" in out
    with np.load(tmp_path / "new.npz") as saved:
        assert saved["y"].tolist() == [1, 2, 3] and saved["X"].shape == (3, 64)


def test_classes_from_the_command_line_are_stored_in_a_queue_without_them(tmp_path, monkeypatch, capsys):
    path = tmp_path / "q.db"
    LabelQueue(path).enqueue("a", np.eye(8))

    code, _, err = run_label(monkeypatch, capsys, [str(path)], "x\n")
    assert code == 2 and "has no classes: give them with --classes" in err

    code, out, _ = run_label(monkeypatch, capsys, [str(path), "--classes", "cat,dog", "bird"], "dog\n")
    assert code == 0 and "Classes: cat dog bird" in out
    assert LabelQueue(path).get("a").label == "dog"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["missing.db"], "no label queue at missing.db"),
        (
            ["QUEUE", "--classes", "a", "b"],
            r"has the classes \[0, 1, 2, 3, 4, 5, 6, 7, 8, 9\], not \['a', 'b'\]",
        ),
    ],
)
def test_bad_input_exits_2_with_the_reason(digits_queue, monkeypatch, capsys, argv, message, tmp_path):
    monkeypatch.chdir(tmp_path)
    argv = [str(digits_queue) if a == "QUEUE" else a for a in argv]

    code, _, err = run_label(monkeypatch, capsys, argv, "")

    assert code == 2
    assert err.startswith("error: ") and __import__("re").search(message, err), err


def test_a_real_process_labels_from_its_standard_input(digits_queue):
    done = subprocess.run(
        [sys.executable, "-m", "scanflow_core", "label", str(digits_queue), "--labeller", "pipe"],
        input="4\n5\n6\n",
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    assert [s.label for s in LabelQueue(digits_queue).samples()] == [4, 5, 6]


def test_ascii_art_and_png_of_a_digit(digits):
    x, _ = digits
    art = ascii_art(x[0]).splitlines()

    assert len(art) == 8 and {len(line) for line in art} == {16}
    assert art[0].strip() == "" or set(art[0]) <= set(" .:-=+*#%@")
    png = png_bytes(x[0], scale=4)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png[12:16] == b"IHDR"
    assert int.from_bytes(png[16:20], "big") == 32 and int.from_bytes(png[20:24], "big") == 32
    assert ascii_art(np.zeros(5)).startswith("(not an image")
    with pytest.raises(ValueError, match="not an image"):
        png_bytes(np.zeros(5))
