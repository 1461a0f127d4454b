"""What a Scanflow task raises in Flyte: the core's failures as flytekit user exceptions.

A failed step raises :class:`ScanflowStepFailed`, a *recoverable* user error, so that Flyte retries
it as often as the task's ``retries`` (a step's ``retries`` in a spec); a ``fail`` check raises
:class:`ScanflowCheckFailed`, which Flyte does not retry: the same data would fail the same check.
Both carry the step, the run id, the reason, the last lines of the step log and the check report.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from flytekit.exceptions.user import FlyteRecoverableException, FlyteUserException

if TYPE_CHECKING:
    from scanflow_core.errors import StepFailed
    from scanflow_core.records import ObjectiveResult

__all__ = ["ScanflowCheckFailed", "ScanflowRunFailed", "ScanflowStepFailed", "ScanflowTaskError", "from_core"]


class ScanflowTaskError(FlyteUserException):  # type: ignore[misc]
    """A Scanflow step failed in a Flyte task.

    Attributes:
        step: the step's name.
        run_id: the Scanflow run id.
        reason: why it failed (for a check: which check, on what, and its summary).
        logs: the last lines the step wrote.
        report: its check results (empty unless a check ran).
    """

    def __init__(self, step: str, run_id: str, reason: str, logs: str = "", report: Sequence[Any] = ()):
        self.step = step
        self.run_id = run_id
        self.reason = reason
        self.logs = logs
        self.report = list(report)
        text = f"step {step!r} of Scanflow run {run_id} failed: {reason}"
        super().__init__(text + (f"\n--- last lines of the step log ---\n{logs}" if logs else ""))


class ScanflowStepFailed(ScanflowTaskError, FlyteRecoverableException):  # type: ignore[misc]
    """The step's code, command or container failed (Flyte retries it up to the task's ``retries``)."""


class ScanflowCheckFailed(ScanflowTaskError):
    """A check with ``policy: fail`` did not pass (not retried). ``failed_checks`` names each one."""

    @property
    def failed_checks(self) -> list[str]:
        """``<checker> on <target>`` for every failed blocking check."""
        return [f"{r.checker} on {r.target}" for r in self.report if getattr(r, "blocking", False)]


class ScanflowRunFailed(FlyteUserException):  # type: ignore[misc]
    """The Scanflow run finished failed: a step failed or a blocking objective did not hold.

    Attributes:
        run_id: the Scanflow run id.
        status: the run's status.
        objectives: every objective's outcome.
    """

    def __init__(self, run_id: str, status: str, objectives: Sequence[ObjectiveResult], message: str):
        self.run_id = run_id
        self.status = status
        self.objectives = list(objectives)
        super().__init__(message)


def from_core(exc: StepFailed) -> ScanflowTaskError:
    """The Flyte exception for the core's :class:`~scanflow_core.errors.StepFailed` (or ``CheckFailed``)."""
    from scanflow_core.errors import CheckFailed

    if isinstance(exc, CheckFailed):
        return ScanflowCheckFailed(exc.step, exc.run_id, exc.reason, exc.logs, exc.report)
    return ScanflowStepFailed(exc.step, exc.run_id, exc.reason, exc.logs)
