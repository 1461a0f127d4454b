"""Plain records that flow through the hooks: metrics, artifacts, check and objective results."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = [
    "ArtifactRecord",
    "CheckResult",
    "ExecutionResult",
    "Metric",
    "ObjectiveResult",
    "Requirement",
    "SidecarSpec",
    "StageReport",
    "StepStatus",
    "TrackingBatch",
]

StepStatus = Literal["pending", "running", "succeeded", "failed", "skipped", "upstream_failed"]
Severity = Literal["info", "warning", "error", "critical"]


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric point, as MLflow has it: key, value, step and a timestamp in milliseconds."""

    key: str
    value: float
    step: int = 0
    timestamp: int = field(default_factory=now_ms)


@dataclass(frozen=True, slots=True)
class ArtifactRecord:
    """A file or folder a step read or wrote, with its digest (``sha256:<hex>``)."""

    name: str
    path: str
    digest: str
    size: int
    kind: str = "data"
    role: Literal["input", "output", "report", "attestation"] = "output"


@dataclass(frozen=True)
class CheckResult:
    """What one checker found on one target.

    ``passed`` is the verdict; ``policy`` (from the spec) says whether a failure stops the step;
    ``metrics`` are numbers worth tracking; ``summary`` is one line for people; ``details`` is
    anything else the checker wants to keep (JSON-serialisable).
    """

    checker: str
    target: str
    passed: bool
    summary: str
    severity: Severity = "error"
    policy: Literal["fail", "warn"] = "fail"
    metrics: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    check: str = ""
    phase: Literal["inputs", "outputs"] = "outputs"
    duration_s: float = 0.0

    @property
    def blocking(self) -> bool:
        """A failed result whose policy is ``fail``: the step must stop."""
        return not self.passed and self.policy == "fail"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ObjectiveResult:
    """The outcome of one objective or ``when:`` condition, with the values it read."""

    name: str
    expr: str
    passed: bool
    blocking: bool = True
    observed: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None

    def __str__(self) -> str:
        seen = ", ".join(f"{k}={v!r}" for k, v in self.observed.items())
        verdict = "met" if self.passed else "NOT met"
        text = f"{self.name}: {verdict} ({self.expr}"
        text += f"; {seen})" if seen else ")"
        return text + (f": {self.reason}" if self.reason else "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Requirement:
    """What a step of some stage must record (MLSpec's stage metadata).

    ``kind`` says where to look (a param, a metric, an input/output artifact, a tag); ``names``
    lists acceptable names, any one of which satisfies the requirement (empty: at least one of
    that kind); ``type`` is the expected Python type name (``number``, ``integer``, ``string``).
    """

    kind: Literal["param", "metric", "input", "output", "tag"]
    names: tuple[str, ...] = ()
    type: Literal["number", "integer", "string", "any"] = "any"
    description: str = ""


@dataclass(frozen=True)
class StageReport:
    """How a step's record compares with its stage's metadata schema."""

    stage: str
    missing: list[str] = field(default_factory=list)
    mistyped: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.missing and not self.mistyped

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "missing": self.missing,
            "mistyped": self.mistyped,
            "complete": self.complete,
        }


@dataclass
class TrackingBatch:
    """Everything a tracker receives in one call; trackers log what is not empty."""

    params: dict[str, Any] = field(default_factory=dict)
    metrics: list[Metric] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    artifacts: list[ArtifactRecord] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)
    objectives: list[ObjectiveResult] = field(default_factory=list)

    def __bool__(self) -> bool:
        return any((self.params, self.metrics, self.tags, self.artifacts, self.checks, self.objectives))


@dataclass(frozen=True)
class ExecutionResult:
    """What a runtime reports after running a step: which runtime, and what it knows."""

    runtime: str
    exit_code: int | None = None
    value: Any = None
    details: dict[str, Any] = field(default_factory=dict)
    #: The params the step's code received (a callable's arguments); ``None``: all of them.
    used_params: frozenset[str] | None = None


@dataclass(frozen=True)
class SidecarSpec:
    """A container a plugin wants started beside a workflow's steps (tracker, checker, …)."""

    name: str
    image: str
    command: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    ports: dict[int, int | None] = field(default_factory=dict)
    healthcheck: str | None = None
    inject_env: dict[str, str] = field(default_factory=dict)
    #: Container path → named volume (read-write; the runtime makes it when missing, and keeps it).
    volumes: dict[str, str] = field(default_factory=dict)
    #: Container path → host path, mounted read-only.
    binds: dict[str, str] = field(default_factory=dict)
