"""The improve loop's data steps of the digits example (digits_improve.py), called directly the way Scanflow
calls them: new data, the drift detector and the planner, the label queue, retraining. (package, serve and
promote need a run and an MLflow store: test_digits_demo.py runs them in the whole workflow.)"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits"
if str(EXAMPLE) not in sys.path:
    sys.path.insert(0, str(EXAMPLE))

import digits_improve as improve  # noqa: E402  (lives in the example's folder, put on sys.path above)
import digits_steps as steps  # noqa: E402

FAST = {"epochs": 5, "lr": 0.01, "hidden": 32}


def arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Digits split as the spec splits them, a quickly trained model, and new (shifted) traffic."""
    folder = tmp_path_factory.mktemp("production")
    paths = {name: folder / f"{name}.npz" for name in ("digits", "train", "eval", "test", "incoming")}
    steps.ingest(digits=paths["digits"])
    steps.split(
        digits=paths["digits"],
        train=paths["train"],
        eval=paths["eval"],
        test=paths["test"],
        incoming=paths["incoming"],
        incoming_fraction=0.25,
    )
    paths["model"] = folder / "model.pt"
    steps.train(train=paths["train"], model=paths["model"], **FAST)
    for name in ("batch", "batch_truth", "shifted_eval"):
        paths[name] = folder / f"{name}.npz"
    improve.traffic(
        incoming=paths["incoming"],
        eval=paths["eval"],
        batch=paths["batch"],
        batch_truth=paths["batch_truth"],
        shifted_eval=paths["shifted_eval"],
    )
    paths["detector"] = folder / "detector"
    improve.monitor(train=paths["train"], detector=paths["detector"])
    return paths


def test_shift_images_rotates_adds_noise_and_covers_within_range() -> None:
    rng = np.random.default_rng(0)
    images = rng.random((20, 64)).astype(np.float32)

    same = improve.shift_images(images, np.random.default_rng(1), rotation=0.0, noise=0.0, occlusion=0)
    shifted = improve.shift_images(images, np.random.default_rng(1), rotation=15.0, noise=0.05, occlusion=2)

    np.testing.assert_allclose(same, images, atol=1e-6)
    assert shifted.dtype == np.float32 and shifted.shape == (20, 64)
    assert shifted.min() >= 0.0 and shifted.max() <= 1.0
    assert np.abs(shifted - images).mean() > 0.05
    covered = (shifted.reshape(-1, 8, 8) == 0).reshape(20, -1).sum(axis=1)
    assert (covered >= 4).all()  # every image has its 2x2 square blacked out


def test_traffic_hides_the_labels_of_the_new_batch(data: dict[str, Path]) -> None:
    batch, truth, shifted = arrays(data["batch"]), arrays(data["batch_truth"]), arrays(data["shifted_eval"])
    incoming, evaluation = arrays(data["incoming"]), arrays(data["eval"])

    assert list(batch) == ["X"] and list(truth) == ["y"]  # the pixels production sees, labels kept apart
    assert batch["X"].shape == incoming["X"].shape and batch["X"].dtype == np.float32
    np.testing.assert_array_equal(truth["y"], incoming["y"])
    np.testing.assert_array_equal(shifted["y"], evaluation["y"])
    assert (
        np.abs(batch["X"] - incoming["X"]).mean() > 0.05
        and np.abs(shifted["X"] - evaluation["X"]).mean() > 0.05
    )


def test_traffic_is_reproducible_by_seed(data: dict[str, Path], tmp_path: Path) -> None:
    def make(seed: int, name: str) -> np.ndarray:
        out = {k: tmp_path / f"{name}-{k}.npz" for k in ("batch", "batch_truth", "shifted_eval")}
        improve.traffic(incoming=data["incoming"], eval=data["eval"], seed=seed, **out)
        return arrays(out["batch"])["X"]

    np.testing.assert_array_equal(make(0, "a"), arrays(data["batch"])["X"])
    assert not np.array_equal(make(1, "b"), arrays(data["batch"])["X"])


@pytest.mark.slow
def test_drift_on_the_shifted_batch_calls_for_retraining(data: dict[str, Path], tmp_path: Path) -> None:
    metrics = improve.drift(batch=data["batch"], detector=data["detector"], drift_report=tmp_path / "d.json")

    assert metrics["drifted"] == 1.0 and metrics["retrain"] == 1.0 and metrics["alert"] == 1.0
    assert metrics["anomalous_share"] > 0.5 and metrics["p_value"] < 1e-6
    assert metrics["score"] > 2 * metrics["reference_score"]
    report = json.loads((tmp_path / "d.json").read_text())
    assert report["action"] == "retrain" and report["reason"].endswith("(above 10.0%: retrain)")


@pytest.mark.slow
def test_drift_on_clean_new_digits_does_not(data: dict[str, Path], tmp_path: Path) -> None:
    clean = tmp_path / "clean.npz"
    np.savez(clean, X=arrays(data["incoming"])["X"])

    metrics = improve.drift(batch=clean, detector=data["detector"], drift_report=tmp_path / "d.json")

    assert metrics["drifted"] == 0.0 and metrics["retrain"] == 0.0
    assert metrics["anomalous_share"] <= 0.10  # about alpha (5 %) by chance: normal, or at most an alert
    assert json.loads((tmp_path / "d.json").read_text())["action"] in ("normal", "alert")


@pytest.mark.slow
def test_label_queues_the_picked_digits_and_exports_their_true_labels(
    data: dict[str, Path], tmp_path: Path
) -> None:
    queue, labelled = tmp_path / "queue", tmp_path / "labelled.npz"

    metrics = improve.label(
        batch=data["batch"],
        batch_truth=data["batch_truth"],
        model=data["model"],
        detector=data["detector"],
        queue=queue,
        labelled=labelled,
        k=25,
    )

    assert metrics["rows"] == 25 and metrics["answered"] == 25
    pairs = arrays(labelled)
    rows = np.array([int(i.removeprefix("batch-")) for i in pairs["ids"]])
    assert len(set(rows)) == 25
    np.testing.assert_array_equal(pairs["y"], arrays(data["batch_truth"])["y"][rows])
    np.testing.assert_allclose(pairs["X"], arrays(data["batch"])["X"][rows])
    assert [p.name for p in queue.iterdir()] == ["labels.db"]  # closed: no WAL left beside it to attest
    with sqlite3.connect(queue / "labels.db") as db:
        assert db.execute(
            "SELECT COUNT(*), COUNT(label) FROM samples WHERE labelled_by = 'demo'"
        ).fetchone() == (25, 25)


def test_label_refuses_truth_that_does_not_match_the_batch(data: dict[str, Path], tmp_path: Path) -> None:
    short = tmp_path / "short.npz"
    np.savez(short, y=np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match=r"short.npz has 3 labels for 450 rows of batch.npz"):
        improve.label(
            batch=data["batch"],
            batch_truth=short,
            model=data["model"],
            detector=data["detector"],
            queue=tmp_path / "q",
            labelled=tmp_path / "l.npz",
        )


def test_a_batch_without_pixels_is_named(tmp_path: Path, data: dict[str, Path]) -> None:
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, pixels=np.zeros((3, 64)))
    with pytest.raises(ValueError, match=r"wrong.npz: no array 'X' \(the pixels\)"):
        improve.drift(batch=wrong, detector=data["detector"], drift_report=tmp_path / "d.json")


@pytest.mark.slow
def test_retrain_counts_each_new_digit_new_weight_times(data: dict[str, Path], tmp_path: Path) -> None:
    labelled = tmp_path / "labelled.npz"
    x_new = arrays(data["batch"])["X"][:10]
    np.savez(
        labelled, X=x_new, y=arrays(data["batch_truth"])["y"][:10], ids=np.array([f"b{i}" for i in range(10)])
    )

    metrics = improve.retrain(
        train=data["train"], labelled=labelled, candidate=tmp_path / "c.pt", new_weight=3, **FAST
    )

    assert metrics["rows"] == 942 + 30 and metrics["new_rows"] == 10
    assert metrics["train_accuracy"] > 0.8
    assert set(metrics) == {"train_accuracy", "final_loss", "rows", "new_rows"}
    with pytest.raises(ValueError, match=r"new_weight must be a whole number >= 1, not 0"):
        improve.retrain(train=data["train"], labelled=labelled, candidate=tmp_path / "d.pt", new_weight=0)
