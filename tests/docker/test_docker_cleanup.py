"""Nothing outlives a run: twenty workflows (some failing, one interrupted) leave nothing labelled behind."""

from __future__ import annotations

import concurrent.futures
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from scanflow_core.plugins import get_plugin_manager, hookimpl
from scanflow_core.records import SidecarSpec
from scanflow_core.runner import run_workflow
from scanflow_core.spec import load_workflow

pytestmark = pytest.mark.docker

SPEC = """
apiVersion: scanflow/v1
name: many
params: {fail: false, nap: 0}
steps:
  - name: make
    stage: data_ingestion
    image: IMAGE
    command: ["python3", "-c", "import os, urllib.request as u; url = os.environ.get('ECHO_URL'); print(url and u.urlopen(url).status); open('{outputs.data}', 'w').write(str(url))"]
    outputs: [data]
  - name: use
    stage: training
    image: IMAGE
    needs: [make]
    inputs: [data]
    command: ["sh", "-c", "cat {inputs.data}; test {params.fail} = False"]
  - name: slow
    stage: evaluation
    image: IMAGE
    command: ["sleep", "{params.nap}"]
    timeout: 1
"""

INTERRUPTED = """
apiVersion: scanflow/v1
name: interrupted
steps:
  - name: forever
    stage: training
    image: IMAGE
    command: ["sh", "-c", "echo started; exec sleep 120"]
"""


class EchoSidecar:
    """A sidecar on the run's network that steps reach by name."""

    def __init__(self, image: str) -> None:
        self.image = image

    @hookimpl
    def scanflow_sidecars(self, run: Any) -> list[SidecarSpec]:
        return [
            SidecarSpec(
                name="echo",
                image=self.image,
                command=["python3", "-m", "http.server", "8000"],
                healthcheck="python3 -c \"import urllib.request; urllib.request.urlopen('http://localhost:8000')\"",
                inject_env={"ECHO_URL": "http://echo:8000"},
            )
        ]


def _labelled(kind: str, prefix: str) -> list[str]:
    """The run ids of labelled ``kind`` (container, network, volume) whose run id starts with ``prefix``."""
    command = {
        "container": ["docker", "ps", "-a"],
        "network": ["docker", "network", "ls"],
        "volume": ["docker", "volume", "ls"],
    }[kind]
    out = subprocess.run(
        [*command, "--filter", "label=scanflow=1", "--format", '{{.Label "scanflow.run_id"}}'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in out.split() if line.startswith(prefix)]


def _interrupt(spec: Path, home: Path, run_id: str) -> tuple[int, float]:
    process = subprocess.Popen(
        [sys.executable, "-m", "scanflow_core", "run", str(spec), "--home", str(home), "--run-id", run_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "SCANFLOW_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )
    log = home / "runs" / run_id / "steps" / "forever" / "step.log"
    deadline = time.monotonic() + 60
    while not (log.exists() and "started" in log.read_text()):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the container never started"
        time.sleep(0.05)
    assert _labelled("container", run_id)  # it runs in a container of its run
    interrupted = time.monotonic()
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=30)
    return process.returncode, time.monotonic() - interrupted


@pytest.mark.slow
def test_twenty_workflows_some_failing_one_interrupted_leave_nothing_labelled(
    engine: str, write_spec: Any, tmp_path: Path
) -> None:
    prefix = f"cleanup-{secrets.token_hex(3)}"
    home = tmp_path / "home"
    spec = write_spec(SPEC.replace("IMAGE", engine))

    def one(i: int) -> str:
        params = {"fail": i % 4 == 1, "nap": 30 if i == 7 else 0}  # 1, 5, 9, 13, 17 fail; 7 times out
        plugins = [EchoSidecar(engine)] if i % 5 == 0 else []  # 0, 5, 10, 15 have a sidecar
        pm = get_plugin_manager(plugins, autoload=False)
        workflow = load_workflow(spec, params)
        run = run_workflow(workflow, home=home, run_id=f"{prefix}-{i:02d}", pm=pm, params=params)
        return run.status

    with concurrent.futures.ThreadPoolExecutor(max_workers=5) as pool:
        statuses = list(pool.map(one, range(20)))
    interrupted_spec = write_spec(INTERRUPTED.replace("IMAGE", engine), name="interrupted.yaml")
    code, took = _interrupt(interrupted_spec, home, f"{prefix}-int")

    assert [i for i, s in enumerate(statuses) if s == "failed"] == [1, 5, 7, 9, 13, 17], statuses
    failed = json.loads((home / "runs" / f"{prefix}-01" / "steps" / "use" / "step.json").read_text())
    assert failed["reason"] == "the container exited with code 1"
    overran = json.loads((home / "runs" / f"{prefix}-07" / "steps" / "slow" / "step.json").read_text())
    assert overran["reason"] == "timed out after 1s and was killed"
    made = home / "runs" / f"{prefix}-00" / "steps" / "make"
    assert (made / "outputs" / "data").read_text() == "http://echo:8000"  # sidecar env reached the step
    assert (made / "step.log").read_text() == "200\n"  # and the sidecar answered, by name
    assert (code, took < 15) == (130, True)
    record = json.loads((home / "runs" / f"{prefix}-int" / "steps" / "forever" / "step.json").read_text())
    assert (record["status"], record["reason"]) == ("failed", "interrupted")

    for kind in ("container", "network", "volume"):
        assert _labelled(kind, prefix) == [], kind
