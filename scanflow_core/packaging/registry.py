"""Registering a packaged MLflow model in the run's MLflow model registry."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scanflow_core.digests import digest_path
from scanflow_core.errors import ScanflowError
from scanflow_core.packaging.card import ATTESTATION_TAG, pipeline_digest

if TYPE_CHECKING:
    from scanflow_core.runs import StepRun

__all__ = ["RegisteredModel", "register_model"]


@dataclass(frozen=True)
class RegisteredModel:
    """A model version in the MLflow model registry."""

    name: str
    version: str
    uri: str  # models:/<name>/<version>
    source: str  # where its files are in the run's artifact store
    tracking_uri: str

    def to_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "version": self.version,
            "uri": self.uri,
            "source": self.source,
            "tracking_uri": self.tracking_uri,
        }


def register_model(
    ctx: StepRun,
    model: str | Path,
    *,
    name: str | None = None,
    tags: Mapping[str, Any] | None = None,
) -> RegisteredModel | None:
    """Register the MLflow model folder ``model`` in the run's MLflow store, under ``name`` (default:
    the workflow's name); ``None`` when tracking is off for the run.

    The folder is logged as the artifact ``model`` of the step's MLflow run and a new version is made
    from it, tagged with the Scanflow run id, step, spec digest and ``tags``.

    Raises:
        ScanflowError: ``model`` is not an MLflow model folder, or the store refused.

    Examples:
        >>> version = register_model(ctx, outputs / "mlflow_model")  # doctest: +SKIP
        >>> version.uri if version else "tracking is off"  # doctest: +SKIP
        'models:/digits/3'
    """
    from scanflow_core.tracking.mlflow_tracker import redact, tracker_for

    folder = Path(model)
    if not (folder / "MLmodel").is_file():
        raise ScanflowError(
            f"register_model: {folder} is not an MLflow model folder (it has no MLmodel file)"
        )
    run = ctx.run
    tracker = tracker_for(run)
    if tracker is None:
        return None
    model_name = name or run.workflow.name
    all_tags = {
        "scanflow.run_id": run.run_id,
        "scanflow.step": ctx.name,
        "scanflow.spec_digest": run.workflow.digest,
        "scanflow.model_digest": digest_path(folder),
        **({ATTESTATION_TAG: attested} if (attested := pipeline_digest(run, ctx.name)) else {}),
        **{k: str(v) for k, v in (tags or {}).items()},
    }
    try:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=tracker.target.uri, registry_uri=tracker.target.uri)
        # The step's child run (found or made by the tracker, the same one its metrics go to).
        mlflow_run = tracker.mlflow_run_id(ctx.name, ctx.stage)
        client.log_artifacts(mlflow_run, str(folder), "model")
        source = f"{client.get_run(mlflow_run).info.artifact_uri}/model"
        if _registered(client, model_name) is None:
            client.create_registered_model(model_name, tags={"scanflow.workflow": run.workflow.name})
        version = client.create_model_version(model_name, source=source, run_id=mlflow_run, tags=all_tags)
    except Exception as exc:
        raise ScanflowError(
            f"could not register model {model_name!r} in {redact(tracker.target.uri)}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    _wait_ready(client, model_name, str(version.version))
    return RegisteredModel(
        model_name,
        str(version.version),
        f"models:/{model_name}/{version.version}",
        source,
        redact(tracker.target.uri),
    )


def _registered(client: Any, name: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def _wait_ready(client: Any, name: str, version: str, timeout: float = 60.0) -> None:
    """A registry server may copy the files first (status ``PENDING_REGISTRATION``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = getattr(client.get_model_version(name, version), "status", "READY")
        if status != "PENDING_REGISTRATION":
            if status == "FAILED_REGISTRATION":
                raise ScanflowError(f"the registry failed to register {name!r} version {version}")
            return
        time.sleep(0.2)
    raise ScanflowError(f"{name!r} version {version} was not ready in the registry after {timeout:g}s")
