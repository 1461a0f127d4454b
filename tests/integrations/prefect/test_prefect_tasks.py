"""``@scanflow_task``: Prefect tasks with Scanflow's step path around them, in real flow runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from prefect_helpers import artifacts, flow_run, manifest, steps, task_runs

from scanflow_prefect import ScanflowStepFailed, TaskOutputs, scanflow_task

pytestmark = [pytest.mark.prefect, pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


@scanflow_task(stage="data_ingestion", outputs=["table"], retries=1, retry_delay_seconds=0)
def ingest(table: Path, rows: int = 5, flaky: str = "") -> dict[str, float]:
    if flaky and not Path(flaky).exists():
        Path(flaky).write_text("failed once")
        raise RuntimeError("ingest fails the first time")
    table.write_text("x\n" * rows)
    return {"rows": rows}


@scanflow_task(stage="evaluation", checks=[{"use": "row_limits", "on": ["table"], "min": 3}], retries=2)
def count(table: Path) -> dict[str, float]:
    return {"n": len(table.read_text().splitlines())}


@scanflow_task(stage="data_splitting", outputs={"low": {}, "high": {"kind": "data", "path": "high.txt"}})
def halve(table: Path, low: Path, high: Path) -> None:
    lines = table.read_text().splitlines(keepends=True)
    low.write_text("".join(lines[: len(lines) // 2]))
    high.write_text("".join(lines[len(lines) // 2 :]))


@flow(name="counting-flow")
def counting(rows: int = 5, flaky: str = "", scanflow_run_id: str | None = None) -> TaskOutputs:
    made = ingest(rows=rows, flaky=flaky)
    count(table=made["table"])
    count(table=made)  # a task of one output may be passed whole
    return made


def runs_of_task(flow_run_id: Any, task: str) -> list[Any]:
    """The task runs of one task (Prefect names them ``<task>-<3 characters>``)."""
    return [t for name, t in task_runs(flow_run_id).items() if name.rpartition("-")[0] == task]


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("SCANFLOW_HOME", str(home))
    return home


def test_a_flow_of_scanflow_tasks_is_one_run_closed_when_the_flow_run_ends(_home: Path) -> None:
    from scanflow_core.attestation.verify import verify_attestation
    from scanflow_core.tasks import ArtifactRef

    state = counting(return_state=True)

    assert state.is_completed()
    made = state.result()
    assert isinstance(made, TaskOutputs) and set(made) == {"table"}
    ref = made["table"]
    assert isinstance(ref, ArtifactRef) and ref.step == "ingest" and ref.digest.startswith("sha256:")
    assert Path(ref).read_text() == "x\n" * 5 and made.metrics == {"rows": 5.0}
    prefect_run = flow_run(state)
    run_id = f"{prefect_run.name}-{prefect_run.id.hex[:8]}"
    assert made.run_id == ref.run_id == run_id
    recorded = steps(_home, run_id)
    assert {n: s["status"] for n, s in recorded.items()} == dict.fromkeys(
        ["ingest", "count", "count_2"], "succeeded"
    )
    assert recorded["count_2"]["metrics"] == {"n": 5.0}
    run = manifest(_home, run_id)
    assert run["status"] == "succeeded" and run["workflow"] == "counting_flow"
    assert run["orchestrator"] == "prefect" and run["kind"] == "tasks"
    assert list(run["steps"]) == ["ingest", "count", "count_2"]
    assert run["finished_at"] is not None  # the flow's completion hook closed the run
    verification = verify_attestation(_home / "runs" / run_id)
    assert verification.ok, [str(f) for f in verification.failures]
    assert verification.steps() == ["count", "count_2", "ingest"]


def test_the_scanflow_run_id_parameter_names_the_run(_home: Path) -> None:
    counting(scanflow_run_id="nightly-7")

    assert manifest(_home, "nightly-7")["status"] == "succeeded"
    assert set(steps(_home, "nightly-7")) == {"ingest", "count", "count_2"}


def test_a_retried_task_records_its_second_attempt(_home: Path, tmp_path: Path) -> None:
    state = counting(flaky=str(tmp_path / "failed-once"), scanflow_run_id="flaky", return_state=True)

    assert state.is_completed()
    assert steps(_home, "flaky")["ingest"]["attempt"] == 2
    assert steps(_home, "flaky")["ingest"]["status"] == "succeeded"
    (ingest_run,) = runs_of_task(flow_run(state).id, "ingest")
    assert ingest_run.run_count == 2


def test_a_failing_fail_check_fails_the_task_run_once_and_is_an_artifact(_home: Path) -> None:
    state = counting(rows=2, scanflow_run_id="few", return_state=True)

    assert state.is_failed()
    with pytest.raises(
        ScanflowStepFailed, match="check failed: row_limits on table: 1 rows, fewer than 3"
    ) as failed:
        state.result()
    assert failed.value.check_failed and failed.value.step == "count" and failed.value.run_id == "few"
    prefect_run = flow_run(state)
    (count_run,) = runs_of_task(prefect_run.id, "count")
    assert count_run.state.is_failed() and count_run.run_count == 1  # retries: 2, but a failed check is final
    (artifact,) = artifacts(prefect_run.id)
    assert artifact.key == "scanflow-checks-counting-flow-count" and artifact.task_run_id == count_run.id
    assert (
        "| row_limits | table | inputs | fail | error | **failed** | 1 rows, fewer than 3 |" in artifact.data
    )
    assert steps(_home, "few")["count"]["status"] == "failed"
    assert manifest(_home, "few")["status"] == "failed"  # the flow's failure hook closed the run


def test_a_flow_that_fails_outside_its_tasks_fails_the_run(_home: Path) -> None:
    @flow(name="then-fails")
    def then_fails(scanflow_run_id: str | None = None) -> None:
        ingest(rows=3)
        raise RuntimeError("the flow itself fails")

    state = then_fails(scanflow_run_id="after", return_state=True)

    assert state.is_failed()
    assert steps(_home, "after")["ingest"]["status"] == "succeeded"
    assert manifest(_home, "after")["status"] == "failed"


def test_submitted_tasks_run_at_once_and_pass_references(_home: Path) -> None:
    @flow(name="fan-out")
    def fan_out(scanflow_run_id: str | None = None) -> dict[str, float]:
        made = ingest.submit(rows=8)
        parts = halve.submit(table=made)
        low = count.submit(table=parts.result()["low"])
        high = count.submit(table=parts.result()["high"])
        return {"low": low.result().metrics["n"], "high": high.result().metrics["n"]}

    assert fan_out(scanflow_run_id="fan") == {"low": 4.0, "high": 4.0}
    recorded = steps(_home, "fan")
    assert set(recorded) == {"ingest", "halve", "count", "count_2"}
    assert recorded["halve"]["outputs"]["high"]["path"] == "steps/halve/outputs/high.txt"
    assert {
        recorded["count"]["inputs"]["table"]["digest"],
        recorded["count_2"]["inputs"]["table"]["digest"],
    } == {
        recorded["halve"]["outputs"]["low"]["digest"],
        recorded["halve"]["outputs"]["high"]["digest"],
    }


def test_outputs_of_several_files_must_be_passed_one_by_one(_home: Path) -> None:
    @flow(name="whole")
    def whole(scanflow_run_id: str | None = None) -> None:
        count(table=halve(table=ingest(rows=4)))

    state = whole(scanflow_run_id="whole", return_state=True)

    assert state.is_failed()
    with pytest.raises(
        TypeError, match=r"argument 'table' is the outputs of step 'halve' \(low, high\); pass one"
    ):
        state.result()


def test_a_task_run_outside_a_flow_is_a_run_of_its_own(_home: Path) -> None:
    made = ingest(rows=2)

    run = manifest(_home, made.run_id)
    assert run["status"] == "succeeded" and run["workflow"] == "ingest"
    assert list(run["steps"]) == ["ingest"]


def test_the_users_hooks_stay_and_run(_home: Path) -> None:
    seen: list[str] = []
    hooks = [lambda flow, flow_run, state: seen.append(state.name)]

    @flow(name="hooked", on_completion=hooks)
    def hooked(scanflow_run_id: str | None = None) -> None:
        ingest(rows=3)

    hooked(scanflow_run_id="hooked")

    assert seen == ["Completed"]
    assert len(hooks) == 1  # the user's list is not changed; the flow has its own
    assert manifest(_home, "hooked")["status"] == "succeeded"


def test_the_decorator_makes_a_prefect_task_and_checks_its_arguments() -> None:
    import inspect

    from prefect import Task

    from scanflow_core.errors import SpecError

    assert isinstance(ingest, Task) and ingest.retries == 1 and ingest.name == "ingest"
    assert list(inspect.signature(ingest.fn).parameters) == ["rows", "flaky"]  # not the output
    assert ingest.scanflow_step.stage == "data_ingestion"  # type: ignore[attr-defined]

    named = scanflow_task(name="Fit model", stage="training", tags=["ml"], timeout_seconds=60)(
        lambda lr=0.1: None
    )
    assert named.name == "Fit model" and named.tags == {"ml"} and named.timeout_seconds == 60
    assert named.scanflow_step.name == "Fit_model"  # type: ignore[attr-defined]

    def fit(data: Path) -> None: ...

    with pytest.raises(SpecError, match=r"fit.*stage"):
        scanflow_task(stage="cooking")(fit)
    with pytest.raises(SpecError, match=r"outputs.model.*no parameter 'model'"):
        scanflow_task(outputs=["model"])(fit)
    with pytest.raises(SpecError, match=r"checks\[0\].on\[0\]"):
        scanflow_task(checks=[{"use": "row_limits", "on": ["nothing"], "min": 1}])(fit)
    with pytest.raises(TypeError, match="home must be a path"):
        scanflow_task(home=3)(fit)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fn="):
        scanflow_task(fn=fit)(fit)


def test_a_param_that_is_no_json_fails_the_task_run_naming_it(_home: Path) -> None:
    @scanflow_task(stage="training")
    def fit(lr: Any) -> None: ...

    @flow(name="bad-param")
    def bad(scanflow_run_id: str | None = None) -> None:
        fit(lr=object())

    state = bad(scanflow_run_id="bad", return_state=True)
    assert state.is_failed()
    with pytest.raises(TypeError, match="argument 'lr' is a object, which is neither a file"):
        state.result()
    assert json.loads((_home / "runs" / "bad" / "run.json").read_text())["status"] == "failed"
