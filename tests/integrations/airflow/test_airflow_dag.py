"""Scanflow workflows as Airflow DAGs, run in process with ``dag.test()`` (Airflow 3)."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scanflow_core.conformance import AdapterConformance

pytestmark = [
    pytest.mark.airflow,
    pytest.mark.slow,
    # dag.test() imports Airflow's in-process execution API, whose svcs dependency imports
    # starlette.testclient; starlette warns there about httpx (a third-party import we can't fix).
    pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient` is deprecated"),
]

RunDag = Callable[..., Any]


@pytest.fixture
def run_dag(airflow_db: Path, tmp_path: Path) -> Iterator[RunDag]:
    """``run_dag(spec, run_id=..., home=..., params=...)`` → the Airflow DAG run.

    ``dag.test()`` runs a DAG that Airflow has serialised from a DAG file, so the DAG is written
    as a file into the DAGs folder (as a user would), built again here, and tested.
    """
    from scanflow_airflow import dag_from_spec

    written: list[Path] = []

    def run(spec: Path, *, run_id: str, home: Path, params: dict[str, Any] | None = None) -> Any:
        dag_id = f"scanflow_{tmp_path.name}_{len(written)}".replace("-", "_")
        dag_file = airflow_db / f"{dag_id}.py"
        dag_file.write_text(
            "from scanflow_airflow import dag_from_spec\n"
            f"dag = dag_from_spec({str(spec)!r}, {dag_id!r}, params={params or {}!r}, home={str(home)!r})\n",
            encoding="utf-8",
        )
        written.append(dag_file)
        dag = dag_from_spec(spec, dag_id, params=params, home=home)
        return dag.test(run_conf={"scanflow_run_id": run_id})

    yield run
    for dag_file in written:
        dag_file.unlink(missing_ok=True)


SMALL = """\
apiVersion: scanflow/v1
name: small
params: {rows: 5, fail: false}
steps:
  - {name: make, stage: data_ingestion, call: STEPS:make, outputs: [table]}
  - {name: count, stage: evaluation, call: STEPS:count, inputs: [table]}
  - {name: side, stage: logging, call: STEPS:side, outputs: [note]}
"""

SMALL_STEPS = """\
def make(table, rows, fail):
    if fail:
        raise RuntimeError("make was told to fail")
    table.write_text("x\\n" * rows)
    return {"rows": rows}


def count(table):
    return {"n": len(table.read_text().splitlines())}


def side(note):
    note.write_text("independent")
"""


def _write_small(folder: Path) -> Path:
    module = f"small_steps_{folder.name.replace('-', '_')}"
    (folder / f"{module}.py").write_text(SMALL_STEPS, encoding="utf-8")
    spec = folder / "scanflow.yaml"
    spec.write_text(SMALL.replace("STEPS", module), encoding="utf-8")
    return spec


def _steps(home: Path, run_id: str) -> dict[str, dict[str, Any]]:
    run_dir = home / "runs" / run_id
    return {p.parent.name: json.loads(p.read_text()) for p in (run_dir / "steps").glob("*/step.json")}


def _states(dag_run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def test_a_dag_run_is_one_scanflow_run(run_dag: RunDag, tmp_path: Path) -> None:
    home = tmp_path / "home"
    dag_run = run_dag(_write_small(tmp_path), run_id="nightly", home=home)

    assert str(dag_run.state) == "success"
    steps = _steps(home, "nightly")
    assert {name: s["status"] for name, s in steps.items()} == dict.fromkeys(
        ["make", "count", "side"], "succeeded"
    )
    assert steps["make"]["outputs"]["table"]["digest"].startswith("sha256:")
    assert steps["count"]["metrics"] == {"n": 5.0}
    manifest = json.loads((home / "runs" / "nightly" / "run.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["orchestrator"] == "airflow"
    assert set(manifest["steps"]) == {"make", "count", "side"}

    # One XCom per step task: the run id and references to its outputs (path, digest, uri), not the bytes.
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = select(XComModel).where(
            XComModel.dag_id == dag_run.dag_id, XComModel.run_id == dag_run.run_id
        )
        xcoms = {(x.task_id, x.key): x.value for x in session.scalars(query)}
    made = xcoms[("make", "return_value")]
    assert made["scanflow_run_id"] == "nightly"
    table = made["outputs"]["table"]
    assert table["digest"] == steps["make"]["outputs"]["table"]["digest"]
    assert table["uri"] == Path(table["path"]).as_uri() and Path(table["path"]).read_text() == "x\n" * 5
    assert xcoms[("count", "return_value")] == {"scanflow_run_id": "nightly", "outputs": {}}
    assert {k for t, k in xcoms if t == "make"} == {"return_value"}


def test_a_failing_step_fails_its_task_and_nothing_downstream_runs(run_dag: RunDag, tmp_path: Path) -> None:
    home = tmp_path / "home"
    dag_run = run_dag(_write_small(tmp_path), run_id="broken", home=home, params={"fail": True})

    assert str(dag_run.state) == "failed"
    states = _states(dag_run)
    assert states["make"] == "failed"
    assert states["count"] == "upstream_failed"
    assert states["side"] == "success"
    assert states["scanflow_finish"] == "failed"  # it ran (all_done) and failed with the Scanflow run
    steps = _steps(home, "broken")
    assert steps["make"]["status"] == "failed" and "make was told to fail" in steps["make"]["reason"]
    assert steps["count"]["status"] == "upstream_failed"
    assert json.loads((home / "runs" / "broken" / "run.json").read_text())["status"] == "failed"


def test_nested_workflows_become_task_groups(airflow_db: Path, tmp_path: Path) -> None:
    from scanflow_airflow import ScanflowOperator, dag_from_spec

    (tmp_path / "prep.yaml").write_text(
        textwrap.dedent(
            """\
            apiVersion: scanflow/v1
            name: prep
            inputs: {raw: {}}
            steps:
              - {name: clean, stage: data_transformation, call: m:clean, inputs: [raw], outputs: [cleaned]}
            """
        )
    )
    spec = tmp_path / "scanflow.yaml"
    spec.write_text(
        textwrap.dedent(
            """\
            apiVersion: scanflow/v1
            name: outer
            steps:
              - {name: ingest, stage: data_ingestion, call: m:ingest, outputs: [raw]}
              - {name: prep, stage: data_transformation, workflow: prep.yaml, inputs: {raw: raw}}
              - {name: train, stage: training, call: m:train, inputs: {data: prep.cleaned}}
            """
        )
    )
    dag = dag_from_spec(spec)

    assert dag.dag_id == "outer"
    assert set(dag.task_dict) == {"ingest", "prep.clean", "train", "scanflow_finish"}
    clean = dag.task_dict["prep.clean"]
    assert isinstance(clean, ScanflowOperator) and clean.step == "prep.clean"
    assert clean.task_group is not None and clean.task_group.group_id == "prep"
    assert clean.upstream_task_ids == {"ingest"}
    assert dag.task_dict["train"].upstream_task_ids == {"prep.clean"}
    assert dag.task_dict["scanflow_finish"].upstream_task_ids == {"ingest", "prep.clean", "train"}


def test_the_operator_checks_its_arguments_without_io(tmp_path: Path) -> None:
    from scanflow_airflow import ScanflowOperator

    op = ScanflowOperator(task_id="t", spec=tmp_path / "missing.yaml", step="train", params={"lr": 0.1})
    assert op.step == "train" and op.overrides == {"lr": 0.1}
    assert ScanflowOperator.template_fields == ("spec", "step", "home")
    with pytest.raises(ValueError, match="step"):
        ScanflowOperator(task_id="t", spec="scanflow.yaml", step="")
    with pytest.raises(TypeError, match="params"):
        ScanflowOperator(task_id="t", spec="scanflow.yaml", step="s", params=["lr=1"])  # type: ignore[arg-type]


def test_the_scanflow_run_id_comes_from_the_airflow_run() -> None:
    from types import SimpleNamespace

    from scanflow_airflow.operators import scanflow_run_id

    run = SimpleNamespace(run_id="manual__2026-11-23T03:35:42.504886+00:00", conf={})
    assert scanflow_run_id({"dag_run": run}) == "manual__2026-11-23T03-35-42.504886-00-00"
    run.conf = {"scanflow_run_id": "nightly-7"}
    assert scanflow_run_id({"dag_run": run}) == "nightly-7"


class TestAirflowConformance(AdapterConformance):
    @pytest.fixture(autouse=True)
    def _runner(self, run_dag: RunDag) -> None:
        self._run_dag = run_dag

    def execute(self, spec: Path, *, run_id: str, home: Path, params: dict[str, Any]) -> None:
        self._run_dag(spec, run_id=run_id, home=home, params=params)
