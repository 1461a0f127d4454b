"""The digits example's steps, called directly in sequence the way Scanflow calls them."""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits"
if str(EXAMPLE) not in sys.path:
    sys.path.insert(0, str(EXAMPLE))

import digits_steps as steps  # noqa: E402  (lives in the example's folder, put on sys.path above)

FAST = {"epochs": 3, "lr": 0.01, "hidden": 32}


class Recorder:
    """Stands in for ``log_metric`` and ``log_params`` so a test can read what a step logged."""

    def __init__(self) -> None:
        self.metrics: list[tuple[str, float, int | None]] = []
        self.params: dict[str, Any] = {}

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        self.metrics.append((key, value, step))

    def log_params(self, params: dict[str, Any]) -> None:
        self.params.update(params)


@pytest.fixture
def logged(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(steps, "log_metric", recorder.log_metric)
    monkeypatch.setattr(steps, "log_params", recorder.log_params)
    return recorder


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ingest") / "digits.npz"
    steps.ingest(digits=path)
    return path


def split_into(folder: Path, digits: Path, **params: Any) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    names = (
        ("train", "eval", "test", "incoming")
        if params.get("incoming_fraction")
        else ("train", "eval", "test")
    )
    paths = {name: folder / f"{name}.npz" for name in names}
    steps.split(digits=digits, **paths, **params)
    return paths


def call(function: Callable[..., Any], **names: Any) -> Any:
    """Call a step the way Scanflow does: pass only the names its signature accepts."""
    accepted = inspect.signature(function).parameters
    return function(**{name: value for name, value in names.items() if name in accepted})


def arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as data:
        return data["X"], data["y"]


def test_import_is_cheap() -> None:
    """The runner imports the modules to find a step; torch, scikit-learn, scipy, mlflow and Scanflow's
    heavy modules load only inside steps."""
    heavy = {"torch", "sklearn", "scipy", "mlflow", "scanflow_core.improve", "scanflow_core.serving"}
    code = f"import sys, digits_steps, digits_improve, digits_production; print(sorted({heavy!r} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": f"{EXAMPLE}:{Path(__file__).resolve().parents[2]}", "PATH": ""},
    )
    assert out.stdout.strip() == "[]"


def test_ingest_writes_scaled_float32_digits(tmp_path: Path) -> None:
    metrics = steps.ingest(digits=tmp_path / "digits.npz")

    assert metrics == {"rows": 1797, "features": 64, "classes": 10}
    assert [p.name for p in tmp_path.iterdir()] == ["digits.npz"]
    x, y = arrays(tmp_path / "digits.npz")
    assert x.dtype == np.float32 and x.shape == (1797, 64)
    assert x.min() == 0.0 and x.max() == 1.0
    assert y.shape == (1797,) and set(np.unique(y)) == set(range(10))


def test_validate_accepts_digits_and_writes_a_report(digits: Path, tmp_path: Path) -> None:
    metrics = steps.validate(digits=digits, report=tmp_path / "report.json")

    assert metrics["rows"] == 1797 and metrics["nan_values"] == 0
    assert 0.9 < metrics["class_balance"] <= 1.0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["ok"] is True and sum(report["class_counts"]) == 1797


def _nan(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x[3, 5] = np.nan
    return x, y


def _range(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x * 16, y


def _shape(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x[:, :63], y


def _labels(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y[y == 7] = 11
    return x, y


def _imbalance(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = (y != 3) | (np.cumsum(y == 3) <= 20)
    return x[keep], y[keep]


def _rows(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x, y[:-1]


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (_nan, r"X has 1 NaN values"),
        (_range, r"X values lie in \[0, 16\], expected \[0, 1\]"),
        (_shape, r"X has shape \(1797, 63\), expected \(rows, 64\)"),
        (_labels, r"label set is wrong: unknown labels \[11\], missing labels \[7\]"),
        (_imbalance, r"classes are imbalanced: rarest class 3 has 20 rows"),
        (_rows, r"y has shape \(1796,\), expected \(1797,\)"),
    ],
    ids=["nan", "range", "shape", "labels", "imbalance", "rows"],
)
def test_validate_rejects_corrupted_data(
    digits: Path,
    tmp_path: Path,
    corrupt: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    message: str,
) -> None:
    x, y = corrupt(*arrays(digits))
    bad = tmp_path / "bad.npz"
    np.savez(bad, X=x, y=y)

    with pytest.raises(ValueError, match=message):
        steps.validate(digits=bad, report=tmp_path / "report.json")
    assert not (tmp_path / "report.json").exists()


def test_validate_names_missing_arrays(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, X=np.zeros((4, 64), dtype=np.float32))

    with pytest.raises(ValueError, match=r"bad.npz: missing arrays \['y'\]"):
        steps.validate(digits=bad, report=tmp_path / "report.json")


def test_split_is_stratified_disjoint_and_logged(digits: Path, tmp_path: Path, logged: Recorder) -> None:
    paths = {name: tmp_path / f"{name}.npz" for name in ("train", "eval", "test")}
    metrics = steps.split(digits=digits, **paths, seed=0, eval_fraction=0.15, test_fraction=0.15)

    assert metrics == {"train_size": 1257, "eval_size": 270, "test_size": 270}
    assert logged.params == {"seed": 0, "eval_fraction": 0.15, "test_fraction": 0.15}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.npz", "test.npz", "train.npz"]
    x_all, y_all = arrays(digits)
    overall = np.bincount(y_all, minlength=10) / len(y_all)
    rows: list[bytes] = []
    for path in paths.values():
        x, y = arrays(path)
        assert x.shape == (len(y), 64) and x.dtype == np.float32
        share = np.bincount(y, minlength=10) / len(y)
        assert np.abs(share - overall).max() < 0.01, f"{path.name} is not stratified"
        rows.extend(row.tobytes() for row in x)
    all_rows = {row.tobytes() for row in x_all}
    assert len(rows) == 1797 and set(rows) == all_rows, "the three sets together are not the whole data"


def test_split_is_reproducible_by_seed(digits: Path, tmp_path: Path, logged: Recorder) -> None:
    first = split_into(tmp_path / "a", digits, seed=7)
    again = split_into(tmp_path / "b", digits, seed=7)
    other = split_into(tmp_path / "c", digits, seed=8)

    for name in ("train", "eval", "test"):
        for same, new in zip(arrays(first[name]), arrays(again[name]), strict=True):
            np.testing.assert_array_equal(same, new)
        assert not np.array_equal(arrays(first[name])[1], arrays(other[name])[1])


def test_split_sets_incoming_digits_aside_first(digits: Path, tmp_path: Path, logged: Recorder) -> None:
    """With incoming_fraction, that share is set aside (stratified) before the usual split of the rest."""
    paths = split_into(tmp_path, digits, seed=0, incoming_fraction=0.25)

    sizes = {name: len(arrays(path)[1]) for name, path in paths.items()}
    assert sizes == {"train": 942, "eval": 202, "test": 203, "incoming": 450}
    assert logged.params == {
        "seed": 0,
        "eval_fraction": 0.15,
        "test_fraction": 0.15,
        "incoming_fraction": 0.25,
    }
    rows = [row.tobytes() for path in paths.values() for row in arrays(path)[0]]
    assert len(rows) == 1797 and len(set(rows)) == len({r.tobytes() for r in arrays(digits)[0]})
    share = np.bincount(arrays(paths["incoming"])[1], minlength=10) / 450
    assert np.abs(share - np.bincount(arrays(digits)[1], minlength=10) / 1797).max() < 0.01


@pytest.mark.parametrize(
    ("given", "fraction"), [(True, 0.0), (False, 0.25), (True, 1.0)], ids=["no-share", "no-output", "all"]
)
def test_split_refuses_an_incoming_share_without_its_output(
    digits: Path, tmp_path: Path, logged: Recorder, given: bool, fraction: float
) -> None:
    outputs = {name: tmp_path / f"{name}.npz" for name in ("train", "eval", "test")}
    incoming = tmp_path / "incoming.npz" if given else None
    with pytest.raises(
        ValueError, match=r"incoming_fraction \(.*\) must lie in \[0, 1\), and above 0 exactly"
    ):
        steps.split(digits=digits, **outputs, incoming=incoming, incoming_fraction=fraction)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(("eval_fraction", "test_fraction"), [(0.0, 0.2), (0.5, 0.5), (0.2, -0.1)])
def test_split_rejects_bad_fractions(
    digits: Path, tmp_path: Path, logged: Recorder, eval_fraction: float, test_fraction: float
) -> None:
    with pytest.raises(ValueError, match="must be positive and sum to less than 1"):
        split_into(tmp_path, digits, eval_fraction=eval_fraction, test_fraction=test_fraction)


def test_train_evaluate_test_in_sequence(digits: Path, tmp_path: Path, logged: Recorder) -> None:
    data = split_into(tmp_path, digits, seed=0)
    model = tmp_path / "model.pt"

    trained = steps.train(train=data["train"], model=model, seed=0, **FAST)

    assert set(trained) == {"train_accuracy", "final_loss"}
    assert trained["train_accuracy"] > 0.8
    losses = [(value, step) for key, value, step in logged.metrics if key == "loss"]
    assert [step for _, step in losses] == [0, 1, 2]
    assert losses[-1][0] == pytest.approx(trained["final_loss"]) and losses[-1][0] < losses[0][0]
    assert logged.params["hidden"] == 32 and logged.params["parameters"] == 64 * 32 + 32 + 32 * 10 + 10

    scores = steps.evaluate(model=model, eval=data["eval"], eval_metrics=tmp_path / "eval.json")
    tested = steps.test(model=model, test=data["test"], test_metrics=tmp_path / "test.json")

    for result, written in ((scores, tmp_path / "eval.json"), (tested, tmp_path / "test.json")):
        assert set(result) == {"accuracy", "macro_f1", "loss"}
        assert result["accuracy"] > 0.75 and result["macro_f1"] > 0.7 and result["loss"] > 0
        document = json.loads(written.read_text())
        assert document["accuracy"] == result["accuracy"] and document["rows"] == 270
        assert np.trace(np.array(document["confusion"])) == round(result["accuracy"] * 270)


def test_training_is_reproducible_by_seed(digits: Path, tmp_path: Path, logged: Recorder) -> None:
    data = split_into(tmp_path, digits, seed=0)
    first = steps.train(train=data["train"], model=tmp_path / "a.pt", seed=3, **FAST)
    again = steps.train(train=data["train"], model=tmp_path / "b.pt", seed=3, **FAST)

    assert first == again
    a = steps.evaluate(model=tmp_path / "a.pt", eval=data["eval"], eval_metrics=tmp_path / "a.json")
    b = steps.evaluate(model=tmp_path / "b.pt", eval=data["eval"], eval_metrics=tmp_path / "b.json")
    assert a == b


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_full_settings_meet_the_objectives(tmp_path: Path, logged: Recorder, seed: int) -> None:
    """The workflow's own settings (scanflow.yaml) clear its objectives with margin, whatever the seed."""
    spec = yaml.safe_load((EXAMPLE / "scanflow.yaml").read_text())
    params = {s["name"]: {**spec["params"], **s.get("params", {}), "seed": seed} for s in spec["steps"]}
    assert params["split"]["incoming_fraction"] > 0  # the production part's new data comes out of the split
    digits, model = tmp_path / "digits.npz", tmp_path / "model.pt"
    call(steps.ingest, digits=digits, **params["ingest"])
    call(steps.validate, digits=digits, report=tmp_path / "report.json", **params["validate"])
    data = split_into(tmp_path, digits, **params["split"])
    call(steps.train, train=data["train"], model=model, **params["train"])
    scores = call(steps.evaluate, model=model, eval=data["eval"], eval_metrics=tmp_path / "e.json")
    tested = call(steps.test, model=model, test=data["test"], test_metrics=tmp_path / "t.json")

    assert len([key for key, _, _ in logged.metrics if key == "loss"]) == params["train"]["epochs"]
    assert scores["accuracy"] >= 0.93  # objective: evaluate.accuracy >= 0.90
    assert tested["accuracy"] >= 0.93  # objective: test.accuracy >= 0.88
    assert tested["macro_f1"] >= 0.93  # objective: test.macro_f1 >= 0.88


def test_spec_names_the_step_functions() -> None:
    """Every ``call`` in scanflow.yaml names a function of digits_steps that takes what the step passes."""
    spec = yaml.safe_load((EXAMPLE / "scanflow.yaml").read_text())
    assert spec["apiVersion"] == "scanflow/v1"
    stages = [s["stage"] for s in spec["steps"]]
    assert stages[:6] == [
        "data_ingestion",
        "data_validation",
        "data_splitting",
        "training",
        "evaluation",
        "test",
    ]
    assert stages[6:] == [
        "packaging", "serving", "data_ingestion", "monitoring", "monitoring", "data_ingestion", "training", "packaging"
    ]  # fmt: skip
    for step in spec["steps"]:
        module, _, name = step["call"].partition(":")
        parameters = inspect.signature(getattr(importlib.import_module(module), name)).parameters
        given = {*spec["params"], *step.get("params", {}), *step.get("inputs", []), *step.get("outputs", {})}
        required = {p.name for p in parameters.values() if p.default is inspect.Parameter.empty}
        assert required <= given, f"{step['name']}: the spec does not pass {required - given}"
        assert set(step.get("params", {})) <= set(parameters), f"{step['name']}: takes no {step['params']}"
