"""Ctrl-C on ``scanflow run``: it stops at once, kills child processes and records the interruption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

SPEC = """
apiVersion: scanflow/v1
name: interrupted
params: {marks: MARKS}
steps:
  - {name: think, stage: training, call: MOD:think}
  - {name: shell, stage: training, command: ["sh", "-c", "echo $$ > {params.marks}/shell.pid; exec sleep 60"]}
"""

CODE = """
import time
from pathlib import Path
def think(marks):
    Path(marks, "think.started").write_text("1")
    time.sleep(60)
"""


@pytest.mark.slow
def test_sigint_stops_the_run_kills_children_and_records_it(write_spec: Any, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    spec = write_spec(SPEC.replace("MARKS", str(marks)), code=CODE)
    home = tmp_path / "home"
    process = subprocess.Popen(
        [sys.executable, "-m", "scanflow_core", "run", str(spec), "--home", str(home), "--run-id", "r1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "SCANFLOW_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )
    deadline = time.monotonic() + 30
    while not ((marks / "think.started").exists() and (marks / "shell.pid").exists()):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the steps never started"
        time.sleep(0.05)
    child = int((marks / "shell.pid").read_text())

    interrupted = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=20)
    took = time.monotonic() - interrupted

    assert process.returncode == 130, err.decode()
    assert took < 10  # the 60 s steps did not hold it up
    assert b"interrupted" in err
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # the command's process is gone
    run_dir = home / "runs" / "r1"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    for step in ("think", "shell"):
        record = json.loads((run_dir / "steps" / step / "step.json").read_text())
        assert (record["status"], record["reason"]) == ("failed", "interrupted"), step
