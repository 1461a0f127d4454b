"""Specs shared by the export tests, and a check that a tool a test needs is there (in CI it must be)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

DIGITS = Path(__file__).resolve().parents[2] / "examples" / "digits" / "scanflow.yaml"
ROOT = Path(__file__).resolve().parents[2]

#: A small workflow with what the digits example lacks: a serving step, resources, a timeout, retries,
#: a workflow input file and a `$` that Compose must not interpolate.
SERVING_SPEC = """
apiVersion: scanflow/v1
name: Small_Serve
params: {threshold: 0.5}
inputs:
  raw: {kind: data, path: raw.csv}
steps:
  - name: prepare
    stage: data_transformation
    image: python:3.11-slim
    command: ["sh", "-c", "cp {inputs.raw} {outputs.table} && echo $HOME"]
    inputs: [raw]
    outputs: [table]
    resources: {cpu: 0.5, memory: 256Mi}
    timeout: 90s
    retries: 2
  - name: train
    stage: training
    call: MOD:train
    inputs: [table]
    outputs:
      model: {kind: model, path: models/model.json}
    resources: {cpu: 2, memory: 1G, gpu: 1}
  - name: serve
    stage: serving
    image: python:3.11-slim
    command: ["python", "-m", "http.server", "{params.port}"]
    needs: [train]
    params: {port: 9000}
    resources: {memory: 512Mi}
"""

STEP_CODE = "def train(table, model):\n    model.write_text('{}')\n    return {'rows': 1}\n"


@pytest.fixture
def digits_spec() -> Path:
    """The digits example's spec."""
    return DIGITS


@pytest.fixture
def serving_spec(write_spec: Any) -> Path:
    path: Path = write_spec(SERVING_SPEC, code=STEP_CODE)
    (path.parent / "raw.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    return path


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(message: str) -> None:
    """A tool or engine a test needs is not there: skip here, fail in CI (``CI=true``)."""
    if in_ci():
        pytest.fail(message + " (CI must run this test)")
    pytest.skip(message)


@pytest.fixture
def require_tool() -> Any:
    """``require_tool(*names)`` → the first of ``names`` on PATH (none: skip here, fail in CI)."""

    def find(*candidates: str) -> str:
        for name in candidates:
            found = shutil.which(name)
            if found:
                return found
        missing(f"none of {', '.join(candidates)} is installed")
        raise AssertionError("unreachable")

    return find
