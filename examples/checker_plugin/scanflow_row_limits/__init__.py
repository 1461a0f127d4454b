"""``use: row_limits``: an example third-party Scanflow checker.

A table's row count must lie within ``min`` and ``max`` (both optional, inclusive)::

    checks:
      - {use: row_limits, on: table, min: 100, max: 1_000_000}

CSV / TSV files count their lines after the header, JSON lines their lines; any other format
Scanflow reads (Parquet, ``.npz`` …) is loaded with :func:`scanflow_core.checking.data.load_frame`.
Scanflow finds the checker through the entry point ``row_limits`` in the group
``scanflow.plugins`` (see ``pyproject.toml``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scanflow_core import CheckResult, hookimpl
from scanflow_core.checking.data import CheckOptionError, option

__all__ = ["RowLimits", "count_rows", "plugin"]

NAME = "row_limits"


def count_rows(path: Path) -> int:
    """The rows of a table: the lines after the header of a CSV/TSV, the lines of JSON lines."""
    suffix = path.suffix.lower()
    if path.is_file() and suffix in (".csv", ".tsv", ".txt", "", ".jsonl", ".ndjson"):
        with path.open("rb") as lines:
            count = sum(1 for line in lines if line.strip())
        return max(0, count - 1) if suffix not in (".jsonl", ".ndjson") else count
    from scanflow_core.checking.data import load_frame

    return len(load_frame(path))


class RowLimits:
    """The plugin: one checker, ``row_limits``."""

    @hookimpl
    def scanflow_checker_names(self) -> list[str]:
        return [NAME]

    @hookimpl
    def scanflow_check(self, step_run: Any, check: Any, target: str, path: Path) -> CheckResult | None:
        if check.use != NAME:
            return None  # not ours: another checker answers
        low = option(check.options, "min", int, None, check=check.label)
        high = option(check.options, "max", int, None, check=check.label)
        if low is None and high is None:
            raise CheckOptionError(f"check {check.label!r} needs the option 'min', 'max' or both")
        rows = count_rows(path)
        too_few = low is not None and rows < low
        too_many = high is not None and rows > high
        limits = f"[{'' if low is None else low}, {'' if high is None else high}]"
        verdict = "fewer than" if too_few else "more than" if too_many else "within"
        bound = low if too_few else high if too_many else limits
        return CheckResult(
            NAME,
            target,
            not (too_few or too_many),
            f"{rows} rows, {verdict} {bound}",
            metrics={"rows": float(rows)},
            details={"rows": rows, "min": low, "max": high},
        )


#: What the entry point names: an instance, registered like any plugin.
plugin = RowLimits()
