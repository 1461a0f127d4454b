"""The one step path: hook order, outputs, checks and their policies, runtimes, timeouts."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from scanflow_core.errors import CheckFailed, StepFailed
from scanflow_core.plugins import get_plugin_manager, hookimpl
from scanflow_core.records import CheckResult, ExecutionResult, TrackingBatch
from scanflow_core.runs import WorkflowRun
from scanflow_core.spec import load_workflow
from scanflow_core.steps import run_step

TWO_STEPS = """
apiVersion: scanflow/v1
name: two
params: {n: 4}
steps:
  - {name: make, stage: data_ingestion, call: MOD:make, outputs: [data]}
  - name: total
    stage: training
    call: MOD:total
    inputs: [data]
    outputs: {result: {kind: model}}
    checks: CHECKS
"""

CODE = """
from scanflow_core import log_metric
def make(n, data):
    data.write_text(" ".join(str(i) for i in range(n)))
    return {"rows": n}
def total(data, result):
    values = [int(v) for v in data.read_text().split()]
    for i, v in enumerate(values):
        log_metric("running", v, step=i)
    result.write_text(str(sum(values)))
    return {"total": sum(values)}
"""


class Recorder:
    """An inline plugin that notes every hook call and plays a checker named ``probe``."""

    def __init__(self, verdicts: dict[str, Any] | None = None) -> None:
        self.calls: list[str] = []
        self.batches: list[TrackingBatch] = []
        self.verdicts = verdicts or {}

    @hookimpl
    def scanflow_step_start(self, step_run: Any) -> None:
        self.calls.append(f"start:{step_run.name}")

    @hookimpl
    def scanflow_step_finish(self, step_run: Any) -> None:
        self.calls.append(f"finish:{step_run.name}:{step_run.status}")

    @hookimpl
    def scanflow_step_error(self, step_run: Any, error: BaseException) -> None:
        self.calls.append(f"error:{step_run.name}:{type(error).__name__}")

    @hookimpl
    def scanflow_checker_names(self) -> list[str]:
        return ["probe"]

    @hookimpl
    def scanflow_check(self, step_run: Any, check: Any, target: str, path: Path) -> CheckResult | None:
        if check.use != "probe":
            return None
        self.calls.append(f"check:{step_run.name}:{target}")
        verdict = self.verdicts.get(target, True)
        if isinstance(verdict, Exception):
            raise verdict
        if verdict == "hang":
            time.sleep(2)
        return CheckResult(
            "probe", target, verdict is True, f"probe says {verdict}", metrics={"size": path.stat().st_size}
        )

    @hookimpl
    def scanflow_attest_step(self, step_run: Any) -> list[Path]:
        path = step_run.run.attestation_dir / f"{step_run.name}.intoto.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}\n")
        self.calls.append(f"attest:{step_run.name}")
        return [path]

    @hookimpl
    def scanflow_track(self, run: Any, step_run: Any, batch: TrackingBatch) -> None:
        self.batches.append(batch)
        self.calls.append(f"track:{step_run.name if step_run else '-'}")


def _run(write_spec: Any, home: Path, plugin: Recorder, checks: str = "[]", **overrides: Any) -> WorkflowRun:
    spec = write_spec(TWO_STEPS.replace("CHECKS", checks), code=CODE)
    pm = get_plugin_manager([plugin], autoload=False)
    run = WorkflowRun(load_workflow(spec, overrides), pm=pm)
    run.open()
    return run


def test_hooks_fire_in_the_documented_order(write_spec: Any, home: Path) -> None:
    plugin = Recorder()
    run = _run(write_spec, home, plugin, checks="[{use: probe, on: [data, result]}]")
    run_step(run, "make")
    plugin.calls.clear()
    step_run = run_step(run, "total")
    assert plugin.calls == [
        "start:total",
        "check:total:data",
        "check:total:result",
        "attest:total",
        "track:total",
        "finish:total:succeeded",
    ]
    assert step_run.execution == ExecutionResult("inprocess", value={"total": 6}, used_params=frozenset())
    assert [r.phase for r in step_run.checks] == ["inputs", "outputs"]


def test_the_record_lands_in_the_run_directory(write_spec: Any, home: Path) -> None:
    plugin = Recorder()
    run = _run(write_spec, home, plugin)
    run_step(run, "make")
    run_step(run, "total")
    record = json.loads((run.step_dir("total") / "step.json").read_text())
    assert record["status"] == "succeeded"
    assert record["metrics"] == {"running": 3.0, "total": 6.0}
    assert record["params"] == {"n": 4}
    assert record["inputs"]["data"]["digest"].startswith("sha256:")
    assert record["outputs"]["result"]["path"] == "steps/total/outputs/result"
    lines = (run.step_dir("total") / "metrics.jsonl").read_text().splitlines()
    assert sum('"m": "running"' in line for line in lines) == 4


def test_trackers_get_tags_metrics_artifacts_and_checks(write_spec: Any, home: Path) -> None:
    plugin = Recorder()
    run = _run(write_spec, home, plugin, checks="[{use: probe, on: result, policy: warn}]")
    run_step(run, "make")
    run_step(run, "total")
    batch = plugin.batches[-1]
    assert batch.tags["scanflow.step"] == "total"
    assert batch.tags["scanflow.stage"] == "training"
    assert batch.tags["scanflow.run_id"] == run.run_id
    assert batch.tags["scanflow.spec_digest"] == run.workflow.digest
    assert [m.value for m in batch.metrics if m.key == "running"] == [0, 1, 2, 3]
    assert batch.params == {"n": 4}
    roles = {(a.name, a.role) for a in batch.artifacts}
    assert {("result", "output"), ("total.intoto.jsonl", "attestation"), ("checks.json", "report")} <= roles
    assert [c.target for c in batch.checks] == ["result"]


def test_a_fail_check_stops_the_step_with_the_report(write_spec: Any, home: Path) -> None:
    plugin = Recorder({"data": False})
    run = _run(write_spec, home, plugin, checks="[{use: probe, on: data}]")
    run_step(run, "make")
    with pytest.raises(CheckFailed) as caught:
        run_step(run, "total")
    assert [r.target for r in caught.value.report] == ["data"]
    assert "probe on data: probe says False" in str(caught.value)
    assert not (run.step_dir("total") / "outputs" / "result").exists()  # it never executed
    assert plugin.calls[-1] == "error:total:CheckFailed"
    report = json.loads((run.step_dir("total") / "checks.json").read_text())
    assert report[0]["passed"] is False and report[0]["policy"] == "fail"


def test_a_warn_check_records_and_continues(write_spec: Any, home: Path) -> None:
    plugin = Recorder({"result": False})
    run = _run(write_spec, home, plugin, checks="[{use: probe, on: result, policy: warn, severity: warning}]")
    run_step(run, "make")
    step_run = run_step(run, "total")
    assert step_run.status == "succeeded"
    assert step_run.checks[0].severity == "warning"
    assert step_run.summary()["checks"] == {"passed": 0, "failed": 0, "warned": 1}


def test_a_crashing_checker_is_a_failed_result_not_a_lost_step(write_spec: Any, home: Path) -> None:
    plugin = Recorder({"result": RuntimeError("boom")})
    run = _run(write_spec, home, plugin, checks="[{use: probe, on: result, policy: warn}]")
    run_step(run, "make")
    step_run = run_step(run, "total")
    result = step_run.checks[0]
    assert not result.passed and "the checker crashed: RuntimeError: boom" in result.summary
    assert "Traceback" in result.details["traceback"]


def test_a_checker_over_its_time_budget_fails_in_time(write_spec: Any, home: Path) -> None:
    plugin = Recorder({"result": "hang"})
    run = _run(write_spec, home, plugin, checks="[{use: probe, on: result, timeout: 0.2}]")
    run_step(run, "make")
    started = time.perf_counter()
    with pytest.raises(CheckFailed, match=r"did not answer within 0.2s"):
        run_step(run, "total")
    assert time.perf_counter() - started < 1.5


def test_an_unknown_checker_names_the_registered_ones(write_spec: Any, home: Path) -> None:
    run = _run(write_spec, home, Recorder(), checks="[{use: greatexpectations, on: data}]")
    run_step(run, "make")
    with pytest.raises(CheckFailed, match=r"no checker named 'greatexpectations' is registered") as caught:
        run_step(run, "total")
    registered = caught.value.report[0].summary.split("(registered: ")[1].rstrip(")").split(", ")
    assert "probe" in registered and "great_expectations" in registered


def test_a_missing_output_fails_the_step(write_spec: Any, home: Path) -> None:
    spec = write_spec(
        """
        apiVersion: scanflow/v1
        name: w
        steps:
          - {name: lazy, stage: data_ingestion, call: MOD:lazy, outputs: [data]}
        """,
        code="def lazy():\n    print('forgot to write it')\n",
    )
    run = WorkflowRun(load_workflow(spec), pm=get_plugin_manager(autoload=False))
    run.open()
    with pytest.raises(StepFailed, match=r"did not write its output 'data'") as caught:
        run_step(run, "lazy")
    assert "forgot to write it" in caught.value.logs


def test_an_exception_in_the_step_fails_it_with_the_log(write_spec: Any, home: Path) -> None:
    spec = write_spec(
        """
        apiVersion: scanflow/v1
        name: w
        steps:
          - {name: bad, stage: data_ingestion, call: MOD:bad}
        """,
        code="def bad():\n    print('about to fail')\n    raise ValueError('no data in the bucket')\n",
    )
    run = WorkflowRun(load_workflow(spec), pm=get_plugin_manager(autoload=False))
    run.open()
    with pytest.raises(StepFailed) as caught:
        run_step(run, "bad")
    assert caught.value.reason == "ValueError: no data in the bucket"
    assert "about to fail" in caught.value.logs and "Traceback" in caught.value.logs
    assert json.loads((run.step_dir("bad") / "step.json").read_text())["status"] == "failed"


def test_a_missing_input_names_the_step_that_should_have_made_it(write_spec: Any, home: Path) -> None:
    run = _run(write_spec, home, Recorder())
    with pytest.raises(StepFailed, match=r"input 'data' is missing: step 'make' of run .* should write"):
        run_step(run, "total")


def test_a_false_when_skips_the_step_with_the_reason(write_spec: Any, home: Path) -> None:
    spec = write_spec(
        """
        apiVersion: scanflow/v1
        name: w
        params: {device: cpu}
        steps:
          - {name: gpu_only, stage: training, call: MOD:never, when: 'params.device == "cuda"'}
        """,
        code="def never():\n    raise AssertionError('must not run')\n",
    )
    plugin = Recorder()
    run = WorkflowRun(load_workflow(spec), pm=get_plugin_manager([plugin], autoload=False))
    run.open()
    step_run = run_step(run, "gpu_only")
    assert step_run.status == "skipped"
    assert step_run.reason is not None and "params.device" in step_run.reason and "'cpu'" in step_run.reason
    assert plugin.calls == ["track:gpu_only", "finish:gpu_only:skipped"]


def test_a_container_step_without_a_container_runtime_says_what_to_install(
    write_spec: Any, home: Path
) -> None:
    spec = write_spec(
        """
        apiVersion: scanflow/v1
        name: w
        steps:
          - {name: boxed, stage: training, image: "python:3.11-slim", command: "python -c 1"}
        """
    )
    pm = get_plugin_manager(autoload=False)
    pm.unregister(name="scanflow_core.runtimes.docker")  # as if scanflow[docker] were not installed
    run = WorkflowRun(load_workflow(spec), pm=pm)
    run.open()
    with pytest.raises(
        StepFailed, match=r"runs in python:3.11-slim, and no registered runtime runs containers"
    ):
        run_step(run, "boxed")


COMMAND_SPEC = """
apiVersion: scanflow/v1
name: cmd
params: {greeting: hello, n: 3}
steps:
  - name: shout
    stage: data_ingestion
    command: ["sh", "-c", "echo {params.greeting} $SCANFLOW_PARAM_N > {outputs.words}; echo done"]
    outputs: [words]
  - name: count
    stage: data_analysis
    runtime: local
    call: MOD:count
    inputs: [words]
    outputs: [report]
"""


def test_commands_and_local_calls_run_as_child_processes(write_spec: Any, home: Path) -> None:
    spec = write_spec(
        COMMAND_SPEC,
        code="""
        import os
        from scanflow_core import log_metric
        def count(words, report, n):
            log_metric("pid_differs", float(os.getpid() != int(os.environ["PARENT"])))
            report.write_text(words.read_text().upper())
            return {"words": len(words.read_text().split()), "n": n}
        """,
    )
    import os

    os.environ["PARENT"] = str(os.getpid())
    run = WorkflowRun(load_workflow(spec), pm=get_plugin_manager(autoload=False))
    run.open()
    shout = run_step(run, "shout")
    assert shout.outputs["words"].read_text() == "hello 3\n"
    assert (run.step_dir("shout") / "step.log").read_text() == "done\n"
    assert shout.execution is not None and shout.execution.runtime == "local"
    count = run_step(run, "count")
    assert count.outputs["report"].read_text() == "HELLO 3\n"
    assert count.recorder.latest == {"pid_differs": 1.0, "words": 2.0, "n": 3.0}


def test_a_failing_command_shows_its_last_lines(write_spec: Any, home: Path) -> None:
    spec = write_spec(
        """
        apiVersion: scanflow/v1
        name: w
        steps:
          - {name: fail, stage: data_ingestion, command: "sh -c 'echo line one; echo disk full >&2; exit 7'"}
        """
    )
    run = WorkflowRun(load_workflow(spec), pm=get_plugin_manager(autoload=False))
    run.open()
    with pytest.raises(StepFailed, match="exited with code 7") as caught:
        run_step(run, "fail")
    assert caught.value.logs.splitlines() == ["line one", "disk full"]


def test_a_command_over_its_timeout_is_killed(write_spec: Any, home: Path) -> None:
    spec = write_spec(
        """
        apiVersion: scanflow/v1
        name: w
        steps:
          - {name: slow, stage: data_ingestion, command: "sh -c 'sleep 30'", timeout: 0.5s}
        """
    )
    run = WorkflowRun(load_workflow(spec), pm=get_plugin_manager(autoload=False))
    run.open()
    started = time.perf_counter()
    with pytest.raises(StepFailed, match=r"timed out after 0.5s and was killed"):
        run_step(run, "slow")
    assert time.perf_counter() - started < 5


def test_an_in_process_call_over_its_timeout_fails(write_spec: Any, home: Path) -> None:
    spec = write_spec(
        """
        apiVersion: scanflow/v1
        name: w
        steps:
          - {name: slow, stage: data_ingestion, call: MOD:slow, timeout: 0.3}
        """,
        code="import time\ndef slow():\n    time.sleep(1)\n",
    )
    run = WorkflowRun(load_workflow(spec), pm=get_plugin_manager(autoload=False))
    run.open()
    with pytest.raises(StepFailed, match=r"timed out after 0.3s"):
        run_step(run, "slow")
    abandoned = [t for t in threading.enumerate() if t.name == "step-slow"]
    assert abandoned  # still running: Python cannot kill it
    abandoned[0].join(5)  # let it end before other tests count the steps running in this process


def test_a_function_asking_for_an_unknown_argument_is_told_what_is_on_offer(
    write_spec: Any, home: Path
) -> None:
    spec = write_spec(
        """
        apiVersion: scanflow/v1
        name: w
        params: {lr: 0.1}
        steps:
          - {name: fit, stage: training, call: MOD:fit, outputs: [model]}
        """,
        code="def fit(model, learning_rate):\n    pass\n",
    )
    run = WorkflowRun(load_workflow(spec), pm=get_plugin_manager(autoload=False))
    run.open()
    with pytest.raises(StepFailed, match=r"requires 'learning_rate'.*on offer: lr, model"):
        run_step(run, "fit")
