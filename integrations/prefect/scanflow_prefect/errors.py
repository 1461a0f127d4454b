"""What a Scanflow task or flow raises under Prefect: Prefect exceptions that carry Scanflow's record."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect.exceptions import PrefectException

__all__ = ["ScanflowRunFailed", "ScanflowStepFailed"]


class ScanflowStepFailed(PrefectException):
    """A Scanflow step failed in a Prefect task run; the task run fails with it.

    Attributes:
        step: the step's name in the run.
        run_id: the Scanflow run id.
        reason: why it failed.
        logs: the last lines the step wrote.
        report: its check results (empty unless a ``fail`` check failed).
        check_failed: whether a ``fail`` check stopped the step (Scanflow's tasks do not retry it:
            the same data fails the same check again).
    """

    def __init__(
        self,
        step: str,
        run_id: str,
        reason: str,
        logs: str = "",
        report: Sequence[Any] = (),
        check_failed: bool = False,
    ) -> None:
        self.step = step
        self.run_id = run_id
        self.reason = reason
        self.logs = logs
        self.report = list(report)
        self.check_failed = check_failed
        # The step's log lines stay in ``logs`` (and in the chained core error's traceback): the
        # message is the task run's state message, one line in Prefect's UI.
        super().__init__(f"step {step!r} of Scanflow run {run_id} failed: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Prefect may pickle a failed state's exception: rebuild it from its fields, not from args.
        return (type(self), (self.step, self.run_id, self.reason, self.logs, self.report, self.check_failed))


class ScanflowRunFailed(PrefectException):
    """The Scanflow run of a flow finished failed: a step did not succeed or a blocking objective
    did not hold. The flow run fails with it.

    Attributes:
        run_id: the Scanflow run id.
        status: the run's status (``failed``).
        objectives: every objective's outcome (:class:`~scanflow_core.records.ObjectiveResult`).
        failed_steps: the steps that did not succeed (nor were skipped).
    """

    def __init__(
        self,
        run_id: str,
        status: str,
        objectives: Sequence[Any],
        message: str,
        failed_steps: Sequence[str] = (),
    ) -> None:
        self.run_id = run_id
        self.status = status
        self.objectives = list(objectives)
        self.failed_steps = list(failed_steps)
        self.message = message
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.run_id, self.status, self.objectives, self.message, self.failed_steps))
