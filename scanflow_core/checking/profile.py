"""``use: profile``: descriptive statistics of a table, per column and per slice, and its outliers.

MLSpec's data-analysis stage as a check: what the data looks like, recorded with the run.

Options:
    slice: a column whose values split the rows into slices, each profiled on its own (optional).
    outliers: ``iqr`` (default: outside ``[q1 - factor·IQR, q3 + factor·IQR]``), ``zscore``
        (``|x - mean| > factor·std``) or ``none``.
    factor: the outlier factor (default ``1.5`` for ``iqr``, ``3`` for ``zscore``).
    max_missing: the largest share of missing values allowed in any column (default: none).
    max_outliers: the largest share of outlying values allowed in any numeric column (default: none).
    top: how many of the most frequent values to keep per column (default ``5``).
    max_slices: at most this many slices, the largest first (default ``50``).

Metrics: ``rows``, ``columns``, ``missing_share`` (missing cells / all cells), ``outlier_share``
(outlying numeric cells / present numeric cells), ``max_column_missing_share``,
``max_column_outlier_share`` and ``slices``. Details: per-column statistics (count, missing,
mean, std, min, quartiles, max, distinct, top values, outliers), a summary per slice, the
columns over a threshold, and the full profile written to ``<step>/checks/profile-<target>.json``
(listed in ``artifacts``). The result passes unless a ``max_*`` threshold is exceeded.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scanflow_core.checking.data import CheckOptionError, load_frame, option
from scanflow_core.records import CheckResult

__all__ = ["OUTLIER_METHODS", "check", "profile_frame"]

OUTLIER_METHODS = ("iqr", "zscore", "none")
DEFAULT_FACTOR = {"iqr": 1.5, "zscore": 3.0, "none": 0.0}
MISSING = "<missing>"

Bounds = dict[str, tuple[float, float]]


def check(step_run: Any, check: Any, target: str, path: Path) -> CheckResult:
    label = check.label
    options = check.options
    slice_column = option(options, "slice", str, None, check=label)
    method = option(options, "outliers", str, "iqr", check=label)
    if method not in OUTLIER_METHODS:
        raise CheckOptionError(
            f"check {label!r}: option 'outliers' must be one of {OUTLIER_METHODS}, not {method!r}"
        )
    factor = float(option(options, "factor", (int, float), DEFAULT_FACTOR[method], check=label))
    max_missing = option(options, "max_missing", (int, float), None, check=label)
    max_outliers = option(options, "max_outliers", (int, float), None, check=label)
    for name, share in (("max_missing", max_missing), ("max_outliers", max_outliers)):
        if share is not None and not 0 <= share <= 1:
            raise CheckOptionError(f"check {label!r}: option {name!r} is a share from 0 to 1, not {share!r}")
    top = option(options, "top", int, 5, check=label)
    max_slices = option(options, "max_slices", int, 50, check=label)

    frame = load_frame(path)
    if slice_column is not None and slice_column not in frame.columns:
        raise CheckOptionError(
            f"check {label!r}: {target!r} has no column {slice_column!r} (option 'slice'; "
            f"its columns: {[str(c) for c in frame.columns]})"
        )
    profile = profile_frame(
        frame, slice_column=slice_column, outliers=method, factor=factor, top=top, max_slices=max_slices
    )
    report = Path(step_run.directory) / "checks" / f"profile-{_slug(target)}.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(profile, indent=2), encoding="utf-8")
    return _verdict(target, profile, max_missing, max_outliers, report)


def profile_frame(
    frame: pd.DataFrame,
    *,
    slice_column: str | None = None,
    outliers: str = "iqr",
    factor: float | None = None,
    top: int = 5,
    max_slices: int = 50,
) -> dict[str, Any]:
    """The full profile of ``frame`` as JSON-ready data (NaN becomes ``None``).

    Outlier bounds come from the whole table; a slice counts the values outside them, so the
    slices' outliers add up to the table's.
    """
    factor = DEFAULT_FACTOR[outliers] if factor is None else factor
    bounds = _bounds(frame, outliers, factor)
    profile: dict[str, Any] = {
        "rows": len(frame),
        "columns": len(frame.columns),
        "outliers": {"method": outliers, "factor": factor},
        **_totals(frame, bounds),
        "column_stats": {str(c): _column(frame[c], bounds.get(str(c)), top) for c in frame.columns},
    }
    if slice_column is not None:
        keys = frame[slice_column].astype(object).where(frame[slice_column].notna(), MISSING).astype(str)
        groups = sorted(keys.groupby(keys).indices.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        slices = {}
        for value, index in groups[:max_slices]:
            part = frame.iloc[index]
            slices[value] = {
                "rows": len(part),
                "share": _num(len(part) / len(frame)),
                **_totals(part, bounds),
                "column_stats": {
                    str(c): _column(part[c], bounds.get(str(c)), top)
                    for c in frame.columns
                    if c != slice_column
                },
            }
        profile["slice"] = {"column": slice_column, "count": len(groups), "shown": len(slices)}
        profile["slices"] = slices
    return profile


def _numeric(series: pd.Series) -> bool:
    return bool(pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series))


def _bounds(frame: pd.DataFrame, method: str, factor: float) -> Bounds:
    """Per numeric column, the range outside which a value is an outlier."""
    bounds: Bounds = {}
    if method == "none":
        return bounds
    for column in frame.columns:
        series = frame[column]
        if not _numeric(series):
            continue
        values = _finite(series)
        if values.empty:
            continue
        if method == "iqr":
            q1, q3 = float(values.quantile(0.25)), float(values.quantile(0.75))
            spread = q3 - q1
            bounds[str(column)] = (q1 - factor * spread, q3 + factor * spread)
        else:
            mean, std = float(values.mean()), float(values.std(ddof=0))
            bounds[str(column)] = (mean - factor * std, mean + factor * std)
    return bounds


def _finite(series: pd.Series) -> pd.Series:
    """The present, finite values of a numeric column, as floats (statistics ignore ±inf)."""
    values = series.dropna().astype(float)
    return values[np.isfinite(values.to_numpy())]


def _outliers(series: pd.Series, bound: tuple[float, float] | None) -> int:
    if bound is None:
        return 0
    values = series.dropna().astype(float)
    return int(((values < bound[0]) | (values > bound[1])).sum())


def _totals(frame: pd.DataFrame, bounds: Bounds) -> dict[str, Any]:
    cells = frame.size
    missing = int(frame.isna().to_numpy().sum()) if cells else 0
    present = outlying = 0
    for column in frame.columns:
        if str(column) in bounds:
            series = frame[column]
            present += int(series.notna().sum())
            outlying += _outliers(series, bounds[str(column)])
    return {
        "missing_share": _num(missing / cells) if cells else 0.0,
        "outlier_share": _num(outlying / present) if present else 0.0,
    }


def _column(series: pd.Series, bound: tuple[float, float] | None, top: int) -> dict[str, Any]:
    count = int(series.notna().sum())
    missing = len(series) - count
    values = series.dropna()
    stats: dict[str, Any] = {
        "dtype": str(series.dtype),
        "count": count,
        "missing": missing,
        "missing_share": _num(missing / len(series)) if len(series) else 0.0,
        "distinct": int(values.nunique()),
        "top": [
            {"value": _plain(value), "count": int(n)} for value, n in values.value_counts().head(top).items()
        ],
    }
    if _numeric(series):
        numbers = _finite(series)
        if len(numbers) < count:
            stats["infinite"] = count - len(numbers)
        quartiles = numbers.quantile([0.25, 0.5, 0.75]) if len(numbers) else pd.Series([np.nan] * 3)
        stats.update(
            {
                "mean": _num(numbers.mean()),
                "std": _num(numbers.std()),
                "min": _num(numbers.min()),
                "q1": _num(quartiles.iloc[0]),
                "median": _num(quartiles.iloc[1]),
                "q3": _num(quartiles.iloc[2]),
                "max": _num(numbers.max()),
            }
        )
        if bound is not None:
            outlying = _outliers(series, bound)
            stats["outliers"] = outlying
            stats["outlier_share"] = _num(outlying / count) if count else 0.0
            stats["outlier_bounds"] = [_num(bound[0]), _num(bound[1])]
    elif count and pd.api.types.is_datetime64_any_dtype(series):
        stats.update({"min": str(values.min()), "max": str(values.max())})
    return stats


def _num(value: Any) -> float | None:
    """A float JSON can hold: NaN and infinities become ``None``."""
    number = float(value)
    return round(number, 6) if math.isfinite(number) else None


def _plain(value: Any) -> Any:
    """A value as JSON holds it (NumPy scalars unwrapped, anything else unusual as text)."""
    item = getattr(value, "item", None)
    value = item() if callable(item) else value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "data"


def _verdict(
    target: str,
    profile: dict[str, Any],
    max_missing: float | None,
    max_outliers: float | None,
    report: Path,
) -> CheckResult:
    columns: dict[str, dict[str, Any]] = profile["column_stats"]
    worst_missing = max((s["missing_share"] or 0.0 for s in columns.values()), default=0.0)
    worst_outliers = max((s.get("outlier_share") or 0.0 for s in columns.values()), default=0.0)
    over: list[dict[str, Any]] = []
    if max_missing is not None:
        over += [
            {"column": c, "missing_share": s["missing_share"], "max_missing": max_missing}
            for c, s in columns.items()
            if (s["missing_share"] or 0.0) > max_missing
        ]
    if max_outliers is not None:
        over += [
            {"column": c, "outlier_share": s["outlier_share"], "max_outliers": max_outliers}
            for c, s in columns.items()
            if (s.get("outlier_share") or 0.0) > max_outliers
        ]
    metrics = {
        "rows": float(profile["rows"]),
        "columns": float(profile["columns"]),
        "missing_share": float(profile["missing_share"] or 0.0),
        "outlier_share": float(profile["outlier_share"] or 0.0),
        "max_column_missing_share": float(worst_missing),
        "max_column_outlier_share": float(worst_outliers),
    }
    details: dict[str, Any] = {
        "outliers": profile["outliers"],
        "columns": columns,
        "over_threshold": over,
        "artifacts": [str(report)],
    }
    if "slices" in profile:
        metrics["slices"] = float(profile["slice"]["count"])
        details["slice"] = profile["slice"]
        details["slices"] = {
            value: {k: part[k] for k in ("rows", "share", "missing_share", "outlier_share")}
            | {"means": {c: s["mean"] for c, s in part["column_stats"].items() if "mean" in s}}
            for value, part in profile["slices"].items()
        }
    text = (
        f"{profile['rows']} rows, {profile['columns']} columns; "
        f"{_pct(profile['missing_share'])} missing, {_pct(profile['outlier_share'])} outliers "
        f"({profile['outliers']['method']})"
    )
    if "slices" in profile:
        text += f"; {profile['slice']['count']} slices by {profile['slice']['column']!r}"
    if over:
        names = ", ".join(
            f"{o['column']} ({_pct(o.get('missing_share', o.get('outlier_share')))} "
            f"{'missing' if 'missing_share' in o else 'outliers'})"
            for o in over[:5]
        )
        text += f"; over the threshold: {names}" + (f" and {len(over) - 5} more" if len(over) > 5 else "")
    return CheckResult("profile", target, not over, text, metrics=metrics, details=details)


def _pct(share: float | None) -> str:
    return f"{100 * (share or 0.0):.1f}%"
