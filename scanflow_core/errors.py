"""Scanflow's exceptions: each one carries structured data and says what to do."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AttestationError",
    "CheckFailed",
    "ObjectiveFailed",
    "PluginError",
    "Problem",
    "ScanflowError",
    "SpecError",
    "StepFailed",
    "one_of",
]


def one_of(options: Iterable[str], value: str, limit: int = 15) -> str:
    """``one of: a, b, c; did you mean 'b'?`` — the *expected* part of an error about ``value``."""
    names = list(options)
    if not names:
        return "nothing here"
    close = difflib.get_close_matches(value, names, n=1)
    listed = ", ".join(names[:limit]) + (", …" if len(names) > limit else "")
    return f"one of: {listed}" + (f"; did you mean {close[0]!r}?" if close else "")


class ScanflowError(Exception):
    """Base class of every error Scanflow raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec: where it is, what is wrong, what was expected."""

    path: str
    message: str
    expected: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = self.path or "<document>"
        text = f"{where}: {self.message}"
        if self.expected:
            text += f" (expected {self.expected})"
        return text


class SpecError(ScanflowError):
    """A workflow spec that cannot be used, with every problem found in it.

    Attributes:
        file: the spec file, or ``"<string>"``.
        problems: each problem with its path inside the file (``steps[2].needs[0]``),
            the line where it stands when known, and what was expected.
    """

    def __init__(self, file: str, problems: Sequence[Problem]) -> None:
        self.file = file
        self.problems = list(problems)
        super().__init__(self._render())

    @classmethod
    def single(
        cls, file: str, path: str, message: str, expected: str | None = None, line: int | None = None
    ) -> SpecError:
        return cls(file, [Problem(path, message, expected, line)])

    @property
    def path(self) -> str:
        """The path of the first problem, the one most errors are about."""
        return self.problems[0].path if self.problems else ""

    @property
    def line(self) -> int | None:
        return self.problems[0].line if self.problems else None

    def _render(self) -> str:
        lines = []
        for problem in self.problems:
            where = f"{self.file}:{problem.line}" if problem.line else self.file
            lines.append(f"{where}: {problem}")
        if len(lines) == 1:
            return lines[0]
        return f"{len(lines)} problems in {self.file}:\n" + "\n".join(f"  {line}" for line in lines)


class PluginError(ScanflowError):
    """A plugin that cannot be registered or that broke a hook's contract."""


class StepFailed(ScanflowError):
    """A step that did not succeed: its runtime failed, it timed out or its code raised.

    Attributes:
        step: the step's qualified name.
        run_id: the workflow run it belonged to.
        logs: the last lines the step wrote, when there are any.
    """

    def __init__(self, step: str, run_id: str, reason: str, logs: str = "") -> None:
        self.step = step
        self.run_id = run_id
        self.reason = reason
        self.logs = logs
        text = f"step {step!r} of run {run_id} failed: {reason}"
        if logs:
            text += "\n--- last lines of the step log ---\n" + logs
        super().__init__(text)


class CheckFailed(StepFailed):
    """A check whose policy is ``fail`` did not pass; ``report`` holds every result of the step."""

    def __init__(self, step: str, run_id: str, report: Sequence[Any]) -> None:
        self.report = list(report)
        failed = [r for r in self.report if not getattr(r, "passed", True)]
        names = ", ".join(f"{r.checker} on {r.target}: {r.summary}" for r in failed)
        super().__init__(step, run_id, f"check failed: {names}")


class ObjectiveFailed(ScanflowError):
    """A blocking objective did not hold; ``results`` holds every objective's outcome."""

    def __init__(self, results: Sequence[Any]) -> None:
        self.results = list(results)
        failed = "; ".join(str(r) for r in self.results if not getattr(r, "passed", True))
        super().__init__(f"objectives not met: {failed}")


class AttestationError(ScanflowError):
    """An attestation that cannot be made or does not verify."""
