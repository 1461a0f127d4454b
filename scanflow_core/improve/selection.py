"""Pick the most informative unlabelled samples for a human to label, keeping them diverse.

Two signals say how much a sample would teach the model:

``reconstruction``
    The drift detector's reconstruction error (:class:`~scanflow_core.checking.drift.DriftDetector`):
    high for samples unlike the training data.
``uncertainty``
    How unsure the model is: the margin between its two most probable classes (``margin``, the default),
    the entropy of its predicted probabilities (``entropy``), or one minus the top probability
    (``least_confident``).

``strategy="both"`` ranks the pool by each signal and averages the two ranks (so neither scale
dominates). The k picks are then kept diverse: the best-ranked candidates (a shortlist of
``shortlist * k``) are clustered into k groups by a score-weighted k-means, and the most informative
sample of each group is taken (``diversity="cluster"``); or greedily, each pick the candidate farthest from
those already picked (``diversity="kcenter"``); or not at all (``diversity="none"``: the top k).

Only NumPy runs here (the detector's forward pass is NumPy's too).

Example::

    probabilities = lambda x: net_softmax(x)          # (n, classes), rows summing to 1
    chosen = pick_informative(pool, 20, detector=detector, model=probabilities, seed=0)
    queue.enqueue_many(pool[chosen], ids=[f"pool-{i}" for i in chosen])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

__all__ = ["STRATEGIES", "informativeness", "pick_informative", "uncertainty_scores"]

Strategy = Literal["both", "uncertainty", "reconstruction", "random"]
Diversity = Literal["cluster", "kcenter", "none"]
Uncertainty = Literal["margin", "entropy", "least_confident"]

STRATEGIES: tuple[str, ...] = ("both", "uncertainty", "reconstruction", "random")
DIVERSITIES: tuple[str, ...] = ("cluster", "kcenter", "none")
UNCERTAINTIES: tuple[str, ...] = ("margin", "entropy", "least_confident")


def pick_informative(
    pool: Any,
    k: int,
    *,
    detector: Any = None,
    model: Callable[[np.ndarray], Any] | None = None,
    strategy: Strategy = "both",
    diversity: Diversity = "cluster",
    uncertainty: Uncertainty = "margin",
    shortlist: float = 3.0,
    weight: float = 0.5,
    seed: int = 0,
) -> np.ndarray:
    """The indices of the ``k`` samples of ``pool`` most worth labelling, most informative first.

    Args:
        pool: the unlabelled samples, a 2-D array (rows are samples; more dimensions are flattened).
        k: how many to pick, from 1 to the number of rows.
        detector: a fitted :class:`~scanflow_core.checking.drift.DriftDetector`, or any callable that
            returns one score per row (higher: less like the training data). Needed by ``reconstruction``
            and ``both``.
        model: a callable returning predicted probabilities, shape ``(rows, classes)``, each row summing
            to 1. Needed by ``uncertainty`` and ``both``.
        strategy: ``both``, ``uncertainty``, ``reconstruction`` or ``random`` (a baseline).
        diversity: ``cluster`` (score-weighted k-means over the shortlist, the best of each cluster),
            ``kcenter`` (greedy farthest-first over the shortlist) or ``none`` (the top k).
        uncertainty: ``margin``, ``entropy`` or ``least_confident``.
        shortlist: how many candidates the diversity step chooses from, as a multiple of ``k`` (>= 1).
        weight: with ``both``, the share of the uncertainty rank in the combined score (0 to 1).
        seed: seeds k-means and ``random``, so a pick is reproducible.

    Returns:
        An ``int64`` array of ``k`` distinct row indices.

    Raises:
        ValueError: a bad argument, named, with what was expected.

    Examples:
        >>> import numpy as np
        >>> pool = np.random.default_rng(0).random((50, 4))
        >>> errors = lambda x: np.abs(x - 0.5).sum(axis=1)
        >>> pick_informative(pool, 3, detector=errors, strategy="reconstruction").shape
        (3,)
    """
    x = _pool(pool)
    n = len(x)
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= n:
        raise ValueError(f"k must be a whole number from 1 to the pool's {n} rows, not {k!r}")
    k = int(k)
    _one_of("strategy", strategy, STRATEGIES)
    _one_of("diversity", diversity, DIVERSITIES)
    if not (isinstance(shortlist, int | float) and shortlist >= 1):
        raise ValueError(f"shortlist must be a number >= 1 (a multiple of k), not {shortlist!r}")
    rng = np.random.default_rng(seed)
    if strategy == "random":
        return rng.choice(n, size=k, replace=False).astype(np.int64)
    score = informativeness(
        x, detector=detector, model=model, strategy=strategy, uncertainty=uncertainty, weight=weight
    )
    order = np.argsort(-score, kind="stable")
    if diversity == "none" or k == n:
        return order[:k].astype(np.int64)
    size = min(n, max(k, math.ceil(k * shortlist)))
    candidates = order[:size]
    if diversity == "kcenter":
        picked = _k_center(x[candidates], score[candidates], k)
    else:
        picked = _clustered(x[candidates], score[candidates], k, rng)
    chosen: np.ndarray = candidates[picked]
    result: np.ndarray = chosen[np.argsort(-score[chosen], kind="stable")].astype(np.int64)
    return result


def informativeness(
    pool: Any,
    *,
    detector: Any = None,
    model: Callable[[np.ndarray], Any] | None = None,
    strategy: Strategy = "both",
    uncertainty: Uncertainty = "margin",
    weight: float = 0.5,
) -> np.ndarray:
    """Each row's informativeness, higher is more informative: the raw signal for ``uncertainty`` and
    ``reconstruction``, the weighted mean of the two rank percentiles (in (0, 1]) for ``both``."""
    x = _pool(pool)
    _one_of("strategy", strategy, STRATEGIES[:3])
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must lie in [0, 1], not {weight!r}")
    needs_model = strategy in ("both", "uncertainty")
    needs_detector = strategy in ("both", "reconstruction")
    if needs_model and model is None:
        raise ValueError(f"strategy {strategy!r} needs model= (a callable returning probabilities)")
    if needs_detector and detector is None:
        raise ValueError(f"strategy {strategy!r} needs detector= (a fitted DriftDetector or a callable)")
    if strategy == "uncertainty":
        assert model is not None
        return uncertainty_scores(_probabilities(model, x), uncertainty)
    if strategy == "reconstruction":
        return _reconstruction(detector, x)
    assert model is not None
    unsure = _ranks(uncertainty_scores(_probabilities(model, x), uncertainty))
    novel = _ranks(_reconstruction(detector, x))
    combined: np.ndarray = weight * unsure + (1.0 - weight) * novel
    return combined


def uncertainty_scores(probabilities: Any, kind: Uncertainty = "margin") -> np.ndarray:
    """How unsure each row's prediction is (higher: less sure).

    Args:
        probabilities: shape ``(rows, classes)``, each row summing to 1.
        kind: ``margin`` (1 minus the gap between the two most probable classes), ``entropy`` (in nats)
            or ``least_confident`` (1 minus the top probability).

    Examples:
        >>> uncertainty_scores([[0.5, 0.5], [0.9, 0.1]]).round(2).tolist()
        [1.0, 0.2]
    """
    _one_of("uncertainty", kind, UNCERTAINTIES)
    p = _check_probabilities(np.asarray(probabilities, dtype=np.float64), None)
    if kind == "entropy":
        safe = np.clip(p, 1e-12, 1.0)
        result: np.ndarray = -(p * np.log(safe)).sum(axis=1)
        return result
    top = np.sort(p, axis=1)[:, ::-1]
    if kind == "least_confident":
        return np.asarray(1.0 - top[:, 0])
    return np.asarray(1.0 - (top[:, 0] - top[:, 1]))


# ---------------------------------------------------------------------------------------------- signals


def _pool(pool: Any) -> np.ndarray:
    x = np.asarray(pool)
    if x.ndim < 2:
        raise ValueError(f"pool must be a 2-D array (rows x features), not of shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"pool must hold real numbers, not {x.dtype}")
    if len(x) == 0:
        raise ValueError("pool is empty")
    x = x.reshape(len(x), -1).astype(np.float64, copy=False)
    if not np.isfinite(x).all():
        raise ValueError("pool holds NaN or infinite values")
    return x


def _one_of(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, not {value!r}")


def _probabilities(model: Callable[[np.ndarray], Any], x: np.ndarray) -> np.ndarray:
    if not callable(model):
        raise ValueError(f"model must be a callable returning probabilities, not {type(model).__name__}")
    return _check_probabilities(np.asarray(model(x), dtype=np.float64), len(x))


def _check_probabilities(p: np.ndarray, rows: int | None) -> np.ndarray:
    if p.ndim != 2 or p.shape[1] < 2 or (rows is not None and len(p) != rows):
        expected = f"({rows}, classes)" if rows is not None else "(rows, classes)"
        raise ValueError(f"probabilities must have shape {expected} with 2 or more classes, not {p.shape}")
    if not np.isfinite(p).all() or (p < -1e-9).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError(
            "probabilities must be non-negative and each row must sum to 1 (apply a softmax to logits)"
        )
    return p


def _reconstruction(detector: Any, x: np.ndarray) -> np.ndarray:
    """Per-row reconstruction error from a fitted DriftDetector, or the scores of a callable."""
    from scanflow_core.checking.drift import DriftDetector

    if isinstance(detector, DriftDetector):
        if not getattr(detector, "_fitted", False):
            raise ValueError("detector is not fitted: call fit() or DriftDetector.load() first")
        if not getattr(detector, "_layers", None):
            raise ValueError("detector has no autoencoder (it needs 2 or more numeric features)")
        columns = len(detector.numeric_names)
        if x.shape[1] != columns or detector.categorical_names:
            raise ValueError(f"pool has {x.shape[1]} columns; the detector was fitted on {columns} numeric")
        scores = np.asarray(detector._scores(x), dtype=np.float64)
    elif callable(detector):
        scores = np.asarray(detector(x), dtype=np.float64).reshape(-1)
    else:
        raise ValueError(f"detector must be a DriftDetector or a callable, not {type(detector).__name__}")
    if scores.shape != (len(x),) or not np.isfinite(scores).all():
        raise ValueError(f"detector must give one finite score per row ({len(x)}), got shape {scores.shape}")
    return scores


def _ranks(values: np.ndarray) -> np.ndarray:
    """Rank percentiles in (0, 1], ties sharing their mean rank."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    if (counts > 1).any():
        sums = np.bincount(inverse, weights=ranks)
        ranks = sums[inverse] / counts[inverse]
    result: np.ndarray = ranks / len(values)
    return result


# ---------------------------------------------------------------------------------------------- diversity


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(axis=1)[:, None] - 2.0 * a @ b.T + (b * b).sum(axis=1)[None, :]
    result: np.ndarray = np.maximum(d, 0.0)
    return result


def _k_center(x: np.ndarray, score: np.ndarray, k: int) -> np.ndarray:
    """Greedy farthest-first: start from the best score, then add the row farthest from the picks."""
    picked = [int(np.argmax(score))]
    nearest = _squared_distances(x, x[picked])[:, 0]
    for _ in range(k - 1):
        nearest[picked] = -1.0
        following = int(np.argmax(nearest))
        picked.append(following)
        nearest = np.minimum(nearest, _squared_distances(x, x[[following]])[:, 0])
    return np.array(picked, dtype=np.int64)


def _clustered(x: np.ndarray, score: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Score-weighted k-means (k-means++ start, Lloyd steps) into k clusters; the best row of each."""
    weights = score - score.min() + 1e-6 * max(1.0, float(np.ptp(score)))
    labels = _k_means(x, weights, k, rng)
    picked = []
    for cluster in range(k):
        members = np.flatnonzero(labels == cluster)
        if len(members):
            picked.append(int(members[np.argmax(score[members])]))
    if len(picked) < k:  # empty clusters: fill with the best rows not yet picked
        rest = [int(i) for i in np.argsort(-score, kind="stable") if int(i) not in set(picked)]
        picked += rest[: k - len(picked)]
    return np.array(picked, dtype=np.int64)


def _k_means(
    x: np.ndarray, weights: np.ndarray, k: int, rng: np.random.Generator, steps: int = 25
) -> np.ndarray:
    first = int(rng.choice(len(x), p=weights / weights.sum()))
    centres = [x[first]]
    nearest = _squared_distances(x, x[[first]])[:, 0]
    for _ in range(k - 1):
        mass = nearest * weights
        total = mass.sum()
        following = int(rng.choice(len(x), p=mass / total)) if total > 0 else int(rng.integers(len(x)))
        centres.append(x[following])
        nearest = np.minimum(nearest, _squared_distances(x, x[[following]])[:, 0])
    centre = np.stack(centres)
    labels = np.full(len(x), -1)
    for _ in range(steps):
        assigned = _squared_distances(x, centre).argmin(axis=1)
        if (assigned == labels).all():
            break
        labels = assigned
        for cluster in range(k):
            members = labels == cluster
            if members.any():
                w = weights[members]
                centre[cluster] = (x[members] * w[:, None]).sum(axis=0) / w.sum()
    return labels
