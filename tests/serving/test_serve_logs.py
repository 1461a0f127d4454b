"""One NCSA combined-log line per request, extended with what MLSpec asks of an inference, and a parser
that reads the lines back."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pytest
from serving_support import WARNINGS, DigitsStore, Http

from scanflow_core.serving.app import ServingConfig
from scanflow_core.serving.logs import format_line, parse_line
from scanflow_core.serving.server import ModelServer, build_app

pytestmark = [pytest.mark.slow, *WARNINGS]


def _lines(path: Path, count: int, timeout: float = 10.0) -> list[str]:
    """The log's lines once it has ``count`` (a line is written just after its answer is sent)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


def test_every_request_writes_one_line_and_an_inference_says_everything(
    server: ModelServer, server_log: Path, digits_store: DigitsStore
) -> None:
    rows = digits_store.x_held[:3]
    before = len(_lines(server_log, 0))
    with Http(server.url) as client:
        client.get("/ok")
        answer = client.post(
            "/predict?source=test",
            {"inputs": rows.tolist()},
            headers={
                "X-User-Id": "alice smith",
                "X-Request-Id": "req-log-1",
                "User-Agent": 'probe "1.0"',
                "Referer": "http://example.test/form",
            },
        )
        client.post("/predict", {"inputs": [[1, 2]]}, headers={"X-Request-Id": "req-log-2"})
        client.get("/metrics")

    lines = _lines(server_log, before + 4)[before:]
    assert len(lines) == 4
    records = [parse_line(line) for line in lines]
    assert [(r.method, r.path, r.status) for r in records] == [
        ("GET", "/ok", 200),
        ("POST", "/predict?source=test", 200),
        ("POST", "/predict", 422),
        ("GET", "/metrics", 200),
    ]

    ok, inference, bad, _ = records
    assert "prediction" not in ok.fields and ok["latency_ms"] > 0
    assert inference.host == "127.0.0.1" and inference.protocol == "1.1"
    assert inference.user == "alice_smith" and inference["user_id"] == "alice smith"
    assert inference.agent == 'probe "1.0"' and inference.referer == "http://example.test/form"
    assert inference.size == len(answer.body)
    assert inference["request_id"] == "req-log-1"
    assert (inference["model"], inference["model_version"], inference["variant"]) == (
        "digits",
        "1",
        "original",
    )
    assert inference["rows"] == 3 and 0 < inference["latency_ms"] < 10_000
    digest = "sha256:" + hashlib.sha256(np.ascontiguousarray(rows, dtype=np.float32).tobytes()).hexdigest()
    assert inference["input_sha256"] == digest
    np.testing.assert_allclose(inference["prediction"], answer.json()["predictions"], rtol=1e-6)
    expected = "sha256:" + hashlib.sha256(digits_store.attestation.read_bytes()).hexdigest()
    assert inference["attestation"] == expected
    assert "input" not in inference.fields, "the raw input is only logged with --log-inputs"
    assert time.strptime(inference.time, "%d/%b/%Y:%H:%M:%S +0000")

    assert bad["request_id"] == "req-log-2" and bad["error"] == "'inputs' has shape [1, 2]"
    assert "prediction" not in bad.fields


def test_log_inputs_writes_the_raw_input_too(digits_store: DigitsStore, tmp_path: Path) -> None:
    log = tmp_path / "inputs.log"
    rows = digits_store.x_held[:2]
    app = build_app(
        "models:/digits@champion", digits_store.uri, ServingConfig(log_file=str(log), log_inputs=True)
    )
    with ModelServer(app) as running, Http(running.url) as client:
        assert client.post("/predict", {"inputs": rows.tolist()}).status == 200

    [line] = _lines(log, 1)
    np.testing.assert_allclose(parse_line(line)["input"], rows, rtol=1e-6)


def test_the_parser_reads_back_what_the_formatter_writes() -> None:
    fields = {
        "request_id": "r1",
        "user_id": 'eve "the" \\ tester',
        "model": "m",
        "model_version": None,
        "latency_ms": 1.5,
        "rows": 2,
        "prediction": [[0.5, -1e-9], [3, 4]],
        "error": "bad\nthing",
    }
    line = format_line(
        host="10.0.0.1",
        user='eve "the" \\ tester',
        method="POST",
        path="/predict",
        protocol="1.1",
        status=200,
        size=17,
        referer=None,
        agent='curl/8 "x"\\y',
        fields=fields,
        now=0.0,
    )

    assert "\n" not in line
    record = parse_line(line)
    assert record.time == "01/Jan/1970:00:00:00 +0000"
    assert record.user == "eve__the____tester" and record.agent == 'curl/8 "x"\\y' and record.referer is None
    assert record.fields == fields


@pytest.mark.parametrize(
    "line",
    [
        "not a log line",
        '127.0.0.1 - - [01/Jan/1970:00:00:00 +0000] "GET / HTTP/1.1" 200 3 "-" "-" rows=[1,',
        '127.0.0.1 - - [01/Jan/1970:00:00:00 +0000] "GET / HTTP/1.1" 200 3 "-" "-" oops',
    ],
)
def test_the_parser_says_where_a_line_is_wrong(line: str) -> None:
    with pytest.raises(ValueError, match=r"not an NCSA|is not JSON|expected ' key=value'"):
        parse_line(line)
