"""The digits workflow written as Flyte code: ``@scanflow_task`` functions in a ``@scanflow_workflow``.

Each task is a plain flytekit task with typed inputs and outputs (``FlyteFile`` for the datasets and
the model, numbers for the scores) and Scanflow around it: every call is a step of the execution's
Scanflow run, its files digested, checked, attested and tracked (MLflow) like the steps of a spec.
The split's ``leakage`` check fails the task if a test row repeats a training row. The functions
reuse the steps of ``examples/digits/digits_steps.py``.

    pyflyte run examples/flyte/digits_tasks.py digits_tasks
    pyflyte run examples/flyte/digits_tasks.py digits_tasks --seed 1 --epochs 10
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

from flytekit.types.file import FlyteFile

from scanflow_core import log_metric
from scanflow_flyte import output_path, scanflow_task, scanflow_workflow

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "digits"))
import digits_steps

NPZ = {"kind": "data", "path": "data.npz"}


@scanflow_task(stage="data_ingestion", outputs={"o0": NPZ})
def ingest() -> FlyteFile:
    """scikit-learn's bundled digits, pixels scaled to [0, 1]."""
    path = output_path()  # write straight into the run directory: no copy
    for name, value in digits_steps.ingest(digits=path).items():
        log_metric(name, value)
    return FlyteFile(str(path))


class Split(NamedTuple):
    train: FlyteFile
    test: FlyteFile


@scanflow_task(
    stage="data_splitting",
    outputs={"train": {"kind": "data", "path": "train.npz"}, "test": {"kind": "data", "path": "test.npz"}},
    checks=[{"use": "leakage", "on": ["test"], "against": ["train"], "policy": "fail"}],
)
def split(digits: FlyteFile, seed: int = 0) -> Split:
    """A stratified, seeded split (its eval part is not used here, and not kept)."""
    with tempfile.TemporaryDirectory() as scratch:
        digits_steps.split(
            digits=Path(digits.download()),
            train=output_path("train"),
            eval=Path(scratch) / "eval.npz",
            test=output_path("test"),
            seed=seed,
        )
    return Split(FlyteFile(str(output_path("train"))), FlyteFile(str(output_path("test"))))


@scanflow_task(stage="training", outputs={"o0": {"kind": "model", "path": "model.pt"}})
def train(data: FlyteFile, seed: int = 0, epochs: int = 30, lr: float = 0.01) -> FlyteFile:
    """The MLP of the digits example; logs ``loss`` at every epoch."""
    summary = digits_steps.train(
        train=Path(data.download()), model=output_path(), seed=seed, epochs=epochs, lr=lr
    )
    log_metric("train_accuracy", summary["train_accuracy"])
    return FlyteFile(str(output_path()))


class Scores(NamedTuple):
    accuracy: float
    macro_f1: float


@scanflow_task(stage="test")
def test(model: FlyteFile, data: FlyteFile) -> Scores:
    """Accuracy and macro F1 on the held-out set (tracked as the step's metrics of those names)."""
    with tempfile.TemporaryDirectory() as scratch:
        scores = digits_steps.test(
            model=Path(model.download()), test=Path(data.download()), test_metrics=Path(scratch) / "m.json"
        )
    return Scores(scores["accuracy"], scores["macro_f1"])


@scanflow_workflow
def digits_tasks(seed: int = 0, epochs: int = 30) -> float:
    """Ingest, split, train and test; returns the test accuracy."""
    parts = split(digits=ingest(), seed=seed)
    model = train(data=parts.train, seed=seed, epochs=epochs)
    return test(model=model, data=parts.test).accuracy


if __name__ == "__main__":
    print(digits_tasks())
