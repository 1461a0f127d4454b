"""Scanflow workflows as Prefect flows (``flow_from_spec``), run against a real Prefect server."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prefect_helpers import artifacts, flow_run, manifest, steps, task_runs, write, write_small

from scanflow_core.conformance import AdapterConformance

pytestmark = [pytest.mark.prefect, pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


def _run(spec: Path, home: Path, **parameters: Any) -> Any:
    """Run a flow from ``spec``; return its final state (a failed flow does not raise)."""
    from scanflow_prefect import flow_from_spec

    return flow_from_spec(spec, home=home)(return_state=True, **parameters)


def test_a_flow_run_is_one_scanflow_run(tmp_path: Path) -> None:
    home = tmp_path / "home"
    state = _run(write_small(tmp_path), home, run_id="nightly")

    assert state.is_completed()
    result = state.result()
    assert result["run_id"] == "nightly" and result["status"] == "succeeded"
    assert result["directory"] == str(home / "runs" / "nightly")
    recorded = steps(home, "nightly")
    assert {n: s["status"] for n, s in recorded.items()} == {
        "make": "succeeded",
        "count": "succeeded",
        "side": "succeeded",
        "big_only": "skipped",
        "after_big": "skipped",
    }
    assert recorded["make"]["outputs"]["table"]["digest"].startswith("sha256:")
    assert recorded["count"]["metrics"] == {"n": 5.0}
    assert recorded["after_big"]["reason"] == "upstream step 'big_only' was skipped"
    run = manifest(home, "nightly")
    assert run["status"] == "succeeded" and run["orchestrator"] == "prefect"
    assert set(run["steps"]) == {"make", "count", "side", "big_only", "after_big"}

    tasks = task_runs(flow_run(state).id)
    assert set(tasks) == {"make", "count", "side", "big_only", "after_big"}
    assert {n: t.state.name for n, t in tasks.items()} == {
        "make": "Completed",
        "count": "Completed",
        "side": "Completed",
        "big_only": "Skipped",
        "after_big": "Skipped",
    }
    assert tasks["make"].tags and "stage:data_ingestion" in tasks["make"].tags


def test_the_scanflow_run_id_comes_from_the_flow_run(tmp_path: Path) -> None:
    home = tmp_path / "home"
    state = _run(write_small(tmp_path), home)

    prefect_run = flow_run(state)
    expected = re.sub(r"[^A-Za-z0-9._-]", "-", prefect_run.name) + "-" + prefect_run.id.hex[:8]
    assert state.result()["run_id"] == expected
    assert manifest(home, expected)["status"] == "succeeded"


def test_a_failing_step_fails_its_task_run_and_the_flow_run(tmp_path: Path) -> None:
    from scanflow_prefect import ScanflowRunFailed

    home = tmp_path / "home"
    state = _run(write_small(tmp_path), home, run_id="broken", params={"fail": True})

    assert state.is_failed()
    with pytest.raises(
        ScanflowRunFailed, match="steps not succeeded: make, count, big_only, after_big"
    ) as failed:
        state.result()
    assert failed.value.run_id == "broken"
    assert failed.value.failed_steps == ["make", "count", "big_only", "after_big"]
    tasks = task_runs(flow_run(state).id)
    assert tasks["make"].state.is_failed()
    assert tasks["make"].run_count == 2  # retries: 1 in the spec; an error in the code is retried
    assert tasks["count"].state.name == "NotReady"  # Prefect never ran it: its upstream failed
    assert tasks["side"].state.is_completed()  # an independent branch goes on
    recorded = steps(home, "broken")
    assert recorded["make"]["status"] == "failed" and "make was told to fail" in recorded["make"]["reason"]
    assert recorded["make"]["attempt"] == 2
    assert recorded["count"] == {
        "status": "upstream_failed",
        "stage": "evaluation",
        "reason": "upstream step 'make' failed",
        "metrics": {},
        "outputs": {},
    }
    assert manifest(home, "broken")["status"] == "failed"


def test_a_retried_step_records_its_second_attempt(tmp_path: Path) -> None:
    home = tmp_path / "home"
    marker = tmp_path / "failed-once"
    state = _run(write_small(tmp_path), home, run_id="flaky", params={"flaky": str(marker)})

    assert state.is_completed() and marker.exists()
    make = steps(home, "flaky")["make"]
    assert make["status"] == "succeeded" and make["attempt"] == 2
    assert task_runs(flow_run(state).id)["make"].run_count == 2


def test_a_failing_fail_check_is_not_retried_and_its_results_are_an_artifact(tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client

    home = tmp_path / "home"
    state = _run(write_small(tmp_path), home, run_id="few", params={"rows": 1})

    assert state.is_failed()
    prefect_run = flow_run(state)
    make = task_runs(prefect_run.id)["make"]
    assert make.state.is_failed() and make.run_count == 1  # retries: 1, but a failed check is final
    assert "check failed: row_limits on table: 0 rows, fewer than 2" in make.state.message
    (artifact,) = artifacts(prefect_run.id)
    assert artifact.key == "scanflow-checks-small-make" and artifact.type == "markdown"
    assert artifact.task_run_id == make.id
    assert (
        "| row_limits | table | outputs | fail | error | **failed** | 0 rows, fewer than 2 |" in artifact.data
    )
    assert "Scanflow run `few`" in artifact.data and "Tracked in MLflow" not in artifact.data  # tracking off
    with get_client(sync_client=True) as client:
        latest = client.read_latest_artifacts()
    assert "scanflow-checks-small-make" in {a.key for a in latest}
    checks = json.loads((home / "runs" / "few" / "steps" / "make" / "checks.json").read_text())
    assert [c["passed"] for c in checks] == [False]


def test_params_given_to_the_builder_and_to_the_run_reach_the_steps(tmp_path: Path) -> None:
    from scanflow_prefect import flow_from_spec

    home = tmp_path / "home"
    flow = flow_from_spec(write_small(tmp_path), params={"rows": 7}, home=home)
    flow(run_id="built")
    flow(run_id="overridden", params={"rows": 9})

    assert steps(home, "built")["count"]["metrics"] == {"n": 7.0}
    assert steps(home, "overridden")["count"]["metrics"] == {"n": 9.0}
    assert manifest(home, "overridden")["params"] == {"rows": 9}


def test_nested_workflows_are_task_runs_named_by_their_qualified_step(tmp_path: Path) -> None:
    module = f"nested_steps_{tmp_path.name.replace('-', '_')}"
    write(
        tmp_path,
        f"{module}.py",
        """\
        def ingest(raw):
            raw.write_text("a\\nb\\n")

        def clean(raw, cleaned):
            cleaned.write_text(raw.read_text().upper())

        def train(data):
            return {"lines": len(data.read_text().splitlines())}
        """,
    )
    write(
        tmp_path,
        "prep.yaml",
        f"""\
        apiVersion: scanflow/v1
        name: prep
        inputs: {{raw: {{}}}}
        steps:
          - {{name: clean, stage: data_transformation, call: {module}:clean, inputs: [raw], outputs: [cleaned]}}
        """,
    )
    spec = write(
        tmp_path,
        "scanflow.yaml",
        f"""\
        apiVersion: scanflow/v1
        name: outer
        steps:
          - {{name: ingest, stage: data_ingestion, call: {module}:ingest, outputs: [raw]}}
          - {{name: prep, stage: data_transformation, workflow: prep.yaml, inputs: {{raw: raw}}}}
          - {{name: train, stage: training, call: {module}:train, inputs: {{data: prep.cleaned}}}}
        """,
    )
    home = tmp_path / "home"
    state = _run(spec, home, run_id="nested")

    assert state.is_completed()
    assert set(task_runs(flow_run(state).id)) == {"ingest", "prep.clean", "train"}
    assert steps(home, "nested")["train"]["metrics"] == {"lines": 2.0}


def test_the_builder_checks_its_arguments_without_running_anything(tmp_path: Path) -> None:
    from scanflow_core.errors import SpecError
    from scanflow_prefect import SpecFlow, flow_from_spec

    spec = write_small(tmp_path)
    flow = flow_from_spec(spec, name="small-nightly", retries=1, log_prints=True)
    assert isinstance(flow, SpecFlow) and flow.name == "small-nightly" and flow.retries == 1
    assert set(flow.parameters.properties) == {"run_id", "params"}
    assert flow.version and flow.version.startswith("sha256:")
    assert not (tmp_path / ".scanflow").exists()
    with pytest.raises(TypeError, match="params must be a mapping"):
        flow_from_spec(spec, params=["rows=1"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="home must be a path"):
        flow_from_spec(spec, home=3)  # type: ignore[arg-type]
    (tmp_path / "bad.yaml").write_text(
        "apiVersion: scanflow/v1\nname: bad\nsteps:\n  - {name: x, stage: cooking}\n"
    )
    with pytest.raises(SpecError, match=r"bad.yaml.*steps\[0\]"):
        flow_from_spec(tmp_path / "bad.yaml")


def test_a_run_id_that_is_no_folder_name_fails_the_flow_run_naming_it(tmp_path: Path) -> None:
    state = _run(write_small(tmp_path), tmp_path / "home", run_id="../escape")

    assert state.is_failed()
    with pytest.raises(ValueError, match=r"run_id '\.\./escape' is not a Scanflow run id"):
        state.result()
    assert not (tmp_path / "escape").exists()


@pytest.mark.docker
def test_a_step_with_an_image_runs_in_its_container(
    tmp_path: Path, test_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scanflow_core.runtimes import docker as docker_runtime

    monkeypatch.setenv("SCANFLOW_BASE_IMAGE", test_image)
    spec = write(
        tmp_path,
        "scanflow.yaml",
        f"""\
        apiVersion: scanflow/v1
        name: boxed
        params: {{greeting: hello}}
        steps:
          - name: shout
            stage: data_transformation
            image: {test_image}
            command: ["sh", "-c", "echo {{params.greeting}} from $(cat /etc/debian_version) > {{outputs.text}}"]
            outputs: [text]
          - {{name: read, stage: evaluation, command: ["sh", "-c", "cat {{inputs.text}}"], inputs: [text]}}
        """,
    )
    home = tmp_path / "home"
    state = _run(spec, home, run_id="boxed")

    assert state.is_completed(), state.message
    shout = steps(home, "boxed")["shout"]
    assert shout["runtime"] == "docker" and shout["status"] == "succeeded"
    assert (
        (home / "runs" / "boxed" / shout["outputs"]["text"]["path"]).read_text().startswith("hello from 12")
    )
    assert steps(home, "boxed")["read"]["runtime"] == "local"
    left = docker_runtime.engine_client().api.networks(filters={"label": ["scanflow.run_id=boxed"]})
    assert left == []  # the run's network went with the run's end


class TestPrefectConformance(AdapterConformance):
    def execute(self, spec: Path, *, run_id: str, home: Path, params: dict[str, Any]) -> None:
        from scanflow_prefect import flow_from_spec

        flow_from_spec(spec, home=home)(run_id=run_id, params=params)
