"""``scanflow step SPEC NAME --run-id ID``: run exactly one step of a shared run, and nothing else.

Where ``scanflow run --step NAME`` runs a step *and what it needs* in a run of its own, ``scanflow step``
is what an orchestrator's container runs for one of its tasks (a Kubernetes pod, a Flyte container
task): it opens run ``ID`` under ``--home`` (made by the first step to open it, found by the others),
runs ``NAME`` through the one step path (:func:`scanflow_core.steps.run_step`: checks, tracking,
attestation), and leaves the run open. The step's upstream steps must have run already, in this
process or elsewhere: their outputs are read from the run directory.

``--in-image`` says that this process already runs inside the step's image (the pod's main container
is the step's image): a container step's ``command`` or ``call`` then runs here as a child process
instead of in a Docker container (the execution's runtime is ``in-image``; the image named by
``$SCANFLOW_STEP_IMAGE`` is attested). ``--tracker-uri`` tracks to a server the deployment started
(the pod's tracker sidecar) instead of the spec's ``tracker.uri``.

Exit codes: 0 the step succeeded (or was skipped: its ``when:`` did not hold; ``--skipped-exit-code``
gives those an exit code of their own, for a host that skips a task on one); 1 it failed; 2 a bad
spec or bad arguments.

``scanflow close SPEC --run-id ID`` is what the orchestrator's last container runs once every step's
task is done (:func:`close_one_run`): it opens run ``ID`` (which must exist) and closes it with
:func:`scanflow_core.runner.close_run`: steps that never ran are recorded, the objectives judged and
tracked, ``run.json`` finished. Exit codes as ``scanflow run``'s: 0 the run succeeded; 1 a step did
not; 3 every step ran but a blocking objective did not hold; 2 a bad spec, run id or argument.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scanflow_core.errors import SpecError
from scanflow_core.plugins import hookimpl

__all__ = [
    "IMAGE_ENV",
    "IN_IMAGE_RUNTIME",
    "InImageRuntime",
    "add_commands",
    "close_one_run",
    "run_one_step",
]

#: The image a pod's main container runs (set by :func:`scanflow_core.deploy.pods.step_pod`), attested
#: as the image of a step run ``--in-image``.
IMAGE_ENV = "SCANFLOW_STEP_IMAGE"
#: ``ExecutionResult.runtime`` of a container step run inside its own image.
IN_IMAGE_RUNTIME = "in-image"


def add_commands(subparsers: Any, handlers: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    step = subparsers.add_parser(
        "step",
        help="run exactly one step of a shared run (what an orchestrator's container runs)",
        description="Run one step of run RUN_ID, reading its inputs from the run directory; the run "
        "stays open for the other steps.",
    )
    step.add_argument("spec", type=Path, help="the scanflow.yaml file")
    step.add_argument("name", metavar="NAME", help="the step's qualified name (train, prep.clean)")
    step.add_argument("--run-id", required=True, metavar="RUN_ID", help="the shared run (made if new)")
    step.add_argument(
        "--param", "-p", action="append", default=[], metavar="K=V", help="override a parameter"
    )
    step.add_argument("--attempt", type=_attempt, default=1, metavar="N", help="which attempt this is (1)")
    step.add_argument("--home", type=Path, help="where runs live (default $SCANFLOW_HOME or ./.scanflow)")
    step.add_argument(
        "--in-image",
        action="store_true",
        help="this process runs inside the step's image: run a container step here, not in Docker",
    )
    step.add_argument("--tracker-uri", metavar="URI", help="track to this server instead of tracker.uri")
    step.add_argument(
        "--orchestrator", default="local", metavar="NAME", help="recorded as the run's orchestrator"
    )
    step.add_argument(
        "--skipped-exit-code", type=_exit_code, default=0, metavar="N", help="exit code of a skipped step (0)"
    )
    step.add_argument("--json", action="store_true", help="print the step's record as JSON")
    handlers["step"] = _cmd_step

    close = subparsers.add_parser(
        "close",
        help="close a shared run once its steps are done (an orchestrator's last task)",
        description="Record the steps of run RUN_ID that never ran, judge the objectives, track them "
        "and finish the run. Exit codes: 0 succeeded, 1 a step failed, 3 a blocking objective did not "
        "hold, 2 bad input.",
    )
    close.add_argument("spec", type=Path, help="the scanflow.yaml file")
    close.add_argument("--run-id", required=True, metavar="RUN_ID", help="the shared run (must exist)")
    close.add_argument(
        "--param", "-p", action="append", default=[], metavar="K=V", help="override a parameter"
    )
    close.add_argument("--home", type=Path, help="where runs live (default $SCANFLOW_HOME or ./.scanflow)")
    close.add_argument("--tracker-uri", metavar="URI", help="track to this server instead of tracker.uri")
    close.add_argument(
        "--orchestrator", default="local", metavar="NAME", help="recorded as the run's orchestrator"
    )
    close.add_argument("--json", action="store_true", help="print the run manifest as JSON")
    handlers["close"] = _cmd_close


def _attempt(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"attempt {value}: the first attempt is 1")
    return value


def _exit_code(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value <= 255:
        raise argparse.ArgumentTypeError(f"exit code {value}: give 0-255")
    return value


class InImageRuntime:
    """Runs a container step (``image``/``build``, or ``runtime: docker``) as a child process here,
    because this process already runs inside the step's image.

    Args:
        image: the image this process runs in (attested as the step's image), when known.
    """

    def __init__(self, image: str | None = None) -> None:
        self.image = image

    @hookimpl(tryfirst=True)  # before the Docker runtime's (also tryfirst: the later registered goes first)
    def scanflow_execute_step(self, step_run: Any) -> Any:
        from scanflow_core.errors import StepFailed
        from scanflow_core.records import ExecutionResult
        from scanflow_core.runtimes.local import run_local

        spec = step_run.step.spec
        if spec.kind == "workflow" or (spec.kind != "container" and spec.runtime != "docker"):
            return None
        if spec.command is None and spec.call is None:
            raise StepFailed(
                step_run.name,
                step_run.run.run_id,
                f"it runs the command of its image {spec.image}, which only the image's own entry point"
                " starts: give the step a 'command' to run it inside its image",
            )
        result = run_local(step_run)
        details = {**result.details, "image": self.image or spec.image}
        return ExecutionResult(IN_IMAGE_RUNTIME, result.exit_code, result.value, details, result.used_params)


def run_one_step(
    spec: str | Path,
    name: str,
    *,
    run_id: str,
    params: Any = None,
    attempt: int = 1,
    home: str | Path | None = None,
    in_image: bool = False,
    tracker_uri: str | None = None,
    orchestrator: str = "local",
) -> Any:
    """Run exactly step ``name`` of run ``run_id`` (opened if new) and return its :class:`StepRun`.

    Args:
        spec: the ``scanflow.yaml`` file.
        name: the step's qualified name.
        run_id: the shared run's id.
        params: ``--param`` overrides (a mapping, or ``["k=v", ...]``).
        attempt: which attempt of the step this is (1 for the first).
        home: where runs live (default ``$SCANFLOW_HOME`` or ``./.scanflow``).
        in_image: this process runs inside the step's image (see :class:`InImageRuntime`).
        tracker_uri: track to this server instead of the spec's ``tracker.uri``.
        orchestrator: recorded as the run's orchestrator when this call makes the run.

    Returns:
        The step's run: ``status`` is ``succeeded`` or ``skipped``.

    Raises:
        SpecError: the spec is not valid, or has no step ``name``.
        StepFailed: the step failed.

    Examples:
        >>> run_one_step("scanflow.yaml", "train", run_id="nightly-7")  # doctest: +SKIP
    """
    from scanflow_core.plugins import get_plugin_manager
    from scanflow_core.runs import WorkflowRun
    from scanflow_core.spec import load_workflow, parse_overrides
    from scanflow_core.steps import run_step

    overrides = parse_overrides(params)
    workflow = load_workflow(spec, overrides)
    if name not in workflow.plan.steps:
        close = difflib.get_close_matches(name, list(workflow.plan.steps), n=1)
        hint = f"one of: {', '.join(workflow.plan.steps)}"
        hint += f"; did you mean {close[0]!r}?" if close else ""
        raise SpecError.single(str(spec), f"step {name}", f"no step named {name!r}", hint)
    workflow = _tracking_to(workflow, tracker_uri)
    pm = get_plugin_manager()
    if in_image:
        pm.register(InImageRuntime(os.environ.get(IMAGE_ENV) or None), name="scanflow.in-image")
    run = WorkflowRun(workflow, run_id=run_id, home=home, pm=pm, params=overrides, orchestrator=orchestrator)
    if run.open():
        run.pm.hook.scanflow_workflow_start(run=run)
    return run_step(run, name, attempt=attempt)


def _cmd_step(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    step_run = run_one_step(
        args.spec,
        args.name,
        run_id=args.run_id,
        params=list(args.param),
        attempt=args.attempt,
        home=args.home,
        in_image=args.in_image,
        tracker_uri=args.tracker_uri,
        orchestrator=args.orchestrator,
    )
    run = step_run.run
    out = sys.stderr if args.json else sys.stdout
    line = (
        f"step {step_run.name} of run {run.run_id}: {step_run.status} in {time.perf_counter() - started:.2f}s"
    )
    if step_run.status == "skipped" and step_run.reason:
        line += f" ({step_run.reason})"
    print(line, file=out)
    for output, path in step_run.outputs.items():
        print(f"  {output}: {path}", file=out)
    if args.json:
        print(json.dumps(run.step_summary(step_run.name), indent=2, default=str))
    return args.skipped_exit_code if step_run.status == "skipped" else 0


def _tracking_to(workflow: Any, tracker_uri: str | None) -> Any:
    """``workflow`` tracking to ``tracker_uri`` instead of its ``tracker.uri`` (when given)."""
    if not tracker_uri:
        return workflow
    tracker = workflow.tracker.model_copy(update={"uri": tracker_uri})
    return workflow.model_copy(update={"tracker": tracker})


def close_one_run(
    spec: str | Path,
    *,
    run_id: str,
    params: Any = None,
    home: str | Path | None = None,
    tracker_uri: str | None = None,
    orchestrator: str = "local",
) -> Any:
    """Close run ``run_id`` of ``spec`` once its steps are done, wherever they ran.

    Args:
        spec: the ``scanflow.yaml`` file.
        run_id: the shared run's id; the run must exist under ``home``.
        params: ``--param`` overrides (a mapping, or ``["k=v", ...]``), as the steps had them.
        home: where runs live (default ``$SCANFLOW_HOME`` or ``./.scanflow``).
        tracker_uri: track to this server instead of the spec's ``tracker.uri``.
        orchestrator: recorded as the run's orchestrator if the manifest has none.

    Returns:
        The :class:`~scanflow_core.runner.RunOutcome`: ``outcome.ok`` when the run succeeded and every
        blocking objective held.

    Raises:
        SpecError: the spec is not valid, or ``run_id`` names no run of this workflow under ``home``.

    Examples:
        >>> close_one_run("scanflow.yaml", run_id="nightly-7").ok  # doctest: +SKIP
        True
    """
    from scanflow_core.plugins import get_plugin_manager
    from scanflow_core.runner import close_run
    from scanflow_core.runs import WorkflowRun, scanflow_home
    from scanflow_core.spec import load_workflow, parse_overrides

    overrides = parse_overrides(params)
    workflow = _tracking_to(load_workflow(spec, overrides), tracker_uri)
    runs = scanflow_home(home) / "runs"
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise SpecError.single(
            str(spec), "--run-id", f"{run_id!r} is not a run id", "letters, digits, '.', '_' and '-'"
        )
    manifest = runs / run_id / "run.json"
    try:
        recorded = json.loads(manifest.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError.single(
            str(spec), "--run-id", f"no run {run_id!r} under {runs}", "the id its steps ran under"
        ) from None
    except (OSError, ValueError) as exc:
        raise SpecError.single(str(spec), "--run-id", f"{manifest} cannot be read: {exc}") from None
    if recorded.get("workflow") not in (None, workflow.name):
        raise SpecError.single(
            str(spec),
            "--run-id",
            f"run {run_id!r} is a run of workflow {recorded.get('workflow')!r}, not {workflow.name!r}",
        )
    pm = get_plugin_manager()
    run = WorkflowRun(workflow, run_id=run_id, home=home, pm=pm, params=overrides, orchestrator=orchestrator)
    run.open()
    return close_run(run)


_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _cmd_close(args: argparse.Namespace) -> int:
    from scanflow_core.cli import EXIT_OBJECTIVES, EXIT_STEP_FAILED

    started = time.perf_counter()
    outcome = close_one_run(
        args.spec,
        run_id=args.run_id,
        params=list(args.param),
        home=args.home,
        tracker_uri=args.tracker_uri,
        orchestrator=args.orchestrator,
    )
    out = sys.stderr if args.json else sys.stdout
    print(f"run {outcome.run_id}: {outcome.status} in {time.perf_counter() - started:.2f}s", file=out)
    for objective in outcome.objectives:
        print(f"  {'✓' if objective.passed else '✗'} {objective}", file=out)
    if not outcome.ok:
        print(outcome.message, file=out)
    if args.json:
        from scanflow_core.runs import scanflow_home

        manifest = scanflow_home(args.home) / "runs" / outcome.run_id / "run.json"
        print(json.dumps(json.loads(manifest.read_text(encoding="utf-8")), indent=2))
    if outcome.status != "succeeded":
        return EXIT_STEP_FAILED
    return EXIT_OBJECTIVES if outcome.missed else 0
