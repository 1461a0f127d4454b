"""``use: robustness``: accuracy under a small adversarial perturbation (FGSM) of a torch model.

The fast gradient sign method moves every input by ``epsilon`` in the direction that most raises
the model's loss, ``x + epsilon * sign(grad_x loss)``, then clips to the valid range. For
comparison, the same-sized random sign noise is applied too: a model far worse under FGSM than under
noise is brittle, not merely noisy.

Options (the model and data come as in :func:`scanflow_core.checking.models.model_and_data`):
    model, loader, data, label: as for ``importance``; the loader must give a torch module
        (``.module``, see :mod:`scanflow_core.checking.models`): the default
        ``scanflow_core.checking.models:torch_mlp`` does.
    epsilon: the perturbation size in input units (default ``0.05``, for inputs scaled to [0, 1]).
    clip: ``[low, high]`` the inputs must stay in (default ``[0, 1]``; ``null``: no clipping).
    min_accuracy: the lowest allowed adversarial accuracy (default: none).
    max_drop: the largest allowed drop, clean minus adversarial accuracy (default ``0.2``
        when ``min_accuracy`` is not given).
    max_rows: rows used at most, a seeded sample (default ``5000``); seed: (default ``0``).

Metrics: ``clean_accuracy``, ``adversarial_accuracy``, ``noise_accuracy``, ``drop``, ``epsilon``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from scanflow_core.checking.data import CheckOptionError, option
from scanflow_core.checking.models import model_and_data
from scanflow_core.records import CheckResult

__all__ = ["check", "fgsm"]


def check(step_run: Any, check: Any, target: str, path: Path) -> CheckResult:
    label, options = check.label, check.options
    epsilon = float(option(options, "epsilon", (int, float), 0.05, check=label))
    clip = option(options, "clip", (list, type(None)), [0.0, 1.0], check=label)
    min_accuracy = option(options, "min_accuracy", (int, float), None, check=label)
    default_drop = None if min_accuracy is not None else 0.2
    max_drop = option(options, "max_drop", (int, float), default_drop, check=label)
    max_rows = option(options, "max_rows", int, 5000, check=label)
    seed = option(options, "seed", int, 0, check=label)
    if epsilon < 0:
        raise CheckOptionError(f"check {label!r}: option 'epsilon' must be >= 0, not {epsilon}")
    if clip is not None and (len(clip) != 2 or not all(_number(v) for v in clip) or clip[0] >= clip[1]):
        raise CheckOptionError(f"check {label!r}: option 'clip' must be [low, high] or null, not {clip!r}")
    if max_rows < 1:
        raise CheckOptionError(f"check {label!r}: option 'max_rows' must be at least 1, not {max_rows}")

    model, x, y, _ = model_and_data(step_run, check, target, path)
    if model.module is None:
        raise CheckOptionError(
            f"check {label!r}: option 'loader' must give a torch model (a torch.nn.Module, or an object "
            "with .module) to take gradients; the default scanflow_core.checking.models:torch_mlp does"
        )
    if clip is not None and (x.min() < clip[0] or x.max() > clip[1]):
        raise CheckOptionError(
            f"check {label!r}: the inputs lie in [{x.min():g}, {x.max():g}], outside option 'clip' {clip}; "
            "scale them or set clip"
        )
    rng = np.random.default_rng(seed)
    if len(y) > max_rows:
        keep = rng.choice(len(y), max_rows, replace=False)
        x, y = x[keep], y[keep]
    bounds = (float(clip[0]), float(clip[1])) if clip is not None else None
    adversarial = fgsm(model.module, x, y, epsilon, bounds)
    noisy = x + epsilon * rng.choice([-1.0, 1.0], size=x.shape)
    noisy = np.clip(noisy, *bounds) if bounds else noisy

    clean_accuracy = _accuracy(model.predict(x), y)
    adversarial_accuracy = _accuracy(model.predict(adversarial), y)
    noise_accuracy = _accuracy(model.predict(noisy.astype(np.float32)), y)
    drop = clean_accuracy - adversarial_accuracy
    metrics = {
        "clean_accuracy": clean_accuracy,
        "adversarial_accuracy": adversarial_accuracy,
        "noise_accuracy": noise_accuracy,
        "drop": round(drop, 6),
        "epsilon": epsilon,
    }
    problems = []
    if min_accuracy is not None and adversarial_accuracy < min_accuracy:
        problems.append(f"adversarial accuracy {adversarial_accuracy:.3f} < {min_accuracy:g}")
    if max_drop is not None and drop > max_drop:
        problems.append(f"drop {drop:.3f} > {max_drop:g}")
    summary = (
        f"FGSM at epsilon {epsilon:g}: accuracy {clean_accuracy:.3f} -> {adversarial_accuracy:.3f} "
        f"(random noise {noise_accuracy:.3f})"
    )
    summary += (": " + ", ".join(problems)) if problems else ""
    details = {"rows": len(y), "clip": clip, "min_accuracy": min_accuracy, "max_drop": max_drop}
    return CheckResult("robustness", target, not problems, summary, metrics=metrics, details=details)


def fgsm(
    module: Any,
    x: np.ndarray,
    y: np.ndarray,
    epsilon: float,
    clip: tuple[float, float] | None = (0.0, 1.0),
    batch_size: int = 1024,
) -> np.ndarray:
    """``x`` moved by ``epsilon`` along the sign of the cross-entropy loss's gradient, clipped."""
    import torch

    module.eval()
    labels = torch.as_tensor(np.asarray(y).astype(np.int64))
    inputs = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))
    out = []
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start : start + batch_size].clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(module(batch), labels[start : start + batch_size])
        (gradient,) = torch.autograd.grad(loss, batch)
        moved = batch.detach() + epsilon * gradient.sign()
        out.append(moved.clamp(*clip) if clip is not None else moved)
    result: np.ndarray = torch.cat(out).numpy() if out else np.empty_like(x, dtype=np.float32)
    return result


def _accuracy(predicted: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(np.asarray(predicted) == truth))


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
