"""``scanflow tracker sync`` and ``scanflow wipe``.

``tracker sync [RUN_ID]`` replays the spool of one run (or of every run under the home) into the
tracking store. ``wipe RUN_ID`` / ``wipe --workflow NAME`` deletes a run's tracking and checking
metadata:

* in MLflow: the parent run and every child run (deleted through the API; with a database we
  talk to directly, also purged from it together with their local artifacts; behind a server, the
  server's ``mlflow gc`` purges them). The experiment stays: MLflow keeps a deleted experiment's
  name reserved, and other runs of the workflow may live in it.
* in the run directory: ``tracking/`` (spool and MLflow ids), ``attestations/`` and each step's
  ``checks.json``.

What stays is the run's own record: ``run.json``, each step's ``step.json``, ``metrics.jsonl``,
``step.log`` and outputs, so ``scanflow run --resume`` still works and the numbers are not lost.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["add_commands"]


def add_commands(subparsers: Any, handlers: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    tracker = subparsers.add_parser("tracker", help="the tracking store: replay spooled records")
    actions = tracker.add_subparsers(dest="tracker_command", required=True, metavar="ACTION")
    sync = actions.add_parser("sync", help="send spooled tracking records to the store")
    sync.add_argument("run_id", nargs="?", metavar="RUN_ID", help="one run (default: every run)")
    _common(sync)

    wipe = subparsers.add_parser("wipe", help="delete a run's tracking and checking metadata")
    which = wipe.add_mutually_exclusive_group(required=True)
    which.add_argument("run_id", nargs="?", metavar="RUN_ID")
    which.add_argument("--workflow", metavar="NAME", help="every run of this workflow")
    wipe.add_argument("--yes", "-y", action="store_true", help="do not ask")
    _common(wipe)

    handlers["tracker"] = _cmd_sync
    handlers["wipe"] = _cmd_wipe


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", type=Path, help="where runs live (default: $SCANFLOW_HOME or ./.scanflow)")
    parser.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="the store (default: the spec's, $MLFLOW_TRACKING_URI, embedded)",
    )


# ------------------------------------------------------------------------------------------ targets


def _runs_dir(args: argparse.Namespace) -> Path:
    from scanflow_core.runs import scanflow_home

    return scanflow_home(args.home) / "runs"


def _manifest(directory: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((directory / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data


def _tracker_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    """The ``tracker:`` section of the spec the run was made from (if the file is still there)."""
    import yaml

    try:
        spec = yaml.safe_load(Path(manifest.get("spec", "")).read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    section = spec.get("tracker") if isinstance(spec, dict) else None
    return section if isinstance(section, dict) else {}


def _tracker(args: argparse.Namespace, directory: Path, workflow: str | None = None) -> Any:
    from scanflow_core.tracking.mlflow_tracker import Target, Tracker, resolve_uri

    manifest = _manifest(directory)
    spec = _tracker_spec(manifest)
    name = workflow or manifest.get("workflow") or ""
    spooled = next((r.get("experiment") for r in Tracker.spool_of(directory).records() if "id" in r), None)
    target = Target(
        run_id=directory.name,
        directory=directory,
        home=directory.parent.parent,
        uri=args.tracking_uri or resolve_uri(spec.get("uri"), directory.parent.parent, directory),
        experiment=spec.get("experiment") or spooled or name,
        workflow=name,
        spec_digest=manifest.get("spec_digest", ""),
    )
    return Tracker(target)


# ------------------------------------------------------------------------------------------ sync


def _cmd_sync(args: argparse.Namespace) -> int:
    runs = _runs_dir(args)
    if args.run_id:
        directories = [runs / args.run_id]
        if not directories[0].is_dir():
            print(f"error: no run {args.run_id!r} under {runs}", file=sys.stderr)
            return 2
    else:
        directories = sorted(p for p in runs.glob("*") if (p / "tracking" / "spool.jsonl").exists())
    failed = 0
    for directory in directories:
        tracker = _tracker(args, directory)
        if not tracker.target.experiment:
            print(f"{directory.name}: no run.json and nothing spooled; nothing to do")
            continue
        report = tracker.sync()
        line = f"{directory.name}: {report.delivered} sent, {report.pending} pending"
        if report.rejected:
            line += f", {report.rejected} refused by the store (kept in {tracker.spool.path})"
        if report.error:
            line += f" — {report.error}"
            failed += 1
        print(line)
    if not directories:
        print("nothing spooled")
    return 1 if failed else 0


# ------------------------------------------------------------------------------------------ wipe


def _cmd_wipe(args: argparse.Namespace) -> int:
    runs = _runs_dir(args)
    if args.run_id:
        directory = runs / args.run_id
        if not directory.is_dir():
            print(f"error: no run {args.run_id!r} under {runs}", file=sys.stderr)
            return 2
        targets = [(directory, None)]
    else:
        found = [p for p in sorted(runs.glob("*")) if _manifest(p).get("workflow") == args.workflow]
        targets = [(p, args.workflow) for p in found]
    extra = _workflow_runs_in_store(args, runs, {p.name for p, _ in targets}) if args.workflow else []
    names = [p.name for p, _ in targets] + extra
    if not names:
        print(f"no runs of workflow {args.workflow!r}")
        return 0
    if not args.yes and not _confirm(f"wipe the tracking and checking metadata of {', '.join(names)}?"):
        print("nothing wiped")
        return 1
    for directory, workflow in targets:
        deleted = _wipe_store(_tracker(args, directory, workflow))
        removed = _wipe_directory(directory)
        print(f"{directory.name}: {deleted} MLflow run(s) deleted, {removed} metadata file(s) removed")
    for run_id in extra:
        deleted = _wipe_store(_tracker(args, runs / run_id, args.workflow))
        print(f"{run_id}: {deleted} MLflow run(s) deleted (no run directory here)")
    return 0


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        print(f"{question} (pass --yes to confirm)", file=sys.stderr)
        return False
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def _workflow_runs_in_store(args: argparse.Namespace, runs: Path, known: set[str]) -> list[str]:
    """Scanflow run ids of the workflow that the store has but this home has no directory for."""
    from scanflow_core.tracking.mlflow_tracker import Target, Tracker, resolve_uri

    home = runs.parent
    directory = next(iter(sorted(runs.glob("*"))), runs / "_")
    spec = _tracker_spec(_manifest(directory)) if directory.exists() else {}
    target = Target(
        run_id="",
        directory=runs / "_",
        home=home,
        uri=args.tracking_uri or resolve_uri(spec.get("uri"), home, directory),
        experiment=spec.get("experiment") or args.workflow,
        workflow=args.workflow,
    )
    return sorted(set(Tracker(target).scanflow_run_ids()) - known)


def _wipe_store(tracker: Any) -> int:
    ids = tracker.mlflow_run_ids()
    tracker.delete_runs(ids)
    return len(ids)


def _wipe_directory(directory: Path) -> int:
    removed = 0
    for path in [directory / "tracking", directory / "attestations", *directory.glob("steps/*/checks.json")]:
        if path.is_dir():
            removed += sum(1 for p in path.rglob("*") if p.is_file())
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
            removed += 1
    return removed
