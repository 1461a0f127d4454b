"""One Flyte execution is one Scanflow run: its id, opening it, and closing it.

Every task of one workflow execution shares one Scanflow run, whose directory under ``home`` is the
state the tasks share. Its id is the workflow's ``run_id`` input when given, else the Flyte execution
id (``flytekit.current_context().execution_id.name``) with every character other than letters,
digits, ``.``, ``_`` and ``-`` replaced by ``-``.

Local execution has no execution id of its own: flytekit gives every local run the same one
(``local:local:local``). A Scanflow workflow (:func:`~scanflow_flyte.workflow_from_spec`,
:func:`~scanflow_flyte.scanflow_workflow`) therefore gives each local execution a fresh one,
``local-<time>-<random>``, in :func:`local_execution_id`, so that two local runs never share a run
directory.

Closing a run is the core's :func:`scanflow_core.runner.close_run`, as under every orchestrator.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flytekit import FlyteContext

    from scanflow_core.plugins import PluginManager
    from scanflow_core.runs import WorkflowRun

__all__ = [
    "ORCHESTRATOR",
    "attempt_number",
    "execution_run_id",
    "is_local_default",
    "is_local_execution",
    "local_execution_id",
    "open_spec_run",
    "plugin_manager",
    "scanflow_run_id",
]

#: ``orchestrator`` in ``run.json``.
ORCHESTRATOR = "flyte"
#: flytekit's execution id (project, domain and name) in every local execution.
LOCAL_DEFAULT = "local"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")

_pm: PluginManager | None = None
_pm_key: tuple[str | None, ...] | None = None
_pm_lock = threading.Lock()


def plugin_manager() -> PluginManager:
    """The plugin manager of this process's Scanflow runs, made once.

    A manager costs tens of milliseconds to make (entry points, validation) and keeps no per-run
    state (plugins keep theirs in ``run.state``), so every task of every run in one process shares
    one, as the local runner shares one among the steps of a run. It is made again when
    ``SCANFLOW_DISABLE_PLUGIN_AUTOLOAD`` changes.
    """
    global _pm, _pm_key
    from scanflow_core.plugins import DISABLE_AUTOLOAD, get_plugin_manager

    key = (os.environ.get(DISABLE_AUTOLOAD),)
    with _pm_lock:
        if _pm is None or key != _pm_key:
            _pm, _pm_key = get_plugin_manager(), key
        return _pm


# ------------------------------------------------------------------------------------------ run ids


def _execution_id() -> Any:
    from flytekit import current_context

    return current_context().execution_id


def is_local_default(execution_id: Any) -> bool:
    """Whether ``execution_id`` is flytekit's fixed local one (``local:local:local``)."""
    return bool(
        execution_id is None
        or (
            execution_id.project == LOCAL_DEFAULT
            and execution_id.domain == LOCAL_DEFAULT
            and execution_id.name == LOCAL_DEFAULT
        )
    )


def execution_run_id() -> str | None:
    """The Scanflow run id of the Flyte execution this code runs in (``None``: flytekit's local default).

    Examples:
        >>> execution_run_id()  # in a Flyte execution named "f3a9c1d2e4b5"  # doctest: +SKIP
        'f3a9c1d2e4b5'
    """
    execution_id = _execution_id()
    if is_local_default(execution_id):
        return None
    return _UNSAFE.sub("-", str(execution_id.name)).strip(".-") or None


def scanflow_run_id(explicit: str | None = None) -> str:
    """The run id of a task: ``explicit`` (a workflow's ``run_id`` input) when given, else the execution's.

    Raises:
        ValueError: ``explicit`` has characters a run directory cannot have, or neither an explicit
            id nor an execution id is there (a task run alone, outside a Scanflow workflow, locally).
    """
    if explicit:
        if _UNSAFE.search(explicit) or explicit.strip(".-") != explicit:
            raise ValueError(
                f"run_id {explicit!r} may only hold letters, digits, '.', '_' and '-' "
                "(and not start or end with '.' or '-')"
            )
        return explicit
    found = execution_run_id()
    if found is None:
        raise ValueError(
            "this local execution has no execution id of its own (flytekit gives every local run "
            "'local'): run the task inside workflow_from_spec(...) or @scanflow_workflow, or pass run_id"
        )
    return found


@contextmanager
def local_execution_id(ctx: FlyteContext) -> Iterator[FlyteContext]:
    """Give a local execution an execution id of its own, ``local-<time>-<random>``.

    Remote executions (and a local one that already has an id) are left as they are.

    Args:
        ctx: the context the execution runs in.

    Returns:
        A context manager yielding the context to run the execution in.
    """
    from flytekit import FlyteContextManager
    from flytekit.core.context_manager import ExecutionParameters
    from flytekit.models.core.identifier import WorkflowExecutionIdentifier

    from scanflow_core.runs import new_run_id

    params = ctx.user_space_params
    if ctx.execution_state is None or params is None or not is_local_default(params.execution_id):
        yield ctx
        return
    execution_id = WorkflowExecutionIdentifier(LOCAL_DEFAULT, LOCAL_DEFAULT, f"local-{new_run_id()}")
    builder = ExecutionParameters.new_builder(params)
    builder.execution_id = execution_id
    state = ctx.execution_state.with_params(user_space_params=builder.build())
    with FlyteContextManager.with_context(ctx.with_execution_state(state)) as inner:
        yield inner


def is_local_execution() -> bool:
    """Whether this runs in flytekit's local execution (``wf()``, ``pyflyte run`` without ``--remote``)."""
    from flytekit.core.context_manager import FlyteContextManager

    state = FlyteContextManager.current_context().execution_state
    return bool(state is not None and state.is_local_execution())


def attempt_number() -> int:
    """This attempt of the task, from 1: Flyte's ``FLYTE_ATTEMPT_NUMBER`` (from 0) plus one."""
    try:
        return max(1, int(os.environ.get("FLYTE_ATTEMPT_NUMBER", "0")) + 1)
    except ValueError:
        return 1


# ------------------------------------------------------------------------------------------ spec runs


def open_spec_run(
    spec: str | Path,
    params: Mapping[str, Any],
    run_id: str,
    home: str | Path | None,
) -> WorkflowRun:
    """Load the spec and open the execution's Scanflow run (firing the start hook once per run)."""
    from scanflow_core.runs import WorkflowRun
    from scanflow_core.spec import load_workflow

    workflow = load_workflow(spec, dict(params))
    run = WorkflowRun(
        workflow,
        run_id=run_id,
        home=home,
        pm=plugin_manager(),
        params=dict(params),
        orchestrator=ORCHESTRATOR,
    )
    if run.open():
        run.pm.hook.scanflow_workflow_start(run=run)
    return run


def upstream_skipped(run: WorkflowRun, name: str) -> str | None:
    """The first upstream step of ``name`` that was skipped, if any (its downstream is skipped too)."""
    for upstream in run.plan[name].needs:
        if (run.step_summary(upstream) or {}).get("status") == "skipped":
            return upstream
    return None
