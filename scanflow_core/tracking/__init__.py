"""Tracking: every run in MLflow, one parent run per workflow run and a child run per step.

The built-in plugin is :mod:`scanflow_core.tracking.mlflow_tracker` (what is sent, and when), on
:mod:`scanflow_core.tracking.mlflow_runs` (which store, experiment and MLflow runs a workflow run maps
to); what it cannot deliver goes
to the run directory's spool (:mod:`scanflow_core.tracking.spool`) and is replayed later;
``scanflow tracker sync`` and ``scanflow wipe`` come from :mod:`scanflow_core.tracking.commands`.
Nothing here imports mlflow at import time.
"""

from __future__ import annotations

__all__: list[str] = []
