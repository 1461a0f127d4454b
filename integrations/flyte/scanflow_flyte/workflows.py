"""A whole flytekit workflow built from a ``scanflow.yaml``, with flytekit's imperative API."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flytekit import FlyteContext, WorkflowFailurePolicy
from flytekit.core.interface import Interface
from flytekit.core.node import Node
from flytekit.core.promise import VoidPromise
from flytekit.core.workflow import GLOBAL_START_NODE, ImperativeWorkflow, get_promise, get_promise_map

from scanflow_flyte.errors import ScanflowRunFailed
from scanflow_flyte.runs import local_execution_id, scanflow_run_id
from scanflow_flyte.step_tasks import (
    ScanflowContainerTask,
    ScanflowFinishTask,
    ScanflowStepTask,
    StepConfig,
    finish_spec,
)

__all__ = ["FINISH_NODE", "RUN_ID_INPUT", "ScanflowWorkflow", "workflow_from_spec"]

#: The workflow's input naming the Scanflow run (default ``""``: the execution id).
RUN_ID_INPUT = "run_id"
#: The name of the last node, which closes the Scanflow run.
FINISH_NODE = "scanflow_finish"


class ScanflowWorkflow(ImperativeWorkflow):  # type: ignore[misc]
    """An imperative workflow whose local execution behaves as a Flyte cluster runs it.

    * Each local execution gets an execution id of its own (flytekit gives every local run
      ``local``), and so a Scanflow run of its own.
    * The failure policy ``FAIL_AFTER_EXECUTABLE_NODES_COMPLETE`` is honoured: when a node fails,
      the nodes that do not depend on it still run, then the workflow fails (flytekit's local
      execution stops at the first failure whatever the policy says).
    * The failure node (the run's closing task) runs when the workflow fails, in the same
      execution (flytekit calls a failure handler locally only for ``@workflow(on_failure=…)``).
    """

    def __init__(self, name: str, config: StepConfig) -> None:
        super().__init__(name, failure_policy=WorkflowFailurePolicy.FAIL_AFTER_EXECUTABLE_NODES_COMPLETE)
        self.step_config = config
        self.step_nodes: dict[str, Node] = {}

    def add_run_id_input(self) -> Any:
        """Add the ``run_id`` input: a ``str``, default ``""`` (``add_workflow_input`` gives no default)."""
        promise = self.add_workflow_input(RUN_ID_INPUT, str)
        interface = self.python_interface
        self._python_interface = Interface(
            inputs={**interface.inputs_with_defaults, RUN_ID_INPUT: (str, "")},
            outputs=interface.outputs,
            output_tuple_name=interface.output_tuple_name,
        )
        return promise

    def local_execute(self, ctx: FlyteContext, **kwargs: Any) -> Any:
        with local_execution_id(ctx) as inner:
            try:
                return super().local_execute(inner, **kwargs)
            except Exception as exc:
                if not isinstance(exc, ScanflowRunFailed):  # that one comes from the closing node itself
                    self._close_failed_run(kwargs.get(RUN_ID_INPUT))
                raise

    def _close_failed_run(self, run_id_input: Any) -> None:
        """What the failure node does on a cluster: record the steps that never ran, close the run."""
        try:
            run_id = scanflow_run_id(_native_run_id(run_id_input) or None)
        except ValueError:
            return  # the run id was refused before any task ran: there is no run to close
        finish_spec(self.step_config, run_id, raise_on_failure=False)

    def execute(self, **kwargs: Any) -> Any:
        """Run the nodes in order; a node whose upstream failed does not run; raise the first failure."""
        outputs: dict[Any, dict[str, Any]] = {GLOBAL_START_NODE: dict(kwargs)}
        failed: set[str] = set()
        first_error: BaseException | None = None
        for node in self.compilation_state.nodes:
            outputs.setdefault(node, {})
            if any(up.id in failed for up in node.upstream_nodes):
                failed.add(node.id)
                continue
            entity = node.flyte_entity
            try:
                results = entity(**get_promise_map(node.bindings, outputs))
            except Exception as exc:
                failed.add(node.id)
                first_error = first_error or exc
                continue
            names = list(entity.python_interface.outputs)
            if isinstance(results, VoidPromise) or results is None or not names:
                continue
            values = [results] if len(names) == 1 else list(results)
            outputs[node].update(zip(names, values, strict=True))
        if first_error is not None:
            raise first_error
        if not self.python_interface.outputs:
            return VoidPromise(self.name)
        found = [get_promise(b.binding, outputs) for b in self.output_bindings]
        return found[0] if len(found) == 1 else tuple(found)


def _native_run_id(value: Any) -> str:
    """The ``run_id`` input as the workflow received it (a native value or a promise of a literal)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    literal = getattr(value, "val", None)
    scalar = getattr(literal, "scalar", None)
    primitive = getattr(scalar, "primitive", None)
    return str(getattr(primitive, "string_value", "") or "")


def _pod_template(spec: Path, step: str, options: bool | Mapping[str, Any]) -> Any:
    from scanflow_flyte.pods import scanflow_pod_template

    extra = dict(options) if isinstance(options, Mapping) else {}
    extra.setdefault("run_id_template", "{{.inputs.run_id}}")
    return scanflow_pod_template(spec, step, **extra)


def workflow_from_spec(
    path: str | Path,
    name: str | None = None,
    params: Mapping[str, Any] | None = None,
    home: str | Path | None = None,
    *,
    pod_templates: bool | Mapping[str, Any] = False,
) -> ScanflowWorkflow:
    """Build a flytekit workflow that runs the workflow ``path``: one node per step, then ``scanflow_finish``.

    Args:
        path: the ``scanflow.yaml``. It is loaded (and so validated) here; nothing is run or
            written until the workflow runs.
        name: the Flyte workflow's name; default: the Scanflow workflow's name.
        params: ``--param`` style overrides for every step.
        home: where runs live; default ``$SCANFLOW_HOME`` or ``./.scanflow`` where the tasks run.
        pod_templates: give each step with an image the pod template of
            :func:`scanflow_flyte.pods.scanflow_pod_template` (for a cluster: the step path in the
            step's image, with the tracker and checker sidecars); a mapping is passed to it as options.

    Returns:
        The workflow. Input ``run_id`` (default ``""``: the Flyte execution id, made unique in local
        execution) names the Scanflow run; output ``run_id`` is the run's id. Each step is a node
        (task ``<name>.<step>``) that runs after the steps it ``needs`` or reads from; a step with
        an ``image`` is a :class:`~scanflow_flyte.step_tasks.ScanflowContainerTask`. The last node,
        ``scanflow_finish``, judges the objectives and finishes the run; when a step fails, the
        other branches run on, then the same task closes the run as the workflow's failure node.

    Raises:
        SpecError: the spec is not valid.

    Examples:
        >>> wf = workflow_from_spec("examples/digits/scanflow.yaml")  # doctest: +SKIP
        >>> run_id = wf()  # local execution  # doctest: +SKIP
    """
    from scanflow_core.errors import ScanflowError
    from scanflow_core.spec import load_workflow

    spec = Path(path).absolute()
    overrides = dict(params or {})
    workflow = load_workflow(spec, overrides)
    plan = workflow.plan
    if FINISH_NODE in plan.steps:
        raise ScanflowError(
            f"a step may not be named {FINISH_NODE!r} under Flyte: the workflow's last node is"
        )
    flyte_name = name or workflow.name
    wf = ScanflowWorkflow(flyte_name, StepConfig(spec, "", overrides, home))
    run_id = wf.add_run_id_input()
    for step, planned in plan.steps.items():
        config = StepConfig(spec, step, overrides, home)
        if planned.spec.image:
            extra = {"pod_template": _pod_template(spec, step, pod_templates)} if pod_templates else {}
            task: Any = ScanflowContainerTask(f"{flyte_name}.{step}", config, planned, **extra)
        else:
            task = ScanflowStepTask(f"{flyte_name}.{step}", config, planned)
        node = wf.add_entity(task, run_id=run_id)
        for upstream in planned.needs:
            wf.step_nodes[upstream].runs_before(node)
        wf.step_nodes[step] = node.with_overrides(node_name=step)
    finish = ScanflowFinishTask(f"{flyte_name}.{FINISH_NODE}", StepConfig(spec, "", overrides, home))
    last = wf.add_entity(finish, run_id=run_id).with_overrides(node_name=FINISH_NODE)
    for node in wf.step_nodes.values():
        node.runs_before(last)
    wf.add_workflow_output(RUN_ID_INPUT, last.outputs["run_id"])
    wf.add_on_failure_handler(finish)
    return wf
