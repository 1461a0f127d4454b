"""The adapter conformance suite: the same spec gives the same semantics under every orchestrator.

An adapter's tests subclass :class:`AdapterConformance` and implement :meth:`~AdapterConformance.execute`
(run a whole spec under the orchestrator). pytest collects the inherited ``test_*`` methods::

    class TestAirflowConformance(AdapterConformance):
        def execute(self, spec, *, run_id, home, params):
            dag = dag_from_spec(spec, params=params, run_id=run_id, home=home)
            dag.test()

Each test writes a small workflow into a temporary folder, runs it through the adapter, and
compares what landed in the run directory with what the local runner records for the same spec:
the same steps with the same statuses, the same output digests, the same metrics, the same
skips, failures and objectives. The module imports nothing outside the standard library and
``scanflow_core`` at import time.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

__all__ = ["CONFORMANCE_SPEC", "CONFORMANCE_STEPS", "AdapterConformance", "write_conformance_workflow"]

CONFORMANCE_SPEC = """\
apiVersion: scanflow/v1
name: conformance
params: {rows: 20, fail_at: none, device: cpu}
objectives:
  - {name: enough, expr: "fit.rows_seen >= 10"}
steps:
  - {name: ingest, stage: data_ingestion, call: conformance_steps:ingest, outputs: [table]}
  - name: split
    stage: data_splitting
    call: conformance_steps:split
    params: {seed: 7}
    inputs: [table]
    outputs: [train, holdout]
  - name: fit
    stage: training
    call: conformance_steps:fit
    inputs: [train]
    outputs: {model: {kind: model}}
  - {name: score, stage: evaluation, call: conformance_steps:score, inputs: [model, holdout]}
  - name: gpu_report
    stage: monitoring
    call: conformance_steps:never
    needs: [score]
    when: 'params.device == "cuda"'
  - name: shell
    stage: logging
    command: ["sh", "-c", "wc -l < {inputs.table} > {outputs.count}"]
    inputs: [table]
    outputs: [count]
"""

CONFORMANCE_STEPS = """\
from scanflow_core import log_metric


def _maybe_fail(name, fail_at):
    if fail_at == name:
        raise RuntimeError(f"{name} was told to fail")


def ingest(table, rows, fail_at):
    _maybe_fail("ingest", fail_at)
    table.write_text("".join(f"{i},{i % 3}\\n" for i in range(rows)))
    return {"rows": rows}


def split(table, train, holdout, seed, fail_at):
    _maybe_fail("split", fail_at)
    lines = table.read_text().splitlines()
    keep = [line for i, line in enumerate(lines) if (i + seed) % 4]
    train.write_text("\\n".join(keep) + "\\n")
    holdout.write_text("\\n".join(line for line in lines if line not in keep) + "\\n")
    return {"train_size": len(keep), "holdout_size": len(lines) - len(keep)}


def fit(train, model, fail_at):
    _maybe_fail("fit", fail_at)
    rows = train.read_text().splitlines()
    for epoch in range(3):
        log_metric("loss", 1.0 / (epoch + 1), step=epoch)
    model.write_text(str(sum(int(r.split(",")[1]) for r in rows)))
    return {"rows_seen": len(rows)}


def score(model, holdout, fail_at):
    _maybe_fail("score", fail_at)
    return {"accuracy": int(model.read_text()) / (1 + len(holdout.read_text().splitlines()))}


def never():
    raise AssertionError("a step whose 'when' is false must not run")
"""


def write_conformance_workflow(folder: Path) -> Path:
    """Write the conformance workflow and its step module into ``folder``; return the spec's path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "conformance_steps.py").write_text(textwrap.dedent(CONFORMANCE_STEPS), encoding="utf-8")
    spec = folder / "scanflow.yaml"
    spec.write_text(CONFORMANCE_SPEC, encoding="utf-8")
    sys.modules.pop("conformance_steps", None)
    return spec


def _record(home: Path, run_id: str) -> dict[str, Any]:
    run_dir = home / "runs" / run_id
    steps = {}
    for step_json in sorted((run_dir / "steps").glob("*/step.json")):
        data = json.loads(step_json.read_text(encoding="utf-8"))
        steps[step_json.parent.name] = data
    return {"dir": run_dir, "steps": steps}


class AdapterConformance:
    """Inherit in a ``Test…`` class and implement :meth:`execute`; the tests come with it."""

    #: Whether the orchestrator raises when a step fails (most do); the suite accepts either.
    raises_on_failure: bool | None = None

    def execute(self, spec: Path, *, run_id: str, home: Path, params: dict[str, Any]) -> None:
        """Run the whole workflow ``spec`` under the orchestrator, as run ``run_id`` under ``home``.

        ``params`` are ``--param`` style overrides (``{"rows": 30}``). A failing step may raise the
        orchestrator's own exception; the suite catches it and reads the run directory.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------------------------- helpers

    def _run_both(
        self, tmp_path: Path, params: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        from scanflow_core.plugins import get_plugin_manager
        from scanflow_core.runner import run_workflow
        from scanflow_core.spec import load_workflow

        params = params or {}
        reference_spec = write_conformance_workflow(tmp_path / "reference")
        run_workflow(
            load_workflow(reference_spec, params),
            run_id="reference",
            home=tmp_path / "reference-home",
            pm=get_plugin_manager(autoload=False),
            params=params,
        )
        reference = _record(tmp_path / "reference-home", "reference")
        adapter_spec = write_conformance_workflow(tmp_path / "adapter")
        try:
            self.execute(adapter_spec, run_id="adapter", home=tmp_path / "adapter-home", params=params)
        except Exception:
            if not params.get("fail_at") or params.get("fail_at") == "none":
                raise
        return reference, _record(tmp_path / "adapter-home", "adapter")

    # --------------------------------------------------------------------------------------- tests

    def test_every_step_lands_with_the_same_status(self, tmp_path: Path) -> None:
        reference, adapter = self._run_both(tmp_path)
        statuses = {name: s["status"] for name, s in reference["steps"].items()}
        assert {name: s["status"] for name, s in adapter["steps"].items()} == statuses
        assert statuses["gpu_report"] == "skipped"
        assert "params.device" in adapter["steps"]["gpu_report"]["reason"]

    def test_outputs_and_metrics_match_the_local_runner(self, tmp_path: Path) -> None:
        reference, adapter = self._run_both(tmp_path)
        for name, ref in reference["steps"].items():
            got = adapter["steps"][name]
            assert {k: v["digest"] for k, v in got["outputs"].items()} == {
                k: v["digest"] for k, v in ref["outputs"].items()
            }, f"outputs of {name}"
            assert got["metrics"] == ref["metrics"], f"metrics of {name}"
            assert got["params"] == ref["params"], f"params of {name}"
        assert adapter["steps"]["fit"]["metrics"]["loss"] == 1.0 / 3

    def test_params_override_reaches_the_steps(self, tmp_path: Path) -> None:
        reference, adapter = self._run_both(tmp_path, {"rows": 40})
        assert adapter["steps"]["ingest"]["metrics"]["rows"] == 40
        assert adapter["steps"]["split"]["metrics"] == reference["steps"]["split"]["metrics"]

    def test_a_failing_step_fails_and_blocks_what_needs_it(self, tmp_path: Path) -> None:
        reference, adapter = self._run_both(tmp_path, {"fail_at": "fit"})
        fit = adapter["steps"]["fit"]
        assert fit["status"] == "failed" and "fit was told to fail" in fit["reason"]
        assert adapter["steps"]["shell"]["status"] == "succeeded"  # an independent branch goes on
        assert reference["steps"]["score"]["status"] == "upstream_failed"
        for downstream in ("score", "gpu_report"):  # never run; an orchestrator may not record them at all
            got = adapter["steps"].get(downstream, {"status": "not run"})
            assert got["status"] in ("upstream_failed", "not run"), downstream

    def test_the_run_directory_has_the_documented_layout(self, tmp_path: Path) -> None:
        _, adapter = self._run_both(tmp_path)
        run_dir: Path = adapter["dir"]
        assert (run_dir / "steps" / "fit" / "outputs" / "model").is_file()
        assert (run_dir / "steps" / "fit" / "metrics.jsonl").is_file()
        assert adapter["steps"]["shell"]["outputs"]["count"]["path"] == "steps/shell/outputs/count"
