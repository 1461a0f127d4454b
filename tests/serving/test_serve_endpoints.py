"""``scanflow serve models:/digits@champion``: every endpoint, over a real socket, against a real model."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from serving_support import WARNINGS, DigitsStore, Http

pytestmark = [pytest.mark.slow, *WARNINGS]


def test_ok_and_the_kserve_health_endpoints_answer(client: Http) -> None:
    ok = client.get("/ok")
    assert (ok.status, ok.body) == (200, b"ok\n")
    assert client.get("/v2/health/live").json() == {"live": True}
    ready = client.get("/v2/health/ready")
    assert (ready.status, ready.json()) == (200, {"ready": True})


def test_varz_names_the_model_its_version_and_the_attested_pipeline(
    client: Http, digits_store: DigitsStore
) -> None:
    varz = client.get("/varz").json()

    model = varz["model"]
    assert (model["name"], model["version"], model["alias"]) == ("digits", "1", "champion")
    assert model["uri"] == "models:/digits@champion"
    assert model["run_id"] == digits_store.run_id
    assert model["variant"] == "original"
    assert "pytorch" in model["flavors"]
    digest = "sha256:" + hashlib.sha256(digits_store.attestation.read_bytes()).hexdigest()
    assert varz["attestation_digest"] == model["attestation_digest"] == digest
    assert model["spec_digest"].startswith("sha256:")
    assert varz["uptime_s"] > 0
    assert varz["config"]["max_rows"] == 1000 and varz["config"]["user_header"] == "x-user-id"
    assert varz["drift"] is None


def test_predict_answers_what_the_model_computes(client: Http, digits_store: DigitsStore) -> None:
    rows = digits_store.x_held[:40]

    answer = client.post("/predict", {"inputs": rows.tolist()}, headers={"X-Request-Id": "req-42"})

    assert answer.status == 200, answer.body
    body = answer.json()
    assert body["model_version"] == "1"
    assert body["request_id"] == "req-42" == answer.headers["x-request-id"]
    predictions = np.array(body["predictions"])
    np.testing.assert_allclose(predictions, digits_store.expected(rows), rtol=1e-5, atol=1e-5)
    accuracy = (predictions.argmax(axis=1) == digits_store.y_held[:40]).mean()
    assert accuracy >= 0.85


@pytest.mark.parametrize("key", ["instances", "dataframe_records_as_rows", "dataframe_split"])
def test_predict_takes_the_other_mlflow_input_formats(
    client: Http, digits_store: DigitsStore, key: str
) -> None:
    rows = digits_store.x_held[:3]
    body = {
        "instances": {"instances": rows.tolist()},
        "dataframe_records_as_rows": {"inputs": rows.tolist()},
        "dataframe_split": {"dataframe_split": {"data": rows.tolist()}},
    }[key]

    answer = client.post("/invocations", body)

    assert answer.status == 200, answer.body
    np.testing.assert_allclose(answer.json()["predictions"], digits_store.expected(rows), atol=1e-5)


def test_kserve_v2_infer_takes_and_gives_tensors(client: Http, digits_store: DigitsStore) -> None:
    rows = digits_store.x_held[:2]
    request = {
        "inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32", "data": rows.ravel().tolist()}]
    }

    answer = client.post("/v2/models/digits/infer", request, headers={"X-Request-Id": "v2-1"})

    assert answer.status == 200, answer.body
    body = answer.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("digits", "1", "v2-1")
    [output] = body["outputs"]
    assert (output["shape"], output["datatype"]) == ([2, 10], "FP32")
    np.testing.assert_allclose(np.reshape(output["data"], (2, 10)), digits_store.expected(rows), atol=1e-5)
    assert client.post("/v2/models/digits/versions/1/infer", request).status == 200


def test_kserve_v2_model_metadata_and_readiness(client: Http) -> None:
    metadata = client.get("/v2/models/digits").json()
    assert metadata["name"] == "digits" and metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    assert client.get("/v2/models/digits/ready").json() == {"ready": True}
    other = client.get("/v2/models/cats/ready")
    assert other.status == 404 and "no model named 'cats'" in other.json()["error"]
    assert client.get("/v2/models/digits/versions/7").status == 404


def test_metrics_count_requests_by_status_and_time_them(client: Http, digits_store: DigitsStore) -> None:
    def families() -> dict[str, object]:
        return {f.name: f for f in text_string_to_metric_families(client.get("/metrics").body.decode())}

    def count(fams: dict[str, object], code: str) -> float:
        samples = fams["scanflow_serving_requests"].samples  # type: ignore[attr-defined]
        return sum(s.value for s in samples if s.labels == {"endpoint": "/predict", "code": code})

    before = families()
    for _ in range(3):
        assert client.post("/predict", {"inputs": digits_store.x_held[:1].tolist()}).status == 200
    assert client.post("/predict", {"inputs": [[1, 2]]}).status == 422
    after = families()

    assert count(after, "200") - count(before, "200") == 3
    assert count(after, "422") - count(before, "422") == 1
    histogram = after["scanflow_serving_request_duration_seconds"]
    observed = [
        s.value
        for s in histogram.samples  # type: ignore[attr-defined]
        if s.name.endswith("_count") and s.labels == {"endpoint": "/predict"}
    ]
    assert observed and observed[0] >= 4
    info = after["scanflow_serving_model_info"].samples[0].labels  # type: ignore[attr-defined]
    assert info["name"] == "digits" and info["version"] == "1" and info["attestation"].startswith("sha256:")
    rows = after["scanflow_serving_predicted_rows"].samples[0].value  # type: ignore[attr-defined]
    assert rows >= 3
