"""Flyte integration for Scanflow.

``@scanflow_task`` is a flytekit task with Scanflow's step path around it, ``@scanflow_workflow`` a
flytekit workflow that closes the Scanflow run of its tasks, and ``workflow_from_spec`` a flytekit
workflow built from a ``scanflow.yaml`` (steps with an image as container tasks). Each translates
Flyte's context into one call of the core's step path and back. The package is a flytekit plugin
(entry point group ``flytekit.plugins``): importing flytekit imports :mod:`scanflow_flyte.plugin`,
which teaches flytekit's type engine the core's :class:`~scanflow_core.tasks.ArtifactRef`.

The names are imported on first use: flytekit imports this package while flytekit itself is
starting, so importing it must stay cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scanflow_flyte.decorators import Scanflow, ScanflowFunctionTask, output_path, scanflow_task
    from scanflow_flyte.errors import (
        ScanflowCheckFailed,
        ScanflowRunFailed,
        ScanflowStepFailed,
        ScanflowTaskError,
    )
    from scanflow_flyte.pods import scanflow_pod_template
    from scanflow_flyte.step_tasks import ScanflowContainerTask, ScanflowFinishTask, ScanflowStepTask
    from scanflow_flyte.task_workflows import scanflow_workflow
    from scanflow_flyte.workflows import ScanflowWorkflow, workflow_from_spec

__all__ = [
    "Scanflow",
    "ScanflowCheckFailed",
    "ScanflowContainerTask",
    "ScanflowFinishTask",
    "ScanflowFunctionTask",
    "ScanflowRunFailed",
    "ScanflowStepFailed",
    "ScanflowStepTask",
    "ScanflowTaskError",
    "ScanflowWorkflow",
    "output_path",
    "scanflow_pod_template",
    "scanflow_task",
    "scanflow_workflow",
    "workflow_from_spec",
]
__version__ = "0.1.0"

_LAZY = {
    "Scanflow": "scanflow_flyte.decorators",
    "ScanflowFunctionTask": "scanflow_flyte.decorators",
    "output_path": "scanflow_flyte.decorators",
    "scanflow_task": "scanflow_flyte.decorators",
    "scanflow_workflow": "scanflow_flyte.task_workflows",
    "scanflow_pod_template": "scanflow_flyte.pods",
    "ScanflowCheckFailed": "scanflow_flyte.errors",
    "ScanflowRunFailed": "scanflow_flyte.errors",
    "ScanflowStepFailed": "scanflow_flyte.errors",
    "ScanflowTaskError": "scanflow_flyte.errors",
    "ScanflowContainerTask": "scanflow_flyte.step_tasks",
    "ScanflowFinishTask": "scanflow_flyte.step_tasks",
    "ScanflowStepTask": "scanflow_flyte.step_tasks",
    "ScanflowWorkflow": "scanflow_flyte.workflows",
    "workflow_from_spec": "scanflow_flyte.workflows",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
