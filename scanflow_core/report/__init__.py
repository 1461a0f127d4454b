"""The HTML report of a run: ``scanflow report RUN_DIR [-o report.html]``.

One self-contained file (no script, no request to anywhere): the run's steps with their status, time
and metrics; every check (pass / warn / fail, with its message); the objectives; the plots checkers
wrote (drift histograms), embedded; the lineage graph (the core's SVG, each step coloured by status)
and every artifact's digest; the verification of the run's attestations; model cards.

Example::

    from scanflow_core.report import write_report

    path = write_report(".scanflow/runs/20261123-015503-4516ff")   # …/report.html
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["build_report", "write_report"]


def build_report(run_dir: str | Path, *, key: str | Path | None = None, verify: bool = True) -> str:
    """The HTML report of the run in ``run_dir``.

    Args:
        run_dir: a run directory (``<home>/runs/<run id>``).
        key: the public key to verify the attestations with (default: the one beside the run).
        verify: verify the attestations (the report says so when it did not).

    Returns:
        The HTML document.

    Raises:
        ScanflowError: ``run_dir`` is not a run directory.

    Examples:
        >>> html = build_report(".scanflow/runs/20261123-015503-4516ff")  # doctest: +SKIP
    """
    from scanflow_core.report.collect import collect
    from scanflow_core.report.render import render_html

    return render_html(collect(run_dir, key=key, verify=verify))


def write_report(
    run_dir: str | Path,
    output: str | Path | None = None,
    *,
    key: str | Path | None = None,
    verify: bool = True,
) -> Path:
    """Write the report of the run in ``run_dir`` to ``output`` (default ``<run_dir>/report.html``).

    Returns:
        The path written.

    Raises:
        ScanflowError: ``run_dir`` is not a run directory.
    """
    target = Path(output) if output is not None else Path(run_dir) / "report.html"
    text = build_report(run_dir, key=key, verify=verify)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return target
