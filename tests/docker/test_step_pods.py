"""Step pods (:func:`scanflow_core.deploy.pods.step_pod`) run on a real engine the way a kubelet runs a
pod: a pause container holds the network namespace (with the pod's ``hostAliases``), the native
sidecars start first and must pass their startup probe, then the main container runs the pod's own
``command``, ``env`` and ``workingDir`` with the pod's volumes as bind mounts (the claim a folder, the
ConfigMap its files). Kubernetes cannot run here; this is the closest real run of the pods it would get.

The step pods run in the image ``scanflow image build --extra tracking`` builds (FROM the test base
image; the step's own process tracks to the sidecar, so it needs mlflow), as the pods of a cluster run
in ``scanflow/scanflow:<version>``. One stand-in, said where it is made: the tracker sidecar's image is
the one the Docker runtime builds (``ghcr.io/mlflow/mlflow`` cannot be pulled here).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from scanflow_core.deploy.finish_pod import finish_pod
from scanflow_core.deploy.pods import step_pod, work_files
from scanflow_core.runs import WorkflowRun
from scanflow_core.runtimes import sidecars
from scanflow_core.spec import load_workflow

pytestmark = [pytest.mark.docker, pytest.mark.slow]

#: The tag tests/docker/test_pod_image.py builds too (the second build of a session is all cache).
# One tag per checkout: two clones on one engine (a CI run beside a working tree) must not swap images.
POD_IMAGE = (
    "scanflow-test/scanflow:" + hashlib.sha256(str(Path(__file__).resolve()).encode()).hexdigest()[:12]
)

SPEC = """
apiVersion: scanflow/v1
name: podded
params: {word: quiet}
tracker: {uri: sidecar}
objectives: ["make.letters >= 3"]
steps:
  - {name: make, stage: data_ingestion, call: pod_steps:make, outputs: [data]}
  - name: shout
    stage: data_transformation
    image: IMAGE
    command: ["sh", "-c", "tr a-z A-Z < {inputs.data} > {outputs.loud} && echo shouted"]
    inputs: [data]
    outputs: [loud]
"""

STEPS = """
def make(word, data):
    data.write_text(word)
    return {"letters": len(word)}
"""


def _unescape(text: str) -> str:
    return text.replace("$$(", "$(")  # Kubernetes' escape of $(VAR); Docker expands nothing


class PodRunner:
    """Runs a pod manifest's containers on the engine, as a kubelet would (enough of it for step pods)."""

    def __init__(self, client: Any, volumes: dict[str, Path], user: str) -> None:
        self.client, self.volumes, self.user = client, volumes, user
        self.started: list[Any] = []

    def _binds(self, container: dict[str, Any]) -> dict[str, dict[str, str]]:
        binds = {}
        for mount in container.get("volumeMounts", []):
            source = self.volumes[mount["name"]] / mount.get("subPath", "")
            source.mkdir(parents=True, exist_ok=True)
            mode = "ro" if mount.get("readOnly") else "rw"
            binds[str(source)] = {"bind": mount["mountPath"], "mode": mode}
        return binds

    def _create(self, container: dict[str, Any], pause: Any, extra: dict[str, Any]) -> Any:
        env = {e["name"]: _unescape(e["value"]) for e in container.get("env", [])}
        env.setdefault("HOME", "/tmp")  # the caller's uid has no home in the image
        created = self.client.containers.create(
            container["image"],
            entrypoint=[_unescape(a) for a in container["command"]] if "command" in container else None,
            command=[_unescape(a) for a in container.get("args", [])] or None,
            environment={**env, **extra.pop("environment", {})},
            working_dir=container.get("workingDir"),
            network_mode=f"container:{pause.id}",
            user=self.user,
            volumes={**self._binds(container), **extra.pop("volumes", {})},
            labels={"scanflow.test": "step-pod"},
        )
        self.started.append(created)
        return created

    def run(self, pod: dict[str, Any], main_extra: dict[str, Any], pause_image: str) -> tuple[int, str]:
        """Start the pod; return the main container's exit code and logs."""
        spec = pod["spec"]
        hosts = {name: alias["ip"] for alias in spec.get("hostAliases", []) for name in alias["hostnames"]}
        pause = self.client.containers.run(
            pause_image,
            ["sleep", "infinity"],
            detach=True,
            extra_hosts=hosts,
            labels={"scanflow.test": "step-pod"},
        )
        self.started.append(pause)
        for init in spec.get("initContainers", []):
            assert init.get("restartPolicy") == "Always", "only native sidecars here"
            sidecar = self._create(init, pause, {})
            sidecar.start()
            self._await_startup(sidecar, init)
        (main,) = spec["containers"]
        container = self._create(main, pause, dict(main_extra))
        container.start()
        code = int(container.wait(timeout=600)["StatusCode"])
        return code, container.logs().decode(errors="replace")

    def _await_startup(self, container: Any, manifest: dict[str, Any]) -> None:
        probe = manifest.get("startupProbe")
        if not probe:
            return
        deadline = time.monotonic() + probe["periodSeconds"] * probe["failureThreshold"]
        while time.monotonic() < deadline:
            if container.exec_run(probe["exec"]["command"]).exit_code == 0:
                return
            time.sleep(1)
        container.reload()
        raise AssertionError(
            f"{manifest['name']} never passed its startup probe:\n{container.logs().decode()}"
        )

    def remove(self) -> None:
        for container in reversed(self.started):
            container.remove(force=True)
        self.started.clear()


@pytest.fixture(scope="module")
def pod_image(test_image: str) -> str:
    """The step-pod image, as ``scanflow image build`` builds it."""
    argv = ["--quiet", "--base", test_image, "--tag", POD_IMAGE, "--extra", "tracking"]
    done = subprocess.run(
        [sys.executable, "-m", "scanflow_core", "image", "build", *argv],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    return POD_IMAGE


@pytest.fixture
def pods(engine: str, tmp_path: Path) -> Any:
    import docker

    client = docker.from_env()
    runner = PodRunner(
        client,
        {"scanflow-home": tmp_path / "claim", "scanflow-work": tmp_path / "configmap"},
        f"{os.getuid()}:{os.getgid()}",
    )
    yield runner
    runner.remove()
    client.close()


def test_the_step_pods_of_a_run_run_its_steps_with_their_tracker(
    engine: str, pod_image: str, pods: PodRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "spec"
    folder.mkdir()
    (folder / "pod_steps.py").write_text(STEPS)
    spec = folder / "scanflow.yaml"
    spec.write_text(SPEC.replace("IMAGE", pod_image))
    workflow = load_workflow(spec)
    scratch = WorkflowRun(workflow, run_id="image-build", home=tmp_path / "scratch")
    monkeypatch.setenv("SCANFLOW_TRACKER_IMAGE", sidecars.tracker_image(scratch))  # stand-in, see above
    for path, text in work_files(workflow).items():  # the ConfigMap, as the kubelet writes it out
        (tmp_path / "configmap" / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "configmap" / path).write_text(text)
    for name in ("make", "shout"):
        pod = step_pod(
            spec, name, run_id_template="pods-7", image=pod_image, params={"word": "hello"}, attempt=1
        )
        assert pod["spec"]["containers"][0]["image"] == pod_image
        code, logs = pods.run(pod, {}, engine)
        assert code == 0, logs
        assert f"step {name} of run pods-7: succeeded" in logs
        pods.remove()

    # Then the finish pod closes the run where the steps ran: same claim, same tracker store.
    finish = finish_pod(spec, run_id_template="pods-7", image=pod_image, params={"word": "hello"})
    code, logs = pods.run(finish, {}, engine)
    assert code == 0, logs
    assert "run pods-7: succeeded" in logs and "✓ make.letters >= 3" in logs
    pods.remove()

    run = tmp_path / "claim" / "runs" / "pods-7"
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["finished_at"]
    assert [(o["expr"], o["passed"]) for o in manifest["objectives"]] == [("make.letters >= 3", True)]
    assert (run / "steps" / "shout" / "outputs" / "loud").read_text() == "HELLO"
    assert (run / "steps" / "shout" / "step.log").read_text().strip() == "shouted"
    records = {n: json.loads((run / "steps" / n / "step.json").read_text()) for n in ("make", "shout")}
    assert records["make"]["metrics"] == {"letters": 5.0}
    assert records["shout"]["runtime"] == "in-image"
    assert json.loads((run / "run.json").read_text())["orchestrator"] == "kubernetes"
    assert (tmp_path / "claim" / "keys" / "scanflow.pub").is_file()  # one key for the pods of a run
    # Each pod's tracker kept its store on the claim: one parent MLflow run, a child per step.
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'claim' / 'tracker' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("podded")
    found = client.search_runs([experiment.experiment_id], filter_string="tags.`scanflow.run_id` = 'pods-7'")
    kinds = sorted((r.data.tags["scanflow.kind"], r.data.tags.get("scanflow.step", "")) for r in found)
    assert kinds == [("step", "make"), ("step", "shout"), ("workflow", "")]
    (make,) = [r for r in found if r.data.tags.get("scanflow.step") == "make"]
    assert make.data.metrics["letters"] == 5.0
    (parent,) = [r for r in found if r.data.tags["scanflow.kind"] == "workflow"]
    objectives = {k: v for k, v in parent.data.metrics.items() if k.startswith("objective.")}
    assert list(objectives.values()) == [1.0]  # tracked by the finish pod
