"""pick_informative: the signals, the diversity of the picks, and clear errors for bad arguments."""

from __future__ import annotations

import numpy as np
import pytest

from scanflow_core.checking.drift import DriftDetector
from scanflow_core.improve import pick_informative
from scanflow_core.improve.selection import informativeness, uncertainty_scores


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def clean_and_new(digits: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clean training digits, a pool whose first 30 rows are inverted (unlike anything in training)
    and the row indices of those 30."""
    x, _ = digits
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    train, pool = x[order[:900]], x[order[900:1200]].copy()
    odd = np.arange(30)
    pool[odd] = 1.0 - pool[odd]
    return train, pool, odd


@pytest.fixture(scope="module")
def detector(clean_and_new: tuple[np.ndarray, np.ndarray, np.ndarray]) -> DriftDetector:
    return DriftDetector(seed=0, epochs=20).fit(clean_and_new[0])


def test_reconstruction_error_finds_the_samples_unlike_the_training_data(clean_and_new, detector):
    _, pool, odd = clean_and_new

    chosen = pick_informative(pool, 20, detector=detector, strategy="reconstruction", diversity="none")

    assert set(chosen) <= set(odd)
    assert len(set(chosen)) == 20


def test_uncertainty_picks_the_samples_the_model_is_least_sure_of():
    pool = np.arange(40, dtype=float).reshape(20, 2)
    margin = np.linspace(0.0, 0.9, 20)  # row 0: a coin toss, row 19: nearly sure
    probabilities = np.stack([(1 + margin) / 2, (1 - margin) / 2], axis=1)

    chosen = pick_informative(
        pool, 3, model=lambda x: probabilities, strategy="uncertainty", diversity="none"
    )

    assert chosen.tolist() == [0, 1, 2]


@pytest.mark.parametrize("diversity", ["cluster", "kcenter"])
def test_diversity_spreads_the_picks_over_distinct_groups(diversity):
    """Three tight groups; the most uncertain rows all sit in one of them. Without diversity the top 3
    come from that group; with it, each group gives one."""
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    group = np.repeat(np.arange(3), 10)
    pool = centres[group] + rng.normal(0, 0.1, (30, 2))
    top_probability = np.where(group == 0, 0.55, 0.9) + rng.uniform(0, 0.01, 30)  # group 0: unsure
    probabilities = np.stack([top_probability, 1 - top_probability], axis=1)

    top = pick_informative(pool, 3, model=lambda x: probabilities, strategy="uncertainty", diversity="none")
    diverse = pick_informative(
        pool, 3, model=lambda x: probabilities, strategy="uncertainty", diversity=diversity, shortlist=10
    )

    assert len(set(group[top])) == 1
    assert sorted(group[diverse]) == [0, 1, 2]


def test_both_averages_the_ranks_of_the_two_signals():
    pool = np.zeros((4, 2))
    errors = np.array([4.0, 3.0, 2.0, 1.0])  # novelty ranks: row 0 highest
    p_top = np.array([0.99, 0.9, 0.6, 0.55])  # uncertainty ranks: row 3 highest
    probabilities = np.stack([p_top, 1 - p_top], axis=1)

    score = informativeness(pool, detector=lambda x: errors, model=lambda x: probabilities, weight=0.5)

    assert score.tolist() == pytest.approx([0.625, 0.625, 0.625, 0.625])
    only_novel = informativeness(pool, detector=lambda x: errors, model=lambda x: probabilities, weight=0.0)
    assert only_novel.argmax() == 0


def test_the_default_strategy_uses_both_signals_and_is_reproducible(clean_and_new, detector):
    train, pool, _ = clean_and_new
    centre = train.mean(axis=0)

    def probabilities(x: np.ndarray) -> np.ndarray:
        distance = np.abs(x - centre).sum(axis=1, keepdims=True)
        return softmax(np.hstack([distance / 10, np.zeros_like(distance)]))

    first = pick_informative(pool, 15, detector=detector, model=probabilities, seed=3)
    second = pick_informative(pool, 15, detector=detector, model=probabilities, seed=3)

    assert first.dtype == np.int64 and len(set(first)) == 15
    assert first.tolist() == second.tolist()


def test_random_is_a_seeded_baseline():
    pool = np.zeros((50, 3))

    assert pick_informative(pool, 5, strategy="random", seed=1).tolist() == (
        pick_informative(pool, 5, strategy="random", seed=1).tolist()
    )


def test_uncertainty_scores_by_kind():
    p = [[0.5, 0.3, 0.2], [0.9, 0.05, 0.05]]

    assert uncertainty_scores(p, "margin").tolist() == pytest.approx([0.8, 0.15])
    assert uncertainty_scores(p, "least_confident").tolist() == pytest.approx([0.5, 0.1])
    entropy = uncertainty_scores(p, "entropy")
    assert entropy[0] > entropy[1] > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "k must be a whole number from 1 to the pool's 10 rows"),
        ({"k": 11}, "k must be a whole number from 1 to the pool's 10 rows"),
        ({"k": 2.5}, "k must be a whole number"),
        ({"k": 2, "strategy": "novelty"}, "strategy must be one of 'both', 'uncertainty'"),
        ({"k": 2, "diversity": "spread"}, "diversity must be one of"),
        ({"k": 2, "shortlist": 0.5}, "shortlist must be a number >= 1"),
        ({"k": 2, "strategy": "uncertainty"}, "strategy 'uncertainty' needs model="),
        ({"k": 2, "strategy": "reconstruction"}, "strategy 'reconstruction' needs detector="),
        ({"k": 2, "model": lambda x: np.ones((10, 3))}, "needs detector="),
        (
            {"k": 2, "strategy": "uncertainty", "model": lambda x: np.ones((10, 3))},
            "probabilities must be non-negative and each row must sum to 1",
        ),
        (
            {"k": 2, "strategy": "uncertainty", "model": lambda x: np.full((9, 2), 0.5)},
            r"probabilities must have shape \(10, classes\)",
        ),
        (
            {"k": 2, "strategy": "reconstruction", "detector": lambda x: np.ones(3)},
            r"one finite score per row \(10\)",
        ),
        (
            {"k": 2, "strategy": "reconstruction", "detector": DriftDetector()},
            "detector is not fitted",
        ),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    pool = np.random.default_rng(0).random((10, 4))

    with pytest.raises(ValueError, match=message):
        pick_informative(pool, **kwargs)


@pytest.mark.parametrize(
    ("pool", "message"),
    [
        (np.zeros(5), r"pool must be a 2-D array .* not of shape \(5,\)"),
        (np.zeros((0, 3)), "pool is empty"),
        (np.array([[1.0, np.nan]] * 3), "pool holds NaN"),
        (np.array([["a", "b"]] * 3), "pool must hold real numbers"),
    ],
)
def test_a_bad_pool_is_named(pool, message):
    with pytest.raises(ValueError, match=message):
        pick_informative(pool, 1, strategy="random")


def test_a_detector_fitted_on_other_columns_is_refused(detector):
    with pytest.raises(ValueError, match="pool has 3 columns; the detector was fitted on 64"):
        pick_informative(np.zeros((5, 3)), 1, detector=detector, strategy="reconstruction")
