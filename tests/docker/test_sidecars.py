"""The built-in sidecars on a real engine: the MLflow tracker and the drift checker."""

from __future__ import annotations

import json
import random
import secrets
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from scanflow_core.plugins import get_plugin_manager
from scanflow_core.runner import run_workflow
from scanflow_core.runtimes import sidecars
from scanflow_core.spec import load_workflow

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TRACKED = """
apiVersion: scanflow/v1
name: NAME
tracker: {uri: sidecar}
steps:
  - name: probe
    stage: training
    image: IMAGE
    command: ["python3", "probe.py", "{outputs.health}"]
    outputs: [health]
"""

PROBE = """
import os, sys, urllib.request
from scanflow_core import log_metric

url = os.environ["MLFLOW_TRACKING_URI"]
with urllib.request.urlopen(url + "/health", timeout=10) as answer:
    text = answer.read().decode().strip()
open(sys.argv[1], "w").write(f"{url} {answer.status} {text}")
log_metric("answered", 1.0)
"""

CHECKED = """
apiVersion: scanflow/v1
name: checked
steps:
  - name: send
    stage: monitoring
    image: IMAGE
    command: ["python3", "send.py", "{outputs.answers}"]
    outputs: [answers]
"""

SEND = """
import json, os, random, sys, urllib.request

url = os.environ["SCANFLOW_CHECKER_URL"]
rng = random.Random(1)
answers = {}
for name, shift in (("same", 0.0), ("shifted", 2.0)):
    rows = [[rng.gauss(0, 1) + shift for _ in range(4)] for _ in range(100)]
    body = json.dumps({"rows": rows}).encode()
    request = urllib.request.Request(url + "/check", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        answers[name] = json.loads(answer.read())
with urllib.request.urlopen("http://checker:8080/metrics", timeout=10) as answer:
    answers["metrics"] = answer.read().decode()
json.dump({"url": url, **answers}, open(sys.argv[1], "w"))
"""


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout.strip()


def _labelled(run_id: str) -> list[str]:
    return _docker("ps", "-aq", "--filter", f"label=scanflow.run_id={run_id}").split()


def test_the_tracker_sidecar_serves_the_steps_and_the_host_and_keeps_its_data(
    engine: str, write_spec: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SCANFLOW_TRACKER", raising=False)
    monkeypatch.delenv(sidecars.CHECKER_REFERENCE_ENV, raising=False)
    name = f"tracked_{secrets.token_hex(3)}"
    spec = write_spec(TRACKED.replace("IMAGE", engine).replace("NAME", name))
    (spec.parent / "probe.py").write_text(PROBE)
    volume = sidecars.tracker_volume(name)
    try:
        run = run_workflow(load_workflow(spec), home=tmp_path / "home", pm=get_plugin_manager(autoload=False))
        assert run.status == "succeeded", run.step_summaries()

        # the step reached the sidecar by name, through the injected MLFLOW_TRACKING_URI
        health = (run.directory / "steps" / "probe" / "outputs" / "health").read_text()
        assert health == "http://tracker:5000 200 OK"
        # the host-side tracker used the port published on 127.0.0.1
        published = run.state["docker"].published["tracker"]
        assert published.startswith("http://127.0.0.1:")
        assert json.loads((run.directory / "sidecars.json").read_text())["tracker"]["url"] == published
        assert f"tracked in MLflow: {published} (experiment {name!r})" in run.notes
        # the run's containers and network are gone; its data volume is kept, labelled
        assert _labelled(run.run_id) == []
        assert (
            _docker("volume", "inspect", volume, "--format", '{{index .Labels "scanflow.data"}}') == "tracker"
        )

        # a new server on the volume has the run: parent and child, with the step's metric
        found = _query_volume(volume, sidecars.tracker_image(run), name, run.run_id)
        assert found["parent"]["status"] == "FINISHED"
        assert found["child"]["metrics"] == {"answered": 1.0}
    finally:
        subprocess.run(["docker", "volume", "rm", "-f", volume], capture_output=True)


def _query_volume(volume: str, image: str, experiment: str, run_id: str) -> dict[str, Any]:
    container = _docker(
        "run",
        "-d",
        "--rm",
        "-v",
        f"{volume}:{sidecars.TRACKER_DATA}",
        "-p",
        "127.0.0.1::5000",
        image,
        "mlflow",
        "server",
        "--host=0.0.0.0",
        "--port=5000",
        f"--backend-store-uri=sqlite:///{sidecars.TRACKER_DATA}/mlflow.db",
        f"--artifacts-destination={sidecars.TRACKER_DATA}/artifacts",
        "--allowed-hosts=localhost,localhost:*,127.0.0.1,127.0.0.1:*",
    )
    try:
        port = _docker("port", container, "5000/tcp").splitlines()[0].rpartition(":")[2]
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the MLflow server on the volume did not start"
                time.sleep(0.5)
        from mlflow.tracking import MlflowClient

        client = MlflowClient(url)
        experiment_id = client.get_experiment_by_name(experiment).experiment_id
        runs = client.search_runs([experiment_id], f"tags.`scanflow.run_id` = '{run_id}'")
        parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
        child = next(r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id)
        return {
            "parent": {"status": parent.info.status},
            "child": {"metrics": child.data.metrics},
        }
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)


def test_the_checker_sidecar_answers_a_step_in_real_time(
    engine: str, write_spec: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(0)
    reference = tmp_path / "reference.csv"
    lines = ["a,b,c,d"] + [",".join(f"{rng.gauss(0, 1):.6f}" for _ in range(4)) for _ in range(400)]
    reference.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv(sidecars.CHECKER_REFERENCE_ENV, str(reference))
    spec = write_spec(CHECKED.replace("IMAGE", engine))
    (spec.parent / "send.py").write_text(SEND)

    run = run_workflow(load_workflow(spec), home=tmp_path / "home", pm=get_plugin_manager(autoload=False))

    assert run.status == "succeeded", run.step_summaries()
    answers = json.loads((run.directory / "steps" / "send" / "outputs" / "answers").read_text())
    assert answers["url"] == "http://checker:8080"
    same, shifted = answers["same"], answers["shifted"]
    assert (same["drifted"], shifted["drifted"]) == (False, True)
    assert shifted["p_value"] < 0.05 < same["p_value"]
    assert same["size"] == shifted["size"] == 100
    assert "scanflow_checker_batches_total 2" in answers["metrics"]
    assert (run.directory / "sidecars" / "checker" / "detector" / "arrays.npz").is_file()
    assert _labelled(run.run_id) == []
