"""The improve loop: pick the most informative new samples, queue them for a human to label, retrain,
compare against the objectives, promote or roll back in the MLflow model registry.

Modules, by noun:

- :mod:`~scanflow_core.improve.selection`: :func:`pick_informative` (reconstruction error from the drift
  detector, model uncertainty, or both, kept diverse).
- :mod:`~scanflow_core.improve.queue`: :class:`LabelQueue`, a durable SQLite queue of samples to label,
  safe across processes, and :func:`answer_with` (answers it with known labels, for a demo).
- :mod:`~scanflow_core.improve.images`: a sample as ASCII art (terminal) or PNG (web page).
- :mod:`~scanflow_core.improve.web`: the labelling web page (``scanflow label QUEUE --web``).
- :mod:`~scanflow_core.improve.improver`: :class:`Improver` (retrain, judge, promote) and :func:`rollback`.
- :mod:`~scanflow_core.improve.planner`: :func:`plan_action` and :class:`PlannerRules`.
- :mod:`~scanflow_core.improve.commands`: ``scanflow label`` and ``scanflow model rollback``.

The names below load on first use, so importing this package (the CLI does) costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "pick_informative": "scanflow_core.improve.selection",
    "LabelQueue": "scanflow_core.improve.queue",
    "Sample": "scanflow_core.improve.queue",
    "LabelledSet": "scanflow_core.improve.queue",
    "QueueError": "scanflow_core.improve.queue",
    "answer_with": "scanflow_core.improve.queue",
    "Improver": "scanflow_core.improve.improver",
    "Decision": "scanflow_core.improve.improver",
    "rollback": "scanflow_core.improve.improver",
    "PlannerRules": "scanflow_core.improve.planner",
    "plan_action": "scanflow_core.improve.planner",
}

__all__ = [
    "Decision",
    "Improver",
    "LabelQueue",
    "LabelledSet",
    "PlannerRules",
    "QueueError",
    "Sample",
    "answer_with",
    "pick_informative",
    "plan_action",
    "rollback",
]

if TYPE_CHECKING:
    from scanflow_core.improve.improver import Decision, Improver, rollback
    from scanflow_core.improve.planner import PlannerRules, plan_action
    from scanflow_core.improve.queue import LabelledSet, LabelQueue, QueueError, Sample, answer_with
    from scanflow_core.improve.selection import pick_informative


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'scanflow_core.improve' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
