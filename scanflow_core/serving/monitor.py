"""Live drift: the rows of recent requests, kept in a sliding window and tested by the drift checker's
:class:`~scanflow_core.checking.drift.DriftDetector`.

Every ``every`` new rows (once the window holds ``min_rows``), the window is tested on a background
thread (never on the event loop, never two tests at once). The result goes to ``/metrics``; when the
window goes from no drift to drift, that is an *alert*: it is counted, logged, and recorded by the
tracker (an MLflow run of kind ``serving`` in the model's experiment: metrics ``drift.p_value``,
``drift.score``, ``drift.anomalous_share``, ``drift.alerts`` and the tag ``scanflow.drift.alert``).

The reference is a detector folder written by :meth:`DriftDetector.save`, or a data file (``.npz``
with ``X``, ``.npy``, CSV, Parquet, ...) the detector is fitted on when the server starts.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from scanflow_core.errors import ScanflowError

if TYPE_CHECKING:
    from scanflow_core.checking.drift import DriftDetector, DriftResult
    from scanflow_core.serving.metrics import ServingMetrics

__all__ = ["DriftMonitor", "MlflowAlerts", "load_reference"]

log = logging.getLogger("scanflow.serving")


def load_reference(path: Path, *, seed: int = 0, epochs: int = 60) -> DriftDetector:
    """The detector for ``path``: loaded when it is a saved detector, else fitted on the data in it
    (a ``label`` column or ``y`` array is left out of the features).

    Raises:
        ScanflowError: ``path`` does not exist or cannot be read as data.
    """
    from scanflow_core.checking.data import load_arrays, load_frame
    from scanflow_core.checking.drift import DriftDetector

    if not path.exists():
        raise ScanflowError(f"--drift-reference {path}: no such file or folder")
    if path.is_dir() and (path / "detector.json").is_file():
        return DriftDetector.load(path)
    try:
        if path.suffix.lower() in (".npz", ".npy"):
            features, _ = load_arrays(path)
            reference: Any = features.reshape(len(features), -1)
        else:
            reference = load_frame(path)
            reference = reference.drop(columns=[c for c in ("label",) if c in reference.columns])
        return DriftDetector(seed=seed, epochs=epochs).fit(reference)
    except (ValueError, OSError) as exc:
        raise ScanflowError(f"--drift-reference {path}: cannot fit a drift detector on it: {exc}") from None


@dataclass
class _Alert:
    at: float
    result: DriftResult
    checks: int
    alerts: int


class MlflowAlerts:
    """Records drift alerts in MLflow: a serving run, created at the first alert, in the experiment of
    the model's run (``scanflow-serving`` when the model has no run).

    Args:
        tracking_uri: the MLflow store.
        model: what is served (``name``, ``version``, ``uri``, ``run_id``, ``variant``).
    """

    def __init__(self, tracking_uri: str, model: dict[str, Any]) -> None:
        self.tracking_uri = tracking_uri
        self.model = model
        self.run_id: str | None = None
        self._lock = threading.Lock()

    def _client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)

    def _serving_run(self, client: Any) -> str:
        if self.run_id is None:
            experiment_id = None
            if self.model.get("run_id"):
                experiment_id = client.get_run(self.model["run_id"]).info.experiment_id
            if experiment_id is None:
                found = client.get_experiment_by_name("scanflow-serving")
                experiment_id = found.experiment_id if found else client.create_experiment("scanflow-serving")
            tags = {
                "scanflow.kind": "serving",
                "scanflow.model_uri": str(self.model.get("uri") or ""),
                "scanflow.model_name": str(self.model.get("name") or ""),
                "scanflow.model_version": str(self.model.get("version") or ""),
                "scanflow.model_run_id": str(self.model.get("run_id") or ""),
                "scanflow.variant": str(self.model.get("variant") or ""),
            }
            name = f"serve-{self.model.get('name') or 'model'}-v{self.model.get('version') or '-'}"
            self.run_id = client.create_run(experiment_id, tags=tags, run_name=name).info.run_id
        return self.run_id

    def record(self, alert: _Alert) -> None:
        from mlflow.entities import Metric, RunTag

        with self._lock:
            client = self._client()
            run_id = self._serving_run(client)
            stamp = int(alert.at * 1000)
            values = {
                "drift.p_value": alert.result.p_value,
                "drift.score": alert.result.score,
                "drift.reference_score": alert.result.reference_score,
                "drift.anomalous_share": alert.result.anomalous_share,
                "drift.window_rows": float(alert.result.size),
                "drift.alerts": float(alert.alerts),
            }
            metrics = [
                Metric(k, float(v), stamp, alert.checks) for k, v in values.items() if not math.isnan(v)
            ]
            tags = [
                RunTag("scanflow.drift.alert", alert.result.summary()[:5000]),
                RunTag("scanflow.drift.alert_at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(alert.at))),
            ]
            client.log_batch(run_id, metrics=metrics, tags=tags, synchronous=True)

    def close(self) -> None:
        if self.run_id is not None:
            try:
                self._client().set_terminated(self.run_id, "FINISHED")
            except Exception as exc:  # the store went away: the run stays RUNNING, nothing else is lost
                log.warning("could not finish the serving run %s: %s", self.run_id, exc)


class DriftMonitor:
    """A sliding window of the last ``window`` input rows, tested for drift every ``every`` new rows.

    Args:
        detector: a fitted :class:`DriftDetector`.
        metrics: where the scores and counters go.
        window: rows kept (the oldest are dropped first).
        every: new rows between two tests.
        min_rows: rows the window needs before the first test.
        alpha: the test's significance level (``None``: the detector's own).
        on_alert: called on the background thread with each alert (e.g. :meth:`MlflowAlerts.record`).
    """

    def __init__(
        self,
        detector: DriftDetector,
        metrics: ServingMetrics,
        *,
        window: int = 500,
        every: int = 100,
        min_rows: int = 50,
        alpha: float | None = None,
        on_alert: Callable[[_Alert], None] | None = None,
    ) -> None:
        if window < 20 or every < 1 or not 1 <= min_rows <= window:
            raise ValueError(
                f"window {window} (>= 20), every {every} (>= 1), min_rows {min_rows} (1..window)"
            )
        self.detector = detector
        if alpha is not None:
            detector.alpha = alpha
        self.metrics = metrics
        self.window = window
        self.every = every
        self.min_rows = min_rows
        self.on_alert = on_alert
        self.columns = list(detector.columns)
        self._rows: deque[np.ndarray] = deque()
        self._count = 0
        self._since = 0
        self._busy = threading.Lock()
        self._thread: threading.Thread | None = None
        self.last: DriftResult | None = None
        self.drifted = False
        metrics.drift["drifted"] = 0.0

    def add(self, model_input: Any) -> None:
        """Add a request's rows (on the event loop: cheap); start a test when one is due."""
        rows = self._numeric(model_input)
        if rows is None:
            return
        self._rows.append(rows)
        self._count += len(rows)
        self._since += len(rows)
        while self._count - len(self._rows[0]) >= self.window:
            self._count -= len(self._rows.popleft())
        self.metrics.window_rows = min(self._count, self.window)
        if self._count >= self.min_rows and self._since >= self.every and not self._busy.locked():
            self._since = 0
            batch = np.concatenate(list(self._rows))[-self.window :]
            self._thread = threading.Thread(
                target=self._test, args=(batch,), name="scanflow-drift", daemon=True
            )
            self._thread.start()

    def _numeric(self, model_input: Any) -> np.ndarray | None:
        if hasattr(model_input, "columns"):
            missing = [c for c in self.columns if c not in model_input.columns]
            if missing:
                return None
            model_input = model_input[self.columns].to_numpy(dtype=np.float64)
        array = np.asarray(model_input, dtype=np.float64)
        array = array.reshape(len(array), -1) if array.ndim != 2 else array
        return array if array.shape[1] == len(self.columns) else None

    def wait(self, timeout: float = 30.0) -> None:
        """Wait for a running test to finish (tests and shutdown)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _test(self, batch: np.ndarray) -> None:
        with self._busy:
            try:
                frame: Any = batch
                if self.columns != [f"f{i}" for i in range(len(self.columns))]:
                    import pandas as pd

                    frame = pd.DataFrame(batch, columns=self.columns)
                result = self.detector.test(frame)
            except Exception as exc:
                self.metrics.drift_errors += 1
                log.warning("the drift test of the live window failed: %s", exc)
                return
            self.last = result
            self.metrics.drift_checks += 1
            for key in ("score", "reference_score", "p_value", "anomalous_share"):
                value = float(getattr(result, key))
                if not math.isnan(value):
                    self.metrics.drift[key] = value
            self.metrics.drift["drifted"] = 1.0 if result.drifted else 0.0
            alert = result.drifted and not self.drifted
            self.drifted = result.drifted
            if not alert:
                return
            self.metrics.drift_alerts += 1
            log.warning("drift alert: %s", result.summary())
            if self.on_alert is not None:
                try:
                    self.on_alert(
                        _Alert(time.time(), result, self.metrics.drift_checks, self.metrics.drift_alerts)
                    )
                except Exception as exc:
                    self.metrics.tracker_errors += 1
                    log.warning("the tracker could not record the drift alert: %s", exc)

    def status(self) -> dict[str, Any]:
        """What ``/varz`` shows of the monitor."""
        last = self.last
        return {
            "window": self.window,
            "every": self.every,
            "min_rows": self.min_rows,
            "alpha": self.detector.alpha,
            "rows": min(self._count, self.window),
            "checks": self.metrics.drift_checks,
            "alerts": self.metrics.drift_alerts,
            "drifted": self.drifted,
            "last": None
            if last is None
            else {
                "p_value": last.p_value,
                "score": _finite(last.score),
                "anomalous_share": _finite(last.anomalous_share),
                "summary": last.summary(),
            },
        }


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value
