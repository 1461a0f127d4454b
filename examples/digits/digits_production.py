"""The digits model in production: package it, serve it, and promote a retrained candidate.

The steps of ``scanflow.yaml`` after ``test`` (the first six are in ``digits_steps.py``, the improve
loop's data steps in ``digits_improve.py``):

``package``   the trained model as an MLflow model, its model card (JSON and Markdown), registered in the
              MLflow model registry when tracking is on (the first version becomes the ``champion``)
``serve``     a smoke test of ``scanflow serve`` on that model: health, ``/varz``, predictions that match
              the model's own, a bad request answered 4xx, latency, one log line per request
``promote``   the candidate ``retrain`` made, scored against the champion on shifted and clean data, is
              registered and becomes the ``champion`` only if it meets the objectives and does better

Every step gets what it needs by name (Scanflow's calling convention) and ``ctx``, the running step,
when it runs in process. torch, mlflow and Scanflow's heavy modules are imported inside the steps.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from digits_steps import CLASSES, N_FEATURES, _load, _restore

if TYPE_CHECKING:
    import torch

__all__ = ["package", "promote", "save_mlflow_model", "serve"]

DESCRIPTION = "A one-hidden-layer torch MLP that reads 8x8 handwritten digits (64 pixels in [0, 1])."


# ------------------------------------------------------------------------------------------ package


def package(
    model: Path,
    eval: Path,  # named after its artifact: Scanflow passes inputs by name
    packaged_model: Path,
    model_card: Path,
    model_card_md: Path,
    ctx: Any = None,
) -> dict[str, float]:
    """Save ``model`` as an MLflow model, register it (tracking on), write its model card beside it."""
    from scanflow_core.packaging import register_model, write_model_card

    x, _ = _load(eval)
    net = _restore(model)
    save_mlflow_model(net, packaged_model, example=x[:3])
    registered = register_model(ctx, packaged_model, tags={"scanflow.source": "package"}) if ctx else None
    registry = None
    if registered is not None:
        crowned = _crown_if_first(ctx, registered.name, registered.version)
        registry = registered.to_dict() | {"champion": crowned}
    card = write_model_card(
        ctx, packaged_model, model_card, model_card_md, description=DESCRIPTION, registry=registry
    )
    metrics = {"model_bytes": float(card["model"]["size"]), "parameters": float(_parameters(net))}
    if registered is not None:
        metrics["registered_version"] = float(registered.version)
    return metrics


def save_mlflow_model(net: torch.nn.Module, folder: Path, example: np.ndarray) -> Path:
    """``net`` as an MLflow model in ``folder``: the ``pytorch`` flavour (``pt2``: a traced graph, no
    pickle) with the ``python_function`` flavour, a tensor signature (rows x 64 float32 pixels in,
    rows x 10 logits out), an input example and pinned requirements (nothing inferred)."""
    import torch

    with _quiet_mlflow():
        import mlflow.pytorch
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, N_FEATURES))]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(CLASSES)))]),
        )
        mlflow.pytorch.save_model(
            net.eval(),
            str(folder),
            signature=signature,
            input_example=np.ascontiguousarray(example, dtype=np.float32),
            pip_requirements=[f"torch=={torch.__version__}", f"numpy=={np.__version__}"],
        )
    return folder


def _crown_if_first(ctx: Any, name: str, version: str) -> bool:
    """The first registered version becomes the ``champion`` (later ones must earn it in ``promote``);
    whether this one did."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from scanflow_core.tracking.mlflow_tracker import tracker_for

    uri = tracker_for(ctx.run).target.uri  # the store register_model used
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        client.get_model_version_by_alias(name, "champion")
    except MlflowException:
        client.set_registered_model_alias(name, "champion", version)
        return True
    return False


# ------------------------------------------------------------------------------------------ serve


def serve(
    packaged_model: Path,
    eval: Path,
    smoke: Path,
    inference_log: Path,
    ctx: Any = None,
    requests: int = 40,
) -> dict[str, float]:
    """Start ``scanflow serve`` on the packaged model (the registered version when there is one) and
    check it answers: ``/ok``, ``/varz``, KServe's readiness, ``/predict`` one row at a time (every
    answer must match the model's own prediction), a malformed request (a 4xx JSON error), ``/metrics``.

    Writes ``smoke`` (what each endpoint answered) and ``inference_log`` (the server's log lines).
    """
    from scanflow_core.serving.app import ServingConfig
    from scanflow_core.serving.server import ModelServer, build_app

    x, _ = _load(eval)
    rows = x[: max(1, min(requests, len(x)))]
    expected = _predict(_restore_packaged(packaged_model), rows)
    uri, tracking_uri = _served_uri(packaged_model, ctx)
    config = ServingConfig(port=0, log_file=str(inference_log))
    latencies: list[float] = []
    with _quiet_mlflow(), _mlflow_at(tracking_uri):
        app = build_app(uri, tracking_uri, config, track_alerts=False)
    with ModelServer(app) as server:
        base = server.url
        health = _get(f"{base}/ok")
        varz = json.loads(_get(f"{base}/varz"))
        ready = _get(f"{base}/v2/health/ready")
        answers = []
        for row in rows:
            started = time.perf_counter()
            status, body = _post(f"{base}/predict", {"inputs": [row.tolist()]})
            latencies.append((time.perf_counter() - started) * 1000)
            if status != 200:
                raise RuntimeError(f"/predict answered {status}: {body}")
            answers.append(int(np.argmax(np.asarray(body["predictions"][0]))))
        bad_status, bad_body = _post(f"{base}/predict", {"inputs": [[0.5] * (N_FEATURES - 1)]})
        metrics_text = _get(f"{base}/metrics")
    agreement = float(np.mean(np.array(answers) == expected))
    if not 400 <= bad_status < 500:
        raise RuntimeError(f"a row of {N_FEATURES - 1} pixels was answered {bad_status}, not a 4xx error")
    document = {
        "uri": uri,
        "ok": health.strip(),
        "ready": ready.strip(),
        "varz": varz,
        "predictions": answers,
        "agreement": agreement,
        "bad_request": {"status": bad_status, "answer": bad_body},
        "metrics_lines": len(metrics_text.splitlines()),
    }
    smoke.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    if agreement < 1.0:
        raise RuntimeError(f"the server's predictions agree with the model's on {agreement:.1%} of rows only")
    return {
        "requests": float(len(rows)),
        "bad_request_status": float(bad_status),
        "log_lines": float(len(inference_log.read_text(encoding="utf-8").splitlines())),
        "latency_p50_ms": float(np.percentile(latencies, 50)),
        "agreement": agreement,
        "latency_p99_ms": float(np.percentile(latencies, 99)),
    }


def _served_uri(packaged_model: Path, ctx: Any) -> tuple[str, str]:
    """The registered version the ``package`` step made (``models:/digits/N``), else the folder."""
    from scanflow_core.tracking.mlflow_tracker import resolve_uri, tracker_for

    if ctx is None:  # a folder needs no store; the server still wants one for its alerts
        from scanflow_core.runs import scanflow_home

        return str(packaged_model), resolve_uri(None, scanflow_home())
    run = ctx.run
    tracking_uri = resolve_uri(run.workflow.tracker.uri, run.home, run.directory)
    version = (run.step_summary("package") or {}).get("metrics", {}).get("registered_version")
    if version is not None and tracker_for(run) is not None:
        return f"models:/{run.workflow.name}/{int(version)}", tracking_uri
    return str(packaged_model), tracking_uri


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as answer:
        text: str = answer.read().decode("utf-8")
        return text


def _post(url: str, payload: dict[str, Any]) -> tuple[int, Any]:
    data = json.dumps(payload).encode("utf-8")
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read() or b"null")


# ------------------------------------------------------------------------------------------ promote


def promote(
    candidate: Path,
    eval: Path,
    shifted_eval: Path,
    candidate_model: Path,
    candidate_card: Path,
    candidate_card_md: Path,
    decision: Path,
    ctx: Any = None,
    objectives: tuple[str, ...] | list[str] = ("evaluate.accuracy >= 0.90",),
) -> dict[str, float]:
    """Judge the candidate with Scanflow's improver: score it and the registry's ``champion`` alike on
    the clean evaluation set (``evaluate.accuracy``) and the shifted one (``shifted.accuracy``), check
    ``objectives`` on the candidate's scores, register it, and make it the ``champion`` only when the
    objectives hold and it beats the champion on the spec's ``improve.metric``. The candidate's MLflow
    model and model card are this step's outputs, as ``package``'s are for the first model."""
    from scanflow_core.improve import Improver
    from scanflow_core.packaging import ATTESTATION_TAG, pipeline_digest, write_model_card

    if ctx is None:
        raise RuntimeError("promote runs in a Scanflow run (it needs the workflow's improve settings)")
    data = {"evaluate": _load(eval), "shifted": _load(shifted_eval)}

    def evaluate(net: Any) -> dict[str, float]:
        return {f"{name}.accuracy": _accuracy(net, x, y) for name, (x, y) in data.items()}

    net = _restore(candidate)
    save_mlflow_model(net, candidate_model, example=data["evaluate"][0][:3])

    def log_model(_: Any) -> str:
        import mlflow

        mlflow.log_artifacts(str(candidate_model), "model")
        return f"runs:/{mlflow.active_run().info.run_id}/model"

    improver = Improver.from_workflow(
        ctx.run.workflow,
        train=_no_training,
        evaluate=evaluate,
        objectives=list(objectives),
        log_model=log_model,
        home=ctx.run.home,
    )
    with _quiet_mlflow(), _mlflow_at(improver.uri):
        verdict = improver.consider(net)
        digest = pipeline_digest(ctx.run, ctx.name)
        if digest:
            from mlflow import MlflowClient

            client = MlflowClient(tracking_uri=improver.uri, registry_uri=improver.uri)
            client.set_model_version_tag(verdict.name, verdict.version, ATTESTATION_TAG, digest)
            client.set_model_version_tag(verdict.name, verdict.version, "scanflow.run_id", ctx.run.run_id)
    registry = {
        "name": verdict.name,
        "version": verdict.version,
        "uri": f"models:/{verdict.name}/{verdict.version}",
        "champion": verdict.promoted,
    }
    write_model_card(
        ctx,
        candidate_model,
        candidate_card,
        candidate_card_md,
        description=DESCRIPTION + " Retrained with newly labelled digits.",
        metrics={"promote": verdict.metrics},
        registry=registry,
    )
    document = {
        "promoted": verdict.promoted,
        "reason": verdict.reason,
        "metric": verdict.metric,
        "candidate": verdict.candidate,
        "champion": verdict.champion,
        "champion_version": verdict.champion_version,
        "candidate_version": verdict.version,
        "metrics": verdict.metrics,
        "objectives": [o.to_dict() for o in verdict.objectives],
    }
    decision.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    metrics = {"candidate_version": float(verdict.version)}
    metrics |= {k.replace(".", "_"): v for k, v in verdict.metrics.items()}
    if verdict.champion is not None:
        metrics["champion_" + verdict.metric.replace(".", "_")] = verdict.champion
    return metrics | {"promoted": float(verdict.promoted)}


def _no_training(x: Any, y: Any) -> Any:
    raise RuntimeError("the candidate is trained by the retrain step; promote only judges it")


# ------------------------------------------------------------------------------------------ helpers


def _parameters(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _accuracy(net: Callable[..., Any], x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(_predict(net, x) == y))


def _predict(net: Callable[..., Any], x: np.ndarray) -> np.ndarray:
    """Class predictions of a torch module, or of a model loaded back from MLflow."""
    import torch

    with torch.no_grad():
        out = net(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    if isinstance(out, tuple | list):
        out = out[0]
    logits = out.numpy() if hasattr(out, "numpy") else np.asarray(out)
    predictions: np.ndarray = logits.argmax(axis=1)
    return predictions


def _restore_packaged(folder: Path) -> Any:
    with _quiet_mlflow():
        import mlflow.pytorch

        return mlflow.pytorch.load_model(str(folder))


@contextmanager
def _mlflow_at(uri: str) -> Iterator[None]:
    """mlflow's own default store is ``./mlflow.db``; some of its calls (a ``models:/`` download) use
    that default, not the store they are given. Point the default at ``uri`` meanwhile."""
    import os

    import mlflow

    saved = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        # Back as it was: setting a URI also sets its environment variable, which every later
        # default (Scanflow's tracker included) would then follow.
        mlflow.set_tracking_uri(saved["MLFLOW_TRACKING_URI"])  # None: unset
        mlflow.set_registry_uri(saved["MLFLOW_REGISTRY_URI"])
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """mlflow warns on import that a type hint of its own is ``Any``; that says nothing about the demo."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*Any type hint is inferred as AnyType", UserWarning)
        yield
