"""The steps of the digits workflow: ingest, validate, split, train, evaluate and test.

Each step is a plain function that Scanflow calls in process (``call: digits_steps:NAME``). It receives
its params by name, each input as the ``Path`` of an existing file and each output as the ``Path`` it must
write; the ``dict`` it returns is recorded as the step's metrics.

Datasets are ``.npz`` files with two arrays: ``X`` (float32, ``rows x 64`` pixels scaled to [0, 1]) and
``y`` (int64 labels 0-9). torch and scikit-learn are imported inside the steps that use them, so importing
this module stays cheap.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from scanflow_core import log_metric, log_params

if TYPE_CHECKING:
    import torch

__all__ = ["evaluate", "ingest", "split", "test", "train", "validate"]

N_FEATURES = 64
CLASSES = tuple(range(10))

Dataset = tuple[np.ndarray, np.ndarray]


def ingest(digits: Path) -> dict[str, int]:
    """Load scikit-learn's bundled digits (1797 8x8 images, offline) and write them to ``digits``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    _save(digits, x, y)
    return {"rows": int(x.shape[0]), "features": int(x.shape[1]), "classes": len(np.unique(y))}


def validate(digits: Path, report: Path, min_class_ratio: float = 0.5) -> dict[str, float | int]:
    """Check shape, value range, NaNs, label set and class balance; write a JSON ``report``.

    Raises ``ValueError`` naming the first problem found, so bad data never reaches the split.
    ``min_class_ratio`` is the smallest allowed ratio of the rarest class's count to the commonest's.
    """
    x, y = _load(digits)
    if x.ndim != 2 or x.shape[1] != N_FEATURES:
        raise ValueError(f"{digits.name}: X has shape {x.shape}, expected (rows, {N_FEATURES})")
    if y.shape != (x.shape[0],):
        raise ValueError(f"{digits.name}: y has shape {y.shape}, expected ({x.shape[0]},), one label per row")
    if not np.issubdtype(x.dtype, np.floating) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{digits.name}: X is {x.dtype} and y is {y.dtype}, expected float X and integer y")
    nan_count = int(np.isnan(x).sum())
    if nan_count:
        raise ValueError(f"{digits.name}: X has {nan_count} NaN values")
    low, high = float(x.min()), float(x.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"{digits.name}: X values lie in [{low:g}, {high:g}], expected [0, 1]")
    labels = {int(label) for label in np.unique(y)}
    if labels != set(CLASSES):
        unknown, missing = sorted(labels - set(CLASSES)), sorted(set(CLASSES) - labels)
        raise ValueError(
            f"{digits.name}: label set is wrong: unknown labels {unknown}, missing labels {missing}"
        )
    counts = np.bincount(y, minlength=len(CLASSES))
    balance = float(counts.min() / counts.max())
    if balance < min_class_ratio:
        raise ValueError(
            f"{digits.name}: classes are imbalanced: rarest class {counts.argmin()} has {counts.min()} "
            f"rows, commonest {counts.argmax()} has {counts.max()} (ratio {balance:.2f} < {min_class_ratio})"
        )
    result = {"rows": int(x.shape[0]), "nan_values": nan_count, "class_balance": round(balance, 4)}
    document = {**result, "x_min": low, "x_max": high, "class_counts": counts.tolist(), "ok": True}
    report.write_text(json.dumps(document, indent=2) + "\n")
    return result


def split(
    digits: Path,
    train: Path,
    eval: Path,  # named after its artifact: Scanflow passes outputs by name
    test: Path,
    incoming: Path | None = None,
    seed: int = 0,
    eval_fraction: float = 0.15,
    test_fraction: float = 0.15,
    incoming_fraction: float = 0.0,
) -> dict[str, int]:
    """Split ``digits`` into stratified, seeded ``train``, ``eval`` and ``test`` sets.

    With ``incoming_fraction`` above 0, that share of the rows is first set aside as ``incoming``:
    digits no step trains on, which the production part of the workflow receives as new data.
    """
    from sklearn.model_selection import train_test_split

    if eval_fraction <= 0 or test_fraction <= 0 or eval_fraction + test_fraction >= 1:
        raise ValueError(
            f"eval_fraction ({eval_fraction}) and test_fraction ({test_fraction}) must be positive "
            "and sum to less than 1"
        )
    if not 0 <= incoming_fraction < 1 or (incoming_fraction > 0) != (incoming is not None):
        raise ValueError(
            f"incoming_fraction ({incoming_fraction}) must lie in [0, 1), and above 0 exactly when the "
            "step has an 'incoming' output"
        )
    params = {"seed": seed, "eval_fraction": eval_fraction, "test_fraction": test_fraction}
    log_params(params | ({"incoming_fraction": incoming_fraction} if incoming is not None else {}))
    x, y = _load(digits)
    sizes: dict[str, int] = {}
    if incoming is not None:
        x, x_new, y, y_new = train_test_split(
            x, y, test_size=incoming_fraction, stratify=y, random_state=seed
        )
        _save(incoming, x_new, y_new)
        sizes["incoming_size"] = len(y_new)
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=seed
    )
    x_train, x_eval, y_train, y_eval = train_test_split(
        x_rest, y_rest, test_size=eval_fraction / (1 - test_fraction), stratify=y_rest, random_state=seed
    )
    _save(train, x_train, y_train)
    _save(eval, x_eval, y_eval)
    _save(test, x_test, y_test)
    return {"train_size": len(y_train), "eval_size": len(y_eval), "test_size": len(y_test), **sizes}


def train(
    train: Path,
    model: Path,
    seed: int = 0,
    epochs: int = 30,
    lr: float = 0.01,
    hidden: int = 64,
    batch_size: int = 64,
    threads: int = 1,
) -> dict[str, float]:
    """Train a one-hidden-layer MLP on ``train``; save its weights and architecture to ``model``.

    Logs ``loss`` (mean cross-entropy over the epoch) at every epoch.
    """
    import torch
    from torch import nn

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    x, y = _tensors(_load(train))
    config = {"in_features": N_FEATURES, "hidden": hidden, "classes": len(CLASSES)}
    net = _build(config)
    log_params({**config, "parameters": sum(p.numel() for p in net.parameters()), "batch_size": batch_size})

    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    order = torch.Generator().manual_seed(seed)
    epoch_loss = float("nan")
    for epoch in range(epochs):
        net.train()
        total = 0.0
        for batch in torch.randperm(len(y), generator=order).split(batch_size):
            optimizer.zero_grad()
            loss = loss_fn(net(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        epoch_loss = total / len(y)
        log_metric("loss", epoch_loss, step=epoch)

    torch.save({"config": config, "state_dict": net.state_dict()}, model)
    net.eval()
    with torch.no_grad():
        accuracy = (net(x).argmax(dim=1) == y).float().mean().item()
    return {"train_accuracy": accuracy, "final_loss": epoch_loss}


def evaluate(
    model: Path,
    eval: Path,  # named after its artifact: Scanflow passes inputs by name
    eval_metrics: Path,
) -> dict[str, float]:
    """Score ``model`` on the evaluation set: ``accuracy``, ``macro_f1`` and ``loss``."""
    return _score(model, eval, eval_metrics)


def test(model: Path, test: Path, test_metrics: Path) -> dict[str, float]:
    """Score ``model`` once on the held-out test set: ``accuracy``, ``macro_f1`` and ``loss``."""
    return _score(model, test, test_metrics)


def _score(model: Path, data: Path, metrics: Path) -> dict[str, float]:
    import torch
    from sklearn.metrics import confusion_matrix, f1_score

    net = _restore(model)
    x, y = _tensors(_load(data))
    with torch.no_grad():
        logits = net(x)
        loss = torch.nn.functional.cross_entropy(logits, y).item()
    predicted = logits.argmax(dim=1).numpy()
    truth = y.numpy()
    result = {
        "accuracy": float((predicted == truth).mean()),
        "macro_f1": float(f1_score(truth, predicted, average="macro", labels=CLASSES, zero_division=0)),
        "loss": loss,
    }
    confusion = confusion_matrix(truth, predicted, labels=CLASSES)
    metrics.write_text(json.dumps({**result, "rows": len(truth), "confusion": confusion.tolist()}) + "\n")
    return result


def _build(config: dict[str, int]) -> torch.nn.Module:
    from torch import nn

    return nn.Sequential(
        nn.Linear(config["in_features"], config["hidden"]),
        nn.ReLU(),
        nn.Linear(config["hidden"], config["classes"]),
    )


def _restore(path: Path) -> torch.nn.Module:
    import torch

    saved: dict[str, Any] = torch.load(path, weights_only=True)
    net = _build(saved["config"])
    net.load_state_dict(saved["state_dict"])
    return net.eval()


def _tensors(data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    x, y = data
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(y.astype(np.int64))


def _save(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    # A file object, so numpy writes exactly ``path`` instead of appending ``.npz`` to it.
    with path.open("wb") as file:
        np.savez(file, X=x, y=y)


def _load(path: Path) -> Dataset:
    with np.load(path, allow_pickle=False) as arrays:
        missing = [key for key in ("X", "y") if key not in arrays.files]
        if missing:
            raise ValueError(f"{path.name}: missing arrays {missing}; expected 'X' and 'y'")
        return arrays["X"], arrays["y"]
