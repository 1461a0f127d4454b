"""Scanflow: every step of an ML workflow containerized, tracked, checked and attested,
inside the orchestrator a team already runs.

The names below load on first use, so ``import scanflow_core`` stays fast; mlflow, torch,
great_expectations and docker load only inside the plugins that need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "ScanflowError": "scanflow_core.errors",
    "SpecError": "scanflow_core.errors",
    "StepFailed": "scanflow_core.errors",
    "CheckFailed": "scanflow_core.errors",
    "ObjectiveFailed": "scanflow_core.errors",
    "PluginError": "scanflow_core.errors",
    "AttestationError": "scanflow_core.errors",
    "hookimpl": "scanflow_core.plugins",
    "get_plugin_manager": "scanflow_core.plugins",
    "load_workflow": "scanflow_core.spec",
    "Workflow": "scanflow_core.spec",
    "WorkflowRun": "scanflow_core.runs",
    "StepRun": "scanflow_core.runs",
    "run_step": "scanflow_core.steps",
    "run_workflow": "scanflow_core.runner",
    "CheckResult": "scanflow_core.records",
    "log_metric": "scanflow_core.recorder",
    "log_metrics": "scanflow_core.recorder",
    "log_params": "scanflow_core.recorder",
    "set_tags": "scanflow_core.recorder",
    "set_progress": "scanflow_core.recorder",
    "ArtifactRef": "scanflow_core.artifacts",
    "TaskResult": "scanflow_core.tasks",
    "TaskStep": "scanflow_core.tasks",
    "finish_task_run": "scanflow_core.tasks",
}

__all__ = [
    "ArtifactRef",
    "AttestationError",
    "CheckFailed",
    "CheckResult",
    "ObjectiveFailed",
    "PluginError",
    "ScanflowError",
    "SpecError",
    "StepFailed",
    "StepRun",
    "TaskResult",
    "TaskStep",
    "Workflow",
    "WorkflowRun",
    "__version__",
    "finish_task_run",
    "get_plugin_manager",
    "hookimpl",
    "load_workflow",
    "log_metric",
    "log_metrics",
    "log_params",
    "run_step",
    "run_workflow",
    "set_progress",
    "set_tags",
]

if TYPE_CHECKING:
    from scanflow_core.artifacts import ArtifactRef
    from scanflow_core.errors import (
        AttestationError,
        CheckFailed,
        ObjectiveFailed,
        PluginError,
        ScanflowError,
        SpecError,
        StepFailed,
    )
    from scanflow_core.plugins import get_plugin_manager, hookimpl
    from scanflow_core.recorder import log_metric, log_metrics, log_params, set_progress, set_tags
    from scanflow_core.records import CheckResult
    from scanflow_core.runner import run_workflow
    from scanflow_core.runs import StepRun, WorkflowRun
    from scanflow_core.spec import Workflow, load_workflow
    from scanflow_core.steps import run_step
    from scanflow_core.tasks import TaskResult, TaskStep, finish_task_run


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'scanflow_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
