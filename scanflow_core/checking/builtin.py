"""The built-in checkers, as one plugin: each ``use:`` name maps to a function loaded on first use.

A checker function has the signature ``check(step_run, check, target, path)`` and returns a
:class:`~scanflow_core.records.CheckResult` or a list of them; a bad option raises
:class:`~scanflow_core.checking.data.CheckOptionError` (it becomes a failed result naming it).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from scanflow_core.plugins import hookimpl
from scanflow_core.records import CheckResult

__all__ = ["CHECKERS", "scanflow_check", "scanflow_checker_names"]

#: ``use:`` name → ``module:function``; modules load only when a spec uses their checker.
CHECKERS: dict[str, str] = {
    "great_expectations": "scanflow_core.checking.expectations:check",
    "drift": "scanflow_core.checking.drift_check:check",
    "leakage": "scanflow_core.checking.leakage:check",
    "slices": "scanflow_core.checking.slices:check",
    "profile": "scanflow_core.checking.profile:check",
    "integrity": "scanflow_core.checking.integrity:check",
    "importance": "scanflow_core.checking.interpretability:check",
    "robustness": "scanflow_core.checking.robustness:check",
}


@hookimpl
def scanflow_checker_names() -> Iterable[str]:
    return list(CHECKERS)


@hookimpl
def scanflow_check(
    step_run: Any, check: Any, target: str, path: Path
) -> CheckResult | list[CheckResult] | None:
    ref = CHECKERS.get(check.use)
    if ref is None:
        return None
    module, _, function = ref.partition(":")
    checker = getattr(importlib.import_module(module), function)
    result: CheckResult | list[CheckResult] = checker(step_run, check, target, path)
    return result
