"""What every deployment target shares: each planned step as a container, and the sidecars beside them.

A step's container gets what the container runtimes give it (see :mod:`scanflow_core.runtimes.local`):
the same environment (``SCANFLOW_RUN_ID``, ``SCANFLOW_PARAM_*``, ``SCANFLOW_INPUT_*``,
``SCANFLOW_OUTPUT_*``, ``SCANFLOW_CALL``/``SCANFLOW_ARGS`` for a ``call``) and the same placeholders in
its ``command``, with paths inside the container:

==============================  ========================================================================
``/scanflow/run``               the run volume, shared by every step: ``steps/<step>/outputs/<name>``
``/scanflow/work``              the spec's folder (the step's working directory)
``/scanflow/lib/scanflow_core`` the ``scanflow_core`` source (``PYTHONPATH=/scanflow/lib``)
``/scanflow/inputs/<input>``    a workflow input file (Kubernetes: ``/scanflow/run/inputs/<input>``)
==============================  ========================================================================

A container runs the step's code only: its checks, tracking and attestations are the step path's work
(``scanflow run``, or an orchestrator adapter), not the deployment's. The code reaches the tracker
sidecar through ``MLFLOW_TRACKING_URI``.

Every step's command is wrapped in a small POSIX ``sh`` script (so an image needs ``sh``): it waits,
where the target cannot order services, until each upstream step has written its marker
``/scanflow/run/steps/<step>/.done``, makes the step's output folder, runs the command with its
``timeout`` and ``retries``, and writes the step's own marker when it succeeded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from scanflow_core.errors import SpecError
from scanflow_core.records import SidecarSpec
from scanflow_core.spec import PlannedStep, Workflow

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_TRACKER_IMAGE",
    "INPUTS_MOUNT",
    "LIB_MOUNT",
    "RUN_MOUNT",
    "SERVING_STAGES",
    "TRACKER_IMAGE_ENV",
    "WORK_MOUNT",
    "Deployment",
    "InputFile",
    "Sidecar",
    "StepContainer",
    "dns_name",
    "dump_yaml",
    "memory_bytes",
    "plan_deployment",
]

RUN_MOUNT = "/scanflow/run"
WORK_MOUNT = "/scanflow/work"
LIB_MOUNT = "/scanflow/lib"
INPUTS_MOUNT = "/scanflow/inputs"

#: Stages whose steps run until stopped (a server) instead of running to completion.
SERVING_STAGES = frozenset({"serving"})
#: The port a serving step listens on when its params have no ``port``.
DEFAULT_PORT = 8080

TRACKER_IMAGE_ENV = "SCANFLOW_TRACKER_IMAGE"
DEFAULT_TRACKER_IMAGE = "ghcr.io/mlflow/mlflow:v3.17.2"
TRACKER_PORT = 5000
TRACKER_DATA = "/mlflow"

DONE_MARKER = ".done"
_PYTHON = "python3"
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGTkmgt])?(i)?[Bb]?$")
_POWERS = {"K": 1, "M": 2, "G": 3, "T": 4}


@dataclass(frozen=True)
class InputFile:
    """A workflow input file a step reads (``name``: the step's name for it): where it is on this
    machine, and where the step sees it (named after the workflow input)."""

    name: str
    source: Path
    target: str


@dataclass(frozen=True)
class StepContainer:
    """One planned step as a container to deploy.

    ``name`` is a DNS-1123 label made from the step's qualified name (``prep.ingest`` → ``prep-ingest``);
    ``argv`` is the step's command with placeholders filled in, run by the wrapper :meth:`script`.
    """

    step: str
    name: str
    stage: str
    serving: bool
    image: str
    built: bool
    argv: list[str]
    env: dict[str, str]
    cpu: float | None
    memory: str | None
    gpu: int
    timeout: float | None
    retries: int
    needs: tuple[str, ...]
    port: int | None
    directory: Path
    input_files: tuple[InputFile, ...]
    output_dirs: tuple[str, ...]

    @property
    def step_dir(self) -> str:
        return f"{RUN_MOUNT}/steps/{self.step}"

    @property
    def done_file(self) -> str:
        """The marker the step writes on success; its dependants wait for it."""
        return f"{self.step_dir}/{DONE_MARKER}"

    def script(self, *, wait_for: Sequence[str] = (), timeout: bool = True, retries: bool = True) -> str:
        """The ``sh -c`` wrapper; the step's ``argv`` follows it as ``"$@"``.

        Args:
            wait_for: markers to wait for first (targets without ordering between services).
            timeout: enforce the step's ``timeout`` per attempt with ``timeout(1)``.
            retries: retry a failed attempt ``retries`` times (targets that do not retry themselves).
        """
        lines = ["set -e"]
        lines += wait_lines(wait_for)
        lines.append("mkdir -p " + " ".join(shlex.quote(d) for d in self.output_dirs))
        run = '"$@"'
        if timeout and self.timeout is not None and not self.serving:
            run = f"timeout {math.ceil(self.timeout)} {run}"
        if self.serving:
            lines.append(f"exec {run}")
            return "\n".join(lines) + "\n"
        done = shlex.quote(self.done_file)
        lines.append(f"rm -f {done}")
        attempts = self.retries if retries else 0
        if attempts == 0:
            lines.append(run)
        else:
            lines += [
                "attempt=0",
                "while :; do",
                f"  status=0; {run} || status=$?",
                '  [ "$status" -eq 0 ] && break',
                "  attempt=$((attempt + 1))",
                f'  if [ "$attempt" -gt {attempts} ]; then exit "$status"; fi',
                f'  echo "scanflow: {self.step} failed (exit $status), retry $attempt of {attempts}" >&2',
                "done",
            ]
        lines.append(f"touch {done}")
        return "\n".join(lines) + "\n"


def wait_lines(markers: Sequence[str]) -> list[str]:
    """Shell lines that wait until every marker file exists."""
    if not markers:
        return []
    quoted = " ".join(shlex.quote(m) for m in markers)
    return [
        f"for f in {quoted}; do",
        '  until [ -e "$f" ]; do echo "scanflow: waiting for $f" >&2; sleep 2; done',
        "done",
    ]


@dataclass(frozen=True)
class Sidecar:
    """A container beside the steps: a plugin's :class:`SidecarSpec`, or the built-in MLflow tracker.

    ``shared``: one instance serves every step (the tracker, which keeps state); else, where the target
    has pods, each step's pod gets its own copy. ``data_dir``: a folder that needs a volume of its own.
    """

    spec: SidecarSpec
    shared: bool = False
    data_dir: str | None = None

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class Deployment:
    """Everything an exporter needs: the workflow, its run id, its step containers and sidecars."""

    workflow: Workflow
    run_id: str
    steps: list[StepContainer]
    sidecars: list[Sidecar] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The workflow's name as a DNS-1123 label."""
        return dns_name(self.workflow.name)

    @property
    def notes(self) -> list[str]:
        """What the user must do before deploying (build images the steps name)."""
        built = [s for s in self.steps if s.built]
        if not built:
            return []
        images = ", ".join(dict.fromkeys(s.image for s in built))
        return [
            f"build (and push) the images Scanflow builds before deploying: {images}; or give the steps "
            "an 'image' (--image: one for every step that names none)"
        ]

    def container(self, step: str) -> StepContainer:
        for container in self.steps:
            if container.step == step:
                return container
        raise KeyError(step)

    def labels(self, container: StepContainer | None = None) -> dict[str, str]:
        """``scanflow.io/run``, ``/workflow`` and, for a step, ``scanflow.io/step`` and ``/stage``."""
        labels = {"scanflow.io/run": dns_name(self.run_id), "scanflow.io/workflow": self.name}
        if container is not None:
            labels["scanflow.io/step"] = container.name
            labels["scanflow.io/stage"] = container.stage
        return labels


# ----------------------------------------------------------------------------------------------- names


def dns_name(text: str, limit: int = 63) -> str:
    """``text`` as a DNS-1123 label (lower case, digits, ``-``; at most ``limit`` characters).

    A name that had to be cut keeps a short digest of the whole, so two long names stay apart.
    """
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name) or "x"
    if not name[0].isalpha():
        name = "s" + name
    if len(name) > limit:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        name = name[: limit - 9].rstrip("-") + "-" + digest
    return name


# ------------------------------------------------------------------------------------------------ YAML


def dump_yaml(documents: Sequence[Any]) -> str:
    """YAML documents as people write them: keys in the order given, scripts as ``|`` blocks."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True  # no &id001 anchors: each object reads on its own

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        block = "\n" in value and all(line == line.rstrip() for line in value.splitlines())
        style = "|" if block else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return yaml.dump_all(documents, Dumper=Dumper, sort_keys=False, width=1000, allow_unicode=True)


# ----------------------------------------------------------------------------------------------- sizes


def memory_bytes(text: str) -> int:
    """A spec's ``memory`` in bytes, by the docker runtime's rule: ``Ki Mi Gi Ti`` and Docker's lower-case
    ``k m g t`` are powers of 1024, upper-case ``K M G T`` powers of 1000 (Kubernetes'); a trailing ``B``
    is ignored."""
    number, unit, binary = _memory_parts(text)
    if not unit:
        return int(number)
    base = 1024 if binary or unit.islower() else 1000
    return int(number * base ** _POWERS[unit.upper()])


def k8s_quantity(text: str) -> str:
    """A spec's ``memory`` as a Kubernetes quantity of the same size (``512m`` → ``512Mi``: there a
    lower-case ``m`` would mean milli)."""
    number, unit, binary = _memory_parts(text)
    shown = f"{number:g}" if number != int(number) else str(int(number))
    if not unit:
        return shown
    return shown + unit.upper() + ("i" if binary or unit.islower() else "")


def _memory_parts(text: str) -> tuple[float, str, bool]:
    match = _MEMORY.match(text.strip())
    if match is None:
        raise ValueError(f"a memory size like 512Mi, 512m or 2G, not {text!r}")
    number, unit, binary = match.groups()
    return float(number), unit or "", bool(binary)


def docker_memory(text: str) -> str:
    """A spec's ``memory`` for Docker, which reads ``k m g`` as powers of 1024: bytes, in the largest
    unit that divides them (``512m``), so that decimal sizes stay exact."""
    size = memory_bytes(text)
    for suffix, power in (("g", 3), ("m", 2), ("k", 1)):
        if size and size % 1024**power == 0:
            return f"{size // 1024**power}{suffix}"
    return str(size)


# ------------------------------------------------------------------------------------------------ plan


def plan_deployment(
    workflow: Workflow,
    *,
    run_id: str | None = None,
    image_prefix: str = "",
    default_image: str | None = None,
    inputs_root: str = INPUTS_MOUNT,
    pm: Any = None,
) -> Deployment:
    """Every step of ``workflow``'s plan as a container, and the sidecars to start beside them.

    Args:
        workflow: a loaded workflow (``--param`` overrides already applied).
        run_id: the run the deployment records (default: the workflow's name).
        image_prefix: put before the images Scanflow builds (``registry.example.com/team/``).
        default_image: the image of steps that name none (default: the tag the docker runtime builds).
        inputs_root: where workflow input files are seen in the containers.
        pm: the plugin manager asked for sidecars (default: a fresh one).

    Raises:
        SpecError: a step that cannot be deployed (a nested workflow input without a file, two steps
            whose names read the same as DNS labels).
    """
    from scanflow_core.plugins import get_plugin_manager
    from scanflow_core.runs import StepRun, WorkflowRun

    run = WorkflowRun(workflow, run_id=run_id or workflow.name, pm=pm or get_plugin_manager())
    run.directory = Path(RUN_MOUNT)
    sidecars = _sidecars(run)
    inject: dict[str, str] = {}
    if workflow.tracker.enabled and workflow.tracker.uri not in (None, "sidecar"):
        inject["MLFLOW_TRACKING_URI"] = workflow.tracker.uri  # a server of the spec's own
    for sidecar in sidecars:
        inject.update(sidecar.spec.inject_env)

    containers: list[StepContainer] = []
    seen: dict[str, str] = {}
    for planned in workflow.plan:
        container = _container(run, planned, StepRun, image_prefix, default_image, inputs_root, inject)
        if container.name in seen:
            raise SpecError.single(
                workflow.file,
                f"steps.{planned.name}",
                f"steps {seen[container.name]!r} and {planned.name!r} both deploy as {container.name!r}",
                "step names that differ in more than case, '_' and '.'",
            )
        seen[container.name] = planned.name
        containers.append(container)
    names = {s.name for s in sidecars} & set(seen)
    if names:
        raise SpecError.single(
            workflow.file, "steps", f"a step is named like a sidecar: {', '.join(sorted(names))}"
        )
    return Deployment(workflow, run.run_id, containers, sidecars)


def _container(
    run: Any,
    planned: PlannedStep,
    step_run_class: Any,
    image_prefix: str,
    default_image: str | None,
    inputs_root: str,
    inject: Mapping[str, str],
) -> StepContainer:
    from scanflow_core.runtimes.local import command_argv, step_environment

    spec = planned.spec
    in_container = dataclasses.replace(planned, directory=Path(WORK_MOUNT))
    input_files: list[InputFile] = []
    for local, artifact in planned.inputs.items():
        art = run.plan.artifacts[artifact]
        if art.producer is None:
            if art.path is None:
                raise SpecError.single(
                    planned.workflow.file,
                    f"steps.{planned.name}.inputs.{local}",
                    f"workflow input {artifact!r} has no file to deploy",
                    "a 'path' for the input",
                )
            input_files.append(InputFile(local, art.path.resolve(), f"{inputs_root}/{artifact}"))
    # The step's paths, environment and command exactly as a runtime makes them, seen from inside:
    # the run's directory is the run volume, the step's folder is the work mount.
    step_run = step_run_class(run, in_container)
    for item in input_files:
        step_run.inputs[item.name] = Path(item.target)
    env = step_environment(step_run, step_run.directory / "record.jsonl")
    argv = command_argv(step_run)
    if spec.call is not None:
        argv = [_PYTHON, "-m", "scanflow_core.exec"]
    env["PYTHONPATH"] = ":".join(p for p in (LIB_MOUNT, spec.env.get("PYTHONPATH", "")) if p)
    for key, value in inject.items():
        if key not in spec.env:
            env[key] = value
    serving = planned.stage in SERVING_STAGES
    port = planned.params.get("port", DEFAULT_PORT) if serving else None
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
        raise SpecError.single(
            planned.workflow.file, f"steps.{planned.name}.params.port", f"not a port: {port!r}", "1-65535"
        )
    image, built = _image(planned, image_prefix, default_image)
    outputs = sorted({str(PurePosixPath(p).parent) for p in step_run.outputs.values()})
    return StepContainer(
        step=planned.name,
        name=dns_name(planned.name),
        stage=planned.stage,
        serving=serving,
        image=image,
        built=built,
        argv=[str(a) for a in argv],
        env={k: str(v) for k, v in env.items()},
        cpu=spec.resources.cpu,
        memory=spec.resources.memory,
        gpu=spec.resources.gpu,
        timeout=spec.timeout,
        retries=spec.retries,
        needs=tuple(planned.needs),
        port=port,
        directory=planned.directory.resolve(),
        input_files=tuple(input_files),
        output_dirs=tuple(outputs or [f"{RUN_MOUNT}/steps/{planned.name}/outputs"]),
    )


def _image(planned: PlannedStep, prefix: str, default_image: str | None) -> tuple[str, bool]:
    """The step's image, and whether Scanflow (or the user) has to build it first."""
    spec = planned.spec
    if spec.image is not None:
        return spec.image, False
    if spec.build is None and default_image is not None:
        return default_image, False
    return prefix + built_image_tag(planned), True


def built_image_tag(planned: PlannedStep) -> str:
    """The image a step without one runs in: the repository the docker runtime builds it under
    (``scanflow/<workflow>-<step>``) with the tag ``latest``. Build it (or pass ``--image``) first."""
    try:
        from scanflow_core.runtimes.docker_images import image_tag
    except ImportError:  # a core without the docker runtime: the same name, made here
        name = re.sub(r"[^a-z0-9]+", "-", f"{planned.workflow.name}-{planned.name}".lower()).strip("-")
        return f"scanflow/{name or 'step'}:latest"
    return image_tag(planned.workflow.name, planned.name, "latest")


# -------------------------------------------------------------------------------------------- sidecars


def tracker_sidecar() -> Sidecar:
    """The MLflow tracking server the steps log to (image ``$SCANFLOW_TRACKER_IMAGE``)."""
    hosts = "tracker,tracker:*,localhost,localhost:*,127.0.0.1,127.0.0.1:*"
    return Sidecar(
        SidecarSpec(
            name="tracker",
            image=os.environ.get(TRACKER_IMAGE_ENV) or DEFAULT_TRACKER_IMAGE,
            command=[
                "mlflow",
                "server",
                "--host=0.0.0.0",
                f"--port={TRACKER_PORT}",
                f"--backend-store-uri=sqlite:///{TRACKER_DATA}/mlflow.db",
                f"--artifacts-destination={TRACKER_DATA}/artifacts",
                f"--allowed-hosts={hosts}",
            ],
            ports={TRACKER_PORT: None},
            healthcheck=(
                'python -c "import urllib.request; '
                f"urllib.request.urlopen('http://localhost:{TRACKER_PORT}/health', timeout=5)\""
            ),
            inject_env={"MLFLOW_TRACKING_URI": f"http://tracker:{TRACKER_PORT}"},
        ),
        shared=True,
        data_dir=TRACKER_DATA,
    )


def _sidecars(run: Any) -> list[Sidecar]:
    """The plugins' sidecars, and the tracker when the spec tracks to no server of its own."""
    found: dict[str, Sidecar] = {}
    for result in run.pm.hook.scanflow_sidecars(run=run):
        for spec in result or []:
            found.setdefault(spec.name, Sidecar(spec, shared=spec.name == "tracker"))
    tracker = run.workflow.tracker
    if tracker.enabled and tracker.uri in (None, "sidecar") and "tracker" not in found:
        found["tracker"] = tracker_sidecar()
    return list(found.values())
