"""Model variants: an ONNX export and a dynamically quantized (int8) one of a PyTorch model, each saved
as an MLflow model (the ``onnx`` flavor, so any pyfunc server can load it), measured, and picked by a
rule.

:func:`log_variants` exports both, measures each variant (and the original) on evaluation data —
accuracy, agreement with the original, the median latency of one row and of a batch — and stores
them beside the model with a manifest ``variants.json``: as artifacts ``variants/<model>/`` of the
model's MLflow run, or in a folder ``<model>-variants/`` beside a local model. ``scanflow serve
--variant auto`` reads the manifest and :func:`choose_variant` picks:

``prefer: accuracy``
    the most accurate variant; a tie goes to the original, then ``onnx``, then ``int8``.
``prefer: latency``
    the fastest variant whose accuracy is at most ``max_accuracy_drop`` below the original's.

The rule's settings come from the spec (``serving: {prefer: latency, max_accuracy_drop: 0.01}``,
see :class:`scanflow_core.spec.models.ServingSpec`) or the command line.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from scanflow_core.errors import ScanflowError

if TYPE_CHECKING:
    from scanflow_core.serving.model import ModelSource

__all__ = ["VARIANTS", "choose_variant", "export_variants", "log_variants", "measure_variants", "variant_uri"]

#: Every variant, in the order a tie in accuracy is broken.
VARIANTS = ("original", "onnx", "int8")
MANIFEST = "variants.json"


def choose_variant(reports: dict[str, dict[str, Any]], prefer: str, max_accuracy_drop: float = 0.01) -> str:
    """The variant the rule picks among measured ``reports`` (``{variant: {"accuracy", "latency_ms"}}``).

    Examples:
        >>> reports = {
        ...     "original": {"accuracy": 0.97, "latency_ms": 0.30},
        ...     "onnx": {"accuracy": 0.97, "latency_ms": 0.08},
        ...     "int8": {"accuracy": 0.965, "latency_ms": 0.06},
        ... }
        >>> choose_variant(reports, "accuracy"), choose_variant(reports, "latency")
        ('original', 'int8')
        >>> choose_variant(reports, "latency", max_accuracy_drop=0.001)
        'onnx'
    """
    if prefer not in ("latency", "accuracy"):
        raise ValueError(f"prefer is 'latency' or 'accuracy', not {prefer!r}")
    names = [v for v in VARIANTS if v in reports]
    if not names:
        return "original"
    rank = {v: i for i, v in enumerate(VARIANTS)}
    accuracy = {v: reports[v].get("accuracy") for v in names}
    latency = {v: reports[v].get("latency_ms") for v in names}
    if prefer == "accuracy":
        if any(a is None for a in accuracy.values()):
            return "original"
        best = max(float(a) for a in accuracy.values() if a is not None)
        return min((v for v in names if float(accuracy[v] or 0) >= best - 1e-12), key=rank.__getitem__)
    base = accuracy.get("original")
    allowed = [
        v
        for v in names
        if base is None
        or (accuracy[v] is not None and float(accuracy[v] or 0) >= float(base) - max_accuracy_drop)
    ]
    if not allowed:
        return "original"
    if any(latency[v] is None for v in allowed):
        return max(allowed, key=rank.__getitem__)  # unmeasured: int8 is the one built for speed
    return min(allowed, key=lambda v: (float(latency[v] or 0), rank[v]))


# ------------------------------------------------------------------------------------------- export


@contextmanager
def _quiet_exporters() -> Iterator[None]:
    """Silence what torch's and onnxruntime's exporters print that the user cannot act on."""

    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "pre-processing before quantization" not in record.getMessage()

    drop = _Drop()
    root = logging.getLogger()
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)
    root.addFilter(drop)
    try:
        with warnings.catch_warnings():
            # torch's own export code uses a pytree API it deprecated (torch 2.13)
            warnings.filterwarnings(
                "ignore", message=r"`isinstance\(treespec, LeafSpec\)`", category=FutureWarning
            )
            yield
    finally:
        root.removeFilter(drop)
        onnx_log.setLevel(level)


def _requirements(*names: str) -> list[str]:
    return [f"{n}=={importlib_metadata.version(n)}" for n in names]


def export_variants(
    module: Any,
    example: np.ndarray,
    folder: Path,
    *,
    variants: Sequence[str] = ("onnx", "int8"),
    signature: Any = None,
    threads: int = 1,
) -> dict[str, Path]:
    """Export a torch ``module`` to ONNX (a dynamic batch dimension) and quantize that to int8 weights
    (``onnxruntime.quantization.quantize_dynamic``); save each as an MLflow model under ``folder``.

    Args:
        module: a ``torch.nn.Module`` taking one tensor.
        example: an input batch (two rows or more) to trace the export with.
        folder: where ``onnx/`` and ``int8/`` are written.
        variants: which to write.
        signature: the MLflow signature to give the variants (the original's).
        threads: ONNX Runtime's intra-op threads when the variant is served (0: one per core).

    Returns:
        ``{variant: model folder}``.
    """
    unknown = [v for v in variants if v not in ("onnx", "int8")]
    if unknown:
        raise ScanflowError(f"unknown variants {unknown}: expected onnx and/or int8")
    import mlflow.onnx
    import onnx
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    sample = torch.from_numpy(np.ascontiguousarray(example[: max(2, min(len(example), 8))]))
    onnx_file = folder / "model.onnx"
    with _quiet_exporters(), torch.no_grad():
        program = torch.onnx.export(
            module,
            (sample,),
            None,
            dynamo=True,
            input_names=["input"],
            output_names=["output"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            verbose=False,
        )
        program.save(str(onnx_file))
    requirements = _requirements("onnx", "onnxruntime")
    # One model call runs at a time in the server: ONNX Runtime's thread pools would only contend.
    session = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
    written: dict[str, Path] = {}
    if "onnx" in variants:
        written["onnx"] = folder / "onnx"
        mlflow.onnx.save_model(
            onnx.load(str(onnx_file)),
            str(written["onnx"]),
            signature=signature,
            pip_requirements=requirements,
            save_as_external_data=False,
            onnx_session_options=session,
            onnx_execution_providers=["CPUExecutionProvider"],
        )
    if "int8" in variants:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        int8_file = folder / "model.int8.onnx"
        with _quiet_exporters():
            quantize_dynamic(str(onnx_file), str(int8_file), weight_type=QuantType.QInt8)
        written["int8"] = folder / "int8"
        mlflow.onnx.save_model(
            onnx.load(str(int8_file)),
            str(written["int8"]),
            signature=signature,
            pip_requirements=requirements,
            save_as_external_data=False,
            onnx_session_options=session,
            onnx_execution_providers=["CPUExecutionProvider"],
        )
    return written


def _as_array(output: Any) -> np.ndarray:
    if isinstance(output, dict):
        output = next(iter(output.values()))
    if hasattr(output, "to_numpy"):
        output = output.to_numpy()
    return np.asarray(output)


def _classes(output: np.ndarray) -> np.ndarray:
    return output.argmax(axis=1) if output.ndim == 2 and output.shape[1] > 1 else output.reshape(len(output))


def measure_variants(
    models: dict[str, Any], x: np.ndarray, y: np.ndarray | None = None, *, repeats: int = 200, batch: int = 64
) -> dict[str, dict[str, Any]]:
    """Measure each pyfunc model on ``x`` (and labels ``y``): ``accuracy`` (argmax of a score matrix,
    or the predictions themselves, against ``y``), ``agreement`` (share of the original's predicted
    classes it repeats), ``max_abs_diff`` from the original's output, ``latency_ms`` (median of
    ``repeats`` one-row predictions) and ``batch_latency_ms`` (median over a ``batch``-row input)."""
    reports: dict[str, dict[str, Any]] = {}
    reference: np.ndarray | None = None
    for name in [v for v in VARIANTS if v in models] + [v for v in models if v not in VARIANTS]:
        model = models[name]
        output = _as_array(model.predict(x))
        classes = _classes(output)
        report: dict[str, Any] = {"rows": len(x)}
        if y is not None:
            report["accuracy"] = float((classes == np.asarray(y).reshape(len(y))).mean())
        if reference is None:
            reference = output
        else:
            report["agreement"] = float((classes == _classes(reference)).mean())
            if output.shape == reference.shape:
                report["max_abs_diff"] = float(np.max(np.abs(output.astype(np.float64) - reference)))
        report["latency_ms"] = _median_ms(model, [x[i % len(x)][None] for i in range(repeats)])
        chunk = x[:batch]
        report["batch_latency_ms"] = _median_ms(model, [chunk] * max(5, repeats // 10))
        report["batch_rows"] = len(chunk)
        reports[name] = report
    return reports


def _median_ms(model: Any, inputs: list[np.ndarray]) -> float:
    model.predict(inputs[0])  # warm up
    times = []
    for item in inputs:
        started = time.perf_counter()
        model.predict(item)
        times.append(time.perf_counter() - started)
    return round(float(np.median(times)) * 1000, 4)


# ------------------------------------------------------------------------------------------- where


def _key(source: ModelSource) -> str:
    return (source.artifact_path or source.name or "model").strip("/").replace("/", "_")


def _local_folder(source: ModelSource) -> Path:
    assert source.local_path is not None
    return source.local_path.with_name(source.local_path.name + "-variants")


def read_manifest(source: ModelSource, tracking_uri: str) -> dict[str, Any] | None:
    """The variants manifest of the model, or ``None`` when no variant was exported."""
    if source.local_path is not None:
        file = _local_folder(source) / MANIFEST
        return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None
    if source.run_id is None:
        return None
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    prefix = f"variants/{_key(source)}"
    try:
        if not any(a.path == f"{prefix}/{MANIFEST}" for a in client.list_artifacts(source.run_id, prefix)):
            return None
        with tempfile.TemporaryDirectory(prefix="scanflow-variants-") as folder:
            path = client.download_artifacts(source.run_id, f"{prefix}/{MANIFEST}", folder)
            manifest: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
            return manifest
    except Exception as exc:
        raise ScanflowError(f"model {source.uri}: cannot read its variants manifest: {exc}") from None


def variant_uri(
    source: ModelSource, tracking_uri: str, variant: str, prefer: str | None, max_accuracy_drop: float | None
) -> tuple[str, str]:
    """``(variant, URI to load)`` for the asked ``variant`` (``auto``: the rule's pick).

    Raises:
        ScanflowError: an unknown variant, or one the model does not have.
    """
    if variant not in (*VARIANTS, "auto"):
        raise ScanflowError(f"--variant {variant}: expected auto, {', '.join(VARIANTS)}")
    if variant == "original":
        return "original", source.download_uri
    manifest = read_manifest(source, tracking_uri)
    if manifest is None:
        if variant == "auto":
            return "original", source.download_uri
        raise ScanflowError(
            f"model {source.uri} has no {variant!r} variant; export one with"
            f" `scanflow variants {source.uri} --data EVAL.npz`"
        )
    if variant == "auto":
        rule = manifest.get("rule", {})
        variant = choose_variant(
            manifest.get("variants", {}),
            prefer or rule.get("prefer") or "accuracy",
            rule.get("max_accuracy_drop", 0.01) if max_accuracy_drop is None else max_accuracy_drop,
        )
        if variant == "original":
            return "original", source.download_uri
    entry = manifest.get("variants", {}).get(variant)
    if not entry or not entry.get("uri"):
        have = ", ".join(v for v in manifest.get("variants", {}) if v != "original") or "none"
        raise ScanflowError(f"model {source.uri} has no {variant!r} variant (it has: {have})")
    return variant, str(entry["uri"])


def log_variants(
    model_uri: str,
    tracking_uri: str,
    x: np.ndarray,
    y: np.ndarray | None = None,
    *,
    variants: Sequence[str] = ("onnx", "int8"),
    prefer: str = "accuracy",
    max_accuracy_drop: float = 0.01,
    repeats: int = 200,
) -> dict[str, Any]:
    """Export, measure and store the variants of the PyTorch model at ``model_uri`` (see the module's
    docstring); return the manifest.

    Raises:
        ScanflowError: the model is not there, or is not a PyTorch model.
    """
    import mlflow

    from scanflow_core.serving.model import download_model, resolve_model

    source = resolve_model(model_uri, tracking_uri)
    local = download_model(source.download_uri, tracking_uri)
    original = mlflow.pyfunc.load_model(local)
    if "pytorch" not in original.metadata.flavors:
        flavors = ", ".join(sorted(original.metadata.flavors))
        raise ScanflowError(f"model {model_uri}: variants are exported from PyTorch models; it has {flavors}")
    import mlflow.pytorch
    import torch

    module = mlflow.pytorch.load_model(local)
    dtype = (
        np.dtype(original.metadata.get_input_schema().numpy_types()[0])
        if original.metadata.signature
        else np.dtype(np.float32)
    )
    x = np.ascontiguousarray(x, dtype=dtype)
    staging = Path(tempfile.mkdtemp(prefix="scanflow-variants-"))
    try:
        written = export_variants(
            module, x, staging, variants=variants, signature=original.metadata.signature
        )
        models = {"original": original, **{v: mlflow.pyfunc.load_model(str(p)) for v, p in written.items()}}
        previous = torch.get_num_threads()
        torch.set_num_threads(1)  # as the server runs it (ServingConfig.threads), like the ONNX sessions
        try:
            reports = measure_variants(models, x, y, repeats=repeats)
        finally:
            torch.set_num_threads(previous)
        rule = {"prefer": prefer, "max_accuracy_drop": max_accuracy_drop}
        manifest: dict[str, Any] = {
            "source": model_uri,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "rule": rule,
            "variants": reports,
            "chosen": {p: choose_variant(reports, p, max_accuracy_drop) for p in ("accuracy", "latency")},
        }
        reports["original"]["uri"] = source.download_uri
        if source.local_path is not None:
            target = _local_folder(source)
            target.mkdir(parents=True, exist_ok=True)
            for name, path in written.items():
                shutil.rmtree(target / name, ignore_errors=True)
                shutil.copytree(path, target / name)
                reports[name]["uri"] = str(target / name)
            (target / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        elif source.run_id is not None:
            from mlflow import MlflowClient

            client = MlflowClient(tracking_uri=tracking_uri)
            prefix = f"variants/{_key(source)}"
            for name, path in written.items():
                client.log_artifacts(source.run_id, str(path), f"{prefix}/{name}")
                reports[name]["uri"] = f"runs:/{source.run_id}/{prefix}/{name}"
            client.log_dict(source.run_id, manifest, f"{prefix}/{MANIFEST}")
        else:
            raise ScanflowError(
                f"model {model_uri}: neither a run nor a local folder to keep variants beside"
            )
        return manifest
    finally:
        shutil.rmtree(staging, ignore_errors=True)
