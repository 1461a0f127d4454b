"""Decorated tasks (``scanflow_core.tasks``): plain functions run as steps through the one step path,
chained by ArtifactRef, checked, attested (``scanflow verify``) and tracked, in this process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from scanflow_core.attestation.verify import verify_attestation
from scanflow_core.errors import CheckFailed, SpecError, StepFailed
from scanflow_core.plugins import PluginManager, hookimpl
from scanflow_core.records import CheckResult
from scanflow_core.tasks import ArtifactRef, TaskResult, TaskStep, finish_task_run, valid_name


def make(rows: int, table: Path) -> dict[str, float]:
    table.write_text("\n".join(str(i) for i in range(rows)) + "\n")
    return {"rows": rows}


def train(table: Path, model: Path, lr: float = 0.5, epochs: int = 2) -> dict[str, float]:
    values = [int(v) for v in table.read_text().split()]
    model.write_text(json.dumps({"mean": sum(values) / len(values), "lr": lr, "epochs": epochs}))
    return {"loss": lr / epochs, "n": len(values), "note": "not a number"}  # type: ignore[dict-item]


class NonEmpty:
    """A real checker plugin: ``use: nonempty`` passes when the file has bytes."""

    @hookimpl
    def scanflow_checker_names(self) -> list[str]:
        return ["nonempty"]

    @hookimpl
    def scanflow_check(self, step_run: Any, check: Any, target: str, path: Path) -> CheckResult | None:
        if check.use != "nonempty":
            return None
        size = path.stat().st_size
        return CheckResult("nonempty", target, size > 0, f"{size} bytes", metrics={"bytes": float(size)})


@pytest.fixture
def checked_pm(pm: PluginManager) -> PluginManager:
    pm.register(NonEmpty())
    return pm


def two_steps(home: Path, pm: PluginManager, run_id: str = "r1") -> tuple[TaskResult, TaskResult]:
    first = TaskStep(make, stage="data_ingestion", outputs=["table"])
    second = TaskStep(train, outputs={"model": {"kind": "model", "path": "model.json"}})
    made = first.run(run_id, "demo", {"rows": 5}, home=home, orchestrator="prefect", pm=pm)
    trained = second.run(
        run_id, "demo", {"table": made.outputs["table"], "lr": 0.25}, home=home, orchestrator="prefect", pm=pm
    )
    return made, trained


def test_two_tasks_chained_through_an_artifact_ref(home: Path, pm: PluginManager) -> None:
    made, trained = two_steps(home, pm)
    table = made.outputs["table"]
    assert table.run_id == "r1" and table.step == "make" and table.name == "table"
    assert table.digest.startswith("sha256:") and Path(table).read_text().split() == list("01234")
    run_dir = home / "runs" / "r1"
    record = json.loads((run_dir / "steps" / "train" / "step.json").read_text())
    assert record["status"] == "succeeded"
    assert record["inputs"]["table"]["digest"] == table.digest
    assert record["params"] == {"lr": 0.25}  # epochs keeps its default and is no param
    model = trained.outputs["model"]
    assert model.kind == "model" and model.path == str(run_dir / "steps/train/outputs/model.json")
    assert json.loads(Path(model).read_text()) == {"mean": 2.0, "lr": 0.25, "epochs": 2}
    assert trained.metrics == {"loss": 0.125, "n": 5.0}  # the returned numbers, nothing else
    assert trained.value["note"] == "not a number"
    assert made.metrics == {"rows": 5.0}

    spec = yaml.safe_load((run_dir / "steps" / "train" / "spec.yaml").read_text())
    assert spec["name"] == "demo"
    assert spec["inputs"] == {"table": {"path": table.path, "kind": "data"}}
    (step,) = spec["steps"]
    assert step["call"] == "test_tasks:train" and step["stage"] == "training"
    assert step["params"] == {"lr": 0.25} and step["outputs"] == {
        "model": {"kind": "model", "path": "model.json"}
    }

    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["kind"] == "tasks" and manifest["spec"] is None and manifest["workflow"] == "demo"
    assert manifest["orchestrator"] == "prefect" and manifest["status"] == "running"


def test_finish_writes_both_steps_and_verify_holds_until_tampering(home: Path, pm: PluginManager) -> None:
    two_steps(home, pm)
    assert finish_task_run("r1", "demo", home=home, pm=pm) == "succeeded"
    run_dir = home / "runs" / "r1"
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["status"] == "succeeded" and list(manifest["steps"]) == ["make", "train"]
    assert manifest["steps"]["train"]["metrics"] == {"loss": 0.125, "n": 5.0}

    verification = verify_attestation(run_dir)
    assert verification.ok, verification.table()
    assert verification.steps() == ["make", "train"]
    chained = [f for f in verification.findings if f.kind == "chain"]
    assert [(f.step, f.ok) for f in chained] == [("train", True)]
    assert "attested" in chained[0].reason

    (run_dir / "steps/make/outputs/table").write_text("9\n")
    failed = verify_attestation(run_dir)
    assert not failed.ok
    assert [(f.step, f.kind) for f in failed.failures] == [("make", "subject")]
    assert "the file changed after the step" in failed.failures[0].reason


def test_verify_fails_when_a_steps_own_spec_is_edited(home: Path, pm: PluginManager) -> None:
    two_steps(home, pm)
    finish_task_run("r1", "demo", home=home, pm=pm)
    spec = home / "runs/r1/steps/train/spec.yaml"
    spec.write_text(spec.read_text().replace('"lr": 0.25', '"lr": 0.5'))
    failed = verify_attestation(home / "runs" / "r1")
    assert [(f.step, f.kind) for f in failed.failures] == [("train", "spec")]
    assert "spec.yaml" in failed.failures[0].reason


def test_a_failing_fail_check_raises_check_failed_and_the_record_lands(
    home: Path, checked_pm: PluginManager
) -> None:
    def empty(out: Path) -> None:
        out.write_text("")

    step = TaskStep(empty, stage="data_ingestion", outputs=["out"], checks=[{"use": "nonempty", "on": "out"}])
    with pytest.raises(CheckFailed) as caught:
        step.run("r2", "demo", home=home, pm=checked_pm)
    assert caught.value.step == "empty" and "nonempty on out: 0 bytes" in str(caught.value)
    record = json.loads((home / "runs/r2/steps/empty/step.json").read_text())
    assert record["status"] == "failed" and record["checks"]["failed"] == 1
    assert finish_task_run("r2", "demo", home=home, pm=checked_pm) == "failed"
    assert json.loads((home / "runs/r2/run.json").read_text())["status"] == "failed"


def test_a_passing_check_on_an_input_is_in_the_result(home: Path, checked_pm: PluginManager) -> None:
    made = TaskStep(make, stage="data_ingestion", outputs=["table"]).run(
        "r3", "demo", {"rows": 3}, home=home, pm=checked_pm
    )
    step = TaskStep(train, outputs=["model"], checks=[{"use": "nonempty", "on": ["table"], "policy": "warn"}])
    result = step.run("r3", "demo", {"table": made.outputs["table"].to_dict()}, home=home, pm=checked_pm)
    assert [(c.checker, c.target, c.passed, c.phase) for c in result.checks] == [
        ("nonempty", "table", True, "inputs")
    ]


def test_a_raising_function_raises_step_failed_with_the_error(home: Path, pm: PluginManager) -> None:
    def broken(x: int) -> None:
        raise ValueError(f"bad x {x}")

    with pytest.raises(StepFailed) as caught:
        TaskStep(broken).run("r4", "demo", {"x": 3}, home=home, pm=pm, step_name="broken_2", attempt=2)
    assert "ValueError: bad x 3" in caught.value.reason and caught.value.step == "broken_2"
    record = json.loads((home / "runs/r4/steps/broken_2/step.json").read_text())
    assert record["status"] == "failed" and record["attempt"] == 2
    assert "bad x 3" in (home / "runs/r4/steps/broken_2/step.log").read_text()


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"stage": "trainin"}, SpecError, ["task test_tasks.train", "stage", "did you mean 'training'"]),
        ({"outputs": {"model": {"kind": "modl"}}}, SpecError, ["outputs.model.kind", "'modl'"]),
        ({"outputs": ["model", "weights"]}, SpecError, ["outputs.weights", "no parameter 'weights'"]),
        (
            {"outputs": ["model"], "checks": [{"use": "nonempty", "on": ["modle"]}]},
            SpecError,
            ["checks[0].on[0]", "'modle' is no output or parameter", "did you mean 'model'"],
        ),
        ({"checks": [{"use": "x", "policy": "stop"}]}, SpecError, ["checks[0].policy", "fail, warn"]),
        ({"timeout": "3 days"}, SpecError, ["timeout", "'30s'"]),
        ({"name": "train-2"}, SpecError, ["name", "'train-2' is not a valid name"]),
        ({"checks": ["nonempty"]}, TypeError, ["checks[0] must be a mapping"]),
        ({"outputs": 3}, TypeError, ["outputs must be names"]),
    ],
)
def test_bad_task_arguments_are_named(
    kwargs: dict[str, Any], error: type[Exception], words: list[str]
) -> None:
    with pytest.raises(error) as caught:
        TaskStep(train, **kwargs)
    for word in words:
        assert word in str(caught.value)


@pytest.mark.parametrize(
    ("arguments", "extra", "error", "words"),
    [
        ({"table": Path("t"), "lr": {1, 2}}, {}, TypeError, ["argument 'lr' is a set", "JSON"]),
        ({"table": Path("t"), "lr": float("nan")}, {}, TypeError, ["argument 'lr'", "JSON"]),
        ({"table": Path("t"), "l": 0.1}, {}, TypeError, ["takes no argument 'l'", "did you mean 'lr'"]),
        ({"table": Path("t"), "model": Path("m")}, {}, TypeError, ["'model' is an output"]),
        ({"lr": 0.1}, {}, TypeError, ["missing the argument(s) table"]),
        ({"table": Path("t")}, {"step_name": "train-2"}, SpecError, ["step_name", "gives 'train_2'"]),
        ({"table": Path("t")}, {"workflow": "my-flow"}, SpecError, ["workflow", "'my-flow'"]),
        ({"table": Path("t")}, {"run_id": "../x"}, ValueError, ["run_id '../x'"]),
    ],
)
def test_bad_call_arguments_are_named_before_the_run_exists(
    home: Path,
    pm: PluginManager,
    arguments: dict[str, Any],
    extra: dict[str, Any],
    error: Any,
    words: list[str],
) -> None:
    step = TaskStep(train, outputs=["model"])
    call = {"run_id": "r5", "workflow": "demo", **extra}
    with pytest.raises(error) as caught:
        step.run(call.pop("run_id"), call.pop("workflow"), arguments, home=home, pm=pm, **call)
    for word in words:
        assert word in str(caught.value)
    assert not (home / "runs" / "r5" / "run.json").exists()


def test_a_check_on_an_argument_the_call_gives_no_file_is_named(home: Path, pm: PluginManager) -> None:
    step = TaskStep(train, outputs=["model"], checks=[{"use": "nonempty", "on": ["table", "lr"]}])
    with pytest.raises(
        TypeError, match=r"checks\[0\] \(nonempty\) is on 'lr', which this call gives no file"
    ):
        step.run("r6", "demo", {"table": Path("t")}, home=home, pm=pm)


def test_a_run_belongs_to_one_workflow(home: Path, pm: PluginManager) -> None:
    TaskStep(make, stage="data_ingestion", outputs=["table"]).run("r7", "demo", {"rows": 1}, home=home, pm=pm)
    with pytest.raises(Exception, match="run r7 is a run of workflow 'demo', not 'other'"):
        TaskStep(make, stage="data_ingestion", outputs=["table"]).run(
            "r7", "other", {"rows": 1}, home=home, pm=pm, step_name="make_2"
        )


def test_artifact_ref_dict_form_round_trips_through_json(tmp_path: Path) -> None:
    file = tmp_path / "data.csv"
    file.write_text("a\n1\n")
    ref = ArtifactRef("r1", "make", "table", str(file), "sha256:" + "0" * 64, "data")
    data = json.loads(json.dumps(ref.to_dict()))
    assert data["scanflow_artifact"] == 1 and data["uri"] == file.as_uri() and data["path"] == str(file)
    assert ArtifactRef.from_value(data) == ref
    assert ArtifactRef.from_value(ref) is ref
    plain = ArtifactRef.from_value(file)
    assert plain.name == "data.csv" and plain.digest.startswith("sha256:") and plain.run_id == ""
    with open(ref) as f:  # a path like any other
        assert f.read() == "a\n1\n"
    with pytest.raises(ValueError, match="has no 'path'"):
        ArtifactRef.from_value({"scanflow_artifact": 1})
    with pytest.raises(TypeError, match="not int"):
        ArtifactRef.from_value(3)


def test_valid_name() -> None:
    assert valid_name("my-flow") == "my_flow" and valid_name("2x") == "_2x" and valid_name("ok_1") == "ok_1"


MIXED = """
apiVersion: scanflow/v1
name: demo
steps:
  - {name: zeta, stage: data_ingestion, call: MOD:make, params: {rows: 4}, outputs: [table]}
  - {name: alpha, stage: training, call: MOD:train, inputs: [table], outputs: [model]}
"""


def test_a_task_in_a_spec_run_comes_after_the_plan_and_verifies(
    home: Path, pm: PluginManager, write_spec: Any
) -> None:
    """A decorated task joins a run made from a spec: the plan's steps keep their order, the task's
    record comes after them, and verify checks the task against its own spec and the chain."""
    from scanflow_core.runner import run_workflow
    from scanflow_core.runs import WorkflowRun
    from scanflow_core.spec import load_workflow

    code = "from test_tasks import make, train\n"
    workflow = load_workflow(write_spec(MIXED, code))
    run = run_workflow(workflow, run_id="r8", home=home, pm=pm)
    assert list(run.step_summaries()) == ["zeta", "alpha"]
    table = ArtifactRef("r8", "zeta", "table", str(run.artifact_path("table")), "", "data")
    TaskStep(train, outputs=["model"]).run(
        "r8", "demo", {"table": table}, home=home, pm=pm, step_name="again"
    )
    assert list(WorkflowRun(workflow, run_id="r8", home=home).step_summaries()) == ["zeta", "alpha", "again"]
    verification = verify_attestation(home / "runs" / "r8")
    assert verification.ok, verification.table()
    assert ("again", "steps/zeta/outputs/table", True) in {
        (f.step, f.file, f.ok) for f in verification.findings if f.kind == "chain"
    }


@pytest.mark.slow
def test_tracking_one_parent_and_a_child_per_task(
    home: Path, pm: PluginManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    monkeypatch.delenv("SCANFLOW_TRACKER", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    two_steps(home, pm, "r9")
    finish_task_run("r9", "demo", home=home, pm=pm)
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("demo")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], "tags.`scanflow.run_id` = 'r9'")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.data.tags["scanflow.step"]: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert set(children) == {"make", "train"}
    assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children.values())
    assert children["train"].data.metrics["loss"] == 0.125 and children["train"].data.params["lr"] == "0.25"
    assert children["make"].data.tags["scanflow.stage"] == "data_ingestion"


def test_finish_a_run_no_task_reached(home: Path, pm: PluginManager) -> None:
    assert finish_task_run("r10", "demo", home=home, pm=pm, status="failed", orchestrator="flyte") == "failed"
    manifest = json.loads((home / "runs/r10/run.json").read_text())
    assert manifest["kind"] == "tasks" and manifest["steps"] == {} and manifest["status"] == "failed"
    assert manifest["orchestrator"] == "flyte"
    with pytest.raises(ValueError, match="status 'done' is not a run status"):
        finish_task_run("r10", "demo", home=home, pm=pm, status="done")


def test_a_bundle_of_a_task_run_carries_each_steps_spec_and_verifies(
    home: Path, pm: PluginManager, tmp_path: Path
) -> None:
    import tarfile

    from scanflow_core.attestation.bundle import make_bundle

    two_steps(home, pm)
    finish_task_run("r1", "demo", home=home, pm=pm)
    bundle = make_bundle(home / "runs" / "r1", tmp_path / "r1.tar.gz")
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
        tar.extractall(tmp_path / "moved", filter="data")
    assert {"r1/steps/make/spec.yaml", "r1/steps/train/spec.yaml"} <= set(names)
    assert not any(n.startswith("r1/bundle/spec/") for n in names)

    verification = verify_attestation(tmp_path / "moved" / "r1")
    assert verification.ok, verification.table()
    (tmp_path / "moved/r1/steps/train/spec.yaml").write_text("name: other\n")
    assert not verify_attestation(tmp_path / "moved" / "r1").ok


def test_a_missing_input_file_is_named(home: Path, pm: PluginManager, tmp_path: Path) -> None:
    step = TaskStep(train, outputs=["model"])
    gone = tmp_path / "gone.txt"
    with pytest.raises(StepFailed, match=r"input 'table' is missing: there is no file .*gone\.txt"):
        step.run("r1", "demo", {"table": gone}, home=home, pm=pm)


def _loaded(result: TaskResult) -> Any:
    from scanflow_core.spec import load_workflow

    assert result.step_run is not None
    return result.step_run.run.workflow, load_workflow(result.step_run.directory / "spec.yaml")


def _plan(workflow: Any) -> list[Any]:
    steps = [
        (s.name, s.spec.model_dump(), str(s.directory), s.index, s.needs, dict(s.inputs), dict(s.params))
        for s in workflow.plan
    ]
    artifacts = [(a.name, a.spec, a.producer, a.output, a.path) for a in workflow.plan.artifacts.values()]
    return [steps, artifacts]


@pytest.mark.parametrize(
    ("arguments", "checks"),
    [
        ({"lr": 0.25, "epochs": 3}, []),
        (
            {"lr": 0.1, "epochs": [1, {"deep": None}]},
            [{"use": "nonempty", "on": ["table"], "policy": "warn"}],
        ),
        ({}, [{"use": "nonempty", "on": ["model"], "name": "model_bytes", "timeout": "5s"}]),
    ],
)
def test_a_calls_workflow_is_what_loading_its_spec_file_gives(
    home: Path, checked_pm: PluginManager, arguments: dict[str, Any], checks: list[dict[str, Any]]
) -> None:
    """Calls assemble their one-step workflow from the validated template: it must equal, field for
    field and in its plan, what the loader makes of the ``spec.yaml`` the call wrote."""
    made = TaskStep(make, stage="data_ingestion", outputs=["table"]).run(
        "r1", "demo", {"rows": 4}, home=home, pm=checked_pm
    )

    def fit(table: Path, model: Path, lr: float = 0.5, epochs: Any = 2) -> dict[str, float]:
        model.write_text(table.read_text())
        return {"lr": lr}

    step = TaskStep(
        fit, outputs={"model": {"kind": "model", "path": "model.json"}}, checks=checks, timeout=30
    )
    trained = step.run(
        "r1",
        "demo",
        {"table": made.outputs["table"], **arguments},
        home=home,
        pm=checked_pm,
        step_name="fit_2",
    )
    for result in (made, trained):
        assembled, loaded = _loaded(result)
        assert assembled.model_dump() == loaded.model_dump()
        assert (assembled.file, assembled.digest) == (loaded.file, loaded.digest)
        assert _plan(assembled) == _plan(loaded)
    assert trained.step_run is not None
    assert trained.step_run.step.params == arguments  # only what the call gave: defaults stay in the function


def test_a_param_the_spec_language_cannot_name_goes_through_the_loader_and_is_named(
    home: Path, pm: PluginManager
) -> None:
    def fit(**options: Any) -> dict[str, float]:
        return {}

    with pytest.raises(SpecError, match=r"params.*caf"):
        TaskStep(fit).run("r1", "demo", {"café": 1}, home=home, pm=pm)
