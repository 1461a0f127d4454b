"""The model a server answers with: found from an MLflow model URI, loaded with ``mlflow.pyfunc``, and
described (name, version, the run and the attested pipeline that produced it).

URIs: ``models:/name@alias``, ``models:/name/3``, ``models:/name/latest`` (the registry),
``models:/m-<id>`` (a logged model), ``runs:/<run>/<path>``, or a local folder with an ``MLmodel``
file. The registry and runs are read from ``tracking_uri``.

The *pipeline attestation digest* is, first found: the tag ``scanflow.attestation_digest`` on the
model version, the logged model or its run; else the SHA-256 of the run's attestation artifacts
(``attestations/*.intoto.jsonl``, the signed statements of the step that logged the model, in name
order); else of the ``*.intoto.jsonl`` files in a local model folder; else ``None``.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scanflow_core.errors import ScanflowError

__all__ = ["ATTESTATION_TAG", "ModelSource", "ServedModel", "load_served_model", "resolve_model"]

#: A tag (on a model version, a logged model or a run) naming the attested pipeline's digest.
ATTESTATION_TAG = "scanflow.attestation_digest"
_MODELS = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))?/?$")
_RUNS = re.compile(r"^runs:/(?P<run>[0-9a-zA-Z-]+)/(?P<path>.+?)/?$")


@dataclass
class ModelSource:
    """Where a model URI points: the URI to download, and what the registry and runs know of it."""

    uri: str
    download_uri: str
    name: str | None = None
    version: str | None = None
    alias: str | None = None
    run_id: str | None = None
    model_id: str | None = None
    artifact_path: str | None = None
    local_path: Path | None = None
    tags: dict[str, str] = field(default_factory=dict)


def _mlflow_error(exc: Exception, uri: str, tracking_uri: str) -> ScanflowError:
    code = getattr(exc, "error_code", "")
    first = (str(exc).strip().splitlines() or [""])[0]
    if code == "RESOURCE_DOES_NOT_EXIST" or "not found" in first.lower() or "does not exist" in first.lower():
        return ScanflowError(f"model {uri}: not found in the MLflow store {tracking_uri} ({first})")
    return ScanflowError(f"model {uri}: the MLflow store {tracking_uri} answered: {first}")


def resolve_model(uri: str, tracking_uri: str) -> ModelSource:
    """What ``uri`` names, asked of the store at ``tracking_uri`` (no download).

    Raises:
        ScanflowError: the URI is malformed, or names a model, version, alias or run that is not there.
    """
    if not uri.startswith(("models:/", "runs:/")):
        return _other_source(uri)
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        if uri.startswith("models:/m-"):
            logged_id = uri.removeprefix("models:/").strip("/")
            logged = client.get_logged_model(logged_id)
            return ModelSource(
                uri,
                uri,
                name=logged.name,
                run_id=logged.source_run_id,
                model_id=logged_id,
                artifact_path=logged.name,
                tags=dict(logged.tags or {}),
            )
        if uri.startswith("models:/"):
            match = _MODELS.match(uri)
            if match is None:
                raise ScanflowError(
                    f"model URI {uri!r} is malformed: expected models:/NAME@ALIAS, models:/NAME/VERSION"
                    " or models:/NAME/latest"
                )
            name, alias, version = match["name"], match["alias"], match["version"]
            if alias is not None:
                found = client.get_model_version_by_alias(name, alias)
            elif version is None or version.lower() == "latest":
                versions = client.search_model_versions(f"name = '{name}'")
                if not versions:
                    raise ScanflowError(f"model {uri}: the registered model {name!r} has no version")
                found = max(versions, key=lambda v: int(v.version))
            elif version.isdigit():
                found = client.get_model_version(name, version)
            else:
                raise ScanflowError(
                    f"model URI {uri!r}: version {version!r} is not a number (stages are gone)"
                )
            tags = dict(found.tags or {})
            model_id = getattr(found, "model_id", None)
            if not model_id and str(found.source or "").startswith("models:/m-"):
                model_id = str(found.source).removeprefix("models:/").strip("/")
            logged_at = _RUNS.match(found.source or "")
            artifact_path = logged_at["path"] if logged_at else None
            if model_id:
                logged = client.get_logged_model(model_id)
                tags = dict(logged.tags or {}) | tags
                artifact_path = logged.name
            return ModelSource(
                uri,
                f"models:/{name}/{found.version}",
                name=name,
                version=str(found.version),
                alias=alias,
                run_id=found.run_id or None,
                model_id=model_id or None,
                artifact_path=artifact_path,
                tags=tags,
            )
        if uri.startswith("runs:/"):
            match = _RUNS.match(uri)
            if match is None:
                raise ScanflowError(f"model URI {uri!r} is malformed: expected runs:/RUN_ID/PATH")
            client.get_run(match["run"])
            return ModelSource(
                uri,
                uri,
                name=match["path"].rsplit("/", 1)[-1],
                run_id=match["run"],
                artifact_path=match["path"],
            )
    except ScanflowError:
        raise
    except Exception as exc:
        raise _mlflow_error(exc, uri, tracking_uri) from None
    raise ScanflowError(
        f"model URI {uri!r}: expected models:/NAME@ALIAS, models:/NAME/VERSION or runs:/ID/PATH"
    )


def _other_source(uri: str) -> ModelSource:
    """A local folder (or ``file://`` URI), or an artifact URI MLflow can download."""
    path = Path(uri.removeprefix("file://")).expanduser()
    if "://" not in uri or uri.startswith("file://"):
        if not (path / "MLmodel").is_file():
            raise ScanflowError(
                f"model {uri}: no MLflow model there (no MLmodel file); give a model folder, runs:/RUN/PATH"
                " or models:/NAME@ALIAS"
            )
        return ModelSource(uri, str(path.absolute()), name=path.absolute().name, local_path=path.absolute())
    return ModelSource(uri, uri, name=uri.rstrip("/").rsplit("/", 1)[-1])


def download_model(uri: str, tracking_uri: str) -> str:
    """A local folder holding the model at ``uri`` (``models:/NAME/VERSION``, ``models:/m-<id>``,
    ``runs:/RUN/PATH``, a folder or an artifact URI), every store address taken from ``tracking_uri``
    (never from MLflow's process-wide settings)."""
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    location = uri
    if "://" not in uri and Path(uri).is_dir():
        return uri
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    if uri.startswith("models:/") and not uri.startswith("models:/m-"):
        name, _, version = uri.removeprefix("models:/").strip("/").partition("/")
        location = client.get_model_version_download_uri(name, version)
    if location.startswith("models:/m-"):
        location = client.get_logged_model(location.removeprefix("models:/").strip("/")).artifact_location
    elif location.startswith("runs:/"):
        location = _run_location(client, location)
    if "://" not in location and Path(location).is_dir():
        return location
    return str(download_artifacts(artifact_uri=location, tracking_uri=tracking_uri))


def _run_location(client: Any, uri: str) -> str:
    """Where ``runs:/RUN/PATH`` lives: the logged model of that run named PATH's first part (MLflow 3
    keeps models apart from run artifacts), else the run's own artifact."""
    match = _RUNS.match(uri)
    if match is None:
        raise ScanflowError(f"model URI {uri!r} is malformed: expected runs:/RUN_ID/PATH")
    run = client.get_run(match["run"])
    name, _, rest = match["path"].partition("/")
    found = client.search_logged_models(
        experiment_ids=[run.info.experiment_id], filter_string=f"name = '{name}'", max_results=1000
    )
    for logged in found:
        if logged.source_run_id == match["run"]:
            return str(logged.artifact_location).rstrip("/") + (f"/{rest}" if rest else "")
    return str(run.info.artifact_uri).rstrip("/") + "/" + match["path"]


def attestation_digest(source: ModelSource, tracking_uri: str) -> str | None:
    """The digest of the attested pipeline that produced the model (see the module's docstring)."""
    if source.tags.get(ATTESTATION_TAG):
        return source.tags[ATTESTATION_TAG]
    if source.local_path is not None:
        files = sorted(source.local_path.glob("*.intoto.jsonl"))
        return _digest_files(files) if files else None
    if source.run_id is None:
        return None
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        run = client.get_run(source.run_id)
        if run.data.tags.get(ATTESTATION_TAG):
            return str(run.data.tags[ATTESTATION_TAG])
        listed = [a.path for a in client.list_artifacts(source.run_id, "attestations")]
        names = sorted(p for p in listed if p.endswith(".intoto.jsonl"))
        if not names:
            return None
        with tempfile.TemporaryDirectory(prefix="scanflow-attestations-") as folder:
            files = [Path(client.download_artifacts(source.run_id, name, folder)) for name in names]
            return _digest_files(files)
    except Exception:
        return None


def _digest_files(files: list[Path]) -> str:
    h = hashlib.sha256()
    for file in files:
        h.update(file.read_bytes())
    return "sha256:" + h.hexdigest()


@dataclass
class ServedModel:
    """A loaded pyfunc model and what is known of it."""

    source: ModelSource
    pyfunc: Any
    variant: str
    variant_uri: str
    attestation: str | None
    spec_digest: str | None = None
    scanflow_run_id: str | None = None
    flavors: list[str] = field(default_factory=list)
    input_spec: Any = None

    @property
    def name(self) -> str:
        return self.source.name or "model"

    @property
    def version(self) -> str | None:
        return self.source.version

    def labels(self) -> dict[str, str]:
        """The labels of ``scanflow_serving_model_info``."""
        return {
            "name": self.name,
            "version": self.version or "",
            "variant": self.variant,
            "attestation": self.attestation or "",
        }

    def predict(self, model_input: Any) -> Any:
        return self.pyfunc.predict(model_input)

    def describe(self) -> dict[str, Any]:
        """What ``/varz`` says of the model."""
        return {
            "name": self.name,
            "version": self.version,
            "alias": self.source.alias,
            "uri": self.source.uri,
            "run_id": self.source.run_id,
            "model_id": self.source.model_id,
            "variant": self.variant,
            "variant_uri": self.variant_uri,
            "flavors": self.flavors,
            "attestation_digest": self.attestation,
            "spec_digest": self.spec_digest,
            "scanflow_run_id": self.scanflow_run_id,
            "input": self.input_spec.describe() if self.input_spec is not None else None,
        }


def load_served_model(
    uri: str,
    tracking_uri: str,
    *,
    variant: str = "original",
    prefer: str | None = None,
    max_accuracy_drop: float | None = None,
) -> ServedModel:
    """Resolve ``uri``, pick the variant (``original``, ``onnx``, ``int8`` or ``auto``: the rule of
    :func:`scanflow_core.serving.variants.choose_variant`), download and load it.

    Raises:
        ScanflowError: the model, or the asked variant, is not there or cannot be loaded.
    """
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    from scanflow_core.serving.payloads import InputSpec
    from scanflow_core.serving.variants import variant_uri

    source = resolve_model(uri, tracking_uri)
    chosen, load_uri = variant_uri(source, tracking_uri, variant, prefer, max_accuracy_drop)
    try:
        local = download_model(load_uri, tracking_uri)
        pyfunc = mlflow.pyfunc.load_model(local)
    except ScanflowError:
        raise
    except Exception as exc:
        raise _mlflow_error(exc, load_uri, tracking_uri) from None
    try:
        input_spec = InputSpec.of(pyfunc.metadata)
    except ValueError as exc:
        raise ScanflowError(f"model {uri}: {exc}") from None
    run_tags: dict[str, str] = {}
    if source.run_id:
        try:
            from mlflow import MlflowClient

            run_tags = dict(MlflowClient(tracking_uri=tracking_uri).get_run(source.run_id).data.tags)
        except Exception:
            run_tags = {}
    return ServedModel(
        source=source,
        pyfunc=pyfunc,
        variant=chosen,
        variant_uri=load_uri,
        attestation=attestation_digest(source, tracking_uri),
        spec_digest=run_tags.get("scanflow.spec_digest"),
        scanflow_run_id=run_tags.get("scanflow.run_id"),
        flavors=sorted(pyfunc.metadata.flavors) if pyfunc.metadata is not None else [],
        input_spec=input_spec,
    )
