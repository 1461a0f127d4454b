"""Nothing is lost: a real ``mlflow server`` killed in the middle of a run and restarted, and a replay
that crashes between delivering a record and marking it done."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from tracking_helpers import client, runs_of

from scanflow_core.cli import main
from scanflow_core.runner import run_workflow
from scanflow_core.spec import load_workflow
from scanflow_core.tracking import mlflow_tracker
from scanflow_core.tracking.spool import Spool

SPEC = """
apiVersion: scanflow/v1
name: outage
tracker: {uri: "URI"}
steps:
  - {name: train, stage: training, call: MOD:train, params: {gate: "GATE"}}
"""

# Three phases of points (1000 = one flush each, then a final flush of 500), with the test deciding
# when each phase starts through files in the gate folder.
CODE = """
import time
from pathlib import Path
from scanflow_core import log_metric

def wait_for(path):
    deadline = time.monotonic() + 120
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.02)

def train(gate):
    gate = Path(gate)
    step = 0
    for phase, count in enumerate([1000, 1000, 500]):
        wait_for(gate / f"go{phase}")
        for _ in range(count):
            log_metric("loss", 1.0 / (step + 1), step=step)
            log_metric("acc", step / 2500, step=step)
            step += 1
        (gate / f"done{phase}").touch()
"""

POINTS = 2500


def _wait(path: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def _count(uri: str, run_id: str) -> dict[str, list[int]]:
    _, children = runs_of(uri, "outage", run_id)
    c = client(uri)
    train = children["train"].info.run_id
    return {key: sorted(m.step for m in c.get_metric_history(train, key)) for key in ("loss", "acc")}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_server_killed_mid_run_loses_nothing(
    write_spec: Any, home: Path, tmp_path: Path, mlflow_server: Any
) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    spec = write_spec(SPEC.replace("URI", mlflow_server.uri).replace("GATE", str(gate)), CODE)
    workflow = load_workflow(spec)
    result: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: result.update(run=run_workflow(workflow, home=home)))
    runner.start()
    try:
        (gate / "go0").touch()
        _wait(gate / "done0")  # 2000 points (1000 per key... flushed every 1000): on the server
        mlflow_server.kill()
        (gate / "go1").touch()
        _wait(gate / "done1")  # these flushes meet a dead server: spooled
        mlflow_server.start()
        (gate / "go2").touch()
    finally:
        runner.join(timeout=240)
    run = result["run"]
    assert run.status == "succeeded"
    spool = Spool(run.directory / "tracking")
    assert any(r.get("op") == "batch" and r.get("metrics") for r in spool.records() if "id" in r), (
        "the outage spooled nothing: the test did not test anything"
    )
    assert main(["tracker", "sync", run.run_id, "--home", str(home)]) == 0
    assert spool.pending() == []
    counted = _count(mlflow_server.uri, run.run_id)
    assert counted["loss"] == list(range(POINTS))  # every point, once
    assert counted["acc"] == list(range(POINTS))
    parent, children = runs_of(mlflow_server.uri, "outage", run.run_id)
    assert parent.info.status == "FINISHED"
    assert children["train"].info.status == "FINISHED"


FLAKY = """
apiVersion: scanflow/v1
name: outage
steps:
  - {name: train, stage: training, call: MOD:train}
"""

FLAKY_CODE = """
from scanflow_core import log_metric
def train():
    for step in range(2300):
        log_metric("loss", 1.0 / (step + 1), step=step)
"""


class Crash(BaseException):
    """A process dying between two lines of the replay."""


def test_replay_that_crashes_before_marking_done_logs_nothing_twice(
    write_spec: Any, tracked_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(self: Any, record: Any) -> None:
        raise ConnectionError("the store is down")

    with monkeypatch.context() as outage:
        outage.setattr(mlflow_tracker.Tracker, "_deliver", unreachable)
        run = run_workflow(load_workflow(write_spec(FLAKY, FLAKY_CODE)), home=tracked_home)
    spool = Spool(run.directory / "tracking")
    spooled = spool.pending()
    assert len(spooled) >= 5  # parent batch, three metric batches, status, ...

    marks = {"n": 0}
    real_mark = Spool.mark

    def crash_on_second_mark(self: Spool, record_id: str, **kw: Any) -> None:
        marks["n"] += 1
        if marks["n"] == 2:
            raise Crash  # the record was delivered, its mark never written
        real_mark(self, record_id, **kw)

    with monkeypatch.context() as crashing, pytest.raises(Crash):
        crashing.setattr(Spool, "mark", crash_on_second_mark)
        main(["tracker", "sync", run.run_id, "--home", str(tracked_home)])
    assert len(spool.pending()) == len(spooled) - 1

    with monkeypatch.context() as forgetful:  # deliver everything again, twice, never marking
        forgetful.setattr(Spool, "mark", lambda *a, **k: None)
        for _ in range(2):
            main(["tracker", "sync", run.run_id, "--home", str(tracked_home)])
    assert main(["tracker", "sync", run.run_id, "--home", str(tracked_home)]) == 0
    assert spool.pending() == []

    uri = f"sqlite:///{tracked_home / 'mlflow.db'}"
    parent, children = runs_of(uri, "outage", run.run_id)
    history = client(uri).get_metric_history(children["train"].info.run_id, "loss")
    assert sorted(m.step for m in history) == list(range(2300))
    assert parent.info.status == "FINISHED"
