"""The two-sample tests behind the drift detector's p-values (:mod:`scanflow_core.checking.drift`).

Each function takes NumPy arrays or level counts and returns a statistic and/or p-value that is valid
under "no drift":

- :func:`_mann_whitney_greater`: one-sided Mann-Whitney U of a batch's reconstruction errors against
  the calibration errors (the ``autoencoder`` family);
- :func:`_ks_many`: two-sample Kolmogorov-Smirnov for every numeric column at once;
- :func:`_chi2_homogeneity`: chi-square test of homogeneity of level (or class) counts;
- :func:`_benjamini_hochberg`: the per-feature p-values' adjustment (their minimum is Simes' test).

Vectorised NumPy throughout; SciPy (for Kolmogorov's and the chi-square distributions) is imported
inside the functions that need it.

Examples:
    >>> import numpy as np
    >>> _benjamini_hochberg(np.array([0.01, 0.04, 0.03]))
    array([0.03, 0.04, 0.04])
    >>> _chi2_homogeneity({"a": 50, "b": 50}, {"a": 5, "b": 5, "c": 1})
    (0.0, 1.0, ['c'])
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np


def _norm_sf(z: float) -> float:
    """The standard normal distribution's upper tail, ``P(Z > z)``."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _mann_whitney_greater(below: np.ndarray, at_most: np.ndarray, n_cal: int) -> float:
    """One-sided Mann-Whitney U p-value that batch scores are larger than calibration scores.

    ``below[i]`` / ``at_most[i]`` count the calibration scores under / at most batch score ``i``;
    normal approximation with continuity correction (scores are continuous: ties are negligible).
    """
    m = len(below)
    u = float(below.sum() + 0.5 * (at_most - below).sum())
    mean = m * n_cal / 2.0
    sd = math.sqrt(m * n_cal * (m + n_cal + 1) / 12.0)
    return min(1.0, _norm_sf((u - mean - 0.5) / sd))


def _ks_many(reference_sorted: np.ndarray, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sample Kolmogorov-Smirnov statistic and p-value for every column (NaNs left out).

    The supremum of ``|F_ref - F_batch|`` is reached at a batch value, at it or just left of it: two
    binary searches per column in the sorted reference, and the batch's own ranks, are enough. The
    p-value is Kolmogorov's limit law with Stephens' small-sample correction,
    ``Q((sqrt(n_e) + 0.12 + 0.11 / sqrt(n_e)) * D)`` with ``n_e = n m / (n + m)`` (accurate from
    ``n_e >= 4``; conservative when values tie).
    """
    from scipy.special import kolmogorov

    x = np.sort(batch, axis=0)  # NaNs sort last, as in reference_sorted
    valid = ~np.isnan(x)
    n = (~np.isnan(reference_sorted)).sum(axis=0)
    m = valid.sum(axis=0)
    own_left, own_right = _tie_ranks(x)
    ref_left = np.empty(x.shape)
    ref_right = np.empty(x.shape)
    for j in range(x.shape[1]):
        column = reference_sorted[: n[j], j]
        ref_left[:, j] = np.searchsorted(column, x[:, j], side="left")
        ref_right[:, j] = np.searchsorted(column, x[:, j], side="right")
    n_f, m_f = np.maximum(n, 1).astype(np.float64), np.maximum(m, 1).astype(np.float64)
    gap = np.maximum(np.abs(ref_left / n_f - own_left / m_f), np.abs(ref_right / n_f - own_right / m_f))
    statistics = np.where(valid, gap, 0.0).max(axis=0, initial=0.0)
    statistics[(n == 0) | (m == 0)] = 0.0
    sizes = np.maximum(n * m / np.maximum(n + m, 1), 1.0)
    root = np.sqrt(sizes)
    p_values = np.clip(kolmogorov((root + 0.12 + 0.11 / root) * statistics), 0.0, 1.0)
    return statistics, p_values


def _tie_ranks(sorted_columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each value of each sorted column: how many values are ``<`` it and ``<=`` it."""
    rows = sorted_columns.shape[0]
    index = np.arange(rows)[:, None]
    starts = np.ones(sorted_columns.shape, dtype=bool)
    starts[1:] = sorted_columns[1:] != sorted_columns[:-1]
    left = np.maximum.accumulate(np.where(starts, index, 0), axis=0)
    ends = np.ones(sorted_columns.shape, dtype=bool)
    ends[:-1] = starts[1:]
    right = np.minimum.accumulate(np.where(ends, index, rows)[::-1], axis=0)[::-1] + 1
    return left.astype(np.float64), right.astype(np.float64)


def _chi2_homogeneity(
    reference: Mapping[str, int], batch: Mapping[str, int]
) -> tuple[float, float, list[str]]:
    """Chi-square test that the batch's level counts follow the reference's (a 2 x k table over the
    reference's levels); levels the reference never had are returned, not tested."""
    from scipy.stats import chi2

    levels = sorted(reference)
    unseen = sorted(set(batch) - set(reference))
    table = np.array([[reference[k] for k in levels], [batch.get(k, 0) for k in levels]], dtype=np.float64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or table[1].sum() == 0:
        return 0.0, 1.0, unseen
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    statistic = float(((table - expected) ** 2 / expected).sum())
    return statistic, float(chi2.sf(statistic, table.shape[1] - 1)), unseen


def _benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (their minimum is Simes' global p-value)."""
    k = len(p_values)
    if k == 0:
        return p_values
    order = np.argsort(p_values)
    ranked = p_values[order] * k / np.arange(1, k + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(k)
    out[order] = np.clip(adjusted, 0.0, 1.0)
    return out
