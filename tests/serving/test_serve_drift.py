"""Live drift: a window of recent inputs is tested by the drift checker's detector; clean traffic raises
no alert, a shifted window raises one, which ``/metrics`` shows and MLflow records on a serving run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from serving_support import WARNINGS, DigitsStore, Http, drift_server

from scanflow_core.serving.app import ServingConfig
from scanflow_core.serving.server import DriftSettings, build_app

pytestmark = [pytest.mark.slow, *WARNINGS]


def _metrics(client: Http) -> dict[str, float]:
    text = client.get("/metrics").body.decode()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}


def _send(client: Http, server: object, rows: np.ndarray, per_request: int = 25) -> None:
    for start in range(0, len(rows), per_request):
        answer = client.post("/predict", {"inputs": rows[start : start + per_request].tolist()})
        assert answer.status == 200, answer.body
        server.app.monitor.wait()  # type: ignore[attr-defined]  # the test thread of the server, if one started


def shifted(x: np.ndarray) -> np.ndarray:
    """Digits as new data drifts in: a brighter, noisier scanner (clipped to [0, 1])."""
    noise = np.random.default_rng(1).normal(0.0, 0.25, x.shape)
    return np.clip(x * 0.6 + 0.3 + noise, 0.0, 1.0).astype(np.float32)


def test_a_shifted_window_raises_one_alert_on_metrics_and_in_mlflow(
    digits_store: DigitsStore, detector_folder: Path
) -> None:
    import mlflow

    clean, new = digits_store.x_held[:200], shifted(digits_store.x_held[200:400])
    server = drift_server(digits_store, detector_folder).start()
    try:
        with Http(server.url) as client:
            _send(client, server, clean)
            calm = _metrics(client)
            _send(client, server, new)
            alarmed = _metrics(client)
            varz = client.get("/varz").json()
    finally:
        server.stop()

    assert calm["scanflow_serving_drift_checks_total"] == 3  # at 100, 150 and 200 rows
    assert calm["scanflow_serving_drift_drifted"] == 0 and calm["scanflow_serving_drift_alerts_total"] == 0
    assert calm["scanflow_serving_drift_p_value"] > 0.05

    assert alarmed["scanflow_serving_drift_checks_total"] == 7
    assert alarmed["scanflow_serving_drift_drifted"] == 1
    assert alarmed["scanflow_serving_drift_alerts_total"] == 1, "one alert per change to drift, not per test"
    assert alarmed["scanflow_serving_drift_p_value"] < 0.05
    assert alarmed["scanflow_serving_drift_score"] > alarmed["scanflow_serving_drift_reference_score"]
    assert alarmed["scanflow_serving_drift_window_rows"] == 200
    assert alarmed["scanflow_serving_tracker_errors_total"] == 0
    assert varz["drift"]["alerts"] == 1 and varz["drift"]["drifted"] is True
    assert "drift in 200 samples" in varz["drift"]["last"]["summary"]

    client = mlflow.MlflowClient(tracking_uri=digits_store.uri)
    experiment = client.get_run(digits_store.run_id).info.experiment_id
    [run] = client.search_runs([experiment], filter_string="tags.`scanflow.kind` = 'serving'")
    assert run.info.run_id == varz["serving_run_id"]
    assert run.info.status == "FINISHED", "the serving run ends with the server"
    assert run.data.tags["scanflow.model_version"] == "1"
    assert run.data.tags["scanflow.model_run_id"] == digits_store.run_id
    assert run.data.tags["scanflow.drift.alert"].startswith("drift in 200 samples")
    assert run.data.metrics["drift.alerts"] == 1
    assert run.data.metrics["drift.p_value"] < 0.05


def test_a_drift_reference_given_as_data_is_fitted_when_the_server_starts(
    digits_store: DigitsStore, tmp_path: Path
) -> None:
    reference = tmp_path / "train.npz"
    np.savez(reference, X=digits_store.x_train, y=np.zeros(len(digits_store.x_train)))
    drift = DriftSettings(reference, window=100, every=100, min_rows=100, epochs=20)
    config = ServingConfig(log_file=str(tmp_path / "access.log"))

    app = build_app("models:/digits@champion", digits_store.uri, config, drift=drift, track_alerts=False)
    app.stop()

    assert app.monitor is not None and app.alerts is None
    assert len(app.monitor.detector.columns) == 64
    assert app.monitor.status()["window"] == 100


def test_a_drift_reference_of_the_wrong_width_is_refused(digits_store: DigitsStore, tmp_path: Path) -> None:
    from scanflow_core.errors import ScanflowError

    reference = tmp_path / "narrow.npz"
    np.savez(reference, X=digits_store.x_train[:, :10])
    drift = DriftSettings(reference, epochs=5)

    with pytest.raises(ScanflowError, match="it has 10 features, the model takes 64"):
        build_app("models:/digits@champion", digits_store.uri, drift=drift, track_alerts=False)
