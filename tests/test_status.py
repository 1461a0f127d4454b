"""The status endpoints (``/ok``, ``/varz``, ``/metrics``) while a step is running.

The step logs what it has, says it is half way, then blocks on an event the test sets once it
has looked at the endpoints: nothing here waits on a sleep.
"""

from __future__ import annotations

import importlib
import json
import re
import socket
import threading
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from scanflow_core.cli import main
from scanflow_core.errors import ScanflowError
from scanflow_core.runner import run_workflow
from scanflow_core.runs import WorkflowRun
from scanflow_core.spec import load_workflow
from scanflow_core.status import StatusServer
from scanflow_core.steps import run_step

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:  # pragma: no cover - the core profile has no prometheus_client
    text_string_to_metric_families = None

WAIT = 10.0  # an upper bound for a step to get where the test expects it; normally milliseconds

SPEC = """\
apiVersion: scanflow/v1
name: watched
params: {epochs: 3}
steps:
  - {name: prep, stage: data_ingestion, call: MOD:prep, outputs: [data]}
  - name: slow
    stage: training
    call: MOD:slow
    params: {lr: 0.1}
    inputs: [data]
    outputs: [model]
"""

CODE = """\
import threading

from scanflow_core import log_metric, log_params, set_progress

STARTED = threading.Event()
RELEASE = threading.Event()


def prep(data):
    data.write_text("1 2 3")
    return {"rows": 3}


def slow(data, model, lr, epochs):
    log_params({"optimizer": "sgd"})
    log_metric("loss", 0.75, step=1)
    log_metric("loss", 0.5, step=2)
    log_metric('odd "name"', 1.0)
    set_progress(0.5, "halfway")
    STARTED.set()
    if not RELEASE.wait(timeout=10):
        raise TimeoutError("the test never released the step")
    model.write_text("weights")
    return {"accuracy": 0.9}
"""


def get(port: int, path: str) -> tuple[int, str, str]:
    """``(status, content type, body)`` of ``GET http://127.0.0.1:<port><path>``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers["Content-Type"], exc.read().decode()


def get_json(port: int, path: str) -> Any:
    status, content_type, body = get(port, path)
    assert (status, content_type) == (200, "application/json"), body
    return json.loads(body)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text exposition, checked by prometheus_client when it is installed."""
    if text_string_to_metric_families is not None:
        out = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return out
    sample_line = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)\{((?:[a-zA-Z_]\w*="(?:[^"\\]|\\.)*",?)*)\} (\S+)$')
    label = re.compile(r'([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"')
    out = {}
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        match = sample_line.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        labels = {k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in label.findall(match[2])}
        out[(match[1], frozenset(labels.items()))] = float(match[3])
    return out


@pytest.fixture
def steps_module(write_spec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, ModuleType]:
    """The spec and its step module, imported here so the test holds the step's events."""
    name = f"status_steps_{tmp_path.name.replace('-', '_')}"
    spec = write_spec(SPEC, CODE, module=name)
    monkeypatch.syspath_prepend(str(tmp_path))
    return spec, importlib.import_module(name)


def test_status_server_answers_while_a_step_runs(steps_module, home, pm):
    spec, module = steps_module
    run = WorkflowRun(load_workflow(spec), home=home, pm=pm)
    run.open()
    run_step(run, "prep")
    server = StatusServer(run, 0).start()
    worker = threading.Thread(target=run_step, args=(run, "slow"))
    worker.start()
    try:
        assert module.STARTED.wait(WAIT)

        assert get(server.port, "/ok") == (200, "text/plain; charset=utf-8", "ok\n")

        whole = get_json(server.port, "/varz")
        assert whole["run_id"] == run.run_id
        assert whole["workflow"] == "watched"
        assert whole["status"] == "running"
        assert whole["finished"] == {"prep": "succeeded"}
        assert list(whole["running"]) == ["slow"]
        slow = whole["running"]["slow"]
        assert slow["stage"] == "training"
        assert slow["status"] == "running"
        assert slow["params"] == {"epochs": 3, "lr": 0.1, "optimizer": "sgd"}
        assert slow["progress"] == 0.5
        assert slow["message"] == "halfway"
        assert slow["metrics"] == {"loss": 0.5, 'odd "name"': 1.0}
        assert slow["metric_points"] == 3
        started = datetime.fromisoformat(slow["started_at"])
        assert started.timestamp() == pytest.approx(run.active["slow"].started_at, abs=1e-3)
        assert slow["running_s"] >= 0

        assert get_json(server.port, "/steps/slow/varz") | {"running_s": 0} == slow | {"running_s": 0}
        assert get(server.port, "/steps/slow/ok")[:2] == (200, "text/plain; charset=utf-8")

        status, content_type, text = get(server.port, "/metrics")
        assert status == 200
        assert content_type.startswith("text/plain; version=0.0.4")
        found = samples(text)
        slow_label = frozenset({("step", "slow")})
        assert found[("scanflow_step_metric", slow_label | {("metric", "loss")})] == 0.5
        assert found[("scanflow_step_metric", slow_label | {("metric", 'odd "name"')})] == 1.0
        assert found[("scanflow_step_progress", slow_label)] == 0.5
        assert found[("scanflow_step_metric_points_total", slow_label)] == 3
        assert found[("scanflow_steps", frozenset({("status", "running")}))] == 1
        assert found[("scanflow_steps", frozenset({("status", "succeeded")}))] == 1

        one = samples(get(server.port, "/steps/slow/metrics")[2])
        assert {name for name, _ in one} == {
            "scanflow_step_metric",
            "scanflow_step_progress",
            "scanflow_step_metric_points_total",
        }

        for path in ("/steps/nosuch/varz", "/steps/prep/varz", "/nope", "/steps/slow/nope"):
            status, content_type, body = get(server.port, path)
            assert (status, content_type) == (404, "application/json"), path
            assert "error" in json.loads(body)
        assert "no step 'nosuch' is running" in get(server.port, "/steps/nosuch/metrics")[2]
    finally:
        module.RELEASE.set()
        worker.join(WAIT)
    try:
        assert not worker.is_alive()
        assert get(server.port, "/steps/slow/varz")[0] == 404  # finished: no longer running
        assert get_json(server.port, "/varz")["finished"] == {"prep": "succeeded", "slow": "succeeded"}
        assert (
            samples(get(server.port, "/metrics")[2])[("scanflow_steps", frozenset({("status", "running")}))]
            == 0
        )
    finally:
        server.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_run_workflow_serves_the_status_port_while_it_runs(steps_module, home, pm):
    spec, module = steps_module
    port = free_port()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["run"] = run_workflow(load_workflow(spec), home=home, pm=pm, status_port=port)
        except BaseException as exc:  # pragma: no cover - reported by the assertion below
            outcome["error"] = exc
            module.STARTED.set()

    worker = threading.Thread(target=run)
    worker.start()
    try:
        assert module.STARTED.wait(WAIT)
        assert "error" not in outcome, outcome.get("error")
        assert get(port, "/ok")[0] == 200
        varz = get_json(port, "/varz")
        assert varz["finished"] == {"prep": "succeeded"}
        assert varz["running"]["slow"]["progress"] == 0.5
        assert varz["running"]["slow"]["params"]["epochs"] == 3
    finally:
        module.RELEASE.set()
        worker.join(WAIT)
    assert not worker.is_alive()
    assert outcome["run"].status == "succeeded"
    with pytest.raises(urllib.error.URLError):  # the server stops with the run
        urllib.request.urlopen(f"http://127.0.0.1:{port}/ok", timeout=2)


def test_a_busy_port_is_a_clear_error(steps_module, home, pm):
    spec, _ = steps_module
    run = WorkflowRun(load_workflow(spec), home=home, pm=pm)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()

        with pytest.raises(ScanflowError, match=r"cannot serve the status endpoints on 127\.0\.0\.1:\d+"):
            StatusServer(run, busy.getsockname()[1])


def test_the_cli_reports_a_busy_status_port_without_a_traceback(steps_module, home, capsys):
    spec, _ = steps_module
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()

        code = main(["run", str(spec), "--status-port", str(busy.getsockname()[1])])

    err = capsys.readouterr().err
    assert code in (1, 2)
    assert "cannot serve the status endpoints" in err
    assert "Traceback" not in err


def test_stopping_a_server_that_never_started_returns(steps_module, home, pm):
    spec, _ = steps_module
    server = StatusServer(WorkflowRun(load_workflow(spec), home=home, pm=pm), 0)
    stopper = threading.Thread(target=server.stop, daemon=True)

    stopper.start()
    stopper.join(WAIT)

    assert not stopper.is_alive(), "StatusServer.stop() hangs when start() was never called"


class _Vanishing(dict):  # type: ignore[type-arg]
    """``run.active`` as a step leaves it: the membership check says yes, the read finds nothing."""

    def __contains__(self, key: object) -> bool:
        return True


def test_a_step_that_finishes_mid_request_is_a_404(steps_module, home, pm):
    spec, _ = steps_module
    run = WorkflowRun(load_workflow(spec), home=home, pm=pm)
    run.open()
    run.active = _Vanishing()
    server = StatusServer(run, 0).start()
    try:
        for endpoint in ("varz", "metrics"):
            status, _, body = get(server.port, f"/steps/slow/{endpoint}")
            assert status == 404
            assert json.loads(body) == {"error": "no step 'slow' is running"}
    finally:
        server.stop()
