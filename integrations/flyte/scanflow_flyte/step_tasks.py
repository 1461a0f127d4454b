"""The steps of a ``scanflow.yaml`` as flytekit tasks, each one call of the core's step path.

:class:`ScanflowStepTask` runs one step through :func:`scanflow_core.steps.run_step`;
:class:`ScanflowContainerTask` is the same for a step with an ``image``, in the shape of a flytekit
``ContainerTask``; :class:`ScanflowFinishTask` closes the run. Every task takes one input,
``run_id`` (empty: the execution's), and they all find the spec, params and home in their own
configuration, so :data:`resolver` can build any of them again in a Flyte pod
(``pyflyte-execute --resolver scanflow_flyte.step_tasks.resolver -- …``).

Why a step with an image is not run by ``ContainerTask`` itself: in local execution, flytekit 1.16
runs a ``ContainerTask`` with ``docker.from_env()`` as ``docker run --rm`` would: it pulls a missing
image from its registry, ignores the exit code (a failing container is a succeeding task), has no
timeout, no resource limits and no user mapping (outputs are root's), and only prints the logs when
asked to. Scanflow's Docker runtime does each of these, and tracks and attests the step, so the
local execution of :class:`ScanflowContainerTask` is the step path, whose runtime is Docker. What a
remote cluster gets is the raw container (the step's image and command, its paths those of the
Docker runtime, ``/scanflow/...``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional

from flytekit import ContainerTask, Resources, TaskMetadata
from flytekit.core.base_task import TaskResolverMixin
from flytekit.core.interface import Interface
from flytekit.core.python_auto_container import PythonAutoContainerTask
from flytekit.types.error import FlyteError

from scanflow_flyte.errors import ScanflowRunFailed, from_core
from scanflow_flyte.runs import (
    attempt_number,
    is_local_execution,
    open_spec_run,
    scanflow_run_id,
    upstream_skipped,
)

__all__ = [
    "TASK_TYPE",
    "ScanflowContainerTask",
    "ScanflowFinishTask",
    "ScanflowStepTask",
    "ScanflowTaskResolver",
    "StepConfig",
    "resolver",
    "run_spec_step",
]

#: The task type of every Scanflow task in Flyte's task template: a plain Python task, which every
#: Flyte cluster runs with no backend plugin (the resolver, not the type, finds the task).
TASK_TYPE = "python-task"


class StepConfig:
    """Where a task's step comes from: the spec, the ``--param`` overrides, the home, the step name.

    Args:
        spec: the ``scanflow.yaml``.
        step: the step's qualified name; empty for the finish task.
        params: overrides (``{"epochs": 5, "train.lr": 0.1}``).
        home: where runs live; default ``$SCANFLOW_HOME`` or ``./.scanflow`` where the task runs.
    """

    def __init__(
        self, spec: str | Path, step: str = "", params: Mapping[str, Any] | None = None, home: Any = None
    ) -> None:
        if not isinstance(spec, str | Path) or not str(spec):
            raise ValueError(f"spec must be the path of a scanflow.yaml, not {spec!r}")
        if params is not None and not isinstance(params, Mapping):
            raise TypeError(f"params must be a mapping of overrides, not {type(params).__name__}")
        if home is not None and not isinstance(home, str | Path):
            raise TypeError(f"home must be a path, not {type(home).__name__}")
        self.spec = str(Path(spec).absolute())
        self.step = step
        self.params: dict[str, Any] = dict(params or {})
        self.home = str(home) if home is not None else None

    def loader_args(self, kind: str, name: str) -> list[str]:
        params = json.dumps(self.params, sort_keys=True, default=str)
        return ["kind", kind, "name", name, "spec", self.spec, "step", self.step, "params", params] + (
            ["home", self.home] if self.home is not None else []
        )

    def __repr__(self) -> str:
        return (
            f"StepConfig(spec={self.spec!r}, step={self.step!r}, params={self.params!r}, home={self.home!r})"
        )


def run_spec_step(config: StepConfig, run_id: str = "") -> dict[str, str]:
    """Run one step of a spec in this task; return its outputs (output name → path).

    A step whose upstream step was skipped is skipped too, as under the local runner. In local
    execution the step is retried here as often as its ``retries`` (Flyte retries remote tasks
    itself); a failed ``fail`` check is never retried.

    Raises:
        ScanflowStepFailed: the step failed.
        ScanflowCheckFailed: a ``fail`` check did not pass (the message names it).
    """
    from scanflow_core.errors import CheckFailed, StepFailed
    from scanflow_core.steps import run_step

    run = open_spec_run(config.spec, config.params, scanflow_run_id(run_id or None), config.home)
    skipped_by = upstream_skipped(run, config.step)
    if skipped_by is not None:
        reason = f"upstream step {skipped_by!r} was skipped"
        run.record_step(
            config.step,
            {
                "status": "skipped",
                "stage": run.plan[config.step].stage,
                "reason": reason,
                "metrics": {},
                "outputs": {},
            },
        )
        return {}
    local = is_local_execution()
    attempt = 1 if local else attempt_number()
    retries = run.plan[config.step].spec.retries if local else 0
    while True:
        try:
            step_run = run_step(run, config.step, attempt=attempt)
            break
        except CheckFailed as exc:
            raise from_core(exc) from exc
        except StepFailed as exc:
            if attempt > retries:
                raise from_core(exc) from exc
            time.sleep(min(0.1 * 2**attempt, 5.0))
            attempt += 1
    if step_run.status == "skipped":
        return {}
    return {name: str(path) for name, path in step_run.outputs.items()}


_STEP_INTERFACE = Interface(inputs={"run_id": (str, "")}, outputs={"artifacts": dict[str, str]})
# A failure node receives the workflow's inputs and, when it asks for it, the error (an Optional input).
_FINISH_INTERFACE = Interface(
    inputs={"run_id": (str, ""), "err": (Optional[FlyteError], None)},  # noqa: UP045
    outputs={"run_id": str},
)


def _metadata(planned: Any) -> TaskMetadata:
    spec = planned.spec
    timeout = timedelta(seconds=spec.timeout) if spec.timeout else None
    return TaskMetadata(retries=spec.retries, timeout=timeout)


def _resources(planned: Any) -> Resources | None:
    from scanflow_core.runtimes.docker import memory_bytes

    wanted = planned.spec.resources
    if wanted.cpu is None and wanted.memory is None and not wanted.gpu:
        return None
    return Resources(
        cpu=str(wanted.cpu) if wanted.cpu is not None else None,
        mem=str(memory_bytes(wanted.memory)) if wanted.memory is not None else None,
        gpu=str(wanted.gpu) if wanted.gpu else None,
    )


class ScanflowStepTask(PythonAutoContainerTask[StepConfig]):  # type: ignore[misc]
    """One step of a Scanflow workflow as a flytekit task.

    Args:
        name: the task's name (:func:`~scanflow_flyte.workflow_from_spec`: ``<workflow>.<step>``).
        config: the spec, step, overrides and home.
        planned: the step as the loaded spec plans it (for its retries, timeout and resources);
            loaded from ``config`` when not given.
        **kwargs: passed to flytekit's ``PythonAutoContainerTask`` (``container_image``, ``environment``, …).

    Input ``run_id`` (default ``""``: the execution's); output ``artifacts``, output name → path.

    Examples:
        >>> task = ScanflowStepTask("digits.train", StepConfig("scanflow.yaml", "train"))  # doctest: +SKIP
        >>> task(run_id="nightly-1")  # doctest: +SKIP
        {'model': '/…/.scanflow/runs/nightly-1/steps/train/outputs/model.pt'}
    """

    def __init__(self, name: str, config: StepConfig, planned: Any = None, **kwargs: Any) -> None:
        planned = planned if planned is not None else _planned(config)
        kwargs.setdefault("metadata", _metadata(planned))
        resources = _resources(planned)
        if resources is not None:
            kwargs.setdefault("requests", resources)
        super().__init__(
            name=name,
            task_config=config,
            task_type=TASK_TYPE,
            interface=_STEP_INTERFACE,
            task_resolver=resolver,
            **kwargs,
        )
        self.step_config = config
        self.step = config.step

    def execute(self, **kwargs: Any) -> dict[str, str]:
        return run_spec_step(self.step_config, kwargs.get("run_id", ""))


class ScanflowContainerTask(ContainerTask):  # type: ignore[misc]
    """A step with an ``image``: a flytekit ``ContainerTask`` for a remote cluster, the step path here.

    Locally (``wf()``, ``pyflyte run``) the step runs through Scanflow's Docker runtime, tracked,
    checked and attested like every step. Registered on a cluster it is a raw container. With a
    ``pod_template`` (:func:`scanflow_flyte.pods.scanflow_pod_template`), the container runs the
    template's command, the step path in the step's image (``python3 -m scanflow_core step …``) beside
    the tracker and checker sidecars. Without one it runs the step's command alone, its placeholders
    filled in with the Docker runtime's paths (``{inputs.x}`` → ``/scanflow/inputs/x``, ``{outputs.y}``
    → ``/scanflow/outputs/y``) and ``{run_id}`` with the task's ``run_id`` input.

    Args:
        name: the task's name.
        config: the spec, step, overrides and home.
        planned: the planned step (loaded from ``config`` when not given).
        **kwargs: passed to ``ContainerTask`` (``pod_template``, ``secret_requests``, …).
    """

    def __init__(self, name: str, config: StepConfig, planned: Any = None, **kwargs: Any) -> None:
        planned = planned if planned is not None else _planned(config)
        if not planned.spec.image:
            raise ValueError(f"step {config.step!r} has no image: use ScanflowStepTask")
        kwargs.setdefault("metadata", _metadata(planned))
        resources = _resources(planned)
        if resources is not None:
            kwargs.setdefault("requests", resources)
        template = kwargs.get("pod_template")
        command = _template_command(template) if template is not None else None
        super().__init__(
            name=name,
            image=planned.spec.image,
            command=command or remote_command(planned),
            inputs={"run_id": (str, "")},
            outputs={"artifacts": dict[str, str]},
            input_data_dir="/var/inputs",
            output_data_dir="/var/outputs",
            **kwargs,
        )
        self.step_config = config
        self.step = config.step

    def execute(self, **kwargs: Any) -> dict[str, str]:
        return run_spec_step(self.step_config, kwargs.get("run_id", ""))


def _template_command(template: Any) -> list[str] | None:
    """The primary container's command (and args) of a pod template, if it names one."""
    for container in template.pod_spec.containers or []:
        if container.name == template.primary_container_name and container.command:
            return [*container.command, *(container.args or [])]
    return None


def remote_command(planned: Any) -> list[str]:
    """The step's command as a raw container runs it: the Docker runtime's paths, Flyte's run id input."""
    from scanflow_core.plugins import get_plugin_manager
    from scanflow_core.runs import StepRun, WorkflowRun
    from scanflow_core.runtimes import docker as docker_runtime
    from scanflow_core.runtimes.local import command_argv

    run = WorkflowRun(
        planned.workflow, run_id="{{.inputs.run_id}}", home="/scanflow", pm=get_plugin_manager(autoload=False)
    )
    step_run = StepRun(run, planned)
    where = {
        path: f"{docker_runtime.INPUTS}/{name}{''.join(path.suffixes)}"
        for name, path in step_run.inputs.items()
    }
    where.update(
        {
            p: f"{docker_runtime.OUTPUTS}/{p.relative_to(step_run.output_dir).as_posix()}"
            for p in step_run.outputs.values()
        }
    )
    return command_argv(step_run, lambda path: where.get(path, str(path)), python="python3")


class ScanflowFinishTask(PythonAutoContainerTask[StepConfig]):  # type: ignore[misc]
    """The last node of a workflow from a spec, and its failure handler: close the Scanflow run.

    It records the steps whose tasks never ran, judges the objectives and finishes the run. As the
    last node it fails (:class:`~scanflow_flyte.errors.ScanflowRunFailed`) when a blocking
    objective did not hold; as the failure handler (``err`` given) it only closes the run, which
    the failed step has already failed. Output ``run_id``: the Scanflow run id.
    """

    def __init__(self, name: str, config: StepConfig, **kwargs: Any) -> None:
        self.step_config = config
        super().__init__(
            name=name,
            task_config=config,
            task_type=TASK_TYPE,
            interface=_FINISH_INTERFACE,
            task_resolver=resolver,
            **kwargs,
        )

    def execute(self, **kwargs: Any) -> str:
        return finish_spec(self.step_config, kwargs.get("run_id", ""), raise_on_failure=not kwargs.get("err"))


def finish_spec(config: StepConfig, run_id: str = "", *, raise_on_failure: bool = True) -> str:
    """Close the run of a workflow from a spec; return its id.

    Raises:
        ScanflowRunFailed: ``raise_on_failure`` and a step failed or a blocking objective did not hold.
    """
    run = open_spec_run(config.spec, config.params, scanflow_run_id(run_id or None), config.home)
    from scanflow_core.runner import close_run

    outcome = close_run(run)
    if raise_on_failure and not outcome.ok:
        raise ScanflowRunFailed(outcome.run_id, outcome.status, outcome.objectives, outcome.message)
    return outcome.run_id


def _planned(config: StepConfig) -> Any:
    from scanflow_core.spec import load_workflow

    return load_workflow(config.spec, config.params).plan[config.step]


class ScanflowTaskResolver(TaskResolverMixin):  # type: ignore[misc]
    """Builds a Scanflow task again from its loader args, in a Flyte pod (or any process)."""

    @property
    def location(self) -> str:
        return "scanflow_flyte.step_tasks.resolver"

    @property
    def name(self) -> str:
        return "ScanflowTaskResolver"

    def loader_args(self, settings: Any, t: Any) -> list[str]:
        if hasattr(t, "resolver_args"):  # the closing tasks of a @scanflow_workflow
            found: list[str] = t.resolver_args()
            return found
        kind = "finish" if isinstance(t, ScanflowFinishTask) else "step"
        args: list[str] = t.step_config.loader_args(kind, t.name)
        return args

    def load_task(self, loader_args: list[str]) -> Any:
        if len(loader_args) % 2:
            raise ValueError(f"loader args come in pairs (key value), not {loader_args!r}")
        args = dict(zip(loader_args[::2], loader_args[1::2], strict=True))
        kind = args.get("kind")
        if kind in ("tasks_finish", "tasks_failure"):  # a @scanflow_workflow's: found on the workflow
            import importlib

            workflow = getattr(importlib.import_module(args["module"]), args["function"])
            return workflow.scanflow_finish if kind == "tasks_finish" else workflow.on_failure
        missing = {"kind", "name", "spec", "step", "params"} - set(args)
        if missing:
            raise ValueError(f"loader args lack {', '.join(sorted(missing))}: {loader_args!r}")
        config = StepConfig(args["spec"], args["step"], json.loads(args["params"]), args.get("home"))
        if kind == "finish":
            return ScanflowFinishTask(args["name"], config)
        if kind == "step":
            return ScanflowStepTask(args["name"], config)
        raise ValueError(f"loader arg kind must be step, finish, tasks_finish or tasks_failure, not {kind!r}")

    def get_all_tasks(self) -> list[Any]:
        return []


#: The resolver of every Scanflow spec task.
resolver = ScanflowTaskResolver()
