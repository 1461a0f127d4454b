"""Scanflow's hooks: the reference documentation of every extension point.

Plugins implement these with ``@scanflow_core.hookimpl`` and register through the entry-point
group ``scanflow.plugins``. Built-in features (the runtimes, stage metadata) are plugins
registered exactly the same way. Hooks are grouped by phase, in the order a run meets them:

1. workflow lifecycle    ``scanflow_workflow_start`` / ``_finish`` / ``_error``
2. step lifecycle        ``scanflow_step_start`` / ``_finish`` / ``_error``
3. execution             ``scanflow_execute_step`` (first result wins)
4. checking              ``scanflow_checker_names``, ``scanflow_check`` (first result wins)
5. stage metadata        ``scanflow_stage_requirements``
6. tracking              ``scanflow_track``
7. attestation           ``scanflow_attest_step``, ``scanflow_sign`` (first result wins)
8. sidecars              ``scanflow_sidecars``

Every hook receives context objects (:class:`~scanflow_core.runs.WorkflowRun`,
:class:`~scanflow_core.runs.StepRun`) rather than long argument lists, so hooks can grow
without breaking plugins. A plugin may accept any subset of a hook's arguments.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from scanflow_core.records import (
        CheckResult,
        ExecutionResult,
        Requirement,
        SidecarSpec,
        TrackingBatch,
    )
    from scanflow_core.runs import StepRun, WorkflowRun
    from scanflow_core.spec import CheckSpec

PROJECT = "scanflow"
hookspec = pluggy.HookspecMarker(PROJECT)

# -------------------------------------------------------------------------------------------------
# 1. Workflow lifecycle
# -------------------------------------------------------------------------------------------------


@hookspec
def scanflow_workflow_start(run: WorkflowRun) -> None:
    """A workflow run begins, before its first step.

    Called once per run by the local runner, and once per run by an adapter (by whichever task
    of the orchestrator opens the run). ``run.run_id`` and ``run.directory`` are set; trackers
    open their parent run here.
    """


@hookspec
def scanflow_workflow_finish(run: WorkflowRun) -> None:
    """A workflow run ended; ``run.status`` and ``run.objectives`` hold the outcome.

    Called whether the run succeeded or not, after the objectives were evaluated.
    """


@hookspec
def scanflow_workflow_error(run: WorkflowRun, error: BaseException) -> None:
    """A workflow run stopped on an error that no step caught (an interrupt, a runner failure)."""


# -------------------------------------------------------------------------------------------------
# 2. Step lifecycle
# -------------------------------------------------------------------------------------------------


@hookspec
def scanflow_step_start(step_run: StepRun) -> None:
    """A step is about to run: its inputs exist and its ``when:`` condition holds.

    Called before the input checks and the execution. ``step_run.inputs`` and
    ``step_run.outputs`` map names to paths; ``step_run.params`` holds the resolved params.
    """


@hookspec
def scanflow_step_finish(step_run: StepRun) -> None:
    """A step ended without error, or was skipped; ``step_run.status`` says which.

    Called after its outputs were checked, tracked and attested.
    """


@hookspec
def scanflow_step_error(step_run: StepRun, error: BaseException) -> None:
    """A step failed: its runtime failed, it timed out, or a ``fail`` check did not pass.

    Called after what the step recorded was tracked, before the error reaches the caller.
    ``error`` is usually a :class:`~scanflow_core.errors.StepFailed`.
    """


# -------------------------------------------------------------------------------------------------
# 3. Execution
# -------------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def scanflow_execute_step(step_run: StepRun) -> ExecutionResult | None:
    """Run the step's code: the first runtime that returns a result is the one that ran it.

    A runtime looks at ``step_run.step.spec`` (``call``, ``command``, ``image``, ``runtime``) and
    returns ``None`` when the step is not its kind. It writes the step's outputs to the paths in
    ``step_run.outputs``, sends metrics through ``step_run.recorder``, writes the step's log to
    ``step_run.log_path``, enforces ``step_run.timeout`` and raises
    :class:`~scanflow_core.errors.StepFailed` when the code fails.

    Returns:
        :class:`~scanflow_core.records.ExecutionResult` naming the runtime.
    """


# -------------------------------------------------------------------------------------------------
# 4. Checking
# -------------------------------------------------------------------------------------------------


@hookspec
def scanflow_checker_names() -> Iterable[str] | None:
    """The checker names (``use:`` in a spec) this plugin answers for; used to list and validate."""


@hookspec(firstresult=True)
def scanflow_check(
    step_run: StepRun, check: CheckSpec, target: str, path: Path
) -> CheckResult | list[CheckResult] | None:
    """Run one check of the spec on one target (an input before execution, an output after).

    Args:
        step_run: the step being checked.
        check: the check as the spec gives it; ``check.use`` names the checker and
            ``check.options`` holds its own settings.
        target: the input or output name.
        path: where that artifact is.

    Returns:
        A result (or several) when this plugin knows ``check.use``, else ``None``. The core
        applies the spec's policy and severity, and turns a crash or a timeout into a failed
        result with the reason.
    """


# -------------------------------------------------------------------------------------------------
# 5. Stage metadata (MLSpec's verification of what each stage records)
# -------------------------------------------------------------------------------------------------


@hookspec
def scanflow_stage_requirements(stage: str) -> Iterable[Requirement] | None:
    """What a step of ``stage`` must record (params, metrics, inputs, outputs).

    The results of every plugin are combined; the step path compares them with what the step
    recorded and reports what is missing or mistyped.
    """


# -------------------------------------------------------------------------------------------------
# 6. Tracking
# -------------------------------------------------------------------------------------------------


@hookspec
def scanflow_track(run: WorkflowRun, step_run: StepRun | None, batch: TrackingBatch) -> None:
    """Record params, metrics, tags, artifacts, check and objective results.

    Called with batches while a step runs and when it ends (``step_run`` set), and at the end of
    the workflow for its objectives (``step_run`` is ``None``). A tracker that cannot reach its
    store must keep the batch (spool it) rather than drop it; raising here fails the step.
    """


# -------------------------------------------------------------------------------------------------
# 7. Attestation
# -------------------------------------------------------------------------------------------------


@hookspec
def scanflow_attest_step(step_run: StepRun) -> Iterable[Path] | None:
    """Write the attestations of a finished step (after its outputs were checked).

    Returns the files written (``<run>/attestations/<step>.intoto.jsonl``) so trackers can log them.
    """


@hookspec(firstresult=True)
def scanflow_sign(payload: bytes, payload_type: str) -> dict[str, Any] | None:
    """Sign ``payload`` and return a DSSE envelope (``payload``, ``payloadType``, ``signatures``).

    The first signer that answers is used; a KMS or Sigstore signer replaces the built-in
    Ed25519 signer by registering before it (``tryfirst=True``).
    """


# -------------------------------------------------------------------------------------------------
# 8. Sidecars
# -------------------------------------------------------------------------------------------------


@hookspec
def scanflow_sidecars(run: WorkflowRun) -> Iterable[SidecarSpec] | None:
    """Containers to start beside the workflow's steps (an MLflow server, a checking service).

    Called by container runtimes when a run starts; ``SidecarSpec.inject_env`` is added to every
    step's environment (``MLFLOW_TRACKING_URI`` pointing at the tracker sidecar, say).
    """
