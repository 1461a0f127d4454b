"""MLSpec's step endpoints for a running workflow: ``/ok``, ``/varz`` and ``/metrics``.

``scanflow run --status-port PORT`` serves them on 127.0.0.1 for every step running in the
process; ``/steps/<step>/ok`` (``/varz``, ``/metrics``) answers for one step.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from scanflow_core.errors import ScanflowError
from scanflow_core.runs import StepRun, WorkflowRun, iso

__all__ = ["StatusServer", "prometheus_text", "varz"]


def _step_varz(step_run: StepRun) -> dict[str, Any]:
    recorder = step_run.recorder
    return {
        "step": step_run.name,
        "stage": step_run.stage,
        "status": step_run.status,
        "attempt": step_run.attempt,
        "started_at": iso(step_run.started_at),
        "running_s": round(time.time() - step_run.started_at, 3) if step_run.started_at else None,
        "progress": recorder.progress,
        "message": recorder.message,
        "params": step_run.params | recorder.params,
        "metrics": dict(recorder.latest),
        "metric_points": recorder.points,
    }


def varz(run: WorkflowRun, step: str | None = None) -> dict[str, Any]:
    """What ``/varz`` answers: the run, and each running step's params, stage, start and progress."""
    active = dict(run.active)
    if step is not None:
        return _step_varz(active[step])
    finished = {n: s.get("status") for n, s in run.step_summaries().items()}
    return {
        "run_id": run.run_id,
        "workflow": run.workflow.name,
        "spec_digest": run.workflow.digest,
        "status": run.status,
        "started_at": iso(run.started_at),
        "uptime_s": round(time.time() - run.started_at, 3),
        "running": {name: _step_varz(s) for name, s in active.items()},
        "finished": finished,
    }


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(run: WorkflowRun, step: str | None = None) -> str:
    """What ``/metrics`` answers: Prometheus text exposition of what running steps logged so far."""
    active = dict(run.active)
    if step is not None:
        active = {step: active[step]}
    lines = [
        "# HELP scanflow_step_metric Latest value of a metric a running step logged.",
        "# TYPE scanflow_step_metric gauge",
    ]
    for name, step_run in active.items():
        for key, value in step_run.recorder.latest.items():
            lines.append(f'scanflow_step_metric{{step="{_label(name)}",metric="{_label(key)}"}} {value!r}')
    lines += [
        "# HELP scanflow_step_progress Progress of a running step (0..1).",
        "# TYPE scanflow_step_progress gauge",
    ]
    for name, step_run in active.items():
        if step_run.recorder.progress is not None:
            lines.append(f'scanflow_step_progress{{step="{_label(name)}"}} {step_run.recorder.progress!r}')
    lines += [
        "# HELP scanflow_step_metric_points_total Metric points a running step logged.",
        "# TYPE scanflow_step_metric_points_total counter",
    ]
    for name, step_run in active.items():
        lines.append(f'scanflow_step_metric_points_total{{step="{_label(name)}"}} {step_run.recorder.points}')
    if step is None:
        counts: dict[str, int] = {}
        for summary in run.step_summaries().values():
            counts[str(summary.get("status"))] = counts.get(str(summary.get("status")), 0) + 1
        counts["running"] = len(active)
        lines += ["# HELP scanflow_steps Steps of the run by status.", "# TYPE scanflow_steps gauge"]
        lines += [f'scanflow_steps{{status="{_label(k)}"}} {v}' for k, v in sorted(counts.items())]
    return "\n".join(lines) + "\n"


_ENDPOINTS = ["/ok", "/varz", "/metrics"]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        step = None
        if path.startswith("/steps/"):
            _, _, rest = path.partition("/steps/")
            step, _, endpoint = rest.rpartition("/")
            path = "/" + endpoint
            if step not in self.server.run.active:
                self._send(404, "application/json", json.dumps({"error": f"no step {step!r} is running"}))
                return
        run = self.server.run
        try:
            if path == "/ok":
                self._send(200, "text/plain; charset=utf-8", "ok\n")
            elif path == "/varz":
                self._send(200, "application/json", json.dumps(varz(run, step), default=str))
            elif path == "/metrics":
                self._send(200, "text/plain; version=0.0.4; charset=utf-8", prometheus_text(run, step))
            else:
                body = json.dumps({"error": "not found", "endpoints": _ENDPOINTS})
                self._send(404, "application/json", body)
        except KeyError:  # the step finished between the check above and the read
            self._send(404, "application/json", json.dumps({"error": f"no step {step!r} is running"}))

    def _send(self, code: int, content_type: str, body: str) -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, run: WorkflowRun, port: int) -> None:
        self.run = run
        super().__init__(("127.0.0.1", port), _Handler)


class StatusServer:
    """Serves the endpoints in a background thread; ``port=0`` picks a free port (see ``.port``)."""

    def __init__(self, run: WorkflowRun, port: int = 0) -> None:
        try:
            self._server = _Server(run, port)
        except OSError as exc:
            raise ScanflowError(
                f"cannot serve the status endpoints on 127.0.0.1:{port}: {exc.strerror or exc}; "
                "pick another port (0 picks a free one)"
            ) from None
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="scanflow-status", daemon=True
        )

    def start(self) -> StatusServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for serve_forever, forever if it never ran
            self._server.shutdown()
        self._server.server_close()
