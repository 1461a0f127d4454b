"""``@scanflow_task`` and ``@scanflow_workflow``: typed flytekit tasks with Scanflow's step path around them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from flyte_helpers import FLYTEKIT_CHECKPOINT_WARNING
from flytekit import task, workflow
from flytekit.types.directory import FlyteDirectory
from flytekit.types.file import FlyteFile

from scanflow_core import log_metric
from scanflow_core.tasks import ArtifactRef
from scanflow_flyte import Scanflow, output_path, scanflow_task, scanflow_workflow

pytestmark = [pytest.mark.flyte, pytest.mark.filterwarnings(FLYTEKIT_CHECKPOINT_WARNING)]

MODULE = __name__.rpartition(".")[2]  # the default Scanflow workflow name of the tasks below


@scanflow_task(stage="data_ingestion", outputs={"o0": {"kind": "data", "path": "table.csv"}})
def make(rows: int = 5, fail: bool = False) -> FlyteFile:
    if fail:
        raise RuntimeError("make was told to fail")
    path = output_path()  # written in place: nothing to copy
    path.write_text("".join(f"{i},{i % 3}\n" for i in range(rows)))
    return FlyteFile(str(path))


@scanflow_task(stage="training", outputs={"o0": {"kind": "model", "path": "model.txt"}})
def train(table: FlyteFile, lr: float = 0.5) -> FlyteFile:
    rows = Path(table.download()).read_text().splitlines()
    for epoch in range(3):
        log_metric("loss", lr / (epoch + 1), step=epoch)
    elsewhere = Path(table.download()).parent.parent.parent.parent / f"model-{len(rows)}.txt"
    elsewhere.write_text(str(sum(int(r.split(",")[1]) for r in rows)))
    return FlyteFile(str(elsewhere))  # copied into the run directory by Scanflow


class Scores(NamedTuple):
    accuracy: float
    verdict: str


@scanflow_task(stage="evaluation")
def score(model: FlyteFile, table: FlyteFile) -> Scores:
    total = int(Path(model.download()).read_text())
    rows = len(Path(table.download()).read_text().splitlines())
    return Scores(total / rows, "fine")


@scanflow_workflow
def pipeline(rows: int = 6) -> Scores:
    table = make(rows=rows)
    return score(model=train(table=table), table=table)


@scanflow_workflow
def broken_pipeline(rows: int = 6) -> float:
    table = make(rows=rows, fail=True)
    return score(model=train(table=table), table=table).accuracy


@scanflow_workflow
def twice(rows: int = 4) -> FlyteFile:
    table = make(rows=rows)
    train(table=table, lr=0.1)
    return train(table=table, lr=0.2)


@workflow
def plain(rows: int = 3) -> float:
    return score(model=train(table=make(rows=rows)), table=make(rows=rows)).accuracy


def _runs(home: Path) -> dict[str, dict[str, Any]]:
    return {p.parent.name: json.loads(p.read_text()) for p in (home / "runs").glob("*/run.json")}


def _steps(run_dir: Path) -> dict[str, dict[str, Any]]:
    return {p.parent.name: json.loads(p.read_text()) for p in (run_dir / "steps").glob("*/step.json")}


def test_typed_files_and_numbers_round_trip_through_the_run(home: Path) -> None:
    from scanflow_core.attestation.verify import verify_run

    result = pipeline(rows=6)

    assert result == Scores(accuracy=1.0, verdict="fine")  # (0+1+2+0+1+2) / 6 rows
    (run_id, manifest), *others = _runs(home).items()
    assert not others and run_id.startswith("local-")  # a local execution gets an id of its own
    assert manifest["status"] == "succeeded" and manifest["orchestrator"] == "flyte"
    assert manifest["workflow"] == MODULE and manifest["kind"] == "tasks"
    assert list(manifest["steps"]) == ["make", "train", "score"]  # in the order they ran
    steps = _steps(home / "runs" / run_id)
    assert steps["make"]["params"] == {"rows": 6, "fail": False}
    assert steps["make"]["outputs"]["o0"]["path"] == "steps/make/outputs/table.csv"
    assert steps["train"]["params"] == {"lr": 0.5}  # a default the call did not give is recorded too
    assert steps["train"]["outputs"]["o0"]["kind"] == "model"
    assert steps["train"]["metrics"] == {"loss": 0.5 / 3}
    assert steps["score"]["metrics"] == {"accuracy": 1.0}  # numbers of the typed return, by name
    table_digest = steps["make"]["outputs"]["o0"]["digest"]
    assert steps["train"]["inputs"]["table"]["digest"] == table_digest
    assert steps["score"]["inputs"]["model"]["digest"] == steps["train"]["outputs"]["o0"]["digest"]
    model = home / "runs" / run_id / "steps" / "train" / "outputs" / "model.txt"
    assert model.read_text() == "6"
    assert verify_run(home / "runs" / run_id).ok


def test_a_file_output_points_into_the_run_directory(home: Path) -> None:
    model = twice(rows=4)

    (run_id, manifest), *_ = _runs(home).items()
    assert list(manifest["steps"]) == ["make", "train", "train_2"]  # the same task twice: two steps
    run_dir = home / "runs" / run_id
    assert Path(model.path) == run_dir / "steps" / "train_2" / "outputs" / "model.txt"
    steps = _steps(run_dir)
    assert steps["train"]["params"] == {"lr": 0.1} and steps["train_2"]["params"] == {"lr": 0.2}


def test_a_call_outside_a_scanflow_workflow_is_a_run_of_its_own(home: Path) -> None:
    assert plain(rows=3) == 1.0  # (0+1+2) / 3

    runs = _runs(home)
    assert len(runs) == 4  # make twice, train, score: each call closed as its own run
    assert {m["status"] for m in runs.values()} == {"succeeded"}
    assert sorted(step for m in runs.values() for step in m["steps"]) == ["make", "make", "score", "train"]
    table = make(rows=2)
    assert Path(table.path).read_text() == "0,0\n1,1\n"


def test_a_failing_task_fails_and_closes_the_run(home: Path) -> None:
    from scanflow_flyte import ScanflowStepFailed

    with pytest.raises(ScanflowStepFailed) as raised:
        broken_pipeline(rows=3)

    assert raised.value.step == "make" and "make was told to fail" in raised.value.reason
    (run_id, manifest), *_ = _runs(home).items()
    assert raised.value.run_id == run_id
    assert manifest["status"] == "failed" and list(manifest["steps"]) == ["make"]
    assert manifest["steps"]["make"]["status"] == "failed"


def test_a_failing_check_fails_the_task_and_names_it(home: Path, failing_checker: str) -> None:
    from scanflow_flyte import ScanflowCheckFailed

    @scanflow_task(
        stage="data_validation", checks=[{"use": failing_checker, "on": ["table"], "policy": "fail"}]
    )
    def validate(table: FlyteFile) -> int:
        return len(Path(table.download()).read_text().splitlines())

    table = home.parent / "table.csv"
    table.write_text("1,2\n")
    with pytest.raises(ScanflowCheckFailed) as raised:
        validate(table=FlyteFile(str(table)))

    assert raised.value.failed_checks == ["always_fails on table"]
    assert "check failed: always_fails on table: table is never good enough" in str(raised.value)
    (_, manifest), *_ = _runs(home).items()
    assert manifest["status"] == "failed"
    assert manifest["steps"]["validate"]["checks"] == {"passed": 0, "failed": 1, "warned": 0}


def test_a_task_is_retried_locally_as_often_as_its_retries(home: Path, tmp_path: Path) -> None:
    marker = tmp_path / "tried"

    @scanflow_task(stage="training", retries=1)
    def flaky(path: str) -> float:
        if not Path(path).exists():
            Path(path).write_text("once")
            raise RuntimeError("the first attempt fails")
        return 1.0

    assert flaky(path=str(marker)) == 1.0
    (_, manifest), *_ = _runs(home).items()
    assert manifest["steps"]["flaky"]["status"] == "succeeded" and manifest["steps"]["flaky"]["attempt"] == 2


def test_folders_and_artifact_refs_cross_as_files(home: Path, tmp_path: Path) -> None:
    @scanflow_task(stage="data_transformation")
    def shard(rows: int) -> FlyteDirectory:
        folder = tmp_path / "shards"
        folder.mkdir()
        for i in range(rows):
            (folder / f"{i}.txt").write_text(str(i))
        return FlyteDirectory(str(folder))

    @scanflow_task(stage="data_analysis")
    def size(ref: ArtifactRef) -> int:
        return len(Path(ref).read_text())

    folder = shard(rows=3)
    assert sorted(p.name for p in Path(folder.path).iterdir()) == ["0.txt", "1.txt", "2.txt"]
    assert "/steps/shard/outputs/o0" in folder.path
    note = tmp_path / "note.txt"
    note.write_text("four")
    assert size(ref=ArtifactRef.from_value(note)) == 4
    steps = {name for m in _runs(home).values() for name in m["steps"]}
    assert steps == {"shard", "size"}
    [size_run] = [m for m in _runs(home).values() if "size" in m["steps"]]
    assert size_run["steps"]["size"]["inputs"]["ref"]["digest"] == ArtifactRef.from_value(note).digest


def test_artifact_refs_travel_as_their_dict_form() -> None:
    from flytekit import FlyteContextManager
    from flytekit.core.type_engine import TypeEngine

    ref = ArtifactRef("r1", "train", "model", "/tmp/model.pt", "sha256:" + "0" * 64, "model")
    ctx = FlyteContextManager.current_context()
    literal_type = TypeEngine.to_literal_type(ArtifactRef)
    literal = TypeEngine.to_literal(ctx, ref, ArtifactRef, literal_type)

    assert literal.scalar.generic["path"] == "/tmp/model.pt"
    assert TypeEngine.to_python_value(ctx, literal, ArtifactRef) == ref
    assert TypeEngine.guess_python_type(literal_type) is ArtifactRef


def test_the_package_is_a_flytekit_plugin() -> None:
    from importlib.metadata import entry_points

    from flytekit.core.task import TaskPlugins
    from flytekit.core.type_engine import TypeEngine

    from scanflow_flyte import ScanflowFunctionTask
    from scanflow_flyte.plugin import ArtifactRefTransformer

    [plugin] = [e for e in entry_points(group="flytekit.plugins") if e.name == "scanflow"]
    assert plugin.value == "scanflow_flyte.plugin"
    assert isinstance(TypeEngine.get_transformer(ArtifactRef), ArtifactRefTransformer)
    assert TaskPlugins.find_pythontask_plugin(Scanflow) is ScanflowFunctionTask

    @task(task_config=Scanflow(stage="test"))
    def same(x: int) -> int:
        return x

    assert isinstance(same, ScanflowFunctionTask) and same.step.stage == "test"
    assert isinstance(make, ScanflowFunctionTask) and make.task_type == "python-task"


def test_bad_arguments_are_named_at_decoration() -> None:
    from scanflow_core.errors import SpecError

    with pytest.raises(SpecError, match=r"cook.*stage"):

        @scanflow_task(stage="cooking")
        def cook(x: int) -> int:
            return x

    with pytest.raises(TypeError, match=r"outputs \['model'\] are no FlyteFile/FlyteDirectory output"):

        @scanflow_task(stage="training", outputs={"model": {"kind": "model"}})
        def fit(x: int) -> int:
            return x

    with pytest.raises(SpecError, match=r"checks\[0\]\.on\[0\].*'nothing' is no output or parameter"):

        @scanflow_task(stage="training", checks=[{"use": "leakage", "on": ["nothing"]}])
        def fit2(x: int) -> int:
            return x

    with pytest.raises(TypeError, match="makes its own task_config"):
        scanflow_task(task_config=Scanflow())
    with pytest.raises(TypeError, match="sets on_failure itself"):
        scanflow_workflow(on_failure=make)
    with pytest.raises(LookupError, match="for the body of a running @scanflow_task"):
        output_path()


def test_the_serialized_workflow_closes_its_run_on_a_cluster() -> None:
    from collections import OrderedDict

    from flytekit.configuration import Image, ImageConfig, SerializationSettings
    from flytekit.tools.translator import get_serializable

    from scanflow_flyte.step_tasks import resolver

    settings = SerializationSettings(
        image_config=ImageConfig(default_image=Image(name="default", fqn="registry/scanflow", tag="1")),
        project="p",
        domain="d",
        version="v1",
    )
    entities: OrderedDict[Any, Any] = OrderedDict()
    serialized = get_serializable(entities, settings, pipeline)

    nodes = {n.id: n for n in serialized.template.nodes}
    assert set(nodes["scanflow-finish"].upstream_node_ids) == set(nodes) - {"scanflow-finish"}
    assert serialized.template.failure_node is not None
    templates = [
        e.template for e in entities.values() if hasattr(e, "template") and hasattr(e.template, "type")
    ]
    closing = {t.id.name: list(t.container.args) for t in templates if "scanflow_f" in t.id.name}
    assert set(closing) == {f"{__name__}.pipeline.scanflow_finish", f"{__name__}.pipeline.scanflow_failure"}
    for name, args in closing.items():
        found = resolver.load_task(args[args.index("--") + 1 :])
        assert found.name == name
