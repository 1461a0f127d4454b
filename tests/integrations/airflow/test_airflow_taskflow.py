"""``@scanflow_task`` under Airflow 3: TaskFlow DAGs of decorated tasks run for real with ``dag.test()``,
artifacts passed as references through XCom, retries, failing checks, the finish task, and MLflow."""

from __future__ import annotations

import importlib.util
import inspect
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scanflow_core.attestation.verify import verify_attestation

pytestmark = [
    pytest.mark.airflow,
    pytest.mark.slow,
    # dag.test() imports Airflow's in-process execution API, whose svcs dependency imports
    # starlette.testclient; starlette warns there about httpx (a third-party import we can't fix).
    pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient` is deprecated"),
]

LoadDag = Callable[[str], Any]

TASKS = """
import json
from datetime import timedelta
from pathlib import Path

from airflow.sdk import DAG
from scanflow_airflow import scanflow_finish, scanflow_task

HOME = {home!r}


@scanflow_task(stage="data_ingestion", outputs=["table"], home=HOME)
def make(table, rows=5):
    table.write_text("".join(f"{{i}}\\n" for i in range(rows)))
    return {{"rows": rows}}


@scanflow_task(stage="training", outputs={{"model": {{"kind": "model", "path": "model.json"}}}}, home=HOME)
def train(table, model, lr=0.1):
    values = [int(v) for v in table.read_text().split()]
    model.write_text(json.dumps({{"mean": sum(values) / len(values), "lr": lr}}))
    return {{"loss": lr}}


@scanflow_task(stage="evaluation", home=HOME)
def evaluate(model, table):
    mean = json.loads(model.read_text())["mean"]
    return {{"rows": len(table.read_text().split()), "mean": mean}}
"""

CHAIN = """
with DAG({dag_id!r}, schedule=None) as dag:
    made = make(rows=7)
    trained = train(table=made["table"], lr=0.5)
    evaluate(model=trained["model"], table=made)  # a whole result with one output: that output
    scanflow_finish(home=HOME)
"""


@pytest.fixture
def load_dag(airflow_db: Path, tmp_path: Path) -> Iterator[LoadDag]:
    """``load_dag(source)`` → the DAG ``dag`` of a DAG file written into the DAGs folder.

    ``{dag_id}`` and ``{home}`` in the source are filled in (a DAG id unique to the test; the
    Scanflow home under ``tmp_path``). ``dag.test()`` needs the file in the DAGs folder; the test
    runs the DAG object the file makes when imported here.
    """
    written: list[Path] = []

    def load(source: str) -> Any:
        dag_id = f"taskflow_{tmp_path.name}_{len(written)}".replace("-", "_")
        path = airflow_db / f"{dag_id}.py"
        path.write_text(source.format(dag_id=dag_id, home=str(tmp_path / "home")), encoding="utf-8")
        written.append(path)
        spec = importlib.util.spec_from_file_location(dag_id, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.dag

    yield load
    for path in written:
        path.unlink(missing_ok=True)


def _states(dag_run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def _xcoms(dag_run: Any) -> dict[tuple[str, str], Any]:
    """Every XCom the DAG run left, as stored in the metadata database: (task id, key) → value."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = select(XComModel).where(
            XComModel.dag_id == dag_run.dag_id, XComModel.run_id == dag_run.run_id
        )
        return {(x.task_id, x.key): x.value for x in session.scalars(query)}


def _run_dir(tmp_path: Path, run_id: str) -> Path:
    return tmp_path / "home" / "runs" / run_id


def _step(tmp_path: Path, run_id: str, step: str) -> dict[str, Any]:
    return dict(json.loads((_run_dir(tmp_path, run_id) / "steps" / step / "step.json").read_text()))


def test_decorated_tasks_pass_references_and_finish_the_run(load_dag: LoadDag, tmp_path: Path) -> None:
    dag = load_dag(TASKS + CHAIN)
    assert set(dag.task_dict) == {"make", "train", "evaluate", "scanflow_finish"}
    assert dag.task_dict["scanflow_finish"].upstream_task_ids == {"make", "train", "evaluate"}

    dag_run = dag.test(run_conf={"scanflow_run_id": "chain-1"})

    assert str(dag_run.state) == "success", _states(dag_run)
    run_dir = _run_dir(tmp_path, "chain-1")
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["kind"] == "tasks"
    assert manifest["orchestrator"] == "airflow" and manifest["workflow"] == dag.dag_id
    assert list(manifest["steps"]) == ["make", "train", "evaluate"]
    assert manifest["steps"]["evaluate"]["metrics"] == {"rows": 7.0, "mean": 3.0}

    train = _step(tmp_path, "chain-1", "train")
    table = run_dir / "steps" / "make" / "outputs" / "table"
    assert run_dir / train["inputs"]["table"]["path"] == table
    assert train["params"] == {"lr": 0.5}

    xcoms = _xcoms(dag_run)
    assert {xcoms[(t, "scanflow_run_id")] for t in dag.task_dict} == {"chain-1"}
    model = xcoms[("train", "model")]
    assert model == xcoms[("train", "return_value")]["model"]
    assert model["scanflow_artifact"] == 1 and model["run_id"] == "chain-1" and model["step"] == "train"
    assert model["path"] == str(run_dir / "steps" / "train" / "outputs" / "model.json")
    assert model["uri"] == Path(model["path"]).as_uri()
    assert model["digest"] == train["outputs"]["model"]["digest"]
    assert "mean" not in json.dumps(list(xcoms.values()))  # a reference to the model, not its bytes
    assert xcoms[("make", "table")]["digest"] == train["inputs"]["table"]["digest"]
    assert xcoms[("evaluate", "return_value")] == {}
    assert xcoms[("scanflow_finish", "return_value")] == "succeeded"

    verification = verify_attestation(run_dir)
    assert verification.ok, verification.table()
    assert sorted(verification.steps()) == ["evaluate", "make", "train"]


def test_a_retried_task_records_its_second_attempt(load_dag: LoadDag, tmp_path: Path) -> None:
    flaky = f"""
@scanflow_task(stage="training", outputs=["model"], home=HOME, retries=1, retry_delay=timedelta(0))
def flaky(table, model):
    marker = Path({str(tmp_path / "tried")!r})
    if not marker.exists():
        marker.write_text("once")
        raise RuntimeError("first attempt fails")
    model.write_text(table.read_text())

with DAG({{dag_id!r}}, schedule=None) as dag:
    flaky(table=make()["table"])
    scanflow_finish(home=HOME)
"""
    dag_run = load_dag(TASKS + flaky).test(run_conf={"scanflow_run_id": "retried"})

    assert str(dag_run.state) == "success", _states(dag_run)
    ti = dag_run.get_task_instance("flaky")
    assert str(ti.state) == "success" and ti.try_number == 2
    record = _step(tmp_path, "retried", "flaky")
    assert record["status"] == "succeeded" and record["attempt"] == 2
    manifest = json.loads((_run_dir(tmp_path, "retried") / "run.json").read_text())
    assert manifest["status"] == "succeeded"


def test_a_failing_check_fails_the_task_with_its_report(
    load_dag: LoadDag, tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    leaky = """
LEAKAGE = {{"use": "leakage", "on": ["test"], "against": ["train"], "policy": "fail"}}


@scanflow_task(stage="data_splitting", outputs=["train", "test"], checks=[LEAKAGE], home=HOME)
def split(table, train, test):
    rows = table.read_text().split()
    train.write_text("x\\n" + "\\n".join(rows[:5]) + "\\n")
    test.write_text("x\\n" + "\\n".join(rows[3:]) + "\\n")  # rows 3 and 4 are in both


with DAG({dag_id!r}, schedule=None) as dag:
    parts = split(table=make(rows=8)["table"])
    train(table=parts["train"])
    scanflow_finish(home=HOME)
"""
    dag_run = load_dag(TASKS + leaky).test(run_conf={"scanflow_run_id": "leaky"})

    assert str(dag_run.state) == "failed"
    assert _states(dag_run) == {
        "make": "success",
        "split": "failed",
        "train": "upstream_failed",
        "scanflow_finish": "failed",
    }
    record = _step(tmp_path, "leaky", "split")
    assert record["status"] == "failed" and "check failed: leakage on test" in record["reason"]
    assert record["checks"] == {"passed": 0, "failed": 1, "warned": 0}
    report = json.loads((_run_dir(tmp_path, "leaky") / "steps" / "split" / "checks.json").read_text())
    assert [(c["checker"], c["target"], c["passed"]) for c in report] == [("leakage", "test", False)]
    # The task's log: dag.test() prints Airflow's (the exception) on the console; the check report is
    # logged by the adapter through the logging module, which Airflow's task log takes in.
    captured = capfd.readouterr()
    failure = "ScanflowStepFailed: step 'split' of Scanflow run leaky failed: check failed: leakage on test"
    assert failure in captured.out + captured.err
    report_line = (
        "check leakage on test (policy fail): FAILED: leakage: 2 of 5 rows of 'test' also in 'train'"
    )
    assert any(
        report_line in r.getMessage() for r in caplog.records if r.name == "scanflow_airflow.decorators"
    )
    manifest = json.loads((_run_dir(tmp_path, "leaky") / "run.json").read_text())
    assert manifest["status"] == "failed" and list(manifest["steps"]) == ["make", "split"]


def test_each_mapped_task_instance_is_a_step_of_its_own(load_dag: LoadDag, tmp_path: Path) -> None:
    mapped = """
with DAG({dag_id!r}, schedule=None) as dag:
    train.partial(table=make()["table"]).expand(lr=[0.25, 0.75])
    scanflow_finish(home=HOME)
"""
    dag_run = load_dag(TASKS + mapped).test(run_conf={"scanflow_run_id": "mapped"})

    assert str(dag_run.state) == "success", _states(dag_run)
    manifest = json.loads((_run_dir(tmp_path, "mapped") / "run.json").read_text())
    assert manifest["status"] == "succeeded"
    assert sorted(manifest["steps"]) == ["make", "train_0", "train_1"]
    assert [manifest["steps"][f"train_{i}"]["params"] for i in (0, 1)] == [{"lr": 0.25}, {"lr": 0.75}]


def test_decoration_checks_its_arguments_at_parse_time() -> None:
    from scanflow_airflow import scanflow_task
    from scanflow_core.errors import SpecError

    def fit(data: Path, model: Path, ctx: Any = None, lr: float = 0.1) -> None:
        """Fit."""

    decorated = scanflow_task(stage="training", outputs=["model"], retries=3)(fit)
    assert decorated.function.__name__ == "fit"
    assert list(inspect.signature(decorated.function).parameters) == ["data", "lr"]
    assert decorated.kwargs["retries"] == 3 and decorated.multiple_outputs is True
    bare = scanflow_task(fit)  # without parentheses: stage training, no outputs
    assert bare.function.__name__ == "fit" and bare.multiple_outputs is False
    assert list(inspect.signature(bare.function).parameters) == ["data", "model", "lr"]
    with pytest.raises(SpecError, match="stage"):
        scanflow_task(stage="fitting")(fit)
    with pytest.raises(SpecError, match="no parameter 'weights'"):
        scanflow_task(outputs=["weights"])(fit)

    def reserved(return_value: Path) -> None:
        """Writes an output named like Airflow's XCom key."""

    with pytest.raises(TypeError, match="may not be named 'return_value'"):
        scanflow_task(outputs=["return_value"])(reserved)
    with pytest.raises(TypeError, match="home must be a path"):
        scanflow_task(home=3)  # type: ignore[arg-type]


def test_finish_must_be_called_inside_a_dag() -> None:
    from scanflow_airflow import scanflow_finish

    with pytest.raises(RuntimeError, match="inside `with DAG"):
        scanflow_finish()


def test_a_whole_result_with_several_outputs_is_refused(load_dag: LoadDag, tmp_path: Path) -> None:
    ambiguous = """
@scanflow_task(stage="data_splitting", outputs=["a", "b"], home=HOME)
def two(a, b):
    a.write_text("1")
    b.write_text("2")


with DAG({dag_id!r}, schedule=None) as dag:
    train(table=two())
    scanflow_finish(home=HOME)
"""
    dag_run = load_dag(TASKS + ambiguous).test(run_conf={"scanflow_run_id": "ambiguous"})

    states = _states(dag_run)
    assert states["two"] == "success" and states["train"] == "failed"
    assert states["scanflow_finish"] == "failed"
    manifest = json.loads((_run_dir(tmp_path, "ambiguous") / "run.json").read_text())
    assert manifest["status"] == "failed"  # train never became a step, but its task failed


def test_tracking_one_parent_run_per_dag_run_and_a_child_per_task(
    load_dag: LoadDag, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    monkeypatch.delenv("SCANFLOW_TRACKER", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    dag = load_dag(TASKS + CHAIN)
    dag.test(run_conf={"scanflow_run_id": "tracked-1"})
    dag.test(run_conf={"scanflow_run_id": "tracked-2"})

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(dag.dag_id)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = {r.data.tags["scanflow.run_id"]: r for r in runs if r.data.tags["scanflow.kind"] == "workflow"}
    assert set(parents) == {"tracked-1", "tracked-2"}
    for run_id, parent in parents.items():
        assert parent.info.status == "FINISHED"
        children = {
            r.data.tags["scanflow.step"]: r
            for r in runs
            if r.data.tags["scanflow.kind"] == "step" and r.data.tags["scanflow.run_id"] == run_id
        }
        assert sorted(children) == ["evaluate", "make", "train"]
        for child in children.values():
            assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
            assert child.info.status == "FINISHED"
        assert children["train"].data.metrics["loss"] == 0.5
        assert children["train"].data.params["lr"] == "0.5"
    assert len(runs) == 8
