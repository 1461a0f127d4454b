"""``use: slices``: a metric per value of a slice column, and how far apart the slices are.

The target is a table of predictions (CSV, Parquet, JSON lines, …) with one row per example: the
slice column (a group such as ``sex`` or ``region``), the true label and the prediction.

Options:
    slice: the slice column, or a list of them (one result each) (required).
    label: the true-label column (default ``label``).
    prediction: the prediction column (default ``prediction``).
    metric: ``accuracy`` (default), ``f1``, ``precision``, ``recall`` or ``positive_rate``.
    positive: the positive class for ``f1`` / ``precision`` / ``recall`` / ``positive_rate``
        (default ``1`` when the labels are 0/1 or booleans; with more classes, ``f1``, ``precision``
        and ``recall`` are macro-averaged over the classes a slice holds, and ``positive_rate`` needs it).
    max_disparity: the largest allowed gap, best slice minus worst (default ``0.1``).
    min_ratio: the smallest allowed ratio worst / best, e.g. ``0.8`` for the four-fifths rule
        (default: none; the ratio is reported anyway).
    min_size: slices with fewer rows are reported but not compared (default ``10``).

Metrics: ``disparity``, ``ratio``, ``overall``, ``slices`` and ``<metric>.<value>`` per slice;
details: the per-slice table (value, rows, metric, whether it counted).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scanflow_core.checking.data import CheckOptionError, load_frame, option
from scanflow_core.records import CheckResult

__all__ = ["METRICS", "check", "slice_metric"]

METRICS = ("accuracy", "f1", "precision", "recall", "positive_rate")
MISSING = "<missing>"


def check(step_run: Any, check: Any, target: str, path: Path) -> list[CheckResult]:
    label = check.label
    options = check.options
    columns = option(options, "slice", (str, list), check=label)
    columns = [columns] if isinstance(columns, str) else columns
    if not columns or not all(isinstance(c, str) for c in columns):
        raise CheckOptionError(f"check {label!r}: option 'slice' must name a column or a list of columns")
    truth_column = option(options, "label", str, "label", check=label)
    predicted_column = option(options, "prediction", str, "prediction", check=label)
    metric = option(options, "metric", str, "accuracy", check=label)
    if metric not in METRICS:
        raise CheckOptionError(f"check {label!r}: option 'metric' must be one of {METRICS}, not {metric!r}")
    max_disparity = float(option(options, "max_disparity", (int, float), 0.1, check=label))
    min_ratio = option(options, "min_ratio", (int, float), None, check=label)
    min_size = option(options, "min_size", int, 10, check=label)

    frame = load_frame(path)
    missing = [c for c in (*columns, truth_column, predicted_column) if c not in frame.columns]
    if missing:
        raise CheckOptionError(
            f"check {label!r}: {target!r} has no column {missing[0]!r} (options 'slice', 'label', "
            f"'prediction'; its columns: {list(frame.columns)})"
        )
    truth, predicted = frame[truth_column].to_numpy(), frame[predicted_column].to_numpy()
    positive = _positive(options, truth, metric, label)
    overall = slice_metric(metric, truth, predicted, positive)
    results = []
    for column in columns:
        groups = frame[column].astype(object).where(frame[column].notna(), MISSING).astype(str)
        table = []
        for value, index in groups.groupby(groups, sort=True).indices.items():
            score = slice_metric(metric, truth[index], predicted[index], positive)
            counted = len(index) >= min_size and not math.isnan(score)
            table.append({"value": value, "rows": len(index), metric: score, "counted": counted})
        results.append(_verdict(target, column, metric, overall, table, max_disparity, min_ratio, min_size))
    return results


def _verdict(
    target: str,
    column: str,
    metric: str,
    overall: float,
    table: list[dict[str, Any]],
    max_disparity: float,
    min_ratio: float | None,
    min_size: int,
) -> CheckResult:
    counted = [row for row in table if row["counted"]]
    metrics: dict[str, float] = {"overall": overall, "slices": float(len(table))}
    metrics.update({f"{metric}.{_key(row['value'])}": row[metric] for row in table})
    details: dict[str, Any] = {"column": column, "metric": metric, "min_size": min_size, "slices": table}
    if len(counted) < 2:
        summary = f"{column!r}: fewer than two slices with {min_size}+ rows; nothing to compare"
        return CheckResult("slices", target, True, summary, metrics=metrics, details=details)
    worst = min(counted, key=lambda row: row[metric])
    best = max(counted, key=lambda row: row[metric])
    disparity = best[metric] - worst[metric]
    ratio = worst[metric] / best[metric] if best[metric] > 0 else 1.0
    metrics.update({"disparity": round(disparity, 6), "ratio": round(ratio, 6)})
    details.update({"worst": worst["value"], "best": best["value"]})
    problems = []
    if disparity > max_disparity:
        problems.append(f"disparity {disparity:.3f} > {max_disparity:g}")
    if min_ratio is not None and ratio < min_ratio:
        problems.append(f"ratio {ratio:.3f} < {min_ratio:g}")
    spread = (
        f"{metric} by {column!r}: {worst['value']} {worst[metric]:.3f} (worst) .. "
        f"{best['value']} {best[metric]:.3f} (best) over {len(counted)} slices"
    )
    summary = spread + (": " + ", ".join(problems) if problems else f", disparity {disparity:.3f}")
    return CheckResult("slices", target, not problems, summary, metrics=metrics, details=details)


def slice_metric(metric: str, truth: np.ndarray, predicted: np.ndarray, positive: Any = None) -> float:
    """``metric`` of ``predicted`` against ``truth``; NaN where it is undefined (no rows)."""
    if len(truth) == 0:
        return math.nan
    if metric == "accuracy":
        return float(np.mean(truth == predicted))
    if metric == "positive_rate":
        return float(np.mean(predicted == positive))
    if positive is not None:
        return _binary(metric, truth == positive, predicted == positive)
    classes = pd.unique(np.concatenate([truth, predicted]))
    return float(np.mean([_binary(metric, truth == c, predicted == c) for c in classes]))


def _binary(metric: str, truth: np.ndarray, predicted: np.ndarray) -> float:
    hits = float(np.sum(truth & predicted))
    precision = hits / predicted.sum() if predicted.sum() else 0.0
    recall = hits / truth.sum() if truth.sum() else 0.0
    if metric == "precision":
        return precision
    if metric == "recall":
        return recall
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def _positive(options: dict[str, Any], truth: np.ndarray, metric: str, label: str) -> Any:
    if "positive" in options:
        return options["positive"]
    if metric == "accuracy":
        return None
    values = set(pd.unique(truth).tolist())
    if values <= {0, 1} or values <= {False, True}:
        return 1
    if metric == "positive_rate":
        raise CheckOptionError(
            f"check {label!r}: metric 'positive_rate' needs the option 'positive' (labels are not 0/1)"
        )
    return None


def _key(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", value) or "_"
