"""What to do about a model in production: ``normal``, ``alert``, ``retrain`` or ``rollback``.

Scanflow's default rules (the original Scanflow planner's): when the drift detector finds at most 5 % of
the recent samples anomalous, all is normal; up to 10 %, raise an alert; above, retrain with new labels.
Whatever the share, live metrics (say, accuracy on the requests that got a human label) that miss the
objectives call for a rollback to the previous model, first. The thresholds and the objectives live in
the spec::

    improve:
      planner:
        normal_max_share: 0.05
        alert_max_share: 0.10
        live_objectives: ["accuracy >= 0.85"]     # default: the workflow's objectives

An objective is judged only when the live metrics hold every name it uses: one about
``evaluate.accuracy`` says nothing until a live ``evaluate.accuracy`` is measured.

Example::

    rules = PlannerRules.from_workflow(load_workflow("scanflow.yaml"))
    plan_action(result.anomalous_share, {"accuracy": 0.81}, rules)     # "rollback"
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from scanflow_core.records import ObjectiveResult

if TYPE_CHECKING:
    from scanflow_core.spec import Workflow

__all__ = ["ACTIONS", "Action", "PlannedAction", "PlannerRules", "explain_action", "plan_action"]

Action = Literal["normal", "alert", "retrain", "rollback"]
ACTIONS: tuple[str, ...] = ("normal", "alert", "retrain", "rollback")


@dataclass(frozen=True)
class PlannerRules:
    """The planner's thresholds and the objectives live metrics must meet.

    Args:
        normal_max_share: the largest share of anomalous samples that is still normal (0.05).
        alert_max_share: the largest share that only raises an alert (0.10); above it, retrain.
        live_objectives: expressions over live metrics (``accuracy >= 0.85``); one that is judged and not
            met means rollback.

    Raises:
        ValueError: a share outside [0, 1], the alert threshold below the normal one, or an objective
            that does not parse (the error says where).
    """

    normal_max_share: float = 0.05
    alert_max_share: float = 0.10
    live_objectives: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        from scanflow_core.expressions import parse

        for name in ("normal_max_share", "alert_max_share"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a share from 0 to 1, not {value!r}")
        if self.normal_max_share > self.alert_max_share:
            raise ValueError(
                f"normal_max_share ({self.normal_max_share}) must not exceed alert_max_share "
                f"({self.alert_max_share})"
            )
        given: object = self.live_objectives  # a lone string is one objective, not its characters
        objectives = (given,) if isinstance(given, str) else tuple(self.live_objectives)
        object.__setattr__(self, "live_objectives", objectives)
        for text in self.live_objectives:
            parse(text)

    @classmethod
    def from_workflow(cls, workflow: Workflow) -> PlannerRules:
        """The rules in the spec's ``improve.planner``; without ``live_objectives``, the workflow's
        objectives."""
        planner = workflow.improve.planner
        objectives: Iterable[str] = planner.live_objectives or [o.expr for o in workflow.objectives]
        return cls(planner.normal_max_share, planner.alert_max_share, tuple(objectives))


@dataclass(frozen=True)
class PlannedAction:
    """The action, why, and each live objective that could be judged."""

    action: Action
    reason: str
    objectives: list[ObjectiveResult]

    def __str__(self) -> str:
        return f"{self.action}: {self.reason}"


def plan_action(
    anomalous_share: float,
    live_metrics: Mapping[str, Any] | None = None,
    rules: PlannerRules | None = None,
) -> Action:
    """``normal``, ``alert``, ``retrain`` or ``rollback`` (see the module's docstring).

    Args:
        anomalous_share: the share of recent samples the drift detector found anomalous
            (:attr:`~scanflow_core.checking.drift.DriftResult.anomalous_share`), from 0 to 1.
        live_metrics: metrics measured in production, flat (``{"evaluate.accuracy": 0.9}``) or nested
            (``{"evaluate": {"accuracy": 0.9}}``); None or empty judges no objective.
        rules: the thresholds and live objectives (default: Scanflow's, with no objectives).

    Returns:
        The action; :func:`explain_action` also says why.

    Examples:
        >>> plan_action(0.03), plan_action(0.08), plan_action(0.2)
        ('normal', 'alert', 'retrain')
        >>> plan_action(0.01, {"accuracy": 0.7}, PlannerRules(live_objectives=("accuracy >= 0.9",)))
        'rollback'
    """
    return explain_action(anomalous_share, live_metrics, rules).action


def explain_action(
    anomalous_share: float,
    live_metrics: Mapping[str, Any] | None = None,
    rules: PlannerRules | None = None,
) -> PlannedAction:
    """:func:`plan_action`'s action with its reason and the live objectives it judged."""
    from scanflow_core.expressions import mapping_resolver, parse

    rules = rules or PlannerRules()
    if (
        isinstance(anomalous_share, bool)
        or not isinstance(anomalous_share, int | float)
        or math.isnan(anomalous_share)
        or not 0.0 <= anomalous_share <= 1.0
    ):
        raise ValueError(f"anomalous_share must be a share from 0 to 1, not {anomalous_share!r}")
    metrics = dict(live_metrics or {})
    resolve = mapping_resolver(metrics)
    judged: list[ObjectiveResult] = []
    for text in rules.live_objectives:
        expression = parse(text)
        if not all(_known(resolve, name) for name in expression.names):
            continue
        outcome = expression.check(resolve)
        judged.append(
            ObjectiveResult(text, text, outcome.passed, True, dict(outcome.observed), outcome.reason)
        )
    missed = [o for o in judged if not o.passed]
    share = f"{anomalous_share:.1%} of samples anomalous"
    if missed:
        reason = "live metrics miss the objectives: " + "; ".join(str(o) for o in missed)
        return PlannedAction("rollback", reason, judged)
    if anomalous_share <= rules.normal_max_share:
        return PlannedAction("normal", f"{share} (normal up to {rules.normal_max_share:.1%})", judged)
    if anomalous_share <= rules.alert_max_share:
        return PlannedAction("alert", f"{share} (alert up to {rules.alert_max_share:.1%})", judged)
    return PlannedAction("retrain", f"{share} (above {rules.alert_max_share:.1%}: retrain)", judged)


def _known(resolve: Any, name: str) -> bool:
    try:
        resolve(name)
    except KeyError:
        return False
    return True
