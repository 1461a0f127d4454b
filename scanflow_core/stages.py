"""Stage metadata (MLSpec's verification): what a step of each stage must record.

A built-in plugin of ``scanflow_stage_requirements``; other plugins add their own requirements
the same way. The step path compares them with what a step recorded (:func:`compare`) and
reports what is missing or mistyped, as a warning or, with ``stage_metadata: fail``, an error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from scanflow_core.plugins import hookimpl
from scanflow_core.records import Requirement, StageReport

if TYPE_CHECKING:
    from scanflow_core.runs import StepRun

__all__ = ["STAGE_REQUIREMENTS", "compare"]

R = Requirement
_SEED = ("seed", "random_state", "random_seed", "*_seed")

#: Scanflow's defaults, stage by stage.
STAGE_REQUIREMENTS: dict[str, tuple[Requirement, ...]] = {
    "objectives": (R("param", description="the objectives it sets"),),
    "data_ingestion": (
        R("output", description="the data it ingested"),
        R(
            "metric",
            ("rows", "n_rows", "num_rows", "samples", "n_samples"),
            "integer",
            "how many rows came in",
        ),
    ),
    "data_analysis": (
        R("input", description="the data analysed"),
        R("metric", description="what it measured"),
    ),
    "data_transformation": (
        R("input", description="the data it read"),
        R("output", description="what it wrote"),
    ),
    "data_validation": (
        R("input", description="the data validated"),
        R("metric", description="validation results"),
    ),
    "data_splitting": (
        R("input", description="the data it split"),
        R("param", _SEED, "integer", "the seed of the split"),
        R("metric", ("*_size", "n_*"), "integer", "the size of each split"),
    ),
    "training": (
        R("input", description="the training data (digests recorded)"),
        R("param", description="its hyperparameters"),
        R("metric", description="the resulting metrics"),
        R("output", description="the model"),
    ),
    "evaluation": (
        R("input", description="model and evaluation data"),
        R("metric", description="evaluation metrics"),
    ),
    "test": (R("input", description="model and test data"), R("metric", description="test metrics")),
    "packaging": (R("input", description="what it packaged"), R("output", description="the package")),
    "serving": (R("input", description="the model served"),),
    "monitoring": (R("metric", description="what it monitors"),),
    "logging": (R("output", description="the logs it keeps"),),
}


@hookimpl
def scanflow_stage_requirements(stage: str) -> Iterable[Requirement]:
    return STAGE_REQUIREMENTS.get(stage, ())


def _pools(step_run: StepRun) -> dict[str, Mapping[str, Any]]:
    return {
        "param": {**step_run.params, **step_run.recorder.params},
        "metric": step_run.recorder.latest,
        "input": step_run.inputs,
        "output": step_run.outputs,
        "tag": step_run.recorder.tags,
    }


def _type_ok(value: Any, expected: str) -> bool:
    if expected == "any":
        return True
    if expected == "string":
        return isinstance(value, str)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return expected == "number" or float(value).is_integer()


def compare(step_run: StepRun, requirements: Iterable[Requirement]) -> StageReport:
    """What ``step_run`` recorded against ``requirements``: each missing or mistyped item, in words."""
    pools = _pools(step_run)
    missing: list[str] = []
    mistyped: list[str] = []
    for req in requirements:
        pool = pools[req.kind]
        matches = [k for k in pool if not req.names or any(fnmatchcase(k, p) for p in req.names)]
        if not matches:
            wanted = " or ".join(repr(n) for n in req.names) if req.names else f"at least one {req.kind}"
            what = f"{req.kind} {wanted}" if req.names else wanted
            missing.append(f"{what} ({req.description})" if req.description else what)
            continue
        for key in matches:
            if not _type_ok(pool[key], req.type):
                mistyped.append(f"{req.kind} {key!r} is {pool[key]!r}, expected {req.type}")
    return StageReport(step_run.stage, missing, mistyped)
