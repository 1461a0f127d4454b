"""A drift-checking service: a saved :class:`~scanflow_core.checking.drift.DriftDetector` behind HTTP.

Run it as ``python -m scanflow_core.checking.service --detector DIR --port 8080``; it needs numpy and
scipy, not torch (the detector is read with :meth:`DriftDetector.load`, which falls back to the NumPy
forward pass). The Docker runtime runs it as the ``checker`` sidecar
(:mod:`scanflow_core.runtimes.sidecars`). Standard library HTTP, one thread per request:

* ``POST /check`` — body ``{"rows": [[...], ...], "labels": [...]?}`` (numeric columns in the
  reference's order) → the detector's verdict, ``DriftResult.to_dict()``: ``drifted``, ``p_value``,
  ``alpha``, ``score``, ``reference_score``, ``anomalous_share``, ``tests``, ``features``, ``size``…
  A malformed batch gets 400 with ``{"error": ...}``.
* ``GET /ok`` — ``ok`` once the detector is loaded.
* ``GET /varz`` — JSON: the detector (columns, alpha), request and drift counts, the last verdict.
* ``GET /metrics`` — Prometheus text: requests by code, batches checked and drifted, the last
  batch's reconstruction score, p-value and size.
"""

from __future__ import annotations

import argparse
import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["CheckerService", "main", "serve"]

MAX_BODY = 64 * 1024 * 1024


class CheckerService:
    """The detector and the counters the endpoints report; thread-safe."""

    def __init__(self, detector_dir: str | Path) -> None:
        from scanflow_core.checking.drift import DriftDetector

        self.detector_dir = Path(detector_dir)
        self.detector = DriftDetector.load(self.detector_dir)
        self.started = time.time()
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}
        self.batches = 0
        self.drifted = 0
        self.last: dict[str, Any] | None = None

    def check(self, body: dict[str, Any]) -> dict[str, Any]:
        """The verdict on one batch (``ValueError`` for a malformed one)."""
        import numpy as np

        rows = body.get("rows")
        if not isinstance(rows, list) or not rows:
            raise ValueError('the body needs "rows": a non-empty list of rows')
        try:
            batch = np.asarray(rows, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f'"rows" must hold numbers: {exc}') from None
        result = self.detector.test(batch, body.get("labels")).to_dict()
        with self._lock:
            self.batches += 1
            self.drifted += int(result["drifted"])
            self.last = {
                "drifted": result["drifted"],
                "p_value": result["p_value"],
                "score": result["score"],
                "size": result["size"],
                "at": time.time(),
            }
        return result

    def count(self, endpoint: str, code: int) -> None:
        with self._lock:
            self.requests[(endpoint, code)] = self.requests.get((endpoint, code), 0) + 1

    def varz(self) -> dict[str, Any]:
        with self._lock:
            return {
                "detector": str(self.detector_dir),
                "columns": self.detector.columns,
                "alpha": self.detector.alpha,
                "uptime_s": time.time() - self.started,
                "requests": sum(self.requests.values()),
                "batches": self.batches,
                "drifted": self.drifted,
                "last": self.last,
            }

    def metrics(self) -> str:
        with self._lock:
            lines = [
                "# HELP scanflow_checker_requests_total HTTP requests by endpoint and status code.",
                "# TYPE scanflow_checker_requests_total counter",
            ]
            for (endpoint, code), n in sorted(self.requests.items()):
                lines.append(f'scanflow_checker_requests_total{{endpoint="{endpoint}",code="{code}"}} {n}')
            last = self.last or {}
            lines += [
                "# HELP scanflow_checker_batches_total Batches checked.",
                "# TYPE scanflow_checker_batches_total counter",
                f"scanflow_checker_batches_total {self.batches}",
                "# HELP scanflow_checker_drifted_batches_total Batches found drifted.",
                "# TYPE scanflow_checker_drifted_batches_total counter",
                f"scanflow_checker_drifted_batches_total {self.drifted}",
                "# HELP scanflow_checker_drift_score The last batch's mean reconstruction error.",
                "# TYPE scanflow_checker_drift_score gauge",
                f"scanflow_checker_drift_score {_number(last.get('score'))}",
                "# HELP scanflow_checker_drift_p_value The last batch's p-value.",
                "# TYPE scanflow_checker_drift_p_value gauge",
                f"scanflow_checker_drift_p_value {_number(last.get('p_value'))}",
                "# HELP scanflow_checker_drifted Whether the last batch drifted (1) or not (0).",
                "# TYPE scanflow_checker_drifted gauge",
                f"scanflow_checker_drifted {_number(last.get('drifted'))}",
            ]
        return "\n".join(lines) + "\n"


def _number(value: Any) -> str:
    if value is None:
        return "NaN"
    number = float(value)
    return "NaN" if math.isnan(number) else repr(number)


def _jsonable(value: Any) -> Any:
    """JSON without NaN (null instead), which strict parsers refuse."""
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _handler(service: CheckerService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            service.count(self.path.split("?")[0], code)
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, data: Any) -> None:
            self._send(code, json.dumps(_jsonable(data)).encode(), "application/json")

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path == "/ok":
                self._send(200, b"ok\n", "text/plain; charset=utf-8")
            elif path == "/varz":
                self._json(200, service.varz())
            elif path == "/metrics":
                self._send(200, service.metrics().encode(), "text/plain; version=0.0.4; charset=utf-8")
            else:
                self._json(404, {"error": f"no {path}: POST /check, GET /ok, /varz, /metrics"})

        def do_POST(self) -> None:
            path = self.path.split("?")[0]
            if path != "/check":
                self._json(404, {"error": f"no {path}: POST /check"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length <= 0 or length > MAX_BODY:
                self._json(400, {"error": f"a JSON body of 1 byte to {MAX_BODY} bytes is needed"})
                return
            try:
                body = json.loads(self.rfile.read(length))
                if not isinstance(body, dict):
                    raise ValueError("the body must be a JSON object")
                result = service.check(body)
            except ValueError as exc:
                self._json(400, {"error": str(exc)})
                return
            self._json(200, result)

    return Handler


def serve(detector_dir: str | Path, host: str = "0.0.0.0", port: int = 8080) -> ThreadingHTTPServer:
    """A server for the detector in ``detector_dir`` (not yet serving: call ``serve_forever``)."""
    server = ThreadingHTTPServer((host, port), _handler(CheckerService(detector_dir)))
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--detector", required=True, help="a folder written by DriftDetector.save")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    server = serve(args.detector, args.host, args.port)
    print(f"scanflow checker: {args.detector} on {args.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
