"""Stage metadata: what a step of each stage must record, compared with what real steps recorded."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from scanflow_core import hookimpl
from scanflow_core.errors import StepFailed
from scanflow_core.plugins import PluginManager
from scanflow_core.records import Requirement
from scanflow_core.runner import run_workflow
from scanflow_core.runs import StepRun, WorkflowRun
from scanflow_core.spec import STAGES, load_workflow
from scanflow_core.stages import STAGE_REQUIREMENTS, compare
from scanflow_core.steps import run_step

SPEC = """\
apiVersion: scanflow/v1
name: staged
stage_metadata: POLICY
steps:
  - {name: ingest, stage: data_ingestion, call: MOD:ingest, outputs: [raw]}
  - {name: split, stage: data_splitting, call: MOD:split, inputs: [raw], outputs: [train]SPLIT_PARAMS}
  - name: train
    stage: training
    call: MOD:train
    params: {lr: 0.1, epochs: 2}
    inputs: [train]
    outputs: {model: {kind: model}}
"""

CODE = """\
from scanflow_core import log_params, set_tags


def ingest(raw):
    raw.write_text("1 2 3 4 5 6 7 8 9 10")
    return {"rows": 10}


def split(raw, train, **params):
    values = raw.read_text().split()
    train.write_text(" ".join(values[:8]))
    if "log_seed" in params:
        log_params({"split_seed": params["log_seed"]})
    return {"train_size": 8, "test_size": 2}


def train(train, model, lr, epochs):
    set_tags({"owner": "data-team"})
    model.write_text("weights")
    return {"loss": 0.25}
"""


def write(write_spec, policy: str = "warn", split_params: str = "") -> Path:
    path: Path = write_spec(SPEC.replace("POLICY", policy).replace("SPLIT_PARAMS", split_params), CODE)
    return path


def run_steps(spec: Path, home: Path, pm: PluginManager, *names: str) -> dict[str, StepRun]:
    """Run ``names`` one after another through the step path; their StepRun records, by name."""
    run = WorkflowRun(load_workflow(spec), home=home, pm=pm)
    run.open()
    return {name: run_step(run, name) for name in names}


def test_every_stage_has_requirements():
    assert set(STAGE_REQUIREMENTS) == set(STAGES)


def test_a_complete_training_step(write_spec, home, pm):
    steps = run_steps(
        write(write_spec, split_params=", params: {seed: 7}"), home, pm, "ingest", "split", "train"
    )

    report = compare(steps["train"], STAGE_REQUIREMENTS["training"])

    assert report.stage == "training"
    assert report.missing == []
    assert report.mistyped == []
    assert report.complete
    # the step path made the same comparison and kept it in the step's record
    assert steps["train"].stage_report == report
    assert steps["ingest"].stage_report is not None and steps["ingest"].stage_report.complete
    assert steps["split"].stage_report is not None and steps["split"].stage_report.complete


def test_a_training_step_that_records_nothing_misses_everything(write_spec, home, pm):
    steps = run_steps(
        write(write_spec, split_params=", params: {seed: 7}"), home, pm, "ingest", "split", "train"
    )
    empty = steps["train"]
    empty.params.clear()
    empty.inputs.clear()
    empty.outputs.clear()
    empty.recorder.params.clear()
    empty.recorder.latest.clear()

    report = compare(empty, STAGE_REQUIREMENTS["training"])

    assert report.missing == [
        "at least one input (the training data (digests recorded))",
        "at least one param (its hyperparameters)",
        "at least one metric (the resulting metrics)",
        "at least one output (the model)",
    ]
    assert not report.complete


def test_a_splitting_step_without_a_seed_misses_it(write_spec, home, pm):
    steps = run_steps(write(write_spec), home, pm, "ingest", "split")

    report = compare(steps["split"], STAGE_REQUIREMENTS["data_splitting"])

    assert report.missing == [
        "param 'seed' or 'random_state' or 'random_seed' or '*_seed' (the seed of the split)"
    ]
    assert report.mistyped == []
    assert steps["split"].status == "succeeded"  # the default policy only warns
    assert steps["split"].summary()["stage_metadata"] == report.to_dict()


@pytest.mark.parametrize(
    ("split_params", "name", "shown"),
    [(", params: {seed: '42'}", "seed", "'42'"), (", params: {random_state: 0.5}", "random_state", "0.5")],
)
def test_a_seed_of_the_wrong_type_is_mistyped(write_spec, home, pm, split_params, name, shown):
    steps = run_steps(write(write_spec, split_params=split_params), home, pm, "ingest", "split")

    report = compare(steps["split"], STAGE_REQUIREMENTS["data_splitting"])

    assert report.missing == []
    assert report.mistyped == [f"param {name!r} is {shown}, expected integer"]


def test_a_seed_the_step_logs_itself_counts(write_spec, home, pm):
    steps = run_steps(write(write_spec, split_params=", params: {log_seed: 3}"), home, pm, "ingest", "split")

    report = compare(steps["split"], STAGE_REQUIREMENTS["data_splitting"])

    assert report.complete, report
    assert steps["split"].recorder.params["split_seed"] == 3


def test_policy_fail_fails_the_step_with_a_clear_error(write_spec, home, pm):
    spec = write(write_spec, policy="fail")
    run = WorkflowRun(load_workflow(spec), home=home, pm=pm)
    run.open()
    run_step(run, "ingest")

    with pytest.raises(StepFailed) as failed:
        run_step(run, "split")

    assert failed.value.step == "split"
    assert failed.value.run_id == run.run_id
    assert failed.value.reason == (
        "stage metadata of 'data_splitting' incomplete: "
        "param 'seed' or 'random_state' or 'random_seed' or '*_seed' (the seed of the split)"
    )
    summary = run.step_summary("split")
    assert summary is not None
    assert summary["status"] == "failed"
    assert summary["reason"] == failed.value.reason
    assert summary["stage_metadata"]["complete"] is False


def test_policy_fail_in_a_whole_run_blocks_downstream(write_spec, home, pm):
    run = run_workflow(load_workflow(write(write_spec, policy="fail")), home=home, pm=pm)

    summaries = run.step_summaries()
    assert run.status == "failed"
    assert [summaries[n]["status"] for n in ("ingest", "split", "train")] == [
        "succeeded",
        "failed",
        "upstream_failed",
    ]
    assert summaries["split"]["reason"].startswith(
        "stage metadata of 'data_splitting' incomplete: param 'seed'"
    )


def test_policy_off_records_nothing(write_spec, home, pm):
    steps = run_steps(write(write_spec, policy="off"), home, pm, "ingest", "split")

    assert steps["split"].status == "succeeded"
    assert steps["split"].stage_report is None
    assert steps["split"].summary()["stage_metadata"] is None
    assert steps["ingest"].summary()["stage_metadata"] is None


class OwnerRequired:
    """A third-party plugin: training steps must say who owns the model."""

    @hookimpl
    def scanflow_stage_requirements(self, stage: str) -> Iterable[Requirement]:
        if stage == "training":
            return [Requirement("tag", ("owner",), "string", "who owns the model")]
        return []


class ReviewerRequired:
    @hookimpl
    def scanflow_stage_requirements(self, stage: str) -> Iterable[Requirement]:
        return [Requirement("tag", ("reviewer",), "string", "who reviewed it")] if stage == "training" else []


def test_a_plugin_adds_a_requirement(write_spec, home, pm):
    pm.register(OwnerRequired())
    pm.register(ReviewerRequired())
    spec = write(write_spec, split_params=", params: {seed: 7}")

    run = run_workflow(load_workflow(spec), home=home, pm=pm)

    report = run.step_summaries()["train"]["stage_metadata"]
    # the owner tag is there (the step set it), the reviewer tag is not; the built-ins still hold
    assert report == {
        "stage": "training",
        "missing": ["tag 'reviewer' (who reviewed it)"],
        "mistyped": [],
        "complete": False,
    }
    assert run.step_summaries()["split"]["stage_metadata"]["complete"] is True
