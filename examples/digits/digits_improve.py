"""The digits improve loop's data steps: new digits arrive, drift is found, informative ones are labelled,
the model is retrained (``promote``, in ``digits_production.py``, judges the candidate).

``traffic``   new digits arrive, as a new scanner sees them: rotated and noisy
``monitor``   a drift detector learns what the training digits look like
``drift``     the ``drift`` checker compares the new digits with the training data; the planner decides
``label``     the most informative new digits go to a label queue, answered with their true labels
``retrain``   the model trained again on the training data and the new labels

torch, scipy and Scanflow's drift detector, planner and label queue are imported inside the steps.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from digits_steps import CLASSES, N_FEATURES, _load, _restore, _save
from digits_steps import train as train_model

__all__ = ["drift", "label", "monitor", "retrain", "shift_images", "traffic"]


# ------------------------------------------------------------------------------------------ traffic


def traffic(
    incoming: Path,
    eval: Path,
    batch: Path,
    batch_truth: Path,
    shifted_eval: Path,
    seed: int = 0,
    rotation: float = 15.0,
    noise: float = 0.05,
    occlusion: int = 0,
) -> dict[str, int]:
    """New data: the ``incoming`` digits (no step trained on them) as a new scanner sees them.

    Writes ``batch`` (the pixels only: what the model is asked about in production), ``batch_truth``
    (their labels: what a person labelling them would say; only ``label`` reads it, as the demo's
    stand-in for that person) and ``shifted_eval`` (the evaluation set shifted the same way, with its
    labels, to judge a retrained model on data like the new).
    """
    rng = np.random.default_rng(seed)
    x_new, y_new = _load(incoming)
    x_eval, y_eval = _load(eval)
    with batch.open("wb") as file:
        np.savez(file, X=shift_images(x_new, rng, rotation, noise, occlusion))
    with batch_truth.open("wb") as file:
        np.savez(file, y=y_new)
    _save(shifted_eval, shift_images(x_eval, rng, rotation, noise, occlusion), y_eval)
    return {"rows": len(y_new), "shifted_eval_rows": len(y_eval)}


def shift_images(
    x: np.ndarray, rng: np.random.Generator, rotation: float = 20.0, noise: float = 0.1, occlusion: int = 3
) -> np.ndarray:
    """Rotate each 8x8 image by ``rotation`` degrees (either way), add Gaussian ``noise`` and black out a
    random ``occlusion`` x ``occlusion`` square; pixels stay in [0, 1] (as ``benchmarks/active_learning``)."""
    from scipy import ndimage

    images = np.stack(
        [
            ndimage.rotate(image, float(rng.choice([-1.0, 1.0])) * rotation, reshape=False, order=1)
            for image in x.reshape(-1, 8, 8)
        ]
    )
    images = images + rng.normal(0.0, noise, images.shape)
    if occlusion > 0:
        for image in images:
            row, column = rng.integers(0, 8 - occlusion + 1, size=2)
            image[row : row + occlusion, column : column + occlusion] = 0.0
    return np.clip(images, 0.0, 1.0).reshape(len(x), -1).astype(np.float32)


# ------------------------------------------------------------------------------------------ drift


def monitor(train: Path, detector: Path, seed: int = 0) -> dict[str, float]:
    """Learn what the training digits look like: a drift detector (an autoencoder whose reconstruction
    error scores how unusual a digit is, calibrated on held-back training rows), saved as ``detector``
    for the ``drift`` check, the ``drift`` step and the ``label`` step."""
    from scanflow_core.checking.drift import DriftDetector

    x_train, _ = _load(train)
    fitted = DriftDetector(seed=seed).fit(x_train)
    fitted.save(detector)
    same = fitted.test(x_train)
    return {
        "reference_rows": float(len(x_train)),
        "calibration_rows": float(len(fitted.reference_scores)),
        "reference_score": same.reference_score,
    }


def drift(batch: Path, detector: Path, drift_report: Path, ctx: Any = None) -> dict[str, float]:
    """Is the new ``batch`` drawn from the training data's distribution, and what should be done?

    The spec's ``drift`` check on ``batch`` runs first, with the same ``detector`` (its verdict, plot
    and signed statement are the step's); this step asks the planner (the spec's ``improve.planner``
    rules) what the share of anomalous digits calls for: ``normal``, ``alert`` or ``retrain``.
    """
    from scanflow_core.checking.drift import DriftDetector
    from scanflow_core.improve.planner import PlannerRules, explain_action

    result = DriftDetector.load(detector).test(_pixels(batch))
    rules = PlannerRules.from_workflow(ctx.run.workflow) if ctx is not None else PlannerRules()
    planned = explain_action(result.anomalous_share, None, rules)
    report = {"action": planned.action, "reason": planned.reason, "summary": result.summary()}
    drift_report.write_text(json.dumps(report | result.to_dict(), indent=2, default=str) + "\n", "utf-8")
    return {
        "score": result.score,
        "reference_score": result.reference_score,
        "drifted": float(result.drifted),
        "alert": float(planned.action in ("alert", "retrain")),
        "p_value": result.p_value,
        "anomalous_share": result.anomalous_share,
        "retrain": float(planned.action == "retrain"),
    }


# ------------------------------------------------------------------------------------------ label


def label(
    batch: Path,
    batch_truth: Path,
    model: Path,
    detector: Path,
    queue: Path,
    labelled: Path,
    k: int = 80,
    seed: int = 0,
    strategy: str = "both",
) -> dict[str, float]:
    """Pick the ``k`` most informative digits of the new ``batch`` (``pick_informative``: the drift
    detector's reconstruction error and the model's uncertainty, kept diverse), queue them for labelling
    in a durable label queue (``queue/labels.db``; ``scanflow label`` and its web page answer it), answer
    the queue with their true labels (the demo's stand-in for a person), and export the pairs."""
    import torch

    from scanflow_core.checking.drift import DriftDetector
    from scanflow_core.improve import LabelQueue, answer_with, pick_informative

    x = _pixels(batch)
    truth = np.load(batch_truth, allow_pickle=False)["y"]
    if len(truth) != len(x):
        raise ValueError(f"{batch_truth.name} has {len(truth)} labels for {len(x)} rows of {batch.name}")
    net = _restore(model)

    def probabilities(rows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            logits = net(torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32)))
        return torch.softmax(logits, dim=1).numpy().astype(np.float64)

    chosen = pick_informative(
        x,
        k,
        detector=DriftDetector.load(detector),
        model=probabilities,
        strategy=strategy,  # type: ignore[arg-type]
        seed=seed,
    )
    queue.mkdir(parents=True, exist_ok=True)
    with LabelQueue(queue / "labels.db", classes=CLASSES) as pending:
        pending.enqueue_many(
            x[chosen],
            ids=[f"batch-{i}" for i in chosen],
            metadata=[{"row": int(i)} for i in chosen],
            priorities=np.arange(len(chosen), 0, -1, dtype=np.float64),  # most informative first
        )
        answered = answer_with(pending, lambda sample: int(truth[sample.metadata["row"]]), labeller="demo")
        pairs = pending.export(labelled)
    before = float(np.mean(probabilities(x[chosen]).argmax(axis=1) == truth[chosen]))
    return {"rows": len(pairs), "answered": float(answered), "model_accuracy_on_picked": before}


# ------------------------------------------------------------------------------------------ retrain


def retrain(
    train: Path,
    labelled: Path,
    candidate: Path,
    seed: int = 0,
    epochs: int = 30,
    lr: float = 0.01,
    hidden: int = 64,
    new_weight: int = 3,
) -> dict[str, float]:
    """Train a candidate on the training data and the newly labelled digits (each new digit counted
    ``new_weight`` times: there are few of them), with the training step's settings."""
    if new_weight < 1:
        raise ValueError(f"new_weight must be a whole number >= 1, not {new_weight}")
    x_train, y_train = _load(train)
    with np.load(labelled, allow_pickle=False) as pairs:
        x_new, y_new = pairs["X"].astype(np.float32), pairs["y"].astype(np.int64)
    x = np.concatenate([x_train, *[x_new] * new_weight])
    y = np.concatenate([y_train, *[y_new] * new_weight])
    with tempfile.TemporaryDirectory(prefix="digits-retrain-") as folder:
        data = Path(folder) / "train.npz"
        _save(data, x, y)
        result = train_model(train=data, model=candidate, seed=seed, epochs=epochs, lr=lr, hidden=hidden)
    return {**result, "rows": float(len(y)), "new_rows": float(len(y_new))}


# ------------------------------------------------------------------------------------------ helpers


def _pixels(path: Path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as arrays:
        if "X" not in arrays.files:
            raise ValueError(f"{path.name}: no array 'X' (the pixels)")
        x: np.ndarray = arrays["X"].astype(np.float32)
    if x.ndim != 2 or x.shape[1] != N_FEATURES:
        raise ValueError(f"{path.name}: X has shape {x.shape}, expected (rows, {N_FEATURES})")
    return x
