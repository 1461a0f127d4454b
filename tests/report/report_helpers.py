"""Helpers for the report tests: a workflow with something of everything a report shows (passing,
warning and failing checks, a drift plot, a failed step and one blocked by it, objectives met and not
met, attestations) and text that must be escaped (a step's error, a metric's name, a checker's message)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from scanflow_core import CheckResult, hookimpl

EVIL = "<script>alert('x')</script><img src=x onerror=alert(1)>"

STEPS = """
import numpy as np

from scanflow_core import log_metric

EVIL = "<script>alert('x')</script><img src=x onerror=alert(1)>"


def make(reference, batch):
    rng = np.random.default_rng(0)
    header = "a,b,c,d"
    np.savetxt(reference, rng.normal(0, 1, (300, 4)), delimiter=",", header=header, comments="")
    np.savetxt(batch, rng.normal(1.5, 1, (120, 4)), delimiter=",", header=header, comments="")
    return {"rows": 300}


def fit(reference, model):
    model.write_text("weights")
    log_metric(EVIL, 1.0)
    return {"loss": 0.25}


def broken(model):
    raise ValueError(EVIL)


def after(model):
    return {"never": 1.0}


def guarded(batch):
    return {"never": 1.0}
"""

SPEC = """
apiVersion: scanflow/v1
name: report_demo
objectives:
  - {name: fits, expr: "fit.loss < 1"}
  - {name: too_good, expr: "fit.loss < 0", blocking: false}
steps:
  - name: make
    stage: data_ingestion
    call: STEPS:make
    outputs:
      reference: {kind: data, path: reference.csv}
      batch: {kind: data, path: batch.csv}
    checks:
      - {use: drift, on: batch, reference: reference, policy: warn}
      - {use: shouty, on: reference, policy: warn}
  - {name: fit, stage: training, call: STEPS:fit, inputs: [reference], outputs: {model: {kind: model}}}
  - {name: broken, stage: evaluation, call: STEPS:broken, inputs: [model]}
  - {name: after, stage: test, call: STEPS:after, needs: [broken], inputs: [model]}
  - name: guarded
    stage: data_analysis
    call: STEPS:guarded
    inputs: [batch]
    checks:
      - {use: shouty, on: batch, policy: fail}
"""


class ShoutyChecker:
    """A third-party checker whose message is HTML: the report must show it as text."""

    @hookimpl
    def scanflow_checker_names(self) -> list[str]:
        return ["shouty"]

    @hookimpl
    def scanflow_check(self, step_run, check, target, path):  # type: ignore[no-untyped-def]
        if check.use != "shouty":
            return None
        return CheckResult("shouty", target, False, f"bad news: {EVIL}", metrics={"loudness": 11.0})


def write_workflow(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    module = f"report_steps_{folder.name.replace('-', '_')}"
    (folder / f"{module}.py").write_text(textwrap.dedent(STEPS), encoding="utf-8")
    (folder / "scanflow.yaml").write_text(SPEC.replace("STEPS", module), encoding="utf-8")
    return folder / "scanflow.yaml"
