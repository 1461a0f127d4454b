"""Prefect integration for Scanflow.

``@scanflow_task(...)`` is a Prefect task with Scanflow's step path around the function (checked,
tracked, attested); ``flow_from_spec("scanflow.yaml")`` is a Prefect flow that runs a workflow's
steps as task runs. Each translates Prefect's context into one call of the core and back.

The names are imported on first use, so that importing this package does not import Prefect.

Examples:
    >>> from scanflow_prefect import flow_from_spec, scanflow_task  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scanflow_prefect.errors import ScanflowRunFailed, ScanflowStepFailed
    from scanflow_prefect.flows import SpecFlow, flow_from_spec
    from scanflow_prefect.tasks import TaskOutputs, finish_scanflow_run, scanflow_task

__all__ = [
    "ScanflowRunFailed",
    "ScanflowStepFailed",
    "SpecFlow",
    "TaskOutputs",
    "finish_scanflow_run",
    "flow_from_spec",
    "scanflow_task",
]
__version__ = "0.1.0"

_LAZY = {
    "ScanflowRunFailed": "scanflow_prefect.errors",
    "ScanflowStepFailed": "scanflow_prefect.errors",
    "SpecFlow": "scanflow_prefect.flows",
    "flow_from_spec": "scanflow_prefect.flows",
    "TaskOutputs": "scanflow_prefect.tasks",
    "finish_scanflow_run": "scanflow_prefect.tasks",
    "scanflow_task": "scanflow_prefect.tasks",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
