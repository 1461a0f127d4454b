"""The digits workflow written as Prefect code: the same step functions as Scanflow tasks.

Each ``@scanflow_task`` is a Prefect task with Scanflow's step path around the function: its outputs
are files in the run directory (passed on as references, never as data), its metrics tracked, its
checks run (``split`` fails on leaked rows), each call attested. The flow run is one Scanflow run,
closed when the flow run ends::

    python examples/prefect/digits_tasks.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from prefect import flow

from scanflow_prefect import scanflow_task

# The step functions live beside the spec, in examples/digits.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "digits"))
import digits_steps as steps

ingest = scanflow_task(
    steps.ingest, stage="data_ingestion", outputs={"digits": {"kind": "data", "path": "digits.npz"}}
)
validate = scanflow_task(
    steps.validate, stage="data_validation", outputs={"report": {"kind": "report", "path": "validation.json"}}
)
split = scanflow_task(
    steps.split,
    stage="data_splitting",
    outputs={name: {"kind": "data", "path": f"{name}.npz"} for name in ("train", "eval", "test")},
    checks=[{"use": "leakage", "on": ["eval", "test"], "against": ["train", "eval"], "policy": "fail"}],
)
train = scanflow_task(
    steps.train, stage="training", outputs={"model": {"kind": "model", "path": "model.pt"}}, timeout="10m"
)
evaluate = scanflow_task(
    steps.evaluate, stage="evaluation", outputs={"eval_metrics": {"kind": "metrics", "path": "metrics.json"}}
)
test = scanflow_task(
    steps.test, stage="test", outputs={"test_metrics": {"kind": "metrics", "path": "metrics.json"}}
)


@flow(name="digits-tasks")
def digits_tasks(seed: int = 0, epochs: int = 30, scanflow_run_id: str | None = None) -> dict[str, float]:
    """Ingest, validate, split, train, then evaluate and test at once; return the two accuracies.

    Args:
        seed: the split's and the model's seed.
        epochs: training epochs.
        scanflow_run_id: the Scanflow run id (default: the flow run's name and the start of its id).
    """
    data = ingest()
    validate(digits=data)
    parts = split(digits=data, seed=seed)
    model = train(train=parts["train"], seed=seed, epochs=epochs)
    scored = evaluate.submit(model=model, eval=parts["eval"])
    tested = test.submit(model=model, test=parts["test"])
    return {
        "eval_accuracy": scored.result().metrics["accuracy"],
        "test_accuracy": tested.result().metrics["accuracy"],
    }


if __name__ == "__main__":
    print(digits_tasks())
