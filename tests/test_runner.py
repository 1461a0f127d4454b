"""The local runner: order, parallelism, failures downstream, retries, --step, --resume, objectives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scanflow_core.plugins import get_plugin_manager
from scanflow_core.runner import run_workflow
from scanflow_core.spec import load_workflow

DIAMOND = """
apiVersion: scanflow/v1
name: diamond
params: {fail_left: false, flaky: 0}
objectives:
  - {name: enough, expr: "join.total >= 3"}
  - {name: greedy, expr: "join.total >= 100", blocking: false}
steps:
  - {name: root, stage: data_ingestion, call: MOD:root, outputs: [seed]}
  - {name: left, stage: data_transformation, call: MOD:left, inputs: [seed], outputs: [l], retries: 2}
  - {name: right, stage: data_transformation, call: MOD:right, inputs: [seed], outputs: [r]}
  - {name: join, stage: training, call: MOD:join, inputs: [l, r], outputs: {model: {kind: model}}}
  - {name: side, stage: data_analysis, call: MOD:side, needs: [root]}
"""

CODE = """
import threading
BARRIER = threading.Barrier(2, timeout=5)
CALLS = []
def root(seed):
    CALLS.append("root"); seed.write_text("1")
def left(seed, l, fail_left, flaky):
    CALLS.append("left")
    if fail_left:
        raise RuntimeError("left is broken")
    if CALLS.count("left") <= flaky:
        raise RuntimeError("flaky")
    BARRIER.wait()          # left and right must run at the same time
    l.write_text("1")
def right(seed, r, fail_left):
    CALLS.append("right")
    if not fail_left:
        BARRIER.wait()
    r.write_text("2")
def join(l, r, model):
    CALLS.append("join"); total = int(l.read_text()) + int(r.read_text()); model.write_text(str(total))
    return {"total": total}
def side():
    CALLS.append("side"); return {"rows": 1}
"""


def _load(write_spec: Any, params: Any = None) -> Any:
    import sys

    spec = write_spec(DIAMOND, code=CODE, module="diamond_steps")
    sys.modules.pop("diamond_steps", None)
    return load_workflow(spec, params), None


def _module() -> Any:
    import sys

    return sys.modules["diamond_steps"]


def test_independent_steps_run_in_parallel_and_objectives_are_recorded(write_spec: Any, home: Path) -> None:
    workflow, _ = _load(write_spec)
    run = run_workflow(workflow, pm=get_plugin_manager(autoload=False), max_parallel=2)
    assert run.status == "succeeded"
    calls = _module().CALLS
    assert calls[0] == "root" and calls.index("join") > max(calls.index("left"), calls.index("right"))
    manifest = json.loads((run.directory / "run.json").read_text())
    assert manifest["status"] == "succeeded"
    assert list(manifest["steps"]) == ["root", "left", "right", "join", "side"]
    objectives = {o["name"]: o for o in manifest["objectives"]}
    assert objectives["enough"]["passed"] is True and objectives["enough"]["observed"] == {"join.total": 3.0}
    assert objectives["greedy"]["passed"] is False and objectives["greedy"]["blocking"] is False


def test_a_failure_blocks_downstream_but_not_independent_branches(write_spec: Any, home: Path) -> None:
    workflow, _ = _load(write_spec, ["fail_left=true"])
    events: list[tuple[str, str]] = []
    run = run_workflow(
        workflow,
        pm=get_plugin_manager(autoload=False),
        on_event=lambda kind, name, *_: events.append((kind, name)),
    )
    steps = run.step_summaries()
    assert run.status == "failed"
    assert steps["left"]["status"] == "failed" and steps["left"]["attempt"] == 3  # retries: 2
    assert "RuntimeError: left is broken" in steps["left"]["reason"]
    assert steps["join"] == {
        "status": "upstream_failed",
        "stage": "training",
        "reason": "upstream step 'left' failed",
        "metrics": {},
        "outputs": {},
    }
    assert steps["side"]["status"] == "succeeded"
    assert events.count(("retry", "left")) == 2
    assert [(o.name, o.passed, o.reason) for o in run.objectives] == [
        ("enough", False, "not judged: join upstream_failed"),
        ("greedy", False, "not judged: join upstream_failed"),
    ]


def test_retries_are_honoured(write_spec: Any, home: Path) -> None:
    workflow, _ = _load(write_spec, ["flaky=2"])
    run = run_workflow(workflow, pm=get_plugin_manager(autoload=False))
    assert run.status == "succeeded"
    assert run.step_summary("left")["attempt"] == 3  # type: ignore[index]


def test_step_runs_only_it_and_what_it_needs(write_spec: Any, home: Path) -> None:
    workflow, _ = _load(write_spec)
    run = run_workflow(workflow, steps=["side"], pm=get_plugin_manager(autoload=False))
    assert list(run.step_summaries()) == ["root", "side"]
    assert _module().CALLS == ["root", "side"]


def test_resume_reuses_complete_steps_and_reruns_the_rest(write_spec: Any, home: Path) -> None:
    workflow, _ = _load(write_spec, ["fail_left=true"])
    pm = get_plugin_manager(autoload=False)
    first = run_workflow(workflow, pm=pm)
    assert first.status == "failed"
    (first.step_dir("right") / "outputs" / "r").write_text("99")  # tampered: must be rerun
    _module().CALLS.clear()
    fixed, _ = _load(write_spec)
    events: list[tuple[str, str]] = []
    second = run_workflow(
        fixed, resume=first.run_id, pm=pm, on_event=lambda kind, name, *_: events.append((kind, name))
    )
    assert second.status == "succeeded" and second.run_id == first.run_id
    assert ("reused", "root") in events and ("reused", "side") in events
    assert sorted(_module().CALLS) == ["join", "left", "right"]
    assert second.step_summary("join")["metrics"] == {"total": 3.0}  # type: ignore[index]


def test_resuming_an_unknown_run_is_a_clear_error(write_spec: Any, home: Path) -> None:
    from scanflow_core.errors import ScanflowError

    workflow, _ = _load(write_spec)
    with pytest.raises(ScanflowError, match="no run 'nope' to resume"):
        run_workflow(workflow, resume="nope", pm=get_plugin_manager(autoload=False))


def test_skipped_steps_skip_their_downstream(write_spec: Any, home: Path) -> None:
    spec = write_spec(
        """
        apiVersion: scanflow/v1
        name: w
        params: {retrain: false}
        steps:
          - {name: a, stage: training, call: MOD:a, when: "params.retrain", outputs: [m]}
          - {name: b, stage: evaluation, call: MOD:b, inputs: [m]}
        """,
        code="def a(m):\n    m.write_text('x')\ndef b(m):\n    return {'acc': 1}\n",
    )
    run = run_workflow(load_workflow(spec), pm=get_plugin_manager(autoload=False))
    steps = run.step_summaries()
    assert run.status == "succeeded"
    assert steps["a"]["status"] == "skipped" and "params.retrain" in steps["a"]["reason"]
    assert steps["b"] == {
        "status": "skipped",
        "stage": "evaluation",
        "reason": "upstream step 'a' was skipped",
        "metrics": {},
        "outputs": {},
    }


def test_when_reads_upstream_metrics(write_spec: Any, home: Path) -> None:
    spec = write_spec(
        """
        apiVersion: scanflow/v1
        name: w
        steps:
          - {name: evaluate, stage: evaluation, call: MOD:ev}
          - {name: alert, stage: monitoring, call: MOD:alert, needs: [evaluate], when: "evaluate.accuracy < 0.9"}
          - {name: promote, stage: packaging, call: MOD:promote, needs: [evaluate], when: "evaluate.accuracy >= 0.9"}
        """,
        code="def ev():\n    return {'accuracy': 0.8}\ndef alert():\n    return {'alerts': 1}\ndef promote():\n    pass\n",
    )
    run = run_workflow(load_workflow(spec), pm=get_plugin_manager(autoload=False))
    steps = run.step_summaries()
    assert steps["alert"]["status"] == "succeeded"
    assert steps["promote"]["status"] == "skipped"
    assert "evaluate.accuracy=0.8" in steps["promote"]["reason"]


def test_an_interrupt_marks_the_run_failed_and_propagates(write_spec: Any, home: Path) -> None:
    spec = write_spec(
        """
        apiVersion: scanflow/v1
        name: w
        steps:
          - {name: a, stage: training, call: MOD:a}
        """,
        code="def a():\n    raise KeyboardInterrupt\n",
    )
    with pytest.raises(KeyboardInterrupt):
        run_workflow(load_workflow(spec), pm=get_plugin_manager(autoload=False), run_id="interrupted")
    manifest = json.loads((home / "runs" / "interrupted" / "run.json").read_text())
    assert manifest["status"] == "failed"
    assert (
        json.loads((home / "runs" / "interrupted" / "steps" / "a" / "step.json").read_text())["reason"]
        == "interrupted"
    )


def test_nested_workflows_run_as_qualified_steps(write_spec: Any, home: Path, tmp_path: Path) -> None:
    write_spec(
        """
        apiVersion: scanflow/v1
        name: prep
        params: {scale: 1}
        inputs: {raw: {}}
        steps:
          - {name: clean, stage: data_transformation, call: MOD:clean, inputs: [raw], outputs: [cleaned]}
        """,
        code="def clean(raw, cleaned, scale):\n    cleaned.write_text(str(int(raw.read_text()) * scale))\n",
        name="prep.yaml",
        module="nested_steps",
    )
    spec = write_spec(
        """
        apiVersion: scanflow/v1
        name: outer
        steps:
          - {name: ingest, stage: data_ingestion, call: nested_steps:ingest, outputs: [raw]}
          - {name: prep, stage: data_transformation, workflow: prep.yaml, inputs: {raw: raw}, params: {scale: 5}}
          - {name: train, stage: training, call: nested_steps:train, inputs: {data: prep.cleaned}}
        """,
    )
    code = (tmp_path / "nested_steps.py").read_text()
    (tmp_path / "nested_steps.py").write_text(
        code
        + "def ingest(raw):\n    raw.write_text('3')\ndef train(data):\n    return {'value': int(data.read_text())}\n"
    )
    run = run_workflow(load_workflow(spec), pm=get_plugin_manager(autoload=False))
    assert list(run.step_summaries()) == ["ingest", "prep.clean", "train"]
    assert run.step_summary("train")["metrics"] == {"value": 15.0}  # type: ignore[index]


def test_a_scanflow_error_raised_by_a_steps_code_fails_that_step_not_the_run(
    write_spec: Any, home: Path
) -> None:
    spec = write_spec(
        """\
        apiVersion: scanflow/v1
        name: raising
        steps:
          - {name: bad, stage: training, call: MOD:bad}
          - {name: other, stage: logging, call: MOD:other}
        """,
        code="""\
        from scanflow_core.errors import ScanflowError


        def bad():
            raise ScanflowError("the model registry said no")


        def other():
            return {"ok": 1}
        """,
    )
    run = run_workflow(load_workflow(spec), home=home, pm=get_plugin_manager(autoload=False))

    steps = run.step_summaries()
    assert run.status == "failed"
    assert steps["bad"]["status"] == "failed" and steps["bad"]["reason"] == "the model registry said no"
    assert steps["other"]["status"] == "succeeded"
