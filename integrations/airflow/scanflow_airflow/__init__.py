"""Apache Airflow provider for Scanflow.

``ScanflowOperator`` runs one Scanflow step as an Airflow task and ``dag_from_spec`` builds a whole DAG
from a ``scanflow.yaml``; ``@scanflow_task`` makes a Python function a TaskFlow task run as a Scanflow
step, and ``scanflow_finish()`` closes the run of a DAG made of such tasks. Each translates Airflow's
context into one call of the core's single step path and back. The package is registered as an
Airflow provider (entry point ``apache_airflow_provider``).

The names are imported on first use: Airflow imports this package to read :func:`get_provider_info`
while Airflow itself is starting, so importing it must not import Airflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scanflow_airflow.dags import dag_from_spec
    from scanflow_airflow.decorators import scanflow_finish, scanflow_task
    from scanflow_airflow.operators import (
        ScanflowFinishOperator,
        ScanflowOperator,
        ScanflowRunFailed,
        ScanflowStepFailed,
    )

__all__ = [
    "ScanflowFinishOperator",
    "ScanflowOperator",
    "ScanflowRunFailed",
    "ScanflowStepFailed",
    "dag_from_spec",
    "get_provider_info",
    "scanflow_finish",
    "scanflow_task",
]
__version__ = "0.1.0"


def get_provider_info() -> dict[str, Any]:
    """Describe this provider to Airflow (entry point group ``apache_airflow_provider``).

    Returns:
        The provider's metadata in the shape Airflow's provider manager expects.
    """
    return {
        "package-name": "scanflow-airflow",
        "name": "Scanflow",
        "description": "Run containerized, tracked, checked and attested Scanflow steps as Airflow tasks.",
        "versions": [__version__],
    }


_LAZY = {
    "dag_from_spec": "scanflow_airflow.dags",
    "ScanflowFinishOperator": "scanflow_airflow.operators",
    "ScanflowOperator": "scanflow_airflow.operators",
    "ScanflowRunFailed": "scanflow_airflow.operators",
    "ScanflowStepFailed": "scanflow_airflow.operators",
    "scanflow_finish": "scanflow_airflow.decorators",
    "scanflow_task": "scanflow_airflow.decorators",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
