"""Flyte integration for Scanflow.

This package will provide ``@scanflow_task`` (a flytekit task with Scanflow around it),
``workflow_from_spec`` (a flytekit workflow built from a ``scanflow.yaml``) and container steps as flytekit
container tasks. Each translates Flyte's context into one call of the core's single step path and back.
None of them exists yet.
"""

__all__: list[str] = []
__version__ = "0.1.0"
