"""The digits workflow written in Python: TaskFlow tasks made with ``@scanflow_task``, no spec file.

Each task calls a step function of ``examples/digits/digits_steps.py``; ``@scanflow_task`` makes it a
TaskFlow task that runs as a Scanflow step (tracked, checked, attested): its parameters receive the
inputs as paths to read and the outputs as paths to write. Outputs travel to the next
task as references through XCom (``parts["train"]``), never as data. ``scanflow_finish()``, called
last, closes the Scanflow run.

Link this file into your DAGs folder, then::

    airflow dags test digits_taskflow
"""

from __future__ import annotations

import sys
from pathlib import Path

from airflow.sdk import DAG

from scanflow_airflow import scanflow_finish, scanflow_task

DIGITS = Path(__file__).resolve().parents[1] / "digits"
if str(DIGITS) not in sys.path:
    sys.path.insert(0, str(DIGITS))

import digits_steps  # noqa: E402  (the digits example's step functions, put on sys.path above)

#: No row of eval or test may repeat (exactly, or within 0.1 std per pixel) a row of train or eval.
NO_LEAKAGE = {"use": "leakage", "on": ["eval", "test"], "against": ["train", "eval"], "policy": "fail"}


@scanflow_task(stage="data_ingestion", outputs={"digits": {"path": "digits.npz"}})
def ingest(digits: Path) -> dict[str, int]:
    return digits_steps.ingest(digits=digits)


@scanflow_task(stage="data_validation", outputs={"report": {"kind": "report", "path": "validation.json"}})
def validate(digits: Path, report: Path) -> dict[str, float | int]:
    return digits_steps.validate(digits=digits, report=report)


@scanflow_task(
    stage="data_splitting",
    outputs={name: {"path": f"{name}.npz"} for name in ("train", "eval", "test")},
    checks=[NO_LEAKAGE],
)
def split(digits: Path, train: Path, eval: Path, test: Path, seed: int = 0) -> dict[str, int]:
    return digits_steps.split(digits=digits, train=train, eval=eval, test=test, seed=seed)


@scanflow_task(stage="training", outputs={"model": {"kind": "model", "path": "model.pt"}}, retries=1)
def train(train: Path, model: Path, seed: int = 0, epochs: int = 30) -> dict[str, float]:
    return digits_steps.train(train=train, model=model, seed=seed, epochs=epochs)


@scanflow_task(stage="evaluation", outputs={"eval_metrics": {"kind": "metrics", "path": "metrics.json"}})
def evaluate(model: Path, eval: Path, eval_metrics: Path) -> dict[str, float]:
    return digits_steps.evaluate(model=model, eval=eval, eval_metrics=eval_metrics)


@scanflow_task(stage="test", outputs={"test_metrics": {"kind": "metrics", "path": "metrics.json"}})
def test(model: Path, test: Path, test_metrics: Path) -> dict[str, float]:
    return digits_steps.test(model=model, test=test, test_metrics=test_metrics)


with DAG("digits_taskflow", schedule=None, tags=["scanflow", "example"]) as dag:
    digits = ingest()["digits"]  # a reference to the output, through XCom
    report = validate(digits=digits)
    parts = split(digits=digits, seed=0)
    report >> parts  # split only once the data is valid
    model = train(train=parts["train"], seed=0)["model"]
    evaluate(model=model, eval=parts["eval"])
    test(model=model, test=parts["test"])
    scanflow_finish()  # last: closes the Scanflow run, fails the DAG run if a task failed
