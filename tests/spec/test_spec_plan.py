"""The plan of a workflow: topological order, graph rules checked at load time, nested workflows
flattened into qualified steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from scanflow_core.errors import SpecError
from scanflow_core.spec import Plan, PlannedStep, load_workflow, load_workflow_text
from scanflow_core.spec.plan import resolve_step_name

HEAD = "apiVersion: scanflow/v1\nname: wf\n"


def steps(*lines: str, head: str = HEAD) -> str:
    """A spec whose steps are given one per argument in flow style: ``"{name: a, stage: test}"``."""
    body = "".join(f"  - {line}\n" for line in lines)
    return head + "steps:\n" + body


def step(name: str, stage: str = "data_transformation", **fields: str) -> str:
    extra = "".join(f", {k}: {v}" for k, v in fields.items())
    return f"{{name: {name}, stage: {stage}, command: run{extra}}}"


def order(text: str) -> list[str]:
    return list(load_workflow_text(text).plan.steps)


def spec_error(text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_workflow_text(text)
    return info.value


# --- order ----------------------------------------------------------------------------------------


def test_topological_order_respects_needs_and_declaration_order() -> None:
    text = steps(
        step("report", needs="[train, check]"),
        step("ingest"),
        step("train", needs="[ingest]"),
        step("lint"),
        step("check", needs="[ingest]"),
    )
    assert order(text) == ["ingest", "train", "lint", "check", "report"]


def test_independent_steps_keep_declaration_order() -> None:
    names = ["zeta", "alpha", "mid", "beta", "omega"]
    assert order(steps(*(step(n) for n in names))) == names


def test_needs_implied_by_inputs() -> None:
    text = steps(
        step("train", "training", inputs="[clean]", outputs="[model]"),
        step("ingest", "data_ingestion", outputs="[raw]"),
        step("clean", inputs="{data: raw}", outputs="[clean]"),
    )
    plan = load_workflow_text(text).plan
    assert list(plan.steps) == ["ingest", "clean", "train"]
    assert plan["clean"].needs == ("ingest",)
    assert plan["train"].needs == ("clean",)
    assert dict(plan["clean"].inputs) == {"data": "raw"}
    assert plan.artifacts["raw"].producer == "ingest"
    assert plan["clean"].artifact("clean") == "clean"


def test_declared_and_implied_needs_are_not_repeated() -> None:
    text = steps(step("a", outputs="[x]"), step("b", needs="[a]", inputs="[x]"))
    assert load_workflow_text(text).plan["b"].needs == ("a",)


def test_workflow_inputs_are_artifacts_without_producer(tmp_path: Path) -> None:
    text = HEAD + "inputs:\n  data: {path: data/raw.csv}\n" + steps(step("a", inputs="[data]"), head="")
    spec = tmp_path / "scanflow.yaml"
    spec.write_text(text)
    plan = load_workflow(spec).plan
    assert plan.artifacts["data"].producer is None
    assert plan.artifacts["data"].path == tmp_path / "data" / "raw.csv"
    assert plan["a"].needs == ()


@pytest.fixture
def diamond() -> Plan:
    plan: Plan = load_workflow_text(
        steps(
            step("a"),
            step("b", needs="[a]"),
            step("c", needs="[a]"),
            step("d", needs="[b, c]"),
            step("e"),
            step("f", needs="[e]"),
        )
    ).plan
    return plan


def test_levels(diamond: Plan) -> None:
    assert diamond.levels() == [["a", "e"], ["b", "c", "f"], ["d"]]
    for depth, level in enumerate(diamond.levels()):
        for name in level:
            assert all(any(n in lower for lower in diamond.levels()[:depth]) for n in diamond[name].needs)


def test_ancestors_descendants_downstream(diamond: Plan) -> None:
    assert diamond.ancestors("d") == {"a", "b", "c"}
    assert diamond.ancestors("a") == set()
    assert diamond.descendants("a") == {"b", "c", "d"}
    assert diamond.descendants("d") == set()
    assert sorted(diamond.downstream("a")) == ["b", "c"]


def test_subset_keeps_plan_order(diamond: Plan) -> None:
    assert diamond.subset(["d"]) == ["a", "b", "c", "d"]
    assert diamond.subset(["f", "b"]) == ["a", "b", "e", "f"]
    assert diamond.subset([]) == []
    with pytest.raises(KeyError, match="did you mean 'd'"):
        diamond.subset(["dd"])


def test_plan_mapping_protocol(diamond: Plan) -> None:
    assert len(diamond) == 6
    assert [s.name for s in diamond] == list(diamond.steps)
    assert all(isinstance(s, PlannedStep) for s in diamond)
    assert diamond["b"].stage == "data_transformation"
    with pytest.raises(KeyError, match="no step named 'x'"):
        diamond["x"]


# --- graph rules ----------------------------------------------------------------------------------


def test_duplicate_names() -> None:
    exc = spec_error(steps(step("a"), step("b"), step("a")))
    assert exc.path == "steps[2].name"
    assert exc.line == 6
    assert "duplicate step name 'a' (also steps[0])" in str(exc)


def test_unknown_needs_with_a_hint() -> None:
    exc = spec_error(steps(step("ingest"), step("train", needs="[ingets]")))
    assert exc.path == "steps[1].needs[0]"
    assert "no step named 'ingets'" in str(exc)
    assert "did you mean 'ingest'?" in str(exc)


def test_self_need() -> None:
    exc = spec_error(steps(step("a", needs="[a]")))
    assert exc.path == "steps[0].needs[0]"
    assert "needs itself" in str(exc)


def _rotations(cycle: list[str]) -> list[str]:
    out = []
    for i in range(len(cycle)):
        rotated = cycle[i:] + cycle[:i]
        out.append(" → ".join([*rotated, rotated[0]]))
    return out


def test_cycle_message_shows_the_cycle() -> None:
    # a feeds b, b feeds c, c feeds a: written as needs, each step needs the one before it.
    exc = spec_error(steps(step("a", needs="[c]"), step("b", needs="[a]"), step("c", needs="[b]"), step("d")))
    assert len(exc.problems) == 1
    assert exc.path.startswith("steps[") and exc.path.endswith("].needs")
    assert exc.line is not None
    assert "the steps form a cycle: " in str(exc)
    assert any(r in str(exc) for r in _rotations(["a", "b", "c"])), str(exc)


def test_cycle_through_inputs_only() -> None:
    exc = spec_error(steps(step("a", inputs="[y]", outputs="[x]"), step("b", inputs="[x]", outputs="[y]")))
    assert any(r in str(exc) for r in _rotations(["a", "b"])), str(exc)


def test_cycle_beside_an_acyclic_part_names_only_the_cycle() -> None:
    exc = spec_error(
        steps(step("ok1"), step("p", needs="[q, ok1]"), step("q", needs="[p]"), step("tail", needs="[p]"))
    )
    message = str(exc)
    assert any(r in message for r in _rotations(["p", "q"])), message
    assert "ok1 →" not in message and "tail" not in message


def test_artifact_written_twice() -> None:
    exc = spec_error(steps(step("a", outputs="[x]"), step("b", outputs="{x: {kind: model}}")))
    assert exc.path == "steps[1].outputs.x"
    assert "artifact 'x' is also written by step 'a'" in str(exc)


def test_artifact_shadowing_a_workflow_input() -> None:
    exc = spec_error(HEAD + "inputs: {x: {path: x.csv}}\n" + steps(step("a", outputs="[x]"), head=""))
    assert exc.path == "steps[0].outputs.x"
    assert "a workflow input" in str(exc)


def test_input_no_step_produces() -> None:
    exc = spec_error(steps(step("a", outputs="[raw]"), step("b", inputs="{data: rew}")))
    assert exc.path == "steps[1].inputs.data"
    assert "no step or workflow input produces 'rew'" in str(exc)
    assert "did you mean 'raw'?" in str(exc)


# --- MLSpec's test-stage rules ----------------------------------------------------------------------

SPLIT = step("split", "data_splitting", outputs="[train, eval, test]")
TRAIN = step("train", "training", inputs="[train]", outputs="{model: {kind: model}}")
EVALUATE = step("evaluate", "evaluation", inputs="[model, eval]")


def test_test_step_feeding_training_is_refused() -> None:
    exc = spec_error(
        steps(
            SPLIT,
            TRAIN,
            step("test", "test", inputs="[model, test]", outputs="{score: {kind: metrics}}"),
            step("retrain", "training", inputs="[score, train]"),
        )
    )
    assert exc.path == "steps[2]"
    assert "test step 'test' feeds training step 'retrain'" in str(exc)


def test_test_step_feeding_training_through_another_step_is_refused() -> None:
    exc = spec_error(
        steps(
            SPLIT,
            TRAIN,
            step("test", "test", inputs="[model, test]"),
            step("tune", needs="[test]"),
            step("retrain", "training", needs="[tune]"),
        )
    )
    assert "feeds training step 'retrain'" in str(exc)


def test_test_step_reading_evaluation_data_is_refused() -> None:
    exc = spec_error(steps(SPLIT, TRAIN, EVALUATE, step("test", "test", inputs="{model: model, data: eval}")))
    assert exc.path == "steps[3].inputs.data"
    assert "reads 'eval', which evaluation step 'evaluate' also reads" in str(exc)


def test_test_step_may_read_the_model_evaluation_reads() -> None:
    plan = load_workflow_text(
        steps(SPLIT, TRAIN, EVALUATE, step("test", "test", inputs="[model, test]"))
    ).plan
    assert set(plan["test"].inputs.values()) == {"model", "test"}
    assert plan.artifacts["model"].spec.kind == "model"


def test_shared_artifact_of_kind_data_is_refused_but_kind_model_is_not() -> None:
    shared = steps(
        step("ingest", "data_ingestion", outputs="{x: {kind: KIND}}"),
        step("evaluate", "evaluation", inputs="[x]"),
        step("test", "test", inputs="[x]"),
    )
    assert "also reads" in str(spec_error(shared.replace("KIND", "data")))
    load_workflow_text(shared.replace("KIND", "model"))


# --- nested workflows -----------------------------------------------------------------------------

PREP = """\
apiVersion: scanflow/v1
name: prep
params: {seed: 1, frac: 0.2}
inputs:
  source: {kind: data}
steps:
  - name: ingest
    stage: data_ingestion
    call: m:ingest
    inputs: [source]
    outputs: [raw]
  - name: split
    stage: data_splitting
    call: m:split
    params: {seed: 7}
    inputs: [raw]
    outputs: [train, test]
  - name: analyse
    stage: data_analysis
    command: echo
    needs: [ingest]
    when: params.frac > 0.1
"""

MAIN = """\
apiVersion: scanflow/v1
name: main
params: {epochs: 3}
objectives: ["prep.split.rows > 0", "train.accuracy > 0.5"]
steps:
  - name: fetch
    stage: data_ingestion
    command: fetch
    outputs: [source]
  - name: prep
    stage: data_transformation
    workflow: prep.yaml
    needs: [fetch]
    params: {frac: 0.3}
    inputs: {source: source}
  - name: train
    stage: training
    call: m:train
    needs: [prep]
    params: {lr: 0.01}
    inputs: {data: prep.train}
    outputs:
      model: {kind: model}
    when: prep.split.rows > 10
"""


@pytest.fixture
def nested(tmp_path: Path) -> Path:
    (tmp_path / "prep.yaml").write_text(PREP)
    main = tmp_path / "scanflow.yaml"
    main.write_text(MAIN)
    return main


def test_nested_workflow_is_flattened_into_qualified_steps(nested: Path) -> None:
    workflow = load_workflow(nested)
    plan = workflow.plan
    assert list(plan.steps) == ["fetch", "prep.ingest", "prep.split", "prep.analyse", "train"]
    assert set(workflow.children) == {"prep"}
    assert workflow.children["prep"].name == "prep"
    # roots of the nested workflow inherit the parent step's needs
    assert plan["prep.ingest"].needs == ("fetch",)
    assert plan["prep.split"].needs == ("prep.ingest",)
    assert plan["prep.analyse"].needs == ("prep.ingest",)
    # the step after the nested one waits for every sink of it
    assert set(plan["train"].needs) == {"prep.split", "prep.analyse"}
    assert plan.levels() == [["fetch"], ["prep.ingest"], ["prep.split", "prep.analyse"], ["train"]]
    assert plan.ancestors("train") == {"fetch", "prep.ingest", "prep.split", "prep.analyse"}
    assert plan.subset(["prep.split"]) == ["fetch", "prep.ingest", "prep.split"]


def test_nested_outputs_are_visible_to_the_parent(nested: Path) -> None:
    plan = load_workflow(nested).plan
    assert {"prep.raw", "prep.train", "prep.test"} <= set(plan.artifacts)
    assert plan.artifacts["prep.train"].producer == "prep.split"
    assert plan.artifacts["prep.train"].output == "train"
    assert dict(plan["train"].inputs) == {"data": "prep.train"}
    assert dict(plan["prep.ingest"].inputs) == {"source": "source"}  # bound to the parent's artifact
    assert dict(plan["prep.split"].inputs) == {"raw": "prep.raw"}
    assert plan["prep.split"].group == "prep"
    assert plan["prep.split"].artifact("train") == "prep.train"


def test_parent_reading_a_nested_output_needs_its_producer(tmp_path: Path, nested: Path) -> None:
    text = MAIN.replace("    needs: [prep]\n", "")
    nested.write_text(text)
    plan = load_workflow(nested).plan
    assert plan["train"].needs == ("prep.split",)


def test_nested_params_are_overridden_by_the_parent_step_and_the_command_line(nested: Path) -> None:
    plan = load_workflow(nested).plan
    assert dict(plan["prep.ingest"].params) == {"seed": 1, "frac": 0.3}  # frac from the parent step
    assert dict(plan["prep.split"].params) == {"seed": 7, "frac": 0.3}  # a step's own params still win
    plan = load_workflow(nested, ["prep.seed=3", "prep.split.seed=9", "epochs=5"]).plan
    assert dict(plan["prep.ingest"].params) == {"seed": 3, "frac": 0.3}
    assert dict(plan["prep.split"].params) == {"seed": 9, "frac": 0.3}
    assert dict(plan["fetch"].params) == {"epochs": 5}
    assert load_workflow(nested, ["prep.seed=3"]).children["prep"].params == {"seed": 3, "frac": 0.2}


def test_command_line_beats_the_parent_steps_params_for_nested_params(nested: Path) -> None:
    plan = load_workflow(nested, ["prep.frac=0.5"]).plan
    assert plan["prep.ingest"].params["frac"] == 0.5
    assert plan["prep.split"].params["frac"] == 0.5


def test_nested_when_and_objectives_may_name_nested_steps(nested: Path) -> None:
    workflow = load_workflow(nested)
    assert workflow.plan["train"].spec.when == "prep.split.rows > 10"
    assert workflow.objectives[0].expr == "prep.split.rows > 0"


def test_nested_input_with_a_default_path_need_not_be_bound(tmp_path: Path) -> None:
    (tmp_path / "child.yaml").write_text(
        "apiVersion: scanflow/v1\nname: child\ninputs:\n  holdout: {kind: data, path: holdout.csv}\n"
        "steps:\n  - {name: score, stage: evaluation, command: run, inputs: [holdout]}\n"
    )
    main = tmp_path / "scanflow.yaml"
    main.write_text(steps("{name: sub, stage: evaluation, workflow: child.yaml}"))
    plan = load_workflow(main).plan
    assert dict(plan["sub.score"].inputs) == {"holdout": "sub.holdout"}
    art = plan.artifacts["sub.holdout"]
    assert art.producer is None
    assert art.path == tmp_path / "holdout.csv"


def test_two_level_nesting(tmp_path: Path) -> None:
    (tmp_path / "inner.yaml").write_text(
        "apiVersion: scanflow/v1\nname: inner\nparams: {k: 1}\nsteps:\n"
        "  - {name: make, stage: data_ingestion, command: run, outputs: [x]}\n"
        "  - {name: use, stage: data_analysis, command: run, inputs: [x]}\n"
    )
    (tmp_path / "mid").mkdir()
    (tmp_path / "mid" / "mid.yaml").write_text(
        "apiVersion: scanflow/v1\nname: mid\nparams: {k: 2}\nsteps:\n"
        "  - {name: first, stage: data_ingestion, command: run}\n"
        "  - {name: inner, stage: data_transformation, workflow: ../inner.yaml, needs: [first], params: {k: 3}}\n"
        "  - {name: last, stage: data_analysis, command: run, needs: [inner], inputs: {x: inner.x}}\n"
    )
    main = tmp_path / "scanflow.yaml"
    main.write_text(
        steps(
            step("start"),
            "{name: mid, stage: data_transformation, workflow: mid/mid.yaml, needs: [start]}",
            step("end", inputs="{x: mid.inner.x}"),
        )
    )
    workflow = load_workflow(main, ["mid.inner.k=4"])
    plan = workflow.plan
    assert list(plan.steps) == ["start", "mid.first", "mid.inner.make", "mid.inner.use", "mid.last", "end"]
    assert plan["mid.first"].needs == ("start",)
    assert plan["mid.inner.make"].needs == ("mid.first",)
    assert plan["mid.inner.use"].needs == ("mid.inner.make",)
    assert set(plan["mid.last"].needs) == {"mid.inner.use", "mid.inner.make"}
    assert plan["end"].needs == ("mid.inner.make",)
    assert plan.artifacts["mid.inner.x"].producer == "mid.inner.make"
    assert plan["mid.inner.use"].group == "mid.inner"
    assert plan["mid.inner.make"].params["k"] == 4  # the command line wins over the mid step's params
    assert workflow.children["mid"].children["inner"].params == {"k": 4}
    assert load_workflow(main).plan["mid.inner.make"].params["k"] == 3  # the mid step's params over inner's
    assert resolve_step_name("mid.inner.make.rows", plan.steps) == ("mid.inner.make", "rows")


def test_errors_inside_a_nested_file_name_that_file(tmp_path: Path) -> None:
    (tmp_path / "prep.yaml").write_text(PREP.replace("needs: [ingest]", "needs: [ingst]"))
    main = tmp_path / "scanflow.yaml"
    main.write_text(MAIN)
    with pytest.raises(SpecError) as info:
        load_workflow(main)
    assert info.value.file == str(tmp_path / "prep.yaml")
    assert info.value.path == "steps[2].needs[0]"
    assert info.value.line == 21


def test_parent_reading_a_missing_nested_artifact(nested: Path) -> None:
    nested.write_text(MAIN.replace("inputs: {data: prep.train}", "inputs: {data: prep.trian}"))
    with pytest.raises(SpecError) as info:
        load_workflow(nested)
    assert info.value.path == "steps[2].inputs.data"
    assert "did you mean 'prep.train'?" in str(info.value)


# --- resolve_step_name ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("train.accuracy", ("train", "accuracy")),
        ("prep.split.rows", ("prep.split", "rows")),
        ("prep.split.per_class.a", ("prep.split", "per_class.a")),
        ("prep.rows", ("prep", "rows")),
        ("nope.rows", None),
        ("train", None),
        ("", None),
    ],
)
def test_resolve_step_name(name: str, expected: tuple[str, str] | None) -> None:
    assert resolve_step_name(name, {"train": 1, "prep": 2, "prep.split": 3}) == expected
