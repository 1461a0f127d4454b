"""``use: leakage``: rows of one split that also appear, exactly or nearly, in another.

The target (say ``test``) is compared with each artifact of ``against`` (say ``[train, eval]``);
a target row is *shared* with an artifact when its features equal one of the artifact's rows
(*exact*) or lie within ``tolerance`` of one (*near*, not counted as exact).

Options:
    against: an artifact name or path, or a list of them (required). The target itself is skipped,
        so ``on: [eval, test]`` with ``against: [train, eval, test]`` compares every pair once each way.
    near: also look for near-duplicates (default ``true``).
    tolerance: how near is near: every numeric feature within ``tolerance`` standard deviations
        (of the two sets together) of the other row's, i.e. an L-infinity distance on standardised
        features (default ``0.1``). Non-numeric columns must be equal.
    ignore: columns left out of the comparison (default ``[label]``: the same input with a different
        label is still leaked). Name id and timestamp columns here, or no row ever repeats.
    max_shared: the most shared target rows allowed per artifact (default ``0`` when ``max_share``
        is not given: any shared row fails).
    max_share: the largest allowed share of shared target rows per artifact, 0-1 (default: none).

Exact rows are found by hashing (``pandas.util.hash_pandas_object``), near ones with a k-d tree
(``scipy.spatial.cKDTree``, Chebyshev metric): the digits splits take a few milliseconds.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scanflow_core.checking.data import CheckOptionError, load_frame, option, resolve_artifact
from scanflow_core.records import CheckResult

__all__ = ["check", "shared_rows"]

EXAMPLES = 5


def check(step_run: Any, check: Any, target: str, path: Path) -> CheckResult:
    label = check.label
    options = check.options
    against = option(options, "against", (str, list), check=label)
    names = [against] if isinstance(against, str) else against
    if not names or not all(isinstance(n, str) for n in names):
        raise CheckOptionError(f"check {label!r}: option 'against' must name one artifact or a list of them")
    near = option(options, "near", bool, True, check=label)
    tolerance = float(option(options, "tolerance", (int, float), 0.1, check=label))
    ignore = option(options, "ignore", (str, list), ["label"], check=label)
    ignore = [ignore] if isinstance(ignore, str) else [str(c) for c in ignore]
    max_share = option(options, "max_share", (int, float), None, check=label)
    max_shared = option(options, "max_shared", int, 0 if max_share is None else None, check=label)
    if tolerance < 0:
        raise CheckOptionError(f"check {label!r}: option 'tolerance' must be >= 0, not {tolerance}")
    if max_shared is not None and max_shared < 0:
        raise CheckOptionError(f"check {label!r}: option 'max_shared' must be >= 0, not {max_shared}")
    if max_share is not None and not 0 <= max_share <= 1:
        raise CheckOptionError(f"check {label!r}: option 'max_share' must lie in [0, 1], not {max_share}")

    frame = _features(load_frame(path), ignore, target)
    metrics: dict[str, float] = {"rows": float(len(frame))}
    details: dict[str, Any] = {"columns": list(frame.columns), "tolerance": tolerance, "pairs": {}}
    problems: list[str] = []
    for name in names:
        other_path = resolve_artifact(step_run, name)
        if other_path.resolve() == path.resolve():
            continue
        other = _features(load_frame(other_path), ignore, name)
        missing = [c for c in frame.columns if c not in other.columns]
        if missing:
            raise CheckOptionError(
                f"check {label!r}: {name!r} lacks the columns {missing} of {target!r} "
                "(leave columns out with option 'ignore')"
            )
        found = shared_rows(frame, other[frame.columns], tolerance if near else None)
        shared = found["exact_count"] + found["near_count"]
        share = shared / len(frame) if len(frame) else 0.0
        key = _key(name)
        metrics.update(
            {
                f"{key}.exact": float(found["exact_count"]),
                f"{key}.near": float(found["near_count"]),
                f"{key}.shared": float(shared),
                f"{key}.share": round(share, 6),
            }
        )
        details["pairs"][name] = {"rows": len(other), **found}
        if (max_shared is not None and shared > max_shared) or (max_share is not None and share > max_share):
            problems.append(
                f"{shared} of {len(frame)} rows of {target!r} also in {name!r} "
                f"({found['exact_count']} exact, {found['near_count']} near)"
            )
    metrics["shared"] = float(sum(v for k, v in metrics.items() if k.endswith(".shared")))
    if problems:
        summary = "leakage: " + "; ".join(problems)
    else:
        compared = ", ".join(repr(n) for n in details["pairs"]) or "nothing"
        summary = f"{target!r} shares {int(metrics['shared'])} rows with {compared}, within the limit"
    return CheckResult("leakage", target, not problems, summary, metrics=metrics, details=details)


def shared_rows(frame: pd.DataFrame, other: pd.DataFrame, tolerance: float | None) -> dict[str, Any]:
    """Rows of ``frame`` that equal a row of ``other`` (exact) or lie within ``tolerance`` (near).

    Returns counts and up to a few ``[row of frame, row of other]`` examples of each kind
    (positions, counted from 0). ``tolerance=None`` looks for exact rows only.
    """
    mine, theirs = _hashes(frame), _hashes(other)
    unique, first = np.unique(theirs, return_index=True)
    position = np.minimum(np.searchsorted(unique, mine), max(len(unique) - 1, 0))
    exact = unique[position] == mine if len(unique) else np.zeros(len(mine), dtype=bool)
    result: dict[str, Any] = {
        "exact_count": int(exact.sum()),
        "exact_examples": [[int(i), int(first[position[i]])] for i in np.flatnonzero(exact)[:EXAMPLES]],
        "near_count": 0,
        "near_examples": [],
    }
    if tolerance is None or not len(frame) or not len(other):
        return result
    from scipy.spatial import cKDTree

    points, other_points = _coordinates(frame, other, tolerance)
    distance, nearest = cKDTree(other_points).query(
        points, k=1, p=np.inf, distance_upper_bound=tolerance * (1 + 1e-9)
    )
    near = np.isfinite(distance) & ~exact
    result["near_count"] = int(near.sum())
    result["near_examples"] = [[int(i), int(nearest[i])] for i in np.flatnonzero(near)[:EXAMPLES]]
    return result


def _features(frame: pd.DataFrame, ignore: list[str], name: str) -> pd.DataFrame:
    kept = frame.drop(columns=[c for c in ignore if c in frame.columns])
    if kept.shape[1] == 0:
        raise CheckOptionError(f"{name!r} has no columns left to compare once {ignore} are ignored")
    return kept


def _normalised(frame: pd.DataFrame) -> pd.DataFrame:
    """Numbers as float64 and everything else as text, so equal values hash alike across files."""
    return pd.DataFrame(
        {c: frame[c].astype("float64") if _numeric(frame[c]) else frame[c].astype(str) for c in frame.columns}
    )


def _hashes(frame: pd.DataFrame) -> np.ndarray:
    hashes: np.ndarray = pd.util.hash_pandas_object(_normalised(frame), index=False).to_numpy()
    return hashes


def _numeric(column: pd.Series) -> bool:
    return column.dtype.kind in "biuf"


def _coordinates(frame: pd.DataFrame, other: pd.DataFrame, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """Standardised numeric features, plus each other column as category codes spaced wider than
    ``tolerance`` (so rows differing there are never near); NaN only meets NaN."""
    both = pd.concat([frame, other], ignore_index=True)
    numeric = [c for c in both.columns if _numeric(both[c])]
    values = both[numeric].astype("float64")
    scale = values.std(ddof=0).fillna(0.0).to_numpy()
    standard = ((values - values.mean().fillna(0.0)) / np.where(scale > 0, scale, 1.0)).to_numpy()
    far = 2 * tolerance + 1
    standard = np.where(np.isnan(standard), 1e6 * far, standard)
    codes = [pd.factorize(both[c].astype(str))[0] * far for c in both.columns if c not in numeric]
    points = np.column_stack([standard, *codes]) if codes else standard
    return points[: len(frame)], points[len(frame) :]


def _key(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
