"""The digits workflow (``examples/digits/scanflow.yaml``) as a Flyte workflow, built from the spec.

One node per step (ingest, validate, split, train, evaluate, test), each the Scanflow step path in a
flytekit task, then ``scanflow-finish``, which judges the objectives and closes the Scanflow run.
The workflow's input ``run_id`` (default: the execution id) names the run; its output is that id.

    pyflyte run examples/flyte/digits_workflow.py digits
    pyflyte run examples/flyte/digits_workflow.py digits --run_id nightly-1
"""

from __future__ import annotations

from pathlib import Path

from scanflow_flyte import workflow_from_spec

SPEC = Path(__file__).resolve().parents[1] / "digits" / "scanflow.yaml"

digits = workflow_from_spec(SPEC)

if __name__ == "__main__":
    print(digits())
