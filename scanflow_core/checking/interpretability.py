"""``use: importance``: permutation feature importance of a trained classifier.

Each feature's importance is how much accuracy drops when that feature's column is shuffled
(``repeats`` times; mean and standard deviation). A model that leans on one feature far more than on
all others together often learned a shortcut or a leaked column; one whose importances are all
near zero ignores its inputs.

Options (the model and data come as in :func:`scanflow_core.checking.models.model_and_data`):
    model: the model artifact (default: the target). loader: ``module:function`` returning the
        model (default ``scanflow_core.checking.models:torch_mlp``; contract in that module).
    data: labelled data (``.npz`` with ``X``/``y`` or a table with ``label``) (default: the target).
    repeats: shuffles per feature (default ``5``). seed: for the shuffles (default ``0``).
    max_rows: rows used at most, a seeded sample (default ``2000``).
    max_single_feature_share: fail when one feature carries more than this share of the total
        positive importance (default ``0.5``).
    min_top_importance: fail when the largest importance is below this drop in accuracy
        (default: none).
    top_k: how many top importances become metrics (default ``5``).

Metrics: ``baseline_accuracy``, ``top_importance``, ``top_share``, ``importance.<feature>`` for the
top ``top_k``; details: every feature's importance and standard deviation, ranked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from scanflow_core.checking.data import CheckOptionError, option
from scanflow_core.checking.models import LoadedModel, model_and_data
from scanflow_core.records import CheckResult

__all__ = ["check", "permutation_importance"]


def check(step_run: Any, check: Any, target: str, path: Path) -> CheckResult:
    label, options = check.label, check.options
    repeats = option(options, "repeats", int, 5, check=label)
    seed = option(options, "seed", int, 0, check=label)
    max_rows = option(options, "max_rows", int, 2000, check=label)
    top_k = option(options, "top_k", int, 5, check=label)
    max_share = option(options, "max_single_feature_share", (int, float), 0.5, check=label)
    min_top = option(options, "min_top_importance", (int, float), None, check=label)
    for name, value in (("repeats", repeats), ("max_rows", max_rows), ("top_k", top_k)):
        if value < 1:
            raise CheckOptionError(f"check {label!r}: option {name!r} must be at least 1, not {value}")
    if not 0 < max_share <= 1:
        raise CheckOptionError(
            f"check {label!r}: option 'max_single_feature_share' must lie in (0, 1], not {max_share}"
        )

    model, x, y, names = model_and_data(step_run, check, target, path)
    rng = np.random.default_rng(seed)
    if len(y) > max_rows:
        keep = rng.choice(len(y), max_rows, replace=False)
        x, y = x[keep], y[keep]
    baseline, means, stds = permutation_importance(model, x, y, repeats, rng)

    order = np.argsort(-means, kind="stable")
    positive = np.clip(means, 0, None)
    total = float(positive.sum())
    top = int(order[0])
    top_share = float(positive[top] / total) if total > 0 else 0.0
    metrics: dict[str, float] = {
        "baseline_accuracy": baseline,
        "top_importance": float(means[top]),
        "top_share": round(top_share, 6),
    }
    metrics.update({f"importance.{names[i]}": round(float(means[i]), 6) for i in order[:top_k]})
    ranked = [
        {"feature": names[i], "importance": round(float(means[i]), 6), "std": round(float(stds[i]), 6)}
        for i in order
    ]
    problems = []
    if top_share > max_share:
        problems.append(
            f"{names[top]!r} carries {top_share:.0%} of the importance (> {max_share:.0%}): "
            "a shortcut or a leaked feature?"
        )
    if min_top is not None and means[top] < min_top:
        problems.append(
            f"the top importance {means[top]:.4f} is below {min_top:g}: does the model ignore its inputs?"
        )
    leaders = ", ".join(f"{r['feature']} {r['importance']:.3f}" for r in ranked[:3])
    summary = f"baseline accuracy {baseline:.3f}; top features {leaders}"
    summary += (": " + "; ".join(problems)) if problems else ""
    details = {"rows": len(y), "repeats": repeats, "seed": seed, "importances": ranked}
    return CheckResult("importance", target, not problems, summary, metrics=metrics, details=details)


def permutation_importance(
    model: LoadedModel, x: np.ndarray, y: np.ndarray, repeats: int, rng: np.random.Generator
) -> tuple[float, np.ndarray, np.ndarray]:
    """Baseline accuracy, and the mean and standard deviation of each feature's accuracy drop.

    All ``repeats`` shuffles of one feature are scored in a single ``predict`` call.
    """
    n, features = x.shape
    baseline = float(np.mean(np.asarray(model.predict(x)) == y))
    means, stds = np.zeros(features), np.zeros(features)
    stacked = np.tile(x, (repeats, 1))
    for j in range(features):
        stacked[:, j] = np.concatenate([x[rng.permutation(n), j] for _ in range(repeats)])
        hits = np.asarray(model.predict(stacked)).reshape(repeats, n) == y
        stacked[:, j] = np.tile(x[:, j], repeats)
        drops = baseline - hits.mean(axis=1)
        means[j], stds[j] = drops.mean(), drops.std()
    return baseline, means, stds
