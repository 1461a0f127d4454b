"""The typed models of a ``scanflow.yaml`` file (apiVersion ``scanflow/v1``).

These models describe one file. Rules that need the whole graph (unknown ``needs``, cycles,
inputs nobody produces, test data leaking into training) live in :mod:`scanflow_core.spec.plan`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

if TYPE_CHECKING:
    from scanflow_core.spec.plan import Plan

__all__ = [
    "API_VERSION",
    "STAGES",
    "ArtifactSpec",
    "AttestationSpec",
    "BuildSpec",
    "CheckSpec",
    "ImproveSpec",
    "Objective",
    "PlannerSpec",
    "Resources",
    "ServingSpec",
    "Stage",
    "Step",
    "TrackerSpec",
    "Workflow",
]

API_VERSION = "scanflow/v1"

#: MLSpec's 13 lifecycle stages, in lifecycle order.
STAGES: tuple[str, ...] = (
    "objectives",
    "data_ingestion",
    "data_analysis",
    "data_transformation",
    "data_validation",
    "data_splitting",
    "training",
    "evaluation",
    "test",
    "packaging",
    "serving",
    "monitoring",
    "logging",
)

Stage = Literal[
    "objectives",
    "data_ingestion",
    "data_analysis",
    "data_transformation",
    "data_validation",
    "data_splitting",
    "training",
    "evaluation",
    "test",
    "packaging",
    "serving",
    "monitoring",
    "logging",
]

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
REF_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=100)]
Ref = Annotated[str, Field(pattern=REF_PATTERN, max_length=400)]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> object:
    """``90``, ``"90s"``, ``"1.5m"``, ``"2h"`` → seconds; anything else is left for pydantic to reject."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"a duration like 30, '30s', '10m' or '2h', not {value!r}")
        return float(match.group(1)) * _UNITS[match.group(2)]
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ArtifactSpec(_Model):
    """A named artifact a step writes (or a workflow receives).

    ``kind`` says what it is: MLSpec keeps *data* read by evaluation away from test steps.
    ``path`` is where it lives: relative to the step's output folder for step outputs,
    relative to the spec file for workflow inputs.
    """

    kind: Literal["data", "model", "metrics", "report", "file"] = "data"
    path: str | None = None
    description: str = ""


class Resources(_Model):
    cpu: Annotated[float, Field(gt=0)] | None = None
    memory: Annotated[str, Field(pattern=r"^\d+(\.\d+)?\s*([KMGT]i?|[kmgt]i?)?[Bb]?$")] | None = None
    gpu: Annotated[int, Field(ge=0)] = 0


class BuildSpec(_Model):
    """Build the step's image from a requirements file or a Dockerfile (paths relative to the spec)."""

    requirements: str | None = None
    dockerfile: str | None = None
    context: str = "."
    base_image: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> BuildSpec:
        if not self.requirements and not self.dockerfile:
            raise ValueError("a build needs 'requirements' or 'dockerfile'")
        return self


class CheckSpec(BaseModel):
    """One check on a step's inputs or outputs; keys other than these are the checker's own options."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    use: Annotated[str, Field(min_length=1, max_length=200)]
    on: list[Ref] = Field(default_factory=list)
    name: str | None = None
    policy: Literal["fail", "warn"] = "fail"
    severity: Literal["info", "warning", "error", "critical"] = "error"
    timeout: Annotated[float, Field(gt=0)] | None = None

    @field_validator("on", mode="before", json_schema_input_type=str | list[str])
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("timeout", mode="before", json_schema_input_type=float | str | None)
    @classmethod
    def _duration(cls, value: object) -> object:
        return parse_duration(value)

    @property
    def options(self) -> dict[str, Any]:
        """The checker's own options (every key that is not a field of every check)."""
        return dict(self.model_extra or {})

    @property
    def label(self) -> str:
        return self.name or self.use


class Objective(_Model):
    """A codified objective, checked by a program: ``evaluate.accuracy >= 0.9``."""

    expr: Annotated[str, Field(min_length=1)]
    name: str | None = None
    blocking: bool = True
    description: str = ""

    @property
    def label(self) -> str:
        return self.name or self.expr


class TrackerSpec(_Model):
    enabled: bool = True
    uri: str | None = None
    experiment: str | None = None


class AttestationSpec(_Model):
    enabled: bool = True
    key: str | None = None


class ServingSpec(_Model):
    """How ``scanflow serve`` picks a model variant (original, ``onnx``, ``int8``) when asked for ``auto``:
    ``prefer: accuracy`` takes the most accurate, ``prefer: latency`` the fastest whose accuracy is at
    most ``max_accuracy_drop`` below the original's."""

    prefer: Literal["latency", "accuracy"] = "accuracy"
    max_accuracy_drop: Annotated[float, Field(ge=0, le=1)] = 0.01
    variants: list[Literal["onnx", "int8"]] = ["onnx", "int8"]


class PlannerSpec(_Model):
    """The improve loop's planner (:func:`scanflow_core.improve.plan_action`): a share of anomalous
    samples up to ``normal_max_share`` is normal, up to ``alert_max_share`` an alert, above it a retrain;
    live metrics that miss a ``live_objectives`` expression (default: the workflow's objectives) roll back."""

    normal_max_share: Annotated[float, Field(ge=0, le=1)] = 0.05
    alert_max_share: Annotated[float, Field(ge=0, le=1)] = 0.10
    live_objectives: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)

    @field_validator("live_objectives")
    @classmethod
    def _expressions(cls, value: list[str]) -> list[str]:
        from scanflow_core.expressions import parse

        for text in value:
            parse(text)  # an ExpressionError (a ValueError) says where the expression is wrong
        return value

    @model_validator(mode="after")
    def _ordered(self) -> PlannerSpec:
        if self.normal_max_share > self.alert_max_share:
            raise ValueError(
                f"normal_max_share ({self.normal_max_share}) must not exceed alert_max_share "
                f"({self.alert_max_share})"
            )
        return self


class ImproveSpec(_Model):
    """The improve loop (:class:`scanflow_core.improve.Improver`): the registered model's name (default:
    the workflow's), the ``metric`` a candidate must beat the champion on (``evaluate.accuracy``; higher is
    better unless ``greater_is_better: false``) by more than ``min_gain``, and the planner's rules."""

    model_name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    metric: Ref | None = None
    greater_is_better: bool = True
    min_gain: Annotated[float, Field(ge=0)] = 0.0
    planner: PlannerSpec = Field(default_factory=PlannerSpec)


def _names_to_mapping(value: object) -> object:
    if isinstance(value, list):
        return {item: item for item in value} if all(isinstance(i, str) for i in value) else value
    return value


class Step(_Model):
    """One step: what it is (``stage``), what it needs, how it runs and what it reads and writes.

    How it runs, one of: ``call: module:function`` (a Python callable), ``command`` (a local process,
    or inside ``image``/``build`` when given), or ``workflow: other.yaml`` (a nested workflow).
    """

    name: Name
    stage: Stage
    description: str = ""
    needs: list[Name] = Field(default_factory=list)
    when: str | None = None
    call: Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")] | None = None
    command: str | list[str] | None = None
    image: Annotated[str, Field(min_length=1)] | None = None
    build: BuildSpec | None = None
    workflow: str | None = None
    runtime: Literal["auto", "inprocess", "local", "docker"] = "auto"
    params: dict[Name, Any] = Field(default_factory=dict)
    inputs: dict[Name, Ref] = Field(default_factory=dict)
    outputs: dict[Name, ArtifactSpec] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    env: dict[str, str] = Field(default_factory=dict)
    checks: list[CheckSpec] = Field(default_factory=list)
    retries: Annotated[int, Field(ge=0, le=100)] = 0
    timeout: Annotated[float, Field(gt=0)] | None = None

    @field_validator("inputs", mode="before", json_schema_input_type=list[str] | dict[str, str])
    @classmethod
    def _input_list(cls, value: object) -> object:
        return _names_to_mapping(value)

    @field_validator(
        "outputs", mode="before", json_schema_input_type=list[str] | dict[str, ArtifactSpec | None]
    )
    @classmethod
    def _output_list(cls, value: object) -> object:
        if isinstance(value, list) and all(isinstance(i, str) for i in value):
            return {item: {} for item in value}
        if isinstance(value, dict):
            return {k: ({} if v is None else v) for k, v in value.items()}
        return value

    @field_validator("env", mode="before", json_schema_input_type=dict[str, str | int | float | bool])
    @classmethod
    def _env_strings(cls, value: object) -> object:
        if isinstance(value, dict):
            return {k: v if isinstance(v, str) or v is None else str(v) for k, v in value.items()}
        return value

    @field_validator("timeout", mode="before", json_schema_input_type=float | str | None)
    @classmethod
    def _duration(cls, value: object) -> object:
        return parse_duration(value)

    @model_validator(mode="after")
    def _how_it_runs(self) -> Step:
        if self.workflow is not None:
            others = [f for f in ("call", "command", "image", "build") if getattr(self, f) is not None]
            if others:
                raise ValueError(f"a nested 'workflow' step cannot also have {', '.join(others)}")
            if self.outputs:
                raise ValueError("a nested 'workflow' step publishes its steps' outputs; drop 'outputs'")
            return self
        if self.image is not None and self.build is not None:
            raise ValueError("give 'image' or 'build', not both")
        if self.call is not None and self.command is not None:
            raise ValueError("give 'call' or 'command', not both")
        if self.call is None and self.command is None and self.image is None and self.build is None:
            raise ValueError("a step needs one of 'call', 'command', 'image' (with 'command') or 'workflow'")
        if self.build is not None and self.call is None and self.command is None:
            raise ValueError("a 'build' step needs a 'command' or a 'call' to run in the built image")
        if self.runtime == "inprocess" and self.call is None:
            raise ValueError("runtime 'inprocess' runs a 'call'; this step has none")
        if (
            self.runtime == "local"
            and (self.image is not None or self.build is not None)
            and self.command is None
        ):
            raise ValueError("runtime 'local' runs a 'command' or a 'call'; this step has only an image")
        return self

    @property
    def kind(self) -> str:
        """How the step runs: ``workflow``, ``container``, ``call`` or ``command``."""
        if self.workflow is not None:
            return "workflow"
        if self.image is not None or self.build is not None:
            return "container"
        return "call" if self.call is not None else "command"


class Workflow(_Model):
    """A whole ``scanflow.yaml``: its parameters, objectives, tracker, attestation and steps."""

    api_version: Literal["scanflow/v1"] = Field(alias="apiVersion")
    name: Name
    description: str = ""
    params: dict[Name, Any] = Field(default_factory=dict)
    inputs: dict[Name, ArtifactSpec] = Field(default_factory=dict)
    objectives: list[Objective] = Field(default_factory=list)
    tracker: TrackerSpec = Field(default_factory=TrackerSpec)
    attestation: AttestationSpec = Field(default_factory=AttestationSpec)
    serving: ServingSpec = Field(default_factory=ServingSpec)
    improve: ImproveSpec = Field(default_factory=ImproveSpec)
    stage_metadata: Literal["off", "warn", "fail"] = "warn"
    python_path: list[str] = Field(default_factory=lambda: ["."])
    steps: Annotated[list[Step], Field(min_length=1)]

    _file: str = PrivateAttr(default="<string>")
    _digest: str = PrivateAttr(default="")
    _children: dict[str, Workflow] = PrivateAttr(default_factory=dict)
    _plan: Any = PrivateAttr(default=None)

    @field_validator("objectives", mode="before", json_schema_input_type=list[str | Objective])
    @classmethod
    def _objective_strings(cls, value: object) -> object:
        if isinstance(value, list):
            return [{"expr": item} if isinstance(item, str) else item for item in value]
        return value

    @property
    def file(self) -> str:
        """The file this workflow was loaded from (``<string>`` when loaded from text)."""
        return self._file

    @property
    def digest(self) -> str:
        """``sha256:<hex>`` of the spec's bytes (nested files have their own)."""
        return self._digest

    @property
    def children(self) -> dict[str, Workflow]:
        """Nested workflows by the name of the step that holds them."""
        return self._children

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    @property
    def plan(self) -> Plan:
        """The flattened, ordered plan, built at load time."""
        plan: Plan = self._plan
        return plan

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        """Show a loaded workflow as its graph in a notebook."""
        from scanflow_core.graph import to_mermaid, to_svg

        return {"image/svg+xml": to_svg(self), "text/markdown": f"```mermaid\n{to_mermaid(self)}\n```"}
