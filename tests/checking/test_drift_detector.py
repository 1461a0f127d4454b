"""DriftDetector on scikit-learn's digits: calibrated p-values, shifts found, per-feature and label tests."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scanflow_core.checking.drift import DriftDetector, _benjamini_hochberg, _ks_many


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.data / 16.0).astype(np.float32), bunch.target.astype(np.int64)


@pytest.fixture(scope="module")
def split(digits: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    x, y = digits
    order = np.random.default_rng(7).permutation(len(x))
    reference, pool = order[:1200], order[1200:]
    return {"x_ref": x[reference], "y_ref": y[reference], "x_pool": x[pool], "y_pool": y[pool]}


@pytest.fixture(scope="module")
def detector(split: dict[str, np.ndarray]) -> DriftDetector:
    return DriftDetector(seed=0).fit(split["x_ref"], split["y_ref"])


def _batches(split: dict[str, np.ndarray], count: int, size: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.choice(len(split["x_pool"]), size=size, replace=False) for _ in range(count)]


@pytest.fixture(scope="module")
def detectors(digits: tuple[np.ndarray, np.ndarray]) -> list[tuple[DriftDetector, np.ndarray]]:
    """Five reference splits, each with its fitted detector and its pool of unseen images.

    Batches drawn from one pool of 597 images share that pool's chance deviation from the
    calibration data, so the false-positive rate is judged over several splits, as the benchmark does.
    """
    x, _ = digits
    pairs = []
    for seed in range(5):
        order = np.random.default_rng(100 + seed).permutation(len(x))
        detector = DriftDetector(seed=seed).fit(x[order[:1200]])
        pairs.append((detector, x[order[1200:]]))
    return pairs


@pytest.mark.slow
def test_unshifted_batches_are_not_drifted_at_the_claimed_rate(
    detectors: list[tuple[DriftDetector, np.ndarray]],
) -> None:
    rng = np.random.default_rng(1)
    results = [
        detector.test(pool[rng.choice(len(pool), size=100, replace=False)])
        for detector, pool in detectors
        for _ in range(20)
    ]
    false_positives = sum(r.drifted for r in results)
    assert false_positives / len(results) <= 0.08
    for result in results:
        assert 0.0 <= result.p_value <= 1.0
        assert all(0.0 <= p <= 1.0 for p in result.tests.values())
        assert set(result.tests) == {"autoencoder", "features"}
        assert result.sample_scores.shape == (100,) and (result.sample_p_values > 0).all()


@pytest.mark.slow
def test_the_autoencoder_test_alone_is_calibrated(detectors: list[tuple[DriftDetector, np.ndarray]]) -> None:
    rng = np.random.default_rng(2)
    p_values = np.array(
        [
            detector.test(pool[rng.choice(len(pool), size=50, replace=False)]).tests["autoencoder"]
            for detector, pool in detectors
            for _ in range(40)
        ]
    )
    assert (p_values < 0.05).mean() <= 0.09
    assert (p_values < 0.5).mean() == pytest.approx(0.5, abs=0.15)  # roughly uniform, not stuck at 1


@pytest.mark.parametrize("shift", ["noise", "occlusion"])
def test_strongly_shifted_batches_are_drifted(
    detector: DriftDetector, split: dict[str, np.ndarray], shift: str
) -> None:
    rng = np.random.default_rng(3)
    for rows in _batches(split, 10, 50, seed=4):
        batch = split["x_pool"][rows].reshape(-1, 8, 8).copy()
        if shift == "noise":
            batch = np.clip(batch + rng.normal(0, 0.2, batch.shape), 0, 1)
        else:
            batch[:, 2:6, 2:6] = 1.0
        result = detector.test(batch.reshape(len(rows), 64))
        assert result.drifted and result.p_value < 1e-3
        assert result.tests["autoencoder"] < 1e-3
        assert result.score > result.reference_score
        assert result.anomalous_share > 0.3
        assert "drift in 50 samples" in result.summary()


def test_a_test_of_100_samples_takes_milliseconds(
    detector: DriftDetector, split: dict[str, np.ndarray]
) -> None:
    batch = split["x_pool"][:100]
    detector.test(batch)
    timings = []
    for _ in range(20):
        started = time.perf_counter()
        detector.test(batch)
        timings.append(time.perf_counter() - started)
    assert float(np.median(timings)) < 0.05  # a few ms on a quiet machine; room for a busy CI


def test_fitting_is_deterministic_for_a_seed(split: dict[str, np.ndarray]) -> None:
    x = split["x_ref"][:300]
    a = DriftDetector(seed=3, epochs=5).fit(x).test(split["x_pool"][:40])
    b = DriftDetector(seed=3, epochs=5).fit(x).test(split["x_pool"][:40])
    assert a.p_value == b.p_value
    np.testing.assert_array_equal(a.sample_scores, b.sample_scores)


def test_save_and_load_give_identical_p_values(
    detector: DriftDetector, split: dict[str, np.ndarray], tmp_path: Path
) -> None:
    folder = detector.save(tmp_path / "detector")
    assert sorted(p.name for p in folder.iterdir()) == ["arrays.npz", "detector.json", "weights.pt"]
    loaded = DriftDetector.load(folder)
    without_torch = DriftDetector.load_numpy(folder)  # what the checker sidecar reads
    assert without_torch.autoencoder is None
    for rows in _batches(split, 5, 50, seed=5):
        batch, labels = split["x_pool"][rows], split["y_pool"][rows]
        before = detector.test(batch, labels)
        for after in (loaded.test(batch, labels), without_torch.test(batch, labels)):
            assert before.p_value == after.p_value
            assert before.tests == after.tests
            np.testing.assert_array_equal(before.sample_scores, after.sample_scores)


def test_the_checker_service_answers_batches(
    detector: DriftDetector, split: dict[str, np.ndarray], tmp_path: Path
) -> None:
    import json
    import threading
    import urllib.error
    import urllib.request

    from scanflow_core.checking.service import serve

    server = serve(detector.save(tmp_path / "detector"), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def post(rows: object) -> dict[str, object]:
        request = urllib.request.Request(f"{base}/check", json.dumps({"rows": rows}).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            result: dict[str, object] = json.loads(answer.read())
            return result

    def get(path: str) -> bytes:
        with urllib.request.urlopen(f"{base}{path}", timeout=10) as answer:
            body: bytes = answer.read()
            return body

    try:
        assert get("/ok") == b"ok\n"
        same = post(split["x_pool"][:100].tolist())
        shifted = post((split["x_pool"][100:200] + 0.5).tolist())
        assert same["drifted"] is False and shifted["drifted"] is True
        assert same["size"] == 100 and shifted["p_value"] < 0.05 < same["p_value"]  # type: ignore[operator]
        with pytest.raises(urllib.error.HTTPError) as refused:
            post([[1.0, 2.0]])
        assert refused.value.code == 400
        refused.value.close()
        varz = json.loads(get("/varz"))
        assert varz["batches"] == 2 and varz["drifted"] == 1
        metrics = get("/metrics").decode()
        assert 'scanflow_checker_requests_total{endpoint="/check",code="200"} 2' in metrics
        assert "scanflow_checker_drifted 1.0" in metrics and "scanflow_checker_drift_score " in metrics
    finally:
        server.shutdown()
        server.server_close()


def test_class_balance_change_is_found_with_labels(
    detector: DriftDetector, split: dict[str, np.ndarray]
) -> None:
    low = np.flatnonzero(split["y_pool"] < 3)[:100]
    result = detector.test(split["x_pool"][low], split["y_pool"][low])
    assert result.class_balance is not None
    assert result.class_balance["p_value"] < 1e-6
    assert result.drifted and "class balance changed" in result.summary()
    balanced = detector.test(split["x_pool"][:100], split["y_pool"][:100])
    assert balanced.class_balance is not None and balanced.class_balance["p_value"] > 0.01


def test_a_new_class_is_drift(detector: DriftDetector, split: dict[str, np.ndarray]) -> None:
    labels = split["y_pool"][:60].copy()
    labels[:3] = 11
    result = detector.test(split["x_pool"][:60], labels)
    assert result.drifted
    assert result.new_levels == {"<class>": ["11"]}


def _table(rng: np.random.Generator, rows: int, colours: list[str], p: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age": rng.normal(40, 10, rows),
            "income": rng.lognormal(10, 0.5, rows),
            "colour": rng.choice(colours, size=rows, p=p),
            "member": rng.random(rows) < 0.3,
        }
    )


def test_categorical_features_are_tested_with_chi_square() -> None:
    rng = np.random.default_rng(0)
    reference = _table(rng, 600, ["red", "green", "blue"], [0.5, 0.3, 0.2])
    detector = DriftDetector(seed=0, epochs=5).fit(reference)
    assert detector.categorical_names == ["colour", "member"]
    same = detector.test(_table(rng, 200, ["red", "green", "blue"], [0.5, 0.3, 0.2]))
    assert not same.drifted
    kinds = {f.name: f.kind for f in same.features}
    assert kinds == {"age": "ks", "income": "ks", "colour": "chi2", "member": "chi2"}

    shifted = detector.test(_table(rng, 200, ["red", "green", "blue"], [0.1, 0.3, 0.6]))
    assert shifted.drifted and shifted.drifted_features == ["colour"]
    colour = next(f for f in shifted.features if f.name == "colour")
    assert colour.p_value < 1e-6 and colour.adjusted_p_value >= colour.p_value


def test_new_levels_are_reported_and_count_as_drift() -> None:
    rng = np.random.default_rng(1)
    reference = _table(rng, 400, ["red", "green"], [0.5, 0.5])
    detector = DriftDetector(seed=0, epochs=5).fit(reference)
    batch = _table(rng, 50, ["red", "green"], [0.5, 0.5])
    batch.loc[:4, "colour"] = "purple"
    result = detector.test(batch)
    assert result.drifted
    assert result.new_levels == {"colour": ["purple"]}
    assert "new levels in colour: purple" in result.summary()
    assert result.to_dict()["new_levels"] == {"colour": ["purple"]}


def test_a_frame_with_only_categorical_columns_skips_the_autoencoder(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    reference = pd.DataFrame({"city": rng.choice(["a", "b", "c"], 300)})
    detector = DriftDetector().fit(reference)
    result = detector.test(pd.DataFrame({"city": rng.choice(["a", "b", "c"], 80)}))
    assert set(result.tests) == {"features"} and np.isnan(result.score)
    loaded = DriftDetector.load(detector.save(tmp_path / "d"))
    assert loaded.test(pd.DataFrame({"city": ["a"] * 80})).drifted


def test_ks_matches_scipy() -> None:
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(3)
    reference = rng.integers(0, 5, (300, 4)).astype(float)
    batch = rng.integers(0, 6, (40, 4)).astype(float)
    reference[:3, 1], batch[5, 2] = np.nan, np.nan
    statistics, p_values = _ks_many(np.sort(reference, axis=0), batch)
    for j in range(4):
        r, b = reference[:, j], batch[:, j]
        expected = ks_2samp(r[~np.isnan(r)], b[~np.isnan(b)], method="asymp")
        assert statistics[j] == pytest.approx(expected.statistic)
        assert p_values[j] == pytest.approx(expected.pvalue, abs=0.05)


def test_benjamini_hochberg_matches_the_definition() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.5])
    np.testing.assert_allclose(_benjamini_hochberg(p), [0.04, 0.16 / 3, 0.16 / 3, 0.5])


def test_bad_use_is_refused(split: dict[str, np.ndarray]) -> None:
    with pytest.raises(RuntimeError, match="fit"):
        DriftDetector().test(split["x_pool"][:10])
    with pytest.raises(ValueError, match="at least 20 rows"):
        DriftDetector().fit(split["x_ref"][:5])
    with pytest.raises(ValueError, match="alpha"):
        DriftDetector(alpha=1.5)
    fitted = DriftDetector(epochs=1).fit(split["x_ref"][:100])
    with pytest.raises(ValueError, match="the reference 64"):
        fitted.test(np.zeros((5, 10)))
