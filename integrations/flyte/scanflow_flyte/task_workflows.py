"""``@scanflow_workflow``: a flytekit workflow of Scanflow tasks that closes its Scanflow run.

Every :func:`~scanflow_flyte.scanflow_task` of one workflow execution is a step of one Scanflow run
(named by the execution id). ``@scanflow_workflow`` is flytekit's ``@workflow`` with three things
added, so that the run ends as a run of a spec ends:

* a last node, ``scanflow-finish``, after every other node: it writes ``run.json`` with every step
  and fires ``scanflow_workflow_finish`` (the MLflow tracker closes the parent run);
* a failure node (``on_failure``) that does the same, with status ``failed``, when a task fails;
* in local execution (``wf()``, ``pyflyte run``), an execution id of its own for each execution
  (flytekit gives every local run ``local``), so that two local runs never share a Scanflow run.

Under a plain ``@workflow`` the tasks of a remote execution share a run too, but nothing closes it
(``scanflow_core.tasks.finish_task_run`` can), and in local execution each call is a run of its own.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, Optional

from flytekit import workflow as flyte_workflow
from flytekit.core.context_manager import FlyteContextManager
from flytekit.core.interface import Interface, transform_function_to_interface
from flytekit.core.python_auto_container import PythonAutoContainerTask
from flytekit.types.error import FlyteError

from scanflow_flyte.runs import ORCHESTRATOR, execution_run_id, local_execution_id, plugin_manager

__all__ = ["FINISH_NODE", "ScanflowTasksFinish", "finish_tasks_run", "scanflow_workflow"]

#: The id of the node that closes the run.
FINISH_NODE = "scanflow-finish"


def finish_tasks_run(default_workflow: str) -> str | None:
    """Close the Scanflow run of this execution's tasks, if one was opened; return its status.

    The run's workflow name is the one its first task recorded (``default_workflow`` otherwise).
    Nothing is done in a local execution without an execution id of its own (its calls' runs
    closed themselves) or when no Scanflow task ran.
    """
    from scanflow_core.runs import scanflow_home
    from scanflow_core.tasks import finish_task_run

    run_id = execution_run_id()
    if run_id is None:
        return None
    manifest = scanflow_home() / "runs" / run_id / "run.json"
    try:
        recorded = json.loads(manifest.read_text(encoding="utf-8")).get("workflow")
    except (OSError, ValueError):
        return None
    return finish_task_run(
        run_id, str(recorded or default_workflow), pm=plugin_manager(), orchestrator=ORCHESTRATOR
    )


class ScanflowTasksFinish(PythonAutoContainerTask[str]):  # type: ignore[misc]
    """Close the Scanflow run of a ``@scanflow_workflow`` execution (its last node, or its failure node).

    Args:
        name: the task's name.
        workflow: the Scanflow workflow name to use when no task recorded one.
        module / function: where the decorated workflow lives (for a Flyte pod to find this task).
        inputs: the interface's inputs (a failure node takes the workflow's inputs and ``err``).
    """

    def __init__(
        self,
        name: str,
        workflow: str,
        module: str,
        function: str,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        from scanflow_flyte.step_tasks import TASK_TYPE, resolver

        self.workflow_name, self.module, self.function = workflow, module, function
        self.failure = inputs is not None
        super().__init__(
            name=name,
            task_config=workflow,
            task_type=TASK_TYPE,
            interface=Interface(inputs=inputs or {}, outputs={}),
            task_resolver=resolver,
            **kwargs,
        )

    def resolver_args(self) -> list[str]:
        """How :data:`~scanflow_flyte.step_tasks.resolver` finds this task again: on its workflow."""
        kind = "tasks_failure" if self.failure else "tasks_finish"
        return ["kind", kind, "module", self.module, "function", self.function]

    def execute(self, **kwargs: Any) -> None:
        finish_tasks_run(self.workflow_name)


def scanflow_workflow(_workflow_function: Callable[..., Any] | None = None, **workflow_kwargs: Any) -> Any:
    """flytekit's ``@workflow`` for Scanflow tasks: the execution's Scanflow run is closed at its end.

    Args:
        **workflow_kwargs: passed to :func:`flytekit.workflow` (``failure_policy``, ``interruptible``,
            ``docs``, …); ``on_failure`` is Scanflow's own.

    Returns:
        A flytekit ``PythonFunctionWorkflow`` (the decorator, when called with keyword arguments only).

    Examples:
        >>> @scanflow_workflow  # doctest: +SKIP
        ... def digits(seed: int = 0) -> float:
        ...     data = ingest(seed=seed)
        ...     return evaluate(model=train(data=data), data=data)
    """
    if "on_failure" in workflow_kwargs:
        raise TypeError("scanflow_workflow() sets on_failure itself: it closes the Scanflow run")

    def decorate(fn: Callable[..., Any]) -> Any:
        from scanflow_core.tasks import valid_name

        name = valid_name(getattr(fn, "__name__", "workflow"))
        module, function = str(fn.__module__), str(fn.__name__)
        interface = transform_function_to_interface(fn)
        finish = ScanflowTasksFinish(f"{module}.{function}.scanflow_finish", name, module, function)
        failure_inputs: dict[str, Any] = dict(interface.inputs_with_defaults)
        failure_inputs["err"] = (Optional[FlyteError], None)  # noqa: UP045 (flytekit reads typing.Optional)
        on_failure = ScanflowTasksFinish(
            f"{module}.{function}.scanflow_failure", name, module, function, inputs=failure_inputs
        )

        @functools.wraps(fn)
        def body(**kwargs: Any) -> Any:
            ctx = FlyteContextManager.current_context()
            if ctx.compilation_state is not None:  # compiling: the finish node goes after every node
                outputs = fn(**kwargs)
                nodes = list(ctx.compilation_state.nodes)
                finish()
                last = ctx.compilation_state.nodes[-1].with_overrides(node_name=FINISH_NODE)
                for node in nodes:
                    node.runs_before(last)
                return outputs
            with local_execution_id(ctx):
                try:
                    outputs = fn(**kwargs)
                except Exception:
                    finish_tasks_run(name)
                    raise
                finish()
                return outputs

        wf = flyte_workflow(body, on_failure=on_failure, **workflow_kwargs)
        wf.scanflow_finish = finish
        return wf

    return decorate(_workflow_function) if _workflow_function is not None else decorate
