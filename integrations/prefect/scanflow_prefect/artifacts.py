"""A step's check results as a Prefect artifact: a markdown table on the task run, with a link to the
step's run in the tracker when tracking is on."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["artifact_key", "checks_markdown", "publish_checks", "tracker_link"]

log = logging.getLogger("scanflow.prefect")

#: The MLflow UI's address when the run is tracked in a database (``mlflow ui`` serves it there).
MLFLOW_UI = "http://127.0.0.1:5000"


def artifact_key(workflow: str, step: str) -> str:
    """The artifact's key: ``scanflow-checks-<workflow>-<step>``, in the lower-case letters, digits
    and dashes Prefect allows; each new run of the step is a new version under the same key.

    Examples:
        >>> artifact_key("digits", "split")
        'scanflow-checks-digits-split'
        >>> artifact_key("My_Flow", "prep.clean")
        'scanflow-checks-my-flow-prep-clean'
    """
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", f"scanflow-checks-{workflow}-{step}".lower()))


def tracker_link(run_directory: Path, step: str) -> str | None:
    """Markdown naming the step's MLflow run (a link), or ``None`` when the run is not tracked.

    The ids come from ``<run>/tracking/parent.json`` (the MLflow tracker writes them). A server's
    run gets its own address; a run in a database gets the address ``mlflow ui`` serves it at.
    """
    try:
        ids = json.loads((run_directory / "tracking" / "parent.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    child, experiment, uri = ids.get("steps", {}).get(step), ids.get("experiment_id"), ids.get("uri", "")
    if not child or experiment is None:
        return None
    path = f"#/experiments/{experiment}/runs/{child}"
    if urlsplit(uri).scheme in ("http", "https"):
        return f"Tracked in MLflow: [run {child}]({uri.rstrip('/')}/{path})"
    return (
        f"Tracked in MLflow ({uri}): [run {child}]({MLFLOW_UI}/{path}), "
        f"served by `mlflow ui --backend-store-uri {uri}`"
    )


def _cell(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").strip()


def checks_markdown(run_id: str, step: str, checks: Sequence[Any], link: str | None = None) -> str:
    """A markdown table of check results (:class:`~scanflow_core.records.CheckResult`)."""
    failed = sum(not c.passed and c.policy == "fail" for c in checks)
    warned = sum(not c.passed and c.policy == "warn" for c in checks)
    lines = [
        f"### Checks of step `{step}` (Scanflow run `{run_id}`)",
        "",
        f"{sum(c.passed for c in checks)} passed, {failed} failed, {warned} warned.",
        "",
        "| check | target | phase | policy | severity | result | summary |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in checks:
        verdict = "passed" if c.passed else ("**failed**" if c.policy == "fail" else "warned")
        lines.append(
            "| "
            + " | ".join(
                _cell(v) for v in (c.check or c.checker, c.target, c.phase, c.policy, c.severity, verdict)
            )
            + f" | {_cell(c.summary)} |"
        )
    if link:
        lines += ["", link]
    return "\n".join(lines) + "\n"


def publish_checks(run_id: str, workflow: str, step: str, run_directory: Path, checks: Sequence[Any]) -> None:
    """Create the markdown artifact of the step's checks on the current Prefect task run (nothing
    when the step ran no check). Best effort: the step's record is in the run directory already, so
    an API that does not answer costs a warning, not the task run."""
    if not checks:
        return
    from prefect.artifacts import create_markdown_artifact

    failed = sum(not c.passed and c.policy == "fail" for c in checks)
    try:
        create_markdown_artifact(
            markdown=checks_markdown(run_id, step, checks, tracker_link(run_directory, step)),
            key=artifact_key(workflow, step),
            description=f"Scanflow checks of step {step} in run {run_id}: "
            + (f"{failed} failed" if failed else "all passed or warned"),
        )
    except Exception as exc:
        log.warning("the check results of step %r (run %s) are no Prefect artifact: %s", step, run_id, exc)
