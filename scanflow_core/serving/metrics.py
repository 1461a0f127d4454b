"""What ``/metrics`` answers: request counts by endpoint and status, a latency histogram, batch sizes
and the live drift score, in Prometheus' text exposition format (version 0.0.4).

Counters are plain integers updated on the event loop (and, for batches, on the worker thread under
a lock); rendering reads them without stopping the server.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections import defaultdict

__all__ = ["CONTENT_TYPE", "LATENCY_BUCKETS", "ServingMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Upper bounds of the latency histogram, in seconds.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Histogram:
    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.n += 1

    def lines(self, name: str, labels: str) -> list[str]:
        sep = "," if labels else ""
        out, running = [], 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            out.append(f'{name}_bucket{{{labels}{sep}le="{_number(bound)}"}} {running}')
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.n}')
        out.append(
            f"{name}_sum{{{labels}}} {_number(self.total)}" if labels else f"{name}_sum {_number(self.total)}"
        )
        out.append(f"{name}_count{{{labels}}} {self.n}" if labels else f"{name}_count {self.n}")
        return out


class ServingMetrics:
    """The server's counters and gauges.

    Args:
        model: labels of the ``scanflow_serving_model_info`` gauge (name, version, variant, ...).

    Examples:
        >>> metrics = ServingMetrics({"name": "digits", "version": "3"})
        >>> metrics.request("/predict", 200, 0.002)
        >>> 'scanflow_serving_requests_total{endpoint="/predict",code="200"} 1' in metrics.render()
        True
    """

    def __init__(self, model: dict[str, str]) -> None:
        self.model = model
        self.started = time.time()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.latency: dict[str, _Histogram] = {}
        self.rows = 0
        self.model_errors = 0
        self.batch_sizes = _Histogram(BATCH_BUCKETS)
        self.model_seconds = 0.0
        self._lock = threading.Lock()
        self.drift: dict[str, float] = {}
        self.drift_checks = 0
        self.drift_alerts = 0
        self.drift_errors = 0
        self.tracker_errors = 0
        self.window_rows = 0

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one answered request (on the event loop)."""
        self.requests[(endpoint, status)] += 1
        histogram = self.latency.get(endpoint)
        if histogram is None:
            histogram = self.latency[endpoint] = _Histogram(LATENCY_BUCKETS)
        histogram.observe(seconds)

    def batch(self, requests: int, rows: int, seconds: float) -> None:
        """Count one model call of ``requests`` joined requests (on the worker thread)."""
        with self._lock:
            self.batch_sizes.observe(requests)
            self.rows += rows
            self.model_seconds += seconds

    def uptime(self) -> float:
        return time.time() - self.started

    def render(self) -> str:
        """The Prometheus text of every metric."""
        lines: list[str] = []

        def family(name: str, kind: str, text: str) -> None:
            lines.append(f"# HELP {name} {text}")
            lines.append(f"# TYPE {name} {kind}")

        family("scanflow_serving_model_info", "gauge", "The model being served (always 1).")
        labels = ",".join(f'{k}="{_label(str(v))}"' for k, v in self.model.items())
        lines.append(f"scanflow_serving_model_info{{{labels}}} 1")
        family("scanflow_serving_uptime_seconds", "gauge", "Seconds since the server started.")
        lines.append(f"scanflow_serving_uptime_seconds {_number(round(self.uptime(), 3))}")
        family(
            "scanflow_serving_requests_total", "counter", "Requests answered, by endpoint and status code."
        )
        for (endpoint, code), count in sorted(self.requests.items()):
            lines.append(
                f'scanflow_serving_requests_total{{endpoint="{_label(endpoint)}",code="{code}"}} {count}'
            )
        family("scanflow_serving_request_duration_seconds", "histogram", "Time to answer a request.")
        for endpoint, histogram in sorted(self.latency.items()):
            lines += histogram.lines(
                "scanflow_serving_request_duration_seconds", f'endpoint="{_label(endpoint)}"'
            )
        with self._lock:
            family("scanflow_serving_predicted_rows_total", "counter", "Input rows the model predicted.")
            lines.append(f"scanflow_serving_predicted_rows_total {self.rows}")
            family("scanflow_serving_model_seconds_total", "counter", "Seconds spent in the model's predict.")
            lines.append(f"scanflow_serving_model_seconds_total {_number(round(self.model_seconds, 6))}")
            family("scanflow_serving_batch_requests", "histogram", "Requests joined into one model call.")
            lines += self.batch_sizes.lines("scanflow_serving_batch_requests", "")
        family("scanflow_serving_model_errors_total", "counter", "Requests on which the model raised.")
        lines.append(f"scanflow_serving_model_errors_total {self.model_errors}")
        lines += self._drift_lines()
        return "\n".join(lines) + "\n"

    def _drift_lines(self) -> list[str]:
        lines: list[str] = []
        gauges = {
            "score": "Mean reconstruction error of the live window (the drift detector's autoencoder).",
            "reference_score": "Mean reconstruction error of the reference's calibration part.",
            "p_value": "The drift test's p-value on the live window (small: drift).",
            "anomalous_share": "Share of the window's rows the detector finds anomalous.",
            "drifted": "1 when the last test of the live window found drift, else 0.",
        }
        for key, text in gauges.items():
            if key in self.drift:
                lines.append(f"# HELP scanflow_serving_drift_{key} {text}")
                lines.append(f"# TYPE scanflow_serving_drift_{key} gauge")
                lines.append(f"scanflow_serving_drift_{key} {_number(self.drift[key])}")
        counters = {
            "scanflow_serving_drift_checks_total": ("Drift tests run on the live window.", self.drift_checks),
            "scanflow_serving_drift_alerts_total": (
                "Drift alerts raised (window went from no drift to drift).",
                self.drift_alerts,
            ),
            "scanflow_serving_drift_errors_total": ("Drift tests that failed to run.", self.drift_errors),
            "scanflow_serving_tracker_errors_total": (
                "Alerts the tracker could not record.",
                self.tracker_errors,
            ),
        }
        for name, (text, value) in counters.items():
            lines += [f"# HELP {name} {text}", f"# TYPE {name} counter", f"{name} {value}"]
        lines += [
            "# HELP scanflow_serving_drift_window_rows Rows in the live drift window.",
            "# TYPE scanflow_serving_drift_window_rows gauge",
            f"scanflow_serving_drift_window_rows {self.window_rows}",
        ]
        return lines
