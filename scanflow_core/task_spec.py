"""The one-step spec of a decorated task's call (:class:`scanflow_core.tasks.TaskStep`).

Each call writes ``<run>/steps/<step>/spec.yaml``: the workflow's ``inputs`` are the call's file
arguments (absolute paths), the step's ``params`` its other arguments, its ``outputs``, ``checks`` and
``timeout`` those of the task. Every value is written as JSON, which YAML 1.2 reads back exactly, so
the file parses to the very data the call's workflow is made of; ``scanflow verify`` checks each
step's attestation against the digest of that file.

The call's :class:`~scanflow_core.spec.models.Workflow` is what loading that file gives. Everything in
it but the names, the params and the input files was validated when the task was made, so it is
assembled from a template validated once (about 4x faster than validating each call's spec again);
a call that does not fit the template goes through the loader like any spec, and gets its errors.

Examples:
    >>> from scanflow_core.spec.models import Step
    >>> step = Step.model_validate({"name": "fit", "stage": "training", "call": "m:fit"})
    >>> spec = OneStepSpec("m.fit", "m:fit", step, outputs={}, checks=[])
    >>> data, text = spec.render("demo", "fit", files={}, params={"lr": 0.1})
    >>> print(text.splitlines()[-4])
        params: {"lr": 0.1}
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scanflow_core.spec.models import API_VERSION, NAME_PATTERN

if TYPE_CHECKING:
    from scanflow_core.artifacts import ArtifactRef
    from scanflow_core.spec.models import Step, Workflow

__all__ = ["OneStepSpec"]

_NAME = re.compile(NAME_PATTERN)
_CHECK_FIELDS = frozenset({"use", "on", "name", "policy", "severity", "timeout"})
_KINDS = ("data", "model", "metrics", "report", "file")


class OneStepSpec:
    """What every call of one task shares: its step, validated once, and the one-step workflow
    template its calls are assembled from.

    Args:
        label: the task's function, ``module.qualname`` (named in the file's header).
        ref: the ``call:`` that names the function (:func:`scanflow_core.callables.register_callable`).
        step: the task's validated step (its name, stage, outputs, checks and timeout).
        outputs / checks: the task's outputs and checks as the decorator was given them (plain data).
    """

    def __init__(
        self, label: str, ref: str, step: Step, outputs: Mapping[str, Any], checks: list[dict[str, Any]]
    ) -> None:
        from scanflow_core.spec.models import Workflow

        self.label, self.ref, self.step = label, ref, step
        self.outputs, self.checks = dict(outputs), list(checks)
        entry = step.model_dump(exclude_defaults=True, by_alias=True)
        entry.update(call=ref, description="decorated task " + label)
        self.template = Workflow.model_validate({"apiVersion": API_VERSION, "name": "task", "steps": [entry]})

    def write(
        self,
        path: Path,
        workflow: str,
        step: str,
        files: Mapping[str, ArtifactRef],
        params: Mapping[str, Any],
    ) -> Workflow:
        """Write the call's spec to ``path`` (atomically) and return its workflow.

        Raises:
            SpecError: the call does not make a valid spec (naming ``path``).
        """
        data, text = self.render(workflow, step, files, params)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        return self.workflow(data, text, path, files, params)

    def render(
        self, workflow: str, step: str, files: Mapping[str, ArtifactRef], params: Mapping[str, Any]
    ) -> tuple[dict[str, Any], str]:
        """The call's spec as data and as the YAML text that parses to exactly that data."""

        def j(value: Any) -> str:
            return json.dumps(value, allow_nan=False)

        entry: dict[str, Any] = {
            "name": step,
            "stage": self.step.stage,
            "description": "decorated task " + self.label,
            "call": self.ref,
            "params": dict(params),
            "inputs": {n: n for n in files},
            "outputs": self.outputs,
            "checks": [_absolute_files(c, {*files, *self.outputs}) for c in self.checks],
        }
        if self.step.timeout is not None:
            entry["timeout"] = self.step.timeout
        data: dict[str, Any] = {"apiVersion": API_VERSION, "name": workflow}
        lines = [
            f"# One call of the decorated task {self.label}, written by Scanflow (scanflow_core.tasks).",
            f"apiVersion: {API_VERSION}",
            f"name: {workflow}",
        ]
        if files:
            data["inputs"] = {n: {"path": ref.path, "kind": _kind(ref.kind)} for n, ref in files.items()}
            lines.append("inputs:")
            lines += [f"  {n}: {j(value)}" for n, value in data["inputs"].items()]
        data["steps"] = [entry]
        lines.append("steps:")
        lines += [("  - " if i == 0 else "    ") + f"{k}: {j(v)}" for i, (k, v) in enumerate(entry.items())]
        return data, "\n".join(lines) + "\n"

    def workflow(
        self,
        data: Mapping[str, Any],
        text: str,
        path: Path,
        files: Mapping[str, ArtifactRef],
        params: Mapping[str, Any],
    ) -> Workflow:
        """The call's workflow, exactly what loading ``path`` (holding ``text``) gives: assembled from
        the template when the call fits it (the caller checked the names; the params are JSON), else
        loaded from ``data`` by the loader, with its errors."""
        from scanflow_core.spec.loader import load_workflow_data
        from scanflow_core.spec.models import ArtifactSpec
        from scanflow_core.spec.plan import build_plan

        entry = data["steps"][0]
        names = (*params, *files)
        if entry["checks"] != self.checks or not all(_NAME.match(n) and len(n) <= 100 for n in names):
            return load_workflow_data(data, path, text)
        step = self.template.steps[0].model_copy(
            update={
                "name": entry["name"],
                "params": {
                    k: v if isinstance(v, str | int | float | None) else copy.deepcopy(v)
                    for k, v in params.items()
                },
                "inputs": {n: n for n in files},
            }
        )
        inputs = {n: ArtifactSpec.model_validate(spec) for n, spec in data.get("inputs", {}).items()}
        workflow = self.template.model_copy(update={"name": data["name"], "inputs": inputs, "steps": [step]})
        workflow._file = str(path)
        workflow._digest = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
        workflow._children = {}
        workflow._plan = build_plan(workflow, path.parent)
        return workflow


def _absolute_files(check: Mapping[str, Any], names: set[str]) -> dict[str, Any]:
    """A check's options with relative paths to existing files made absolute: the one-step spec lives
    in the run directory, and checkers read such paths relative to the spec; a task's are relative to
    the working directory of the call."""
    out = dict(check)
    for key, value in check.items():
        if key in _CHECK_FIELDS or not isinstance(value, str) or value in names or not value:
            continue
        path = Path(value)
        if not path.is_absolute() and path.exists():
            out[key] = str(path.absolute())
    return out


def _kind(kind: str) -> str:
    return kind if kind in _KINDS else "data"
