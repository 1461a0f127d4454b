"""Loading ``scanflow.yaml``: every malformed spec is a SpecError that says where and what; good specs
are normalised (shorthands, durations, objectives), overridden from the command line and described by
the JSON Schema that ``scanflow schema`` prints."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from scanflow_core.cli import main as cli_main
from scanflow_core.errors import Problem, SpecError
from scanflow_core.spec import (
    ArtifactSpec,
    CheckSpec,
    Objective,
    Plan,
    Workflow,
    json_schema,
    load_workflow,
    load_workflow_text,
    parse_overrides,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits" / "scanflow.yaml"

# Line numbers below refer to this text (line 1 is ``apiVersion``).
BASE = """\
apiVersion: scanflow/v1
name: demo
params: {epochs: 3, name: base}
steps:
  - name: ingest
    stage: data_ingestion
    call: steps:ingest
    outputs: [raw]
  - name: train
    stage: training
    call: steps:train
    needs: [ingest]
    params: {lr: 0.01}
    inputs: [raw]
    outputs:
      model: {kind: model}
"""
#  line  9: "  - name: train"       (steps[1])
#  line 12: "    needs: [ingest]"
#  line 14: "    inputs: [raw]"


def with_train(extra: str) -> str:
    """BASE with ``extra`` (one or more lines of step fields) added to ``train`` at line 17."""
    return BASE + "".join(f"    {line}\n" for line in extra.splitlines())


def with_step(body: str) -> str:
    """BASE with a third step (steps[2]) whose ``- name:`` line is line 17."""
    return BASE + "".join(
        ("  - " if i == 0 else "    ") + line + "\n" for i, line in enumerate(body.splitlines())
    )


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


CHILD = """\
apiVersion: scanflow/v1
name: child
inputs:
  source: {kind: data}
steps:
  - name: clean
    stage: data_transformation
    call: steps:clean
    inputs: [source]
    outputs: [cleaned]
"""


@dataclass
class Bad:
    id: str
    text: str | bytes
    path: str
    line: int | None
    phrase: str
    params: list[str] | None = None
    files: dict[str, str] = field(default_factory=dict)
    file: str = "scanflow.yaml"  # the file the error must name, relative to tmp_path


BAD = [
    Bad(
        "yaml-syntax",
        "apiVersion: scanflow/v1\nname: demo\n  bad: indent\nsteps: []\n",
        "",
        3,
        "invalid YAML",
    ),
    Bad("yaml-unclosed-flow", "apiVersion: scanflow/v1\nname: demo\nsteps: [\n", "", 4, "invalid YAML"),
    Bad("yaml-tab-indent", "apiVersion: scanflow/v1\nsteps:\n\t- name: a\n", "", 3, "invalid YAML"),
    Bad("yaml-duplicate-anchor-alias", "apiVersion: scanflow/v1\nname: *nope\n", "", 2, "invalid YAML"),
    Bad("not-a-mapping", "- apiVersion\n- name\n", "", None, "the spec is a list"),
    Bad("scalar", "just text\n", "", None, "the spec is a str"),
    Bad("empty-file", "", "", None, "empty file"),
    Bad("only-comments", "# nothing here\n", "", None, "empty file"),
    Bad("non-utf8", b"apiVersion: scanflow/v1\nname: \xff\xfe\nsteps: []\n", "", 2, "not UTF-8"),
    Bad("missing-apiVersion", BASE.replace("apiVersion: scanflow/v1\n", ""), "apiVersion", 1, "'apiVersion'"),
    Bad("missing-name", BASE.replace("name: demo\n", ""), "name", 1, "missing required field 'name'"),
    Bad(
        "missing-steps", "apiVersion: scanflow/v1\nname: demo\n", "steps", 1, "missing required field 'steps'"
    ),
    Bad("no-steps", "apiVersion: scanflow/v1\nname: demo\nsteps: []\n", "steps", 3, "at least one step"),
    Bad("wrong-apiVersion", BASE.replace("scanflow/v1", "scanflow/v2"), "apiVersion", 1, "scanflow/v1"),
    Bad("bad-workflow-name", BASE.replace("name: demo", "name: my demo"), "name", 2, "not a valid name"),
    Bad("bad-step-name", BASE.replace("name: train", "name: 2train"), "steps[1].name", 9, "'2train'"),
    Bad(
        "unknown-stage",
        BASE.replace("stage: training", "stage: trainig"),
        "steps[1].stage",
        10,
        "did you mean 'training'?",
    ),
    Bad("unknown-field", BASE.replace("needs: [ingest]", "nedds: [ingest]"), "steps[1].nedds", 12, "'needs'"),
    Bad(
        "unknown-top-field",
        BASE.replace("params:", "objective: []\nparams:", 1),
        "objective",
        3,
        "did you mean 'objectives'?",
    ),
    Bad(
        "call-without-colon",
        BASE.replace("call: steps:train", "call: steps.train"),
        "steps[1].call",
        11,
        "'module:function'",
    ),
    Bad(
        "call-and-command", with_train("command: python train.py"), "steps[1]", 9, "give 'call' or 'command'"
    ),
    Bad("no-way-to-run", BASE.replace("    call: steps:train\n", ""), "steps[1]", 9, "a step needs one of"),
    Bad(
        "image-and-build",
        with_step("name: pack\nstage: packaging\nimage: x:1\nbuild: {dockerfile: D}\ncommand: run"),
        "steps[2]",
        17,
        "'image' or 'build', not both",
    ),
    Bad(
        "build-without-source",
        with_step("name: pack\nstage: packaging\nbuild: {context: .}\ncommand: run"),
        "steps[2].build",
        19,
        "'requirements' or 'dockerfile'",
    ),
    Bad(
        "workflow-step-with-outputs",
        with_step("name: sub\nstage: packaging\nworkflow: child.yaml\noutputs: [x]"),
        "steps[2]",
        17,
        "drop 'outputs'",
    ),
    Bad(
        "workflow-step-with-call",
        with_step("name: sub\nstage: packaging\nworkflow: child.yaml\ncall: m:f"),
        "steps[2]",
        17,
        "cannot also have call",
    ),
    Bad("negative-retries", with_train("retries: -1"), "steps[1].retries", 17, "greater than or equal to 0"),
    Bad("bad-timeout", with_train("timeout: 10 minutes"), "steps[1].timeout", 17, "a duration like"),
    Bad("zero-timeout", with_train("timeout: 0s"), "steps[1].timeout", 17, "greater than 0"),
    Bad(
        "bad-memory", with_train("resources: {memory: lots}"), "steps[1].resources.memory", 17, "memory size"
    ),
    Bad("bad-cpu", with_train("resources:\n  cpu: 0"), "steps[1].resources.cpu", 18, "greater than 0"),
    Bad("bad-runtime", with_train("runtime: dokcer"), "steps[1].runtime", 17, "did you mean 'docker'?"),
    Bad(
        "check-bad-policy",
        with_train("checks:\n  - use: drift\n    policy: maybe"),
        "steps[1].checks[0].policy",
        19,
        "one of: fail, warn",
    ),
    Bad(
        "check-without-use",
        with_train("checks:\n  - policy: warn"),
        "steps[1].checks[0].use",
        18,
        "missing required field 'use'",
    ),
    Bad("env-not-mapping", with_train("env: [A, B]"), "steps[1].env", 17, "valid dictionary"),
    Bad(
        "bad-input-ref",
        with_train("").replace("inputs: [raw]", "inputs: {data: 'raw data'}"),
        "steps[1].inputs.data",
        14,
        "'raw data'",
    ),
    Bad(
        "objectives-not-parsing",
        BASE.replace("steps:\n", "objectives: ['train.accuracy >= ']\nsteps:\n", 1),
        "objectives[0].expr",
        4,
        "does not parse",
    ),
    Bad(
        "objectives-not-a-list",
        BASE.replace("steps:\n", "objectives: {expr: x}\nsteps:\n", 1),
        "objectives",
        4,
        "valid list",
    ),
    Bad(
        "objective-unknown-step",
        BASE.replace("steps:\n", "objectives: ['trian.accuracy >= 0.9']\nsteps:\n", 1),
        "objectives[0].expr",
        4,
        "did you mean 'train'?",
    ),
    Bad(
        "objective-unknown-param",
        BASE.replace("steps:\n", "objectives: ['params.epoch > 1']\nsteps:\n", 1),
        "objectives[0].expr",
        4,
        "unknown parameter 'epoch'",
    ),
    Bad(
        "when-not-parsing", with_train("when: params.lr = 0.1"), "steps[1].when", 17, "'when' does not parse"
    ),
    Bad("when-not-a-string", with_train("when: true"), "steps[1].when", 17, "valid string"),
    Bad(
        "when-unknown-param",
        with_train("when: params.nope > 1"),
        "steps[1].when",
        17,
        "unknown parameter 'nope'",
    ),
    Bad(
        "when-unknown-system", with_train("when: system.gpu > 0"), "steps[1].when", 17, "did you mean 'gpus'?"
    ),
    Bad(
        "when-reads-non-upstream-step",
        with_step("name: report\nstage: logging\ncommand: echo\nwhen: train.loss < 1"),
        "steps[2].when",
        20,
        "not upstream",
    ),
    Bad(
        "when-reads-downstream-step",
        BASE.replace("    call: steps:ingest\n", "    call: steps:ingest\n    when: train.loss < 1\n"),
        "steps[0].when",
        8,
        "which is not upstream of 'ingest'",
    ),
    Bad(
        "unknown-needs",
        BASE.replace("needs: [ingest]", "needs: [ingest, ingset]"),
        "steps[1].needs[1]",
        12,
        "no step named 'ingset'",
    ),
    Bad(
        "needs-itself",
        BASE.replace("needs: [ingest]", "needs: [train]"),
        "steps[1].needs[0]",
        12,
        "needs itself",
    ),
    Bad(
        "cycle",
        BASE.replace("    outputs: [raw]\n", "    outputs: [raw]\n    needs: [train]\n", 1),
        "steps[1].needs",
        13,
        "cycle",
    ),
    Bad(
        "duplicate-step",
        BASE.replace("name: train", "name: ingest").replace("needs: [ingest]", "needs: []"),
        "steps[1].name",
        9,
        "duplicate step name 'ingest'",
    ),
    Bad(
        "input-nobody-produces",
        BASE.replace("inputs: [raw]", "inputs: [rwa]"),
        "steps[1].inputs.rwa",
        14,
        "did you mean 'raw'?",
    ),
    Bad(
        "artifact-written-twice",
        BASE.replace("model: {kind: model}", "raw: {kind: data}"),
        "steps[1].outputs.raw",
        16,
        "also written by step 'ingest'",
    ),
    Bad("unknown-param", BASE, "--param epoch", None, "did you mean 'epochs'?", params=["epoch=5"]),
    Bad(
        "param-on-missing-step",
        BASE,
        "--param trian.lr",
        None,
        "no step named 'trian'",
        params=["trian.lr=1"],
    ),
    Bad(
        "param-deep-on-plain-step",
        BASE,
        "--param train.lr.x",
        None,
        "not a nested workflow",
        params=["train.lr.x=1"],
    ),
    Bad("param-without-equals", BASE, "epochs", None, "NAME=VALUE", params=["epochs"], file="--param"),
    Bad(
        "nested-file-missing",
        with_step("name: sub\nstage: data_transformation\nworkflow: nope.yaml"),
        "steps[2].workflow",
        19,
        "no such file",
    ),
    Bad(
        "nested-name-too-long",
        with_step("name: sub\nstage: data_transformation\nworkflow: " + "n" * 400),
        "steps[2].workflow",
        19,
        "no such file",
    ),
    Bad(
        "nested-files-include-each-other",
        with_step("name: sub\nstage: data_transformation\nworkflow: loop.yaml"),
        "steps[0].workflow",
        6,
        "include each other",
        files={
            "loop.yaml": "apiVersion: scanflow/v1\nname: loop\nsteps:\n  - name: back\n"
            "    stage: logging\n    workflow: scanflow.yaml\n"
        },
        file="loop.yaml",
    ),
    Bad(
        "nested-includes-itself",
        "apiVersion: scanflow/v1\nname: me\nsteps:\n  - name: again\n    stage: logging\n    workflow: scanflow.yaml\n",
        "steps[0].workflow",
        6,
        "include each other",
    ),
    Bad(
        "nested-input-not-bound",
        with_step("name: sub\nstage: data_transformation\nworkflow: child.yaml"),
        "steps[2].inputs",
        17,
        "needs input 'source'",
        files={"child.yaml": CHILD},
    ),
    Bad(
        "nested-input-unknown",
        with_step(
            "name: sub\nstage: data_transformation\nworkflow: child.yaml\ninputs: {source: raw, src: raw}"
        ),
        "steps[2].inputs.src",
        20,
        "has no input 'src'",
        files={"child.yaml": CHILD},
    ),
    Bad(
        "nested-file-bad",
        with_step("name: sub\nstage: data_transformation\nworkflow: sub/child.yaml\ninputs: {source: raw}"),
        "steps[0].stage",
        7,
        "did you mean 'data_transformation'?",
        files={"sub/child.yaml": CHILD.replace("stage: data_transformation", "stage: data_transform")},
        file="sub/child.yaml",
    ),
    Bad(
        "nested-param-unknown",
        with_step("name: sub\nstage: data_transformation\nworkflow: child.yaml\ninputs: {source: raw}"),
        "--param sub.nope",
        None,
        "unknown parameter 'nope'",
        params=["sub.nope=1"],
        files={"child.yaml": CHILD},
        file="child.yaml",
    ),
]


@pytest.mark.parametrize("case", BAD, ids=[c.id for c in BAD])
def test_bad_spec_names_file_path_line_and_what_was_expected(case: Bad, tmp_path: Path) -> None:
    for name, text in case.files.items():
        write(tmp_path / name, text)
    spec = write(tmp_path / "scanflow.yaml", case.text)
    with pytest.raises(SpecError) as info:
        load_workflow(spec, case.params)
    exc = info.value
    expected_file = case.file if case.file == "--param" else str(tmp_path / case.file)
    assert exc.file == expected_file
    assert exc.path == case.path
    assert exc.line == case.line
    assert case.phrase in str(exc)
    assert exc.problems and all(isinstance(p, Problem) for p in exc.problems)
    # The message names the file, and the line when there is one: "scanflow.yaml:12: steps[1]...".
    where = f"{exc.file}:{exc.line}" if exc.line else exc.file
    assert where in str(exc)
    assert (exc.path or "<document>") in str(exc)


def test_bad_spec_table_is_large_enough() -> None:
    assert len(BAD) >= 25
    assert len({c.id for c in BAD}) == len(BAD)


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read the spec") as info:
        load_workflow(tmp_path / "nope.yaml")
    assert info.value.file == str(tmp_path / "nope.yaml")
    assert info.value.path == ""


def test_a_directory_is_not_a_spec(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read the spec"):
        load_workflow(tmp_path)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = BASE.replace("stage: training", "stage: trainig").replace("call: steps:ingest", "call: nocolon")
    with pytest.raises(SpecError) as info:
        load_workflow(write(tmp_path / "scanflow.yaml", text))
    exc = info.value
    assert [(p.path, p.line) for p in exc.problems] == [("steps[0].call", 7), ("steps[1].stage", 10)]
    assert str(exc).startswith(f"2 problems in {exc.file}:\n")
    assert f"{exc.file}:7: steps[0].call" in str(exc)
    assert f"{exc.file}:10: steps[1].stage" in str(exc)


def test_graph_problems_of_one_kind_are_reported_together(tmp_path: Path) -> None:
    text = BASE.replace("needs: [ingest]", "needs: [a, b]")
    with pytest.raises(SpecError) as info:
        load_workflow(write(tmp_path / "scanflow.yaml", text))
    assert [p.path for p in info.value.problems] == ["steps[1].needs[0]", "steps[1].needs[1]"]
    assert all(p.line == 12 for p in info.value.problems)


def test_text_errors_name_the_given_file() -> None:
    with pytest.raises(SpecError) as info:
        load_workflow_text("apiVersion: scanflow/v1\n", file="inline.yaml")
    assert info.value.file == "inline.yaml"
    assert str(info.value).startswith("2 problems in inline.yaml") or "inline.yaml:1" in str(info.value)
    with pytest.raises(SpecError) as info:
        load_workflow_text("[1, 2]")
    assert info.value.file == "<string>"


def test_lone_surrogate_in_text_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="not valid Unicode"):
        load_workflow_text("apiVersion: scanflow/v1\nname: \ud800\n")


@pytest.mark.parametrize(
    "tail",
    [
        "[" * 100_000,  # libyaml's composer used to crash the interpreter here (SIGSEGV)
        "[" * 100_000 + "]" * 100_000,
        "\n  " + "- " * 100_000 + "x",
        "{a: " * 50_000 + "1" + "}" * 50_000,
    ],
    ids=["open-flow", "closed-flow", "compact-block", "flow-mappings"],
)
def test_deeply_nested_yaml_is_a_spec_error_not_a_crash(tail: str) -> None:
    with pytest.raises(SpecError, match="nested more than") as info:
        load_workflow_text(BASE + "extra: " + tail)
    assert info.value.line is not None and info.value.line >= 17


def test_reasonably_nested_params_load() -> None:
    nested = "[" * 50 + "1" + "]" * 50
    workflow = load_workflow_text(
        BASE.replace("{epochs: 3, name: base}", "{epochs: 3, name: base, deep: " + nested + "}")
    )
    value: Any = workflow.params["deep"]
    for _ in range(50):
        value = value[0]
    assert value == 1


def test_alias_bombs_do_not_blow_up_messages() -> None:
    levels = ["b0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"b{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    text = BASE.replace("params: {epochs: 3, name: base}", "params:\n" + "".join(f"  {x}\n" for x in levels))
    text = text.replace("stage: training", "stage: *a8")
    with pytest.raises(SpecError, match="unknown stage") as info:
        load_workflow_text(text)
    assert len(str(info.value)) < 2000


def test_huge_values_are_shortened_in_messages() -> None:
    with pytest.raises(SpecError, match="unknown stage") as info:
        load_workflow_text(BASE.replace("stage: training", "stage: " + "t" * 1_000_000))
    assert len(str(info.value)) < 2000


def test_odd_keys_are_spec_errors() -> None:
    for text in (
        BASE + "1: x\n",
        BASE + "x[²: 1\n",
        BASE.replace("name: train", "name: [train]"),
        BASE.replace("params: {lr: 0.01}", "params: {1: 0.01}"),
    ):
        with pytest.raises(SpecError):
            load_workflow_text(text, params=["train.lr=1"])


# --- good specs -----------------------------------------------------------------------------------


def test_loads_into_typed_models(tmp_path: Path) -> None:
    spec = write(tmp_path / "scanflow.yaml", BASE)
    workflow = load_workflow(spec)
    assert isinstance(workflow, Workflow)
    assert workflow.api_version == "scanflow/v1"
    assert workflow.name == "demo"
    assert workflow.file == str(spec)
    assert [s.name for s in workflow.steps] == ["ingest", "train"]
    train = workflow.step("train")
    assert train.stage == "training"
    assert train.kind == "call"
    assert train.needs == ["ingest"]
    assert train.params == {"lr": 0.01}
    assert isinstance(workflow.plan, Plan)
    assert list(workflow.plan.steps) == ["ingest", "train"]
    with pytest.raises(KeyError):
        workflow.step("nope")


def test_list_shorthands_become_mappings() -> None:
    workflow = load_workflow_text(BASE)
    assert workflow.step("ingest").outputs == {"raw": ArtifactSpec()}
    assert workflow.step("train").inputs == {"raw": "raw"}
    assert workflow.step("train").outputs == {"model": ArtifactSpec(kind="model")}
    text = BASE.replace("outputs: [raw]", "outputs:\n      raw:\n      log: {kind: report, path: log.txt}")
    ingest = load_workflow_text(text).step("ingest")
    assert ingest.outputs == {"raw": ArtifactSpec(), "log": ArtifactSpec(kind="report", path="log.txt")}


def test_check_shorthands_and_options() -> None:
    text = with_train("checks:\n  - use: drift\n    on: raw\n    threshold: 0.2\n    timeout: 1m")
    (check,) = load_workflow_text(text).step("train").checks
    assert isinstance(check, CheckSpec)
    assert check.on == ["raw"]
    assert check.options == {"threshold": 0.2}
    assert check.timeout == 60.0
    assert check.policy == "fail"
    assert check.label == "drift"


@pytest.mark.parametrize(
    ("given", "seconds"),
    [
        ("90", 90.0),
        ("'90'", 90.0),
        ("30s", 30.0),
        ("1.5m", 90.0),
        ("2h", 7200.0),
        ("500ms", 0.5),
        ("2.5", 2.5),
    ],
)
def test_duration_strings_become_seconds(given: str, seconds: float) -> None:
    assert load_workflow_text(with_train(f"timeout: {given}")).step("train").timeout == seconds


def test_objectives_given_as_strings() -> None:
    text = BASE.replace(
        "steps:\n",
        "objectives:\n  - train.accuracy >= 0.9\n  - {name: fast, expr: 'train.seconds < 60', blocking: false}\n"
        "steps:\n",
        1,
    )
    objectives = load_workflow_text(text).objectives
    assert objectives == [
        Objective(expr="train.accuracy >= 0.9"),
        Objective(expr="train.seconds < 60", name="fast", blocking=False),
    ]
    assert [o.label for o in objectives] == ["train.accuracy >= 0.9", "fast"]


DIGITS_STEPS = [
    *("ingest", "validate", "split", "train", "evaluate", "test"),
    *("package", "serve", "traffic", "monitor", "drift", "label", "retrain", "promote"),
]


def test_the_digits_example_loads() -> None:
    workflow = load_workflow(EXAMPLE)
    assert workflow.name == "digits"
    assert list(workflow.plan.steps) == DIGITS_STEPS
    assert workflow.step("train").timeout == 600.0


# --- overrides ------------------------------------------------------------------------------------


def test_overrides_change_workflow_and_step_params_with_yaml_typing(tmp_path: Path) -> None:
    spec = write(tmp_path / "scanflow.yaml", BASE)
    workflow = load_workflow(
        spec, ["epochs=5", "name=abc", "train.lr=0.1", "ingest.seed=3", "train.flag=true"]
    )
    assert workflow.params == {"epochs": 5, "name": "abc"}
    assert type(workflow.params["epochs"]) is int
    assert workflow.step("train").params == {"lr": 0.1, "flag": True}
    assert workflow.step("ingest").params == {"seed": 3}
    assert dict(workflow.plan["train"].params) == {"epochs": 5, "name": "abc", "lr": 0.1, "flag": True}
    assert dict(workflow.plan["ingest"].params) == {"epochs": 5, "name": "abc", "seed": 3}
    # The file itself is untouched: loading again without overrides gives the file's values.
    assert load_workflow(spec).params == {"epochs": 3, "name": "base"}


def test_overrides_as_a_mapping_and_odd_values() -> None:
    workflow = load_workflow_text(BASE, params={"epochs": 7, "train.lr": "x"})
    assert workflow.params["epochs"] == 7
    assert workflow.step("train").params["lr"] == "x"
    workflow = load_workflow_text(BASE, params=["name=", "epochs=[1, 2", " train.lr = 0.001"])
    assert workflow.params == {"epochs": "[1, 2", "name": ""}  # not YAML: kept as the text given
    assert workflow.step("train").params["lr"] == 0.001


def test_parse_overrides() -> None:
    assert parse_overrides(None) == {}
    assert parse_overrides(["a=1", "b.c=x", "d=a=b", "e=null", "f='5'"]) == {
        "a": 1,
        "b.c": "x",
        "d": "a=b",
        "e": None,
        "f": "5",
    }
    assert parse_overrides({"a": 1}) == {"a": 1}
    with pytest.raises(SpecError) as info:
        parse_overrides(["=1"])
    assert info.value.file == "--param"
    with pytest.raises(SpecError, match="nested more than"):
        parse_overrides(["a=" + "[" * 100_000])


# --- digests --------------------------------------------------------------------------------------


def test_digest_is_the_sha256_of_the_file_bytes(tmp_path: Path) -> None:
    data = BASE.replace("name: demo", "name: demo  # é, a comment\r").encode()
    spec = write(tmp_path / "scanflow.yaml", data)
    workflow = load_workflow(spec)
    assert workflow.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert load_workflow_text(BASE).digest == "sha256:" + hashlib.sha256(BASE.encode()).hexdigest()


def test_nested_workflows_keep_their_own_file_and_digest(tmp_path: Path) -> None:
    child = write(tmp_path / "sub" / "child.yaml", CHILD)
    text = with_step("name: sub\nstage: data_transformation\nworkflow: sub/child.yaml\ninputs: {source: raw}")
    workflow = load_workflow(write(tmp_path / "scanflow.yaml", text))
    nested = workflow.children["sub"]
    assert nested.file == str(child)
    assert nested.digest == "sha256:" + hashlib.sha256(child.read_bytes()).hexdigest()
    assert nested.digest != workflow.digest


# --- JSON Schema ----------------------------------------------------------------------------------

CANONICAL = """\
apiVersion: scanflow/v1
name: canonical
params: {seed: 0}
inputs:
  data: {kind: data, path: data.csv}
objectives:
  - {name: accurate, expr: "train.accuracy >= 0.9"}
tracker: {uri: "file:./mlruns"}
attestation: {enabled: false}
steps:
  - name: train
    stage: training
    image: python:3.11
    command: [python, train.py]
    inputs: {data: data}
    outputs: {model: {kind: model, path: model.pt}}
    resources: {cpu: 2, memory: 4Gi, gpu: 1}
    env: {MODE: fast}
    checks: [{use: drift, on: [data], policy: warn}]
    retries: 2
    timeout: 600
"""


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_json_schema_accepts_a_canonical_spec(validator: jsonschema.Draft202012Validator) -> None:
    load_workflow_text(CANONICAL)  # the loader accepts it too
    assert list(validator.iter_errors(yaml.safe_load(CANONICAL))) == []


@pytest.mark.parametrize("text", [BASE, EXAMPLE.read_text()], ids=["shorthands", "digits-example"])
def test_json_schema_accepts_every_spec_the_loader_accepts(
    text: str, validator: jsonschema.Draft202012Validator
) -> None:
    """Shorthands the loader accepts (``inputs: [raw]``, ``timeout: 10m``, objectives as strings)
    must pass the schema too, or editors flag the project's own example as wrong."""
    load_workflow_text(text, file=str(EXAMPLE))
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(yaml.safe_load(text))]
    assert errors == []


@pytest.mark.parametrize(
    "bad",
    [
        BASE.replace("stage: training", "stage: trainig"),
        BASE.replace("apiVersion: scanflow/v1", "apiVersion: scanflow/v2"),
        BASE.replace("needs: [ingest]", "nedds: [ingest]"),
        "apiVersion: scanflow/v1\nname: demo\nsteps: []\n",
    ],
    ids=["stage", "apiVersion", "unknown-field", "no-steps"],
)
def test_json_schema_rejects_bad_specs(bad: str, validator: jsonschema.Draft202012Validator) -> None:
    assert list(validator.iter_errors(yaml.safe_load(bad)))


def test_scanflow_schema_prints_valid_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json_schema()
    assert printed["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(printed)
    assert "steps" in printed["required"]


def test_an_unknown_override_is_named_even_when_params_have_non_string_keys() -> None:
    """Found by the fuzzer: a YAML key like ``0:`` among the params broke the 'one of' hint."""
    text = "apiVersion: scanflow/v1\nname: w\nparams: {lr: 0.1, 0: 3}\nsteps:\n  - {name: a, stage: training, call: m:f}\n"
    with pytest.raises(SpecError) as caught:
        load_workflow_text(text, file="w.yaml", params=["epochs=3"])
    assert caught.value.path == "--param epochs"
    assert "unknown parameter 'epochs'" in str(caught.value) and "0, lr" in str(caught.value)


def test_exponent_floats_are_numbers_as_in_yaml_1_2() -> None:
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; a learning rate must be a number."""
    spec = "apiVersion: scanflow/v1\nname: w\nparams: {lr: 1e-3, tag: 10e}\nsteps:\n  - {name: a, stage: training, call: m:f}\n"
    workflow = load_workflow_text(spec, params=["lr=2E-4"])
    assert workflow.params == {"lr": 2e-4, "tag": "10e"}
    assert load_workflow_text(spec).params["lr"] == 0.001


def test_a_wrong_override_of_a_nested_workflow_keeps_its_full_name(tmp_path: Path) -> None:
    (tmp_path / "prep.yaml").write_text(
        "apiVersion: scanflow/v1\nname: prep\nparams: {scale: 1}\nsteps:\n  - {name: c, stage: data_transformation, call: m:f}\n"
    )
    spec = tmp_path / "scanflow.yaml"
    spec.write_text(
        "apiVersion: scanflow/v1\nname: w\nsteps:\n  - {name: prep, stage: data_transformation, workflow: prep.yaml}\n"
    )
    with pytest.raises(SpecError) as caught:
        load_workflow(spec, ["prep.scael=2"])
    assert caught.value.path == "--param prep.scael"
    assert "did you mean 'scale'?" in str(caught.value)
