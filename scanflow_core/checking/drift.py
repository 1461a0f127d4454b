"""Drift detection: is a new batch of data drawn from the same distribution as the reference data?

:class:`DriftDetector` joins four tests, each with a valid p-value under "no drift":

``autoencoder``
    Scanflow's method. A small torch autoencoder is trained on part of the reference (the *fit* part);
    every sample's score is its reconstruction error (mean squared error over the standardised numeric
    features). The rest of the reference (the *calibration* part, never seen in training) gives the scores
    of in-distribution data. A batch is judged by a one-sided Mann-Whitney U test of its scores against the
    calibration scores: its p-value is valid because calibration and batch scores are exchangeable under no
    drift (the original Scanflow min-max normalised each batch on its own, so scores were not comparable).
``features``
    One test per feature against the whole reference: two-sample Kolmogorov-Smirnov for numeric features,
    chi-square test of homogeneity for categorical ones. Per-feature p-values are corrected with
    Benjamini-Hochberg; the family's p-value is the smallest adjusted one (Simes' test of "no feature
    drifted").
``class_balance``
    When labels are given: chi-square test of homogeneity of class counts (reference vs batch).
``new levels``
    Categorical levels (and classes) the reference never had are reported and count as drift.

The overall ``p_value`` is Bonferroni over the families that apply: ``min(1, k * min(p_family))``; a
batch has ``drifted`` when that p-value is below ``alpha`` or it has new levels.

This module holds the detector and its results; :mod:`scanflow_core.checking.drift_columns` reads the
reference and batches into numeric and categorical columns, and :mod:`scanflow_core.checking.drift_statistics`
holds the two-sample tests (Mann-Whitney, Kolmogorov-Smirnov, chi-square, Benjamini-Hochberg).

Example::

    detector = DriftDetector(seed=0).fit(x_train)
    result = detector.test(x_new)
    result.drifted, result.p_value, result.tests  # {'autoencoder': ..., 'features': ...}
    detector.save("drift-detector")               # a folder: weights.pt, arrays.npz, detector.json
    DriftDetector.load("drift-detector").test(x_new)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scanflow_core.checking.drift_columns import MISSING_LEVEL as MISSING_LEVEL
from scanflow_core.checking.drift_columns import _columns, _counts, _is_frame, _labels, _levels, _shares
from scanflow_core.checking.drift_statistics import (
    _benjamini_hochberg,
    _chi2_homogeneity,
    _ks_many,
    _mann_whitney_greater,
)

__all__ = ["DriftDetector", "DriftResult", "FeatureResult"]

FORMAT_VERSION = 1


@dataclass(frozen=True)
class FeatureResult:
    """One feature's test: ``ks`` (numeric) or ``chi2`` (categorical), with its BH-adjusted p-value."""

    name: str
    kind: str
    statistic: float
    p_value: float
    adjusted_p_value: float
    drifted: bool
    new_levels: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DriftResult:
    """The outcome of :meth:`DriftDetector.test` on one batch.

    ``score`` is the batch's mean reconstruction error (``nan`` without numeric features) and
    ``reference_score`` the calibration part's; ``sample_scores`` holds each sample's error and
    ``sample_p_values`` its conformal p-value (the share of calibration scores at least as large);
    ``anomalous_share`` is the share of samples whose conformal p-value is at most ``alpha``.
    ``tests`` maps each family (``autoencoder``, ``features``, ``class_balance``) to its p-value.
    """

    drifted: bool
    p_value: float
    alpha: float
    score: float
    reference_score: float
    anomalous_share: float
    tests: dict[str, float]
    features: list[FeatureResult]
    new_levels: dict[str, list[str]]
    class_balance: dict[str, Any] | None
    size: int
    sample_scores: np.ndarray = field(repr=False)
    sample_p_values: np.ndarray = field(repr=False)

    @property
    def drifted_features(self) -> list[str]:
        return [f.name for f in self.features if f.drifted]

    def summary(self) -> str:
        """One line in words."""
        verdict = "drift" if self.drifted else "no drift"
        parts = [f"{verdict} in {self.size} samples (p = {self.p_value:.3g}, alpha = {self.alpha:g})"]
        if not math.isnan(self.score):
            parts.append(
                f"reconstruction error {self.score:.3g} vs {self.reference_score:.3g} on reference, "
                f"{self.anomalous_share:.0%} of samples anomalous"
            )
        drifted = self.drifted_features
        if drifted:
            shown = ", ".join(drifted[:5]) + (f" and {len(drifted) - 5} more" if len(drifted) > 5 else "")
            parts.append(f"{len(drifted)} of {len(self.features)} features drifted ({shown})")
        for name, levels in self.new_levels.items():
            parts.append(f"new levels in {name}: {', '.join(levels[:5])}")
        if self.class_balance is not None and self.class_balance["p_value"] < self.alpha:
            parts.append(f"class balance changed (p = {self.class_balance['p_value']:.3g})")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the per-sample arrays, JSON-serialisable."""
        data = asdict(self)
        data.pop("sample_scores")
        data.pop("sample_p_values")
        data["drifted_features"] = self.drifted_features
        return data


def _autoencoder(features: int, hidden: int, latent: int) -> Any:
    """``features -> hidden -> latent -> hidden -> features`` with ReLU after each hidden layer."""
    from torch import nn

    return nn.Sequential(
        nn.Linear(features, hidden),
        nn.ReLU(),
        nn.Linear(hidden, latent),
        nn.Linear(latent, hidden),
        nn.ReLU(),
        nn.Linear(hidden, features),
    )


class DriftDetector:
    """Fit on reference data, then :meth:`test` batches for drift (see the module's docstring).

    Args:
        alpha: the significance level of :meth:`test`'s ``drifted`` verdict.
        seed: seeds the fit/calibration split and the autoencoder, so a fit is reproducible.
        calibration_fraction: the share of the reference kept out of training to calibrate scores.
        epochs: training epochs of the autoencoder (minibatches of 64, Adam).
        threads: torch threads while fitting (restored afterwards).
    """

    def __init__(
        self,
        *,
        alpha: float = 0.05,
        seed: int = 0,
        calibration_fraction: float = 0.4,
        epochs: int = 60,
        threads: int = 1,
    ) -> None:
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must lie in (0, 1), not {alpha}")
        if not 0.05 <= calibration_fraction <= 0.95:
            raise ValueError(f"calibration_fraction must lie in [0.05, 0.95], not {calibration_fraction}")
        if epochs < 1 or threads < 1:
            raise ValueError("epochs and threads must be at least 1")
        self.alpha = alpha
        self.seed = seed
        self.calibration_fraction = calibration_fraction
        self.epochs = epochs
        self.threads = threads
        self._fitted = False

    @property
    def reference_scores(self) -> np.ndarray:
        """The calibration part's reconstruction errors, sorted (empty without an autoencoder)."""
        return self.calibration_sorted

    # ------------------------------------------------------------------------------------------ fit

    def fit(
        self,
        reference: Any,
        labels: Any = None,
        *,
        categorical: Sequence[str] = (),
    ) -> DriftDetector:
        """Learn the reference: a 2-D array or a pandas DataFrame (``object``, ``category``, ``bool``
        and ``string`` columns, and those named in ``categorical``, are categorical), with optional
        labels (one per row) for the class-balance test. Returns ``self``."""
        names, numeric, categories = _columns(reference, categorical)
        rows = len(numeric) if numeric is not None else len(next(iter(categories.values()), []))
        if rows < 20:
            raise ValueError(f"the reference needs at least 20 rows, not {rows}")
        self.columns = names
        self.numeric_names = [n for n in names if n not in categories]
        self.categorical_names = list(categories)
        self.level_counts = {name: _counts(values) for name, values in categories.items()}
        self.class_counts = _counts(_labels(labels, rows)) if labels is not None else None

        d = len(self.numeric_names)
        self.reference_sorted = np.sort(numeric, axis=0) if numeric is not None else np.empty((0, 0))
        self.autoencoder: Any = None
        self._layers: list[tuple[np.ndarray, np.ndarray]] = []
        self.calibration_sorted = np.empty(0)
        if numeric is not None and d >= 2:
            self._fit_autoencoder(numeric)
        self._fitted = True
        return self

    def _fit_autoencoder(self, numeric: np.ndarray) -> None:
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(numeric))
        n_cal = max(10, round(len(numeric) * self.calibration_fraction))
        fit_rows, cal_rows = numeric[order[n_cal:]], numeric[order[:n_cal]]
        mean = np.nanmean(fit_rows, axis=0)
        std = np.nanstd(fit_rows, axis=0)
        floor = max(float(np.median(std)) * 0.1, 1e-6)
        import torch
        from torch import nn

        self.mean = np.nan_to_num(mean).astype(np.float32)
        self.scale = np.maximum(np.nan_to_num(std), floor).astype(np.float32)
        d = numeric.shape[1]
        self.hidden = min(64, max(8, d // 2))
        self.latent = max(2, min(16, d // 8))

        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                net = _autoencoder(d, self.hidden, self.latent)
                x = torch.from_numpy(self._standardise(fit_rows))
                optimizer = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-5)
                generator = torch.Generator().manual_seed(self.seed)
                for _ in range(self.epochs):
                    for batch in torch.randperm(len(x), generator=generator).split(64):
                        optimizer.zero_grad()
                        loss = nn.functional.mse_loss(net(x[batch]), x[batch])
                        loss.backward()
                        optimizer.step()
            self._take_weights(net)
            self.calibration_sorted = np.sort(self._scores(cal_rows))
        finally:
            torch.set_num_threads(previous)

    def _standardise(self, numeric: np.ndarray) -> np.ndarray:
        z = (numeric.astype(np.float32, copy=False) - self.mean) / self.scale
        clean: np.ndarray = np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32, copy=False)
        return clean

    def _scores(self, numeric: np.ndarray) -> np.ndarray:
        """Each row's reconstruction error: the network's forward pass in float32 NumPy, with weights
        taken from the torch model once (no autograd, no torch thread pool: a batch of 100 takes
        well under a millisecond)."""
        h = self._standardise(numeric)
        x = h
        for i, (weight, bias) in enumerate(self._layers):
            h = h @ weight + bias
            if i in (0, 2):
                np.maximum(h, 0.0, out=h)
        return np.asarray(((h - x) ** 2).mean(axis=1), dtype=np.float64)

    def _take_weights(self, net: Any) -> None:
        from torch import nn

        net.eval()
        for parameter in net.parameters():
            parameter.requires_grad_(False)
        self.autoencoder = net
        linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
        self._layers = [
            (np.ascontiguousarray(m.weight.detach().numpy().T), m.bias.detach().numpy().copy())
            for m in linears
        ]

    # ------------------------------------------------------------------------------------------ test

    def test(self, batch: Any, labels: Any = None) -> DriftResult:
        """Test one batch (same columns as the reference; labels optional) and return the verdict."""
        if not self._fitted:
            raise RuntimeError("call fit() (or DriftDetector.load) before test()")
        numeric, categories = self._batch_columns(batch)
        size = len(numeric) if numeric is not None else len(next(iter(categories.values()), []))
        if size < 1:
            raise ValueError("the batch is empty")
        tests: dict[str, float] = {}

        scores = np.full(size, math.nan)
        sample_p = np.full(size, math.nan)
        score = reference_score = anomalous = math.nan
        if self._layers and numeric is not None:
            scores = self._scores(numeric)
            cal = self.calibration_sorted
            below = np.searchsorted(cal, scores, side="left")
            at_most = np.searchsorted(cal, scores, side="right")
            sample_p = (1.0 + len(cal) - below) / (len(cal) + 1.0)
            tests["autoencoder"] = _mann_whitney_greater(below, at_most, len(cal))
            score, reference_score = float(scores.mean()), float(cal.mean())
            anomalous = float((sample_p <= self.alpha).mean())

        features, new_levels = self._feature_tests(numeric, categories)
        if features:
            tests["features"] = min(f.adjusted_p_value for f in features)

        class_balance = None
        if self.class_counts is not None and labels is not None:
            observed = _counts(_labels(labels, size))
            statistic, p_class, unseen = _chi2_homogeneity(self.class_counts, observed)
            class_balance = {
                "statistic": statistic,
                "p_value": p_class,
                "reference": _shares(self.class_counts),
                "batch": _shares(observed),
                "new_classes": unseen,
            }
            tests["class_balance"] = p_class
            if unseen:
                new_levels["<class>"] = unseen

        p_value = min(1.0, len(tests) * min(tests.values())) if tests else 1.0
        return DriftResult(
            drifted=bool(p_value < self.alpha or new_levels),
            p_value=p_value,
            alpha=self.alpha,
            score=score,
            reference_score=reference_score,
            anomalous_share=anomalous,
            tests=tests,
            features=features,
            new_levels=new_levels,
            class_balance=class_balance,
            size=size,
            sample_scores=scores,
            sample_p_values=sample_p,
        )

    def _batch_columns(self, batch: Any) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        if _is_frame(batch):
            missing = [c for c in self.columns if c not in batch.columns]
            if missing:
                raise ValueError(f"the batch lacks the reference's columns {missing}")
            numeric = (
                batch[self.numeric_names].to_numpy(dtype=np.float64, na_value=np.nan)
                if self.numeric_names
                else None
            )
            categories = {name: _levels(batch[name].to_numpy()) for name in self.categorical_names}
            return numeric, categories
        array = np.asarray(batch)
        if array.ndim == 1:
            array = array[None, :]
        array = array.reshape(len(array), -1)
        if array.shape[1] != len(self.columns):
            raise ValueError(f"the batch has {array.shape[1]} columns, the reference {len(self.columns)}")
        if self.categorical_names:
            raise ValueError("the reference has categorical columns: pass the batch as a DataFrame")
        return array.astype(np.float64), {}

    def _feature_tests(
        self, numeric: np.ndarray | None, categories: Mapping[str, np.ndarray]
    ) -> tuple[list[FeatureResult], dict[str, list[str]]]:
        rows: list[tuple[str, str, float, float, list[str]]] = []
        if numeric is not None and self.numeric_names:
            statistics, p_values = _ks_many(self.reference_sorted, numeric)
            rows += [
                (name, "ks", float(s), float(p), [])
                for name, s, p in zip(self.numeric_names, statistics, p_values, strict=True)
            ]
        new_levels: dict[str, list[str]] = {}
        for name in self.categorical_names:
            statistic, p, unseen = _chi2_homogeneity(self.level_counts[name], _counts(categories[name]))
            rows.append((name, "chi2", statistic, p, unseen))
            if unseen:
                new_levels[name] = unseen
        adjusted = _benjamini_hochberg(np.array([r[3] for r in rows]))
        results = [
            FeatureResult(name, kind, statistic, p, float(a), bool(a < self.alpha or unseen), unseen)
            for (name, kind, statistic, p, unseen), a in zip(rows, adjusted, strict=True)
        ]
        return results, new_levels

    # ------------------------------------------------------------------------------------------ save/load

    def save(self, path: str | Path) -> Path:
        """Write the detector to the folder ``path``: ``weights.pt`` (tensors), ``arrays.npz`` (the same
        as NumPy arrays, for :meth:`load_numpy`) and ``detector.json``."""
        if not self._fitted:
            raise RuntimeError("call fit() before save()")
        import torch

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, Any] = {
            "reference_sorted": torch.from_numpy(np.ascontiguousarray(self.reference_sorted)),
            "calibration_sorted": torch.from_numpy(self.calibration_sorted),
        }
        meta: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "config": {
                "alpha": self.alpha,
                "seed": self.seed,
                "calibration_fraction": self.calibration_fraction,
                "epochs": self.epochs,
                "threads": self.threads,
            },
            "columns": self.columns,
            "numeric": self.numeric_names,
            "categorical": self.level_counts,
            "classes": self.class_counts,
            "autoencoder": None,
        }
        if self.autoencoder is not None:
            meta["autoencoder"] = {"hidden": self.hidden, "latent": self.latent}
            tensors["mean"] = torch.from_numpy(self.mean)
            tensors["scale"] = torch.from_numpy(self.scale)
            tensors.update({f"net.{k}": v for k, v in self.autoencoder.state_dict().items()})
        torch.save(tensors, folder / "weights.pt")
        arrays: dict[str, Any] = {
            "reference_sorted": self.reference_sorted,
            "calibration_sorted": self.calibration_sorted,
        }
        if self.autoencoder is not None:
            arrays.update(mean=self.mean, scale=self.scale)
            for i, (weight, bias) in enumerate(self._layers):
                arrays[f"layer{i}.weight"], arrays[f"layer{i}.bias"] = weight, bias
        np.savez(folder / "arrays.npz", allow_pickle=False, **arrays)  # what load_numpy reads (no torch)
        (folder / "detector.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return folder

    @classmethod
    def _meta(cls, folder: Path) -> tuple[DriftDetector, dict[str, Any]]:
        meta = json.loads((folder / "detector.json").read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(
                f"{folder} holds drift detector format {meta.get('format')!r}, not {FORMAT_VERSION}"
            )
        detector = cls(**meta["config"])
        detector.columns = list(meta["columns"])
        detector.numeric_names = list(meta["numeric"])
        detector.level_counts = {k: dict(v) for k, v in meta["categorical"].items()}
        detector.categorical_names = list(detector.level_counts)
        detector.class_counts = meta["classes"]
        detector.autoencoder = None
        detector._layers = []
        return detector, meta

    @classmethod
    def load_numpy(cls, path: str | Path) -> DriftDetector:
        """A detector written by :meth:`save`, read without torch (``arrays.npz``): it tests batches
        exactly as the saved one does (the forward pass is NumPy's), but cannot be fitted again."""
        folder = Path(path)
        detector, meta = cls._meta(folder)
        with np.load(folder / "arrays.npz", allow_pickle=False) as arrays:
            detector.reference_sorted = arrays["reference_sorted"]
            detector.calibration_sorted = arrays["calibration_sorted"]
            if meta["autoencoder"] is not None:
                shape = meta["autoencoder"]
                detector.hidden, detector.latent = shape["hidden"], shape["latent"]
                detector.mean, detector.scale = arrays["mean"], arrays["scale"]
                detector._layers = [(arrays[f"layer{i}.weight"], arrays[f"layer{i}.bias"]) for i in range(4)]
        detector._fitted = True
        return detector

    @classmethod
    def load(cls, path: str | Path) -> DriftDetector:
        """A detector written by :meth:`save` (no reference data needed; weights load with
        ``weights_only=True``); without torch installed, :meth:`load_numpy`."""
        folder = Path(path)
        try:
            import torch
        except ImportError:
            return cls.load_numpy(folder)
        detector, meta = cls._meta(folder)
        tensors = torch.load(folder / "weights.pt", weights_only=True)
        detector.reference_sorted = tensors["reference_sorted"].numpy()
        detector.calibration_sorted = tensors["calibration_sorted"].numpy()
        if meta["autoencoder"] is not None:
            detector.hidden, detector.latent = meta["autoencoder"]["hidden"], meta["autoencoder"]["latent"]
            detector.mean, detector.scale = tensors["mean"].numpy(), tensors["scale"].numpy()
            net = _autoencoder(len(detector.numeric_names), detector.hidden, detector.latent)
            net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
            detector._take_weights(net)
        detector._fitted = True
        return detector
