"""plan_action: Scanflow's default thresholds, rules from the spec, and rollback on live metrics."""

from __future__ import annotations

import math

import pytest

from scanflow_core.errors import SpecError
from scanflow_core.improve import PlannerRules, plan_action
from scanflow_core.improve.planner import explain_action
from scanflow_core.spec import load_workflow


@pytest.mark.parametrize(
    ("share", "action"),
    [
        (0.0, "normal"),
        (0.05, "normal"),
        (0.0501, "alert"),
        (0.10, "alert"),
        (0.1001, "retrain"),
        (1.0, "retrain"),
    ],
)
def test_the_default_thresholds(share, action):
    assert plan_action(share) == action


def test_live_metrics_below_the_objectives_roll_back_whatever_the_share():
    rules = PlannerRules(live_objectives=("accuracy >= 0.9", "latency_ms <= 50"))

    assert plan_action(0.0, {"accuracy": 0.95, "latency_ms": 10}, rules) == "normal"
    assert plan_action(0.0, {"accuracy": 0.85, "latency_ms": 10}, rules) == "rollback"
    assert plan_action(0.5, {"accuracy": 0.95, "latency_ms": 80}, rules) == "rollback"
    planned = explain_action(0.0, {"accuracy": 0.85}, rules)
    assert planned.action == "rollback"
    assert "accuracy >= 0.9" in planned.reason and "0.85" in planned.reason


def test_an_objective_is_judged_only_when_its_metrics_are_measured():
    rules = PlannerRules(live_objectives=("evaluate.accuracy >= 0.9",))

    assert plan_action(0.2, {}, rules) == "retrain"
    assert plan_action(0.2, {"latency_ms": 3}, rules) == "retrain"
    assert plan_action(0.2, {"evaluate": {"accuracy": 0.5}}, rules) == "rollback"
    assert plan_action(0.2, {"evaluate.accuracy": 0.5}, rules) == "rollback"
    assert explain_action(0.2, {}, rules).objectives == []


def test_custom_thresholds():
    rules = PlannerRules(normal_max_share=0.2, alert_max_share=0.5)

    assert [plan_action(s, None, rules) for s in (0.1, 0.3, 0.6)] == ["normal", "alert", "retrain"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"normal_max_share": -0.1}, "normal_max_share must be a share from 0 to 1"),
        ({"alert_max_share": 2}, "alert_max_share must be a share from 0 to 1"),
        ({"normal_max_share": 0.3, "alert_max_share": 0.2}, r"normal_max_share \(0.3\) must not exceed"),
        ({"live_objectives": ("accuracy >=",)}, "expected a value after '>='"),
    ],
)
def test_bad_rules_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PlannerRules(**kwargs)


@pytest.mark.parametrize("share", [-0.1, 1.5, math.nan, "0.1", True])
def test_a_bad_share_is_refused(share):
    with pytest.raises(ValueError, match="anomalous_share must be a share from 0 to 1"):
        plan_action(share)


SPEC = """\
apiVersion: scanflow/v1
name: planned
objectives: ["evaluate.accuracy >= 0.9"]
{improve}
steps:
  - {{name: evaluate, stage: evaluation, command: "true"}}
"""


def test_rules_come_from_the_spec(tmp_path):
    path = tmp_path / "scanflow.yaml"
    path.write_text(
        SPEC.format(
            improve="improve:\n  planner: {normal_max_share: 0.01, alert_max_share: 0.02, "
            "live_objectives: ['accuracy >= 0.8']}"
        )
    )

    rules = PlannerRules.from_workflow(load_workflow(path))

    assert rules == PlannerRules(0.01, 0.02, ("accuracy >= 0.8",))
    assert plan_action(0.015, {"accuracy": 0.9}, rules) == "alert"


def test_without_live_objectives_the_workflows_objectives_apply(tmp_path):
    path = tmp_path / "scanflow.yaml"
    path.write_text(SPEC.format(improve=""))

    rules = PlannerRules.from_workflow(load_workflow(path))

    assert rules == PlannerRules(0.05, 0.10, ("evaluate.accuracy >= 0.9",))
    assert plan_action(0.0, {"evaluate.accuracy": 0.7}, rules) == "rollback"


@pytest.mark.parametrize(
    ("improve", "path", "message"),
    [
        (
            "improve: {planner: {normal_max_share: 0.2, alert_max_share: 0.1}}",
            "improve.planner",
            "must not exceed",
        ),
        ("improve: {planner: {alert_max_share: 1.5}}", "improve.planner.alert_max_share", "1"),
        (
            "improve: {planner: {live_objectives: ['accuracy >']}}",
            "improve.planner.live_objectives",
            "expected a value",
        ),
        ("improve: {metric: 'not a name'}", "improve.metric", "not a valid name"),
        ("improve: {retrain_every: 3}", "improve.retrain_every", ""),
    ],
)
def test_a_bad_improve_section_is_a_spec_error_naming_the_field(tmp_path, improve, path, message):
    spec = tmp_path / "scanflow.yaml"
    spec.write_text(SPEC.format(improve=improve))

    with pytest.raises(SpecError) as caught:
        load_workflow(spec)

    assert caught.value.path.startswith(path), str(caught.value)
    assert message in str(caught.value)
