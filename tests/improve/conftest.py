"""Fixtures for the improve loop's tests: digits data, the example's training function on arrays, and an
embedded MLflow store (tracking and registry) under the test's own folder."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "digits"


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits as the example stores them: X in [0, 1] (float32), y (int64)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.data / 16.0).astype(np.float32), bunch.target.astype(np.int64)


@pytest.fixture(scope="session")
def digits_steps() -> Any:
    """The digits example's step module (examples/digits/digits_steps.py)."""
    if str(DIGITS) not in sys.path:
        sys.path.insert(0, str(DIGITS))
    import digits_steps

    return digits_steps


@pytest.fixture
def train_digits(digits_steps: Any, tmp_path: Path) -> Callable[..., Any]:
    """``train(x, y, epochs=..., hidden=...) -> torch module``: the example's own training function,
    which reads and writes files, run on arrays."""
    counter = {"n": 0}

    def train(x: np.ndarray, y: np.ndarray, *, epochs: int = 30, hidden: int = 64, seed: int = 0) -> Any:
        counter["n"] += 1
        folder = tmp_path / f"train-{counter['n']}"
        folder.mkdir()
        digits_steps._save(folder / "train.npz", x, y)
        digits_steps.train(folder / "train.npz", folder / "model.pt", seed=seed, epochs=epochs, hidden=hidden)
        return digits_steps._restore(folder / "model.pt")

    return train


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, fully migrated MLflow SQLite database, made once (migrations take seconds)."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_uri(tmp_path: Path, mlflow_template: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh embedded store (a copy of the template) under the test's folder; artifacts beside it."""
    home = tmp_path / ".scanflow"
    home.mkdir()
    shutil.copy(mlflow_template, home / "mlflow.db")
    monkeypatch.setenv("SCANFLOW_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # mlflow's default artifact root (./mlruns) lands in the test's folder
    return f"sqlite:///{home / 'mlflow.db'}"
