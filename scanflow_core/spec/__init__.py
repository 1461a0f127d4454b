"""Workflow specs: ``scanflow.yaml`` loaded into typed models and a validated plan."""

from __future__ import annotations

import json
from typing import Any

from scanflow_core.spec.loader import load_workflow, load_workflow_text, parse_overrides
from scanflow_core.spec.models import (
    API_VERSION,
    STAGES,
    ArtifactSpec,
    AttestationSpec,
    BuildSpec,
    CheckSpec,
    Objective,
    Resources,
    Step,
    TrackerSpec,
    Workflow,
)
from scanflow_core.spec.plan import Artifact, Plan, PlannedStep

__all__ = [
    "API_VERSION",
    "STAGES",
    "Artifact",
    "ArtifactSpec",
    "AttestationSpec",
    "BuildSpec",
    "CheckSpec",
    "Objective",
    "Plan",
    "PlannedStep",
    "Resources",
    "Step",
    "TrackerSpec",
    "Workflow",
    "json_schema",
    "load_workflow",
    "load_workflow_text",
    "parse_overrides",
]


def json_schema() -> dict[str, Any]:
    """The JSON Schema of ``scanflow.yaml`` (what ``scanflow schema`` prints)."""
    schema = Workflow.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://scanflow.dev/schema/scanflow-v1.json"
    schema["title"] = "Scanflow workflow (scanflow/v1)"
    result: dict[str, Any] = json.loads(json.dumps(schema))
    return result
