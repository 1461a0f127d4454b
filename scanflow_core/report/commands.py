"""Command: ``scanflow report RUN [-o report.html]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["add_commands", "find_run"]

EXIT_BAD_INPUT = 2


def add_commands(subparsers: Any, handlers: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    report = subparsers.add_parser(
        "report", help="write a run's HTML report (steps, checks, objectives, plots, lineage, attestations)"
    )
    report.add_argument(
        "run", metavar="RUN", help="a run directory, a run id under <home>/runs, or 'latest' (the newest run)"
    )
    report.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="where to write it (default RUN_DIR/report.html)"
    )
    report.add_argument("--key", type=Path, metavar="PUB", help="the public key to verify attestations with")
    report.add_argument("--no-verify", action="store_true", help="do not verify the attestations")
    report.add_argument("--home", type=Path, help="where runs live (default $SCANFLOW_HOME or ./.scanflow)")
    handlers["report"] = _cmd_report


def find_run(run: str, home: Path | None = None) -> Path:
    """The run directory ``run`` names: a directory, a run id under ``<home>/runs``, or ``latest``.

    Raises:
        ScanflowError: nothing of that name is a run directory (says where it looked).
    """
    from scanflow_core.errors import ScanflowError
    from scanflow_core.runs import scanflow_home

    runs = scanflow_home(home) / "runs"
    if run == "latest":
        found = sorted(p.parent for p in runs.glob("*/run.json"))
        if not found:
            raise ScanflowError(f"no runs under {runs} (RUN 'latest' is the newest run there)")
        return found[-1]
    for candidate in (Path(run), runs / run):
        if (candidate / "run.json").is_file():
            return candidate
    raise ScanflowError(
        f"RUN {run!r} is no run directory (no run.json in {Path(run)} or {runs / run}): "
        "give a run directory, a run id or 'latest'"
    )


def _cmd_report(args: argparse.Namespace) -> int:
    from scanflow_core.errors import ScanflowError
    from scanflow_core.report.collect import collect
    from scanflow_core.report.render import render_html

    try:
        run_dir = find_run(args.run, args.home)
        data = collect(run_dir, key=args.key, verify=not args.no_verify)
    except ScanflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    target = args.output if args.output is not None else run_dir / "report.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_html(data), encoding="utf-8")
    verdicts = [c.verdict for c in data.checks]
    met = sum(bool(o.get("passed")) for o in data.objectives)
    verified = "verified" if data.verification is not None and data.verification.ok else "NOT verified"
    print(
        f"wrote {target}: run {data.run_id} {data.manifest.get('status', '?')}, {len(data.steps)} steps, "
        f"checks {verdicts.count('pass')} passed / {verdicts.count('warn')} warned / "
        f"{verdicts.count('fail')} failed, objectives {met}/{len(data.objectives)} met, "
        f"attestations {verified}"
    )
    return 0
