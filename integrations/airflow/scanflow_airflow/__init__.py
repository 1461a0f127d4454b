"""Apache Airflow provider for Scanflow.

This package will provide ``ScanflowOperator`` (one Scanflow step as an Airflow task), ``dag_from_spec``
(a whole DAG built from a ``scanflow.yaml``) and a ``@scanflow_task`` decorator for Python callables. Each
of them translates Airflow's context into one call of the core's single step path and back. None of them
exists yet; this release only registers the package as an Airflow provider.
"""

from __future__ import annotations

from typing import Any

__all__ = ["get_provider_info"]
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
