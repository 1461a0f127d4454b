"""The ``scanflow`` command: run, validate, schema, plugins, graph.

Exit codes: 0 done; 1 a step failed; 2 a bad spec or bad arguments (never a traceback);
3 every step ran but a blocking objective was not met; 130 interrupted.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from scanflow_core import __version__
from scanflow_core.errors import ScanflowError, SpecError

__all__ = ["main"]

#: Modules that add commands: each has ``add_commands(subparsers, handlers)``, which adds its parsers
#: and puts ``{command: handler(args) -> exit code}`` into ``handlers``. They must import cheaply.
COMMAND_MODULES: tuple[str, ...] = (
    "scanflow_core.tracking.commands",
    "scanflow_core.attestation.commands",
    "scanflow_core.checking.commands",
    "scanflow_core.deploy.commands",
    "scanflow_core.deploy.image_commands",
    "scanflow_core.serving.commands",
    "scanflow_core.improve.commands",
    "scanflow_core.report.commands",
    "scanflow_core.step_command",
)

EXIT_STEP_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_OBJECTIVES = 3
EXIT_INTERRUPTED = 130

_MARK = {"succeeded": "✓", "failed": "✗", "skipped": "-", "upstream_failed": "✗", "reused": "↺"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scanflow", description="Containerized, tracked, checked, attested ML steps."
    )
    parser.add_argument("--version", action="version", version=f"scanflow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a workflow with the local runner")
    run.add_argument("spec", type=Path, help="the scanflow.yaml file")
    run.add_argument(
        "--step", action="append", default=[], metavar="NAME", help="run this step and what it needs"
    )
    run.add_argument("--param", "-p", action="append", default=[], metavar="K=V", help="override a parameter")
    run.add_argument("--max-parallel", type=_positive_int, metavar="N", help="steps running at once")
    run.add_argument("--resume", metavar="RUN_ID", help="continue a run, reusing its complete steps")
    run.add_argument("--run-id", metavar="RUN_ID", help="the id of a new run (default: time and random)")
    run.add_argument(
        "--status-port", type=int, metavar="PORT", help="serve /ok, /varz, /metrics while running"
    )
    run.add_argument("--home", type=Path, help="where runs live (default $SCANFLOW_HOME or ./.scanflow)")
    run.add_argument("--quiet", "-q", action="store_true", help="print only the summary")
    run.add_argument("--json", action="store_true", help="print the run manifest as JSON at the end")

    validate = sub.add_parser("validate", help="check a spec without running it")
    validate.add_argument("spec", type=Path)
    validate.add_argument("--param", "-p", action="append", default=[], metavar="K=V")

    sub.add_parser("schema", help="print the JSON Schema of scanflow.yaml")

    plugins = sub.add_parser("plugins", help="list registered plugins and the hooks each implements")
    plugins.add_argument("--json", action="store_true")

    graph = sub.add_parser("graph", help="render a workflow's graph")
    graph.add_argument("spec", type=Path)
    graph.add_argument("--format", "-f", choices=["mermaid", "dot", "svg", "png"], default=None)
    graph.add_argument("--output", "-o", type=Path, help="write here (format from the suffix when not given)")
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_commands(sub, _COMMANDS)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} steps at once: give 1 or more")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        handler = _COMMANDS[args.command]
        return handler(args)
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ScanflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_STEP_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def entry() -> None:
    """The console script: like :func:`main`, but an interrupt leaves at once, without waiting for
    an in-process step that cannot be stopped (its record already says it was interrupted)."""
    code = main()
    if code == EXIT_INTERRUPTED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _cmd_validate(args: argparse.Namespace) -> int:
    from scanflow_core.spec import load_workflow

    workflow = load_workflow(args.spec, args.param)
    plan = workflow.plan
    nested = f", {len(workflow.children)} nested workflow(s)" if workflow.children else ""
    print(
        f"{args.spec}: ok — workflow {workflow.name!r}, {len(plan)} steps in {len(plan.levels())} levels"
        f"{nested}, {len(workflow.objectives)} objective(s)"
    )
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from scanflow_core.spec import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def _cmd_plugins(args: argparse.Namespace) -> int:
    from scanflow_core.plugins import describe_plugins, get_plugin_manager

    described = describe_plugins(get_plugin_manager())
    if args.json:
        print(json.dumps(described, indent=2))
        return 0
    width = max(len(p["name"]) for p in described)
    for plugin in described:
        print(f"{plugin['name']:<{width}}  {plugin['source']}")
        for hook in plugin["hooks"]:
            print(f"{'':<{width}}    {hook}")
    return 0


def _cmd_graph(args: argparse.Namespace) -> int:
    from scanflow_core.graph import render
    from scanflow_core.spec import load_workflow

    fmt = args.format or (args.output.suffix.lstrip(".") if args.output else "mermaid")
    if fmt == "mmd":
        fmt = "mermaid"
    workflow = load_workflow(args.spec)
    out = render(workflow, fmt)
    if args.output:
        if isinstance(out, bytes):
            args.output.write_bytes(out)
        else:
            args.output.write_text(out, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    elif isinstance(out, bytes):
        print("error: PNG output needs --output FILE", file=sys.stderr)
        return EXIT_BAD_INPUT
    else:
        print(out)
    return 0


class _Progress:
    """One line per event on stderr: ``[2/6] ✓ split  0.31s  train_size=1257``."""

    def __init__(self, total: int, stream: TextIO, quiet: bool) -> None:
        self.total, self.stream, self.quiet = total, stream, quiet
        self.done = 0
        self.lock = threading.Lock()

    def __call__(self, kind: str, name: str, step_run: Any, run: Any) -> None:
        if kind in ("finish", "reused", "blocked"):
            self.done += 1
        if self.quiet:
            return
        counter = f"[{self.done}/{self.total}]"
        if kind == "start":
            line = f"{counter} ▶ {name} ({run.plan[name].stage})"
        elif kind == "retry":
            line = f"{counter} ⟳ {name} failed, retrying"
        elif kind == "reused":
            line = f"{counter} ↺ {name} reused from run {run.run_id}"
        else:
            summary = run.step_summary(name) or {}
            status = summary.get("status", "?")
            line = f"{counter} {_MARK.get(status, '?')} {name} {status}"
            if summary.get("duration_s") is not None:
                line += f"  {summary['duration_s']:.2f}s"
            if status in ("failed", "upstream_failed", "skipped") and summary.get("reason"):
                line += f"  — {summary['reason'].splitlines()[0]}"
            elif summary.get("metrics"):
                line += "  " + _metrics_text(summary["metrics"])
        with self.lock:
            print(line, file=self.stream, flush=True)


def _metrics_text(metrics: dict[str, float], limit: int = 3) -> str:
    shown = list(metrics.items())[-limit:]
    return " ".join(f"{k}={v:.4g}" for k, v in shown)


def _cmd_run(args: argparse.Namespace) -> int:
    from scanflow_core.runner import run_workflow
    from scanflow_core.runs import scanflow_home
    from scanflow_core.spec import load_workflow

    params = list(args.param)
    runs = scanflow_home(args.home) / "runs"
    if args.resume and not (runs / args.resume / "run.json").is_file():
        print(f"error: no run {args.resume!r} to resume under {runs}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.resume and not params:
        params = _resumed_params(args)
    workflow = load_workflow(args.spec, params)
    for name in args.step:
        if name not in workflow.plan.steps:
            close = difflib.get_close_matches(name, list(workflow.plan.steps), n=1)
            hint = f"one of: {', '.join(workflow.plan.steps)}"
            hint += f"; did you mean {close[0]!r}?" if close else ""
            raise SpecError.single(str(args.spec), f"--step {name}", f"no step named {name!r}", hint)
    selected = workflow.plan.subset(args.step) if args.step else list(workflow.plan.steps)
    progress = _Progress(len(selected), sys.stderr, args.quiet)
    started = time.perf_counter()
    run = run_workflow(
        workflow,
        steps=args.step or None,
        max_parallel=args.max_parallel,
        resume=args.resume,
        run_id=args.run_id,
        home=args.home,
        params=_as_mapping(params),
        on_event=progress,
        status_port=args.status_port,
    )
    _print_summary(run, selected, time.perf_counter() - started, sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(run.manifest(), indent=2))
    if run.status != "succeeded":
        return EXIT_STEP_FAILED
    if any(not o.passed and o.blocking for o in run.objectives):
        return EXIT_OBJECTIVES
    return 0


def _resumed_params(args: argparse.Namespace) -> list[str]:
    from scanflow_core.runs import scanflow_home

    manifest = scanflow_home(args.home) / "runs" / args.resume / "run.json"
    try:
        params = json.loads(manifest.read_text(encoding="utf-8")).get("params", {})
    except (OSError, ValueError):
        return []
    return [f"{k}={json.dumps(v)}" for k, v in params.items()]


def _as_mapping(params: list[str]) -> dict[str, Any]:
    from scanflow_core.spec import parse_overrides

    return parse_overrides(params)


def _print_summary(run: Any, selected: list[str], elapsed: float, out: TextIO) -> None:
    summaries = run.step_summaries()
    print(f"\nrun {run.run_id} of {run.workflow.name!r}: {run.status} in {elapsed:.2f}s", file=out)
    print(f"  {run.directory}", file=out)
    rows = []
    for name in selected:
        s = summaries.get(name, {})
        duration = f"{s['duration_s']:.2f}s" if s.get("duration_s") is not None else "-"
        rows.append(
            (
                name,
                run.plan[name].stage,
                s.get("status", "not run"),
                duration,
                _metrics_text(s.get("metrics", {})),
            )
        )
    widths = [
        max(len(r[i]) for r in [("step", "stage", "status", "time", "metrics"), *rows]) for i in range(5)
    ]
    for row in [("step", "stage", "status", "time", "metrics"), *rows]:
        print("  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip(), file=out)
    failed = [(n, summaries[n]) for n in selected if summaries.get(n, {}).get("status") == "failed"]
    for name, s in failed:
        print(f"\n  {name} failed: {s.get('reason')}", file=out)
        print(f"  log: {run.step_dir(name) / 'step.log'}", file=out)
    incomplete = [
        (n, summaries[n]["stage_metadata"])
        for n in selected
        if (summaries.get(n) or {}).get("stage_metadata")
    ]
    for name, report in incomplete:
        if not report["complete"]:
            lacking = "; ".join(report["missing"] + report["mistyped"])
            print(f"  ! {name}: stage metadata of {report['stage']!r} incomplete: {lacking}", file=out)
    if run.notes:
        print("", file=out)
        for note in run.notes:
            print(f"  {note}", file=out)
    if run.objectives:
        print("\nobjectives:", file=out)
        for objective in run.objectives:
            print(f"  {'✓' if objective.passed else '✗'} {objective}", file=out)


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": _cmd_run,
    "validate": _cmd_validate,
    "schema": _cmd_schema,
    "plugins": _cmd_plugins,
    "graph": _cmd_graph,
}

if __name__ == "__main__":
    entry()
