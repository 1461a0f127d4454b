"""The Scanflow run of a Prefect flow run: its id, opening it, and closing it.

Every task of one flow run works on one Scanflow run, whose directory under ``home`` is the state
the tasks share. Its id is the flow's ``run_id`` parameter (``scanflow_run_id`` for a flow of
decorated tasks) when given, else the flow run's name and the start of its id
(``crimson-otter-3fa9c1d2``): readable in a listing, and unique.

:func:`finish_spec_run` closes a spec's run with the core's ``close_run``, as every adapter does.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pluggy

    from scanflow_core.runner import RunOutcome
    from scanflow_core.runs import WorkflowRun

__all__ = [
    "claim_step_name",
    "finish_spec_run",
    "flow_run_scanflow_id",
    "open_spec_run",
    "plugin_manager",
    "safe_run_id",
]

_RUN_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,199}$")
#: Runs opened by a flow in this process, by (home, run id): its tasks share the flow's run object
#: (one plugin manager, one tracker) instead of loading the spec again.
_open_runs: dict[tuple[str, str], WorkflowRun] = {}
_open_lock = threading.Lock()
#: Step names claimed in this process: task run id → name, and (run directory, task) → next number.
_claimed: dict[str, str] = {}
_next_number: dict[tuple[str, str], int] = {}
_claims_lock = threading.Lock()
_MAX_CLAIMS = 10_000


def plugin_manager() -> pluggy.PluginManager:
    """This process's plugin manager (the core's ``shared_plugin_manager``: entry points load once)."""
    from scanflow_core.plugins import shared_plugin_manager

    return shared_plugin_manager()


def safe_run_id(text: str, argument: str = "run_id") -> str:
    """``text`` if it is a valid Scanflow run id; else ``ValueError`` naming ``argument``.

    A run id is a folder name: letters, digits, ``.``, ``_`` and ``-``, at most 200, not starting
    with ``.`` or ``-``.
    """
    if not isinstance(text, str) or not _RUN_ID.match(text):
        raise ValueError(
            f"{argument} {text!r} is not a Scanflow run id (expected letters, digits, '.', '_' and '-', "
            "at most 200, not starting with '.' or '-')"
        )
    return text


def flow_run_scanflow_id(flow_run: Any, explicit: str | None = None, argument: str = "run_id") -> str:
    """The Scanflow run id of a Prefect flow (or task) run.

    Args:
        flow_run: the Prefect run (``name`` and ``id`` are read).
        explicit: a run id given by the user (a flow parameter); checked and used as it is.
        argument: the parameter's name, for the error when ``explicit`` is not a run id.

    Returns:
        ``explicit``, else ``<name>-<first 8 hex digits of the id>`` with every character other than
        letters, digits, ``.``, ``_`` and ``-`` replaced by ``-``.

    Examples:
        >>> import uuid, types
        >>> run = types.SimpleNamespace(name="crimson-otter", id=uuid.UUID(int=0xABCDEF12 << 96))
        >>> flow_run_scanflow_id(run)
        'crimson-otter-abcdef12'
    """
    if explicit:
        return safe_run_id(explicit, argument)
    name = re.sub(r"[^A-Za-z0-9._-]", "-", str(getattr(flow_run, "name", "") or "")).strip(".-")
    return f"{name or 'prefect-run'}-{getattr(flow_run.id, 'hex', str(flow_run.id))[:8]}"


def open_spec_run(
    spec: str | Path,
    overrides: Mapping[str, Any],
    run_id: str,
    home: str | Path | None,
    *,
    register: bool = False,
) -> WorkflowRun:
    """The Scanflow run ``run_id`` of the workflow ``spec``, opened (the start hook fires once per run).

    Args:
        spec: the ``scanflow.yaml``.
        overrides: ``--param`` style overrides.
        run_id: the run.
        home: where runs live (default ``$SCANFLOW_HOME`` or ``./.scanflow``).
        register: keep the run object for the tasks of this process (the flow's own run);
            :func:`finish_spec_run` lets it go.

    Returns:
        The run the flow registered in this process, when there is one; else a newly opened one.
    """
    from scanflow_core.runs import WorkflowRun, scanflow_home
    from scanflow_core.spec import load_workflow

    key = (str(scanflow_home(home)), run_id)
    with _open_lock:
        run = _open_runs.get(key)
    if run is not None:
        return run
    workflow = load_workflow(spec, dict(overrides))
    run = WorkflowRun(
        workflow,
        run_id=run_id,
        home=home,
        pm=plugin_manager(),
        params=dict(overrides),
        orchestrator="prefect",
    )
    if run.open():
        run.pm.hook.scanflow_workflow_start(run=run)
    if register:
        with _open_lock:
            _open_runs[key] = run
    return run


def release_run(run: WorkflowRun) -> None:
    """Forget a run registered by :func:`open_spec_run` (its flow is done with it)."""
    with _open_lock:
        _open_runs.pop((str(run.home), run.run_id), None)


def finish_spec_run(run: WorkflowRun) -> RunOutcome:
    """Close a spec's run once every step's task is done (the core's
    :func:`~scanflow_core.runner.close_run`), then forget it in this process.

    Returns:
        The outcome; ``status`` is ``failed`` when a step neither succeeded nor was skipped. A
        blocking objective that did not hold is in ``outcome.missed``.
    """
    from scanflow_core.runner import close_run

    try:
        return close_run(run)
    finally:
        release_run(run)


def claim_step_name(run_directory: Path, base: str, task_run_id: str) -> str:
    """A step name for one task run that no other task run of the run has: ``base``, else
    ``base_2``, ``base_3``, … (the same task called twice in a flow makes ``train`` and ``train_2``).

    The claim is a file ``<run>/prefect/<name>.task-run`` holding the task run's id, made with
    ``O_EXCL``, so task runs in other processes never get the same name. This process remembers its
    claims: a retry of a task run (Prefect retries it in the same process) gets its name back, and
    the hundredth call of a task does not try the 99 names before it.
    """
    key = (str(run_directory), base)
    with _claims_lock:
        known = _claimed.get(task_run_id)
        start = _next_number.get(key)
    if known is not None:
        return known
    folder = run_directory / "prefect"
    n = start or 1
    while True:
        name = base if n == 1 else f"{base}_{n}"
        marker = folder / f"{name}.task-run"
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileNotFoundError:  # the run directory is new (or was removed since)
            folder.mkdir(parents=True, exist_ok=True)
            continue
        except FileExistsError:
            if marker.read_text(encoding="utf-8").strip() == task_run_id:
                return name
            n += 1
            continue
        try:
            os.write(fd, (task_run_id + "\n").encode())
        finally:
            os.close(fd)
        with _claims_lock:
            if len(_claimed) > _MAX_CLAIMS:  # a long-lived process (a served flow): the files still hold them
                _claimed.clear()
                _next_number.clear()
            _claimed[task_run_id] = name
            _next_number[key] = n + 1
        return name
