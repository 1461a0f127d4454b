"""Prefect integration for Scanflow.

This package will provide ``@scanflow_task`` (a Prefect task with Scanflow around it) and
``flow_from_spec`` (a Prefect flow built from a ``scanflow.yaml``). Each translates Prefect's context into
one call of the core's single step path and back. None of them exists yet.
"""

__all__: list[str] = []
__version__ = "0.1.0"
