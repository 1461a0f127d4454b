"""The model server's ASGI application: MLSpec's step endpoints, a predict endpoint and KServe v2.

=============================== ====== =========================================================
``/ok``                          GET    ``ok`` while the server runs (health)
``/varz``                        GET    JSON: the model (name, version, URI, variant, pipeline
                                        attestation digest), uptime, configuration, drift
``/metrics``                     GET    Prometheus text (:mod:`scanflow_core.serving.metrics`)
``/predict``, ``/invocations``   POST   ``{"inputs": [[...], ...]}`` → ``{"predictions": [...],
                                        "model_version": ..., "request_id": ...}``
``/v2/health/live``, ``/ready``  GET    KServe v2 health
``/v2/models/<name>[/ready]``    GET    KServe v2 model metadata and readiness
``/v2/models/<name>/infer``      POST   KServe v2 inference (tensors in, tensors out)
=============================== ====== =========================================================

A bad request gets a 4xx JSON answer ``{"error": ..., "expected": ..., "request_id": ...}``; a model
that raises gets a 500 JSON answer with the exception's type and first line, never a traceback.
Every request writes one log line (:mod:`scanflow_core.serving.logs`). The app is raw ASGI (no
framework between uvicorn and the model): the predict path is JSON in, one queue hop to the
:class:`~scanflow_core.serving.batching.Batcher`'s thread, JSON out.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from scanflow_core import __version__
from scanflow_core.serving.batching import Batcher, ModelFailed
from scanflow_core.serving.logs import InferenceLog, format_line
from scanflow_core.serving.metrics import CONTENT_TYPE, ServingMetrics
from scanflow_core.serving.payloads import V2_NAMES, RequestError, digest_input, dumps, loads, to_jsonable

if TYPE_CHECKING:
    from scanflow_core.serving.model import ServedModel
    from scanflow_core.serving.monitor import DriftMonitor, MlflowAlerts

__all__ = ["ServingApp", "ServingConfig"]

log = logging.getLogger("scanflow.serving")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_Answer = tuple[int, list[tuple[bytes, bytes]], bytes]
_JSON = [(b"content-type", b"application/json")]
_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_V2_MODEL = re.compile(
    r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<rest>/ready|/infer)?$"
)
ENDPOINTS = (
    "GET /ok",
    "GET /varz",
    "GET /metrics",
    "POST /predict",
    "POST /invocations",
    "GET /v2/health/live",
    "GET /v2/health/ready",
    "GET /v2/models/<name>",
    "GET /v2/models/<name>/ready",
    "POST /v2/models/<name>/infer",
)


@dataclass(frozen=True)
class ServingConfig:
    """How the server behaves (shown under ``config`` in ``/varz``)."""

    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 8 * 1024 * 1024
    max_rows: int = 10_000
    max_batch_rows: int = 256
    log_file: str | None = None
    log_inputs: bool = False
    user_header: str = "x-user-id"
    #: Threads of the model's library (torch) in its predict calls; 0 leaves the library's default.
    threads: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Request:
    __slots__ = ("agent", "declared", "method", "path", "referer", "request_id", "scope", "started", "user")

    def __init__(self, scope: Scope, user_header: bytes) -> None:
        self.scope = scope
        self.started = time.perf_counter()
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.request_id: str = ""
        self.user: str | None = None
        self.agent: str | None = None
        self.referer: str | None = None
        self.declared: int | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                self.declared = int(value) if value.isdigit() else None
            elif name == b"x-request-id":
                text = value.decode("latin-1")
                self.request_id = text if _REQUEST_ID.match(text) else ""
            elif name == user_header:
                self.user = value.decode("utf-8", "replace").strip()[:128] or None
            elif name == b"user-agent":
                self.agent = value.decode("latin-1")
            elif name == b"referer":
                self.referer = value.decode("latin-1")
        if not self.request_id:
            self.request_id = os.urandom(12).hex()


class ServingApp:
    """The ASGI app for one model.

    Args:
        model: the loaded model.
        config: limits and logging settings.
        log_sink: where log lines go (default: as ``config.log_file`` says).
        monitor: live drift monitor (optional).
        alerts: the tracker of drift alerts, closed at shutdown (optional).
    """

    def __init__(
        self,
        model: ServedModel,
        config: ServingConfig | None = None,
        *,
        log_sink: InferenceLog | None = None,
        metrics: ServingMetrics | None = None,
        monitor: DriftMonitor | None = None,
        alerts: MlflowAlerts | None = None,
    ) -> None:
        self.model = model
        self.config = config or ServingConfig()
        self.log = log_sink or InferenceLog(self.config.log_file)
        self.metrics = metrics or ServingMetrics(model.labels())
        self.monitor = monitor
        self.alerts = alerts
        self.spec = model.input_spec
        self.batcher = Batcher(
            model.predict,
            max_batch_rows=self.config.max_batch_rows,
            on_batch=self.metrics.batch,
            initializer=self._set_threads,
        )
        self.ready = False
        self._user_header = self.config.user_header.lower().encode()
        self._common = {
            "model": model.name,
            "model_version": model.version,
            "variant": model.variant,
            "attestation": model.attestation,
        }
        self._get: dict[str, Callable[[_Request], _Answer]] = {
            "/ok": self._ok,
            "/varz": self._varz,
            "/metrics": self._metrics,
            "/v2/health/live": self._live,
            "/v2/health/ready": self._ready,
            "/v2": self._v2_server,
        }

    # ------------------------------------------------------------------------------------ lifespan

    def _set_threads(self) -> None:
        """One model call runs at a time, so the library's own thread pool only adds contention for
        small models: torch gets ``config.threads`` threads (ONNX variants are saved with one)."""
        if self.config.threads > 0 and "torch" in sys.modules:
            import torch

            torch.set_num_threads(self.config.threads)

    def start(self) -> None:
        self.batcher.start()
        self.ready = True

    def stop(self) -> None:
        self.ready = False
        self.batcher.stop()
        if self.monitor is not None:
            self.monitor.wait()
        if self.alerts is not None:
            self.alerts.close()
        self.log.close()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ------------------------------------------------------------------------------------ requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = _Request(scope, self._user_header)
        fields: dict[str, Any] = {"request_id": request.request_id, "user_id": request.user}
        endpoint = _endpoint(request.path)
        try:
            status, headers, body = await self._route(request, receive, fields)
        except RequestError as exc:
            status, headers, body = (
                exc.status,
                _JSON,
                dumps(exc.to_dict() | {"request_id": request.request_id}),
            )
            fields["error"] = exc.message
        except Exception as exc:  # a bug of ours: say so briefly, keep serving, put the traceback in our log
            log.exception("internal error answering %s %s", request.method, request.path)
            status, headers = 500, _JSON
            body = dumps(
                {"error": f"internal error ({type(exc).__name__})", "request_id": request.request_id}
            )
            fields["error"] = f"internal error ({type(exc).__name__})"
        headers = [
            *headers,
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request.request_id.encode()),
        ]
        if status == 405:
            headers.append(
                (
                    b"allow",
                    b"POST"
                    if request.path in ("/predict", "/invocations") or request.path.endswith("/infer")
                    else b"GET",
                )
            )
        try:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        except Exception as exc:  # the client went away: nothing to answer, but log and count it
            fields["error"] = f"the answer could not be sent: {type(exc).__name__}"
        seconds = time.perf_counter() - request.started
        self.metrics.request(endpoint, status, seconds)
        fields["latency_ms"] = round(seconds * 1000, 3)
        self._write_log(request, status, len(body), fields)

    def _write_log(self, request: _Request, status: int, size: int, fields: dict[str, Any]) -> None:
        scope = request.scope
        query = scope.get("query_string") or b""
        path = request.path + ("?" + query.decode("latin-1") if query else "")
        client = scope.get("client")
        line = format_line(
            host=client[0] if client else "-",
            user=request.user,
            method=request.method,
            path=path,
            protocol=scope.get("http_version", "1.1"),
            status=status,
            size=size,
            referer=request.referer,
            agent=request.agent,
            fields=fields,
        )
        self.log.write(line)

    async def _route(self, request: _Request, receive: Receive, fields: dict[str, Any]) -> _Answer:
        path, method = request.path, request.method
        if path in ("/predict", "/invocations"):
            _allow(method, "POST")
            status, body = await self._predict(request, receive, fields, v2=False)
            return status, _JSON, body
        handler = self._get.get(path.rstrip("/") or "/")
        if handler is not None:
            _allow(method, "GET")
            return handler(request)
        match = _V2_MODEL.match(path)
        if match is not None:
            if match["name"] != self.model.name:
                raise RequestError(
                    404, f"no model named {match['name']!r} here", f"model {self.model.name!r}"
                )
            if match["version"] is not None and match["version"] != (self.model.version or ""):
                raise RequestError(
                    404,
                    f"model {self.model.name!r} has no version {match['version']!r} here",
                    f"version {self.model.version!r}",
                )
            if match["rest"] == "/infer":
                _allow(method, "POST")
                status, body = await self._predict(request, receive, fields, v2=True)
                return status, _JSON, body
            _allow(method, "GET")
            if match["rest"] == "/ready":
                return self._ready(request)
            return 200, _JSON, dumps(self._v2_metadata())
        raise RequestError(404, f"no endpoint {path}", "; ".join(ENDPOINTS))

    async def _body(self, request: _Request, receive: Receive) -> bytes:
        limit = self.config.max_body_bytes
        if request.declared is not None and request.declared > limit:
            raise RequestError(
                413, f"the body has {request.declared} bytes; this server takes at most {limit}"
            )
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestError(400, "the client went away before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"the body is over {limit} bytes, the most this server takes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _predict(
        self, request: _Request, receive: Receive, fields: dict[str, Any], *, v2: bool
    ) -> tuple[int, bytes]:
        fields.update(self._common)
        payload = loads(await self._body(request, receive))
        if v2:
            model_input = self.spec.parse_v2(payload, self.config.max_rows)
        else:
            model_input = self.spec.parse(payload, self.config.max_rows)
        fields["rows"] = len(model_input)
        fields["input_sha256"] = digest_input(model_input)
        if self.config.log_inputs:
            fields["input"] = (
                model_input if isinstance(model_input, np.ndarray) else model_input.to_dict("records")
            )
        try:
            output = await self.batcher.submit(model_input)
        except ModelFailed as exc:
            self.metrics.model_errors += 1
            message = f"the model failed on this input: {exc.kind}: {exc.message}"
            fields["error"] = message
            return 500, dumps({"error": message, "request_id": request.request_id})
        predictions = to_jsonable(output)
        try:
            if v2:
                body = dumps(self._v2_answer(request.request_id, output))
            else:
                answer = {
                    "predictions": predictions,
                    "model_version": self.model.version,
                    "request_id": request.request_id,
                }
                body = dumps(answer)
        except (TypeError, ValueError) as exc:
            self.metrics.model_errors += 1
            message = f"the model's output cannot be written as JSON: {str(exc).splitlines()[0][:200]}"
            fields["error"] = message
            return 500, dumps({"error": message, "request_id": request.request_id})
        fields["prediction"] = predictions
        if self.monitor is not None:
            self.monitor.add(model_input)
        return 200, body

    # ------------------------------------------------------------------------------------ GET endpoints

    def _ok(self, request: _Request) -> _Answer:
        return 200, _TEXT, b"ok\n"

    def _live(self, request: _Request) -> _Answer:
        return 200, _JSON, b'{"live":true}'

    def _ready(self, request: _Request) -> _Answer:
        return (200 if self.ready else 503), _JSON, dumps({"ready": self.ready})

    def _metrics(self, request: _Request) -> _Answer:
        return 200, [(b"content-type", CONTENT_TYPE.encode())], self.metrics.render().encode()

    def _varz(self, request: _Request) -> _Answer:
        counts: dict[str, int] = {}
        for (_, code), n in list(self.metrics.requests.items()):
            counts[str(code)] = counts.get(str(code), 0) + n
        varz = {
            "model": self.model.describe(),
            "attestation_digest": self.model.attestation,
            "uptime_s": round(self.metrics.uptime(), 3),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.metrics.started)),
            "config": self.config.to_dict(),
            "requests": counts,
            "drift": self.monitor.status() if self.monitor is not None else None,
            "serving_run_id": self.alerts.run_id if self.alerts is not None else None,
            "scanflow_version": __version__,
            "pid": os.getpid(),
        }
        return 200, _JSON, dumps(varz)

    # ------------------------------------------------------------------------------------ KServe v2

    def _v2_server(self, request: _Request) -> _Answer:
        return 200, _JSON, dumps({"name": "scanflow", "version": __version__, "extensions": []})

    def _v2_metadata(self) -> dict[str, Any]:
        spec = self.spec
        if spec.kind == "columns":
            inputs = [
                {"name": c, "datatype": "BYTES" if t == "string" else "FP64", "shape": [-1]}
                for c, t in zip(spec.columns, spec.column_types, strict=True)
            ]
        else:
            shape = list(spec.shape) if spec.shape is not None else [-1, -1]
            inputs = [{"name": "input", "datatype": V2_NAMES.get(spec.dtype.str, "FP32"), "shape": shape}]
        return {
            "name": self.model.name,
            "versions": [self.model.version] if self.model.version else [],
            "platform": "mlflow-" + "+".join(self.model.flavors),
            "inputs": inputs,
        }

    def _v2_answer(self, request_id: str, output: Any) -> dict[str, Any]:
        if not isinstance(output, dict):
            output = {"output-0": output}
        outputs = []
        for name, value in output.items():
            array = np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value)
            outputs.append(
                {
                    "name": str(name),
                    "shape": list(array.shape),
                    "datatype": V2_NAMES.get(array.dtype.str, "BYTES"),
                    "data": array.reshape(-1),
                }
            )
        return {
            "model_name": self.model.name,
            "model_version": self.model.version,
            "id": request_id,
            "outputs": outputs,
        }


_KNOWN = frozenset(
    ("/ok", "/varz", "/metrics", "/predict", "/invocations", "/v2", "/v2/health/live", "/v2/health/ready")
)


def _endpoint(path: str) -> str:
    """The ``endpoint`` label of a path: the known ones, ``/v2/infer``, ``/v2/models`` or ``other``."""
    path = path.rstrip("/") or "/"
    if path in _KNOWN:
        return path
    if path.startswith("/v2/models/"):
        return "/v2/infer" if path.endswith("/infer") else "/v2/models"
    return "other"


def _allow(method: str, allowed: str) -> None:
    if method != allowed:
        raise RequestError(405, f"{method} is not allowed here", f"{allowed}")
