"""Bad requests get a 4xx JSON answer that says what was expected; the server never shows a traceback
and keeps serving."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from serving_support import WARNINGS, DigitsStore, Http

pytestmark = [pytest.mark.slow, *WARNINGS]

ROW = [0.25] * 64

BAD_BODIES = [
    ("wrong shape", {"inputs": [[1, 2, 3]]}, 422, "has shape [1, 3]"),
    ("one row without its list", {"inputs": ROW}, 422, "has shape [64]"),
    ("three dimensions", {"inputs": [[ROW]]}, 422, "has shape [1, 1, 64]"),
    ("a string", {"inputs": [["a", *ROW[1:]]]}, 422, "is a JSON string ('a'), not a number"),
    ("a null", {"inputs": [[*ROW[:5], None, *ROW[6:]]]}, 422, "[0][5] is a JSON null"),
    ("an object", {"inputs": [[{"x": 1}, *ROW[1:]]]}, 422, "not a number"),
    ("empty", {"inputs": []}, 422, "is empty"),
    ("ragged", {"inputs": [ROW, ROW[:63]]}, 422, "rows have different lengths (63, 64)"),
    ("not a list", {"inputs": "0.1 0.2"}, 422, "is a JSON string, not a list"),
    ("no known key", {"data": [ROW]}, 400, "none of the keys inputs, instances"),
    ("two keys", {"inputs": [ROW], "instances": [ROW]}, 400, "more than one of the keys"),
    ("not an object", [ROW], 400, "the body is a JSON array, not an object"),
    ("too many rows", {"inputs": [ROW] * 1001}, 413, "at most 1000"),
    ("bad JSON", b'{"inputs": [[0.1, 0.2', 400, "not valid JSON"),
    ("no body", b"", 400, "the request body is empty"),
    ("a bare number", b"3", 400, "the body is a JSON number, not an object"),
]


def _is_clean_json_error(answer: object) -> dict[str, object]:
    assert answer.headers["content-type"] == "application/json"  # type: ignore[attr-defined]
    assert b"Traceback" not in answer.body and b'File "' not in answer.body  # type: ignore[attr-defined]
    body: dict[str, object] = answer.json()  # type: ignore[attr-defined]
    assert set(body) <= {"error", "expected", "request_id"}
    assert body["request_id"] == answer.headers["x-request-id"]  # type: ignore[attr-defined]
    return body


@pytest.mark.parametrize(("case", "body", "status", "says"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
def test_a_bad_predict_request_is_a_4xx_json_error(
    client: Http, case: str, body: object, status: int, says: str
) -> None:
    answer = client.post("/predict", body, headers={"Content-Type": "application/json"})

    assert answer.status == status, answer.body
    error = _is_clean_json_error(answer)
    assert says in str(error["error"])
    if status == 422:
        assert "shape [n, 64], float32" in str(error["expected"])


def test_a_body_over_the_limit_is_refused_from_its_length(client: Http) -> None:
    body = json.dumps({"inputs": [ROW] * 900}).encode() + b" " * (1024 * 1024)

    answer = client.post("/predict", body)

    assert answer.status == 413
    assert "at most 1048576" in str(_is_clean_json_error(answer)["error"])


def test_a_chunked_body_over_the_limit_is_cut_off(server: object) -> None:
    import http.client

    host, _, port = server.url.removeprefix("http://").partition(":")  # type: ignore[attr-defined]
    connection = http.client.HTTPConnection(host, int(port), timeout=30)

    def chunks() -> Iterator[bytes]:
        yield b'{"inputs": ['
        for _ in range(20_000):
            yield json.dumps(ROW).encode() + b","

    connection.request("POST", "/predict", body=chunks(), encode_chunked=True)
    response = connection.getresponse()
    body = response.read()
    connection.close()

    assert response.status == 413
    assert "over 1048576 bytes" in json.loads(body)["error"]


@pytest.mark.parametrize(
    ("method", "path", "status", "says"),
    [
        ("GET", "/nope", 404, "no endpoint /nope"),
        ("POST", "/predictions", 404, "no endpoint /predictions"),
        ("GET", "/predict", 405, "GET is not allowed here"),
        ("POST", "/metrics", 405, "POST is not allowed here"),
        ("DELETE", "/ok", 405, "DELETE is not allowed here"),
    ],
)
def test_unknown_paths_and_methods_are_json_errors(
    client: Http, method: str, path: str, status: int, says: str
) -> None:
    answer = client.request(method, path, b"{}" if method == "POST" else None)

    assert answer.status == status
    error = _is_clean_json_error(answer)
    assert says in str(error["error"])
    if status == 405:
        assert answer.headers["allow"] == ("POST" if path == "/predict" and method != "POST" else "GET")
    if status == 404:
        assert "POST /predict" in str(error["expected"])


@pytest.mark.parametrize(
    ("inputs", "says"),
    [
        ([{"name": "x", "shape": [1, 64], "datatype": "STRING", "data": ROW}], "'STRING' is not served"),
        (
            [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": ROW[:10]}],
            "does not fit shape [1, 64]",
        ),
        ([{"name": "x", "shape": [1, 63], "datatype": "FP32", "data": ROW[:63]}], "has shape [1, 63]"),
        ([{"name": "x", "datatype": "FP32", "data": ROW}], "needs 'name', 'shape', 'datatype' and 'data'"),
        ([{"name": "x", "shape": [0, 64], "datatype": "FP32", "data": []}], "is empty"),
    ],
)
def test_a_bad_kserve_v2_request_is_a_4xx_json_error(client: Http, inputs: object, says: str) -> None:
    answer = client.post("/v2/models/digits/infer", {"inputs": inputs})

    assert answer.status == 422, answer.body
    assert says in str(_is_clean_json_error(answer)["error"])


def test_the_server_keeps_serving_after_every_kind_of_bad_request(
    client: Http, digits_store: DigitsStore
) -> None:
    for _, body, _, _ in BAD_BODIES:
        client.post("/predict", body)
    client.get("/nope")

    assert client.get("/ok").status == 200
    answer = client.post("/predict", {"inputs": digits_store.x_held[:2].tolist()})
    assert answer.status == 200 and len(answer.json()["predictions"]) == 2
