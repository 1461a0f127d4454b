"""The pod that closes a run (:func:`scanflow_core.deploy.finish_pod.finish_pod`): valid against
Kubernetes' own schema (offline, strict), mounted and wired as the step pods of the same options, and a
command that really closes the run the step pods' commands ran (here, paths mapped)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from scanflow_core.cli import main
from scanflow_core.deploy.finish_pod import finish_command, finish_pod
from scanflow_core.deploy.kubernetes import KUBERNETES_VERSION
from scanflow_core.deploy.pods import DEFAULT_POD_IMAGE, HOME_MOUNT, step_pod, work_files
from scanflow_core.spec import load_workflow


def valid(doc: dict[str, Any]) -> dict[str, Any]:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    return doc


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


def flags(command: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for flag, value in itertools.pairwise(command):
        if flag.startswith("--") and not value.startswith("--"):
            found.setdefault(flag, []).append(value)
    return found


SPEC = """
apiVersion: scanflow/v1
name: Boxed_Run
params: {word: quiet}
tracker: {uri: sidecar}
objectives: ["make.letters >= 3"]
steps:
  - {name: make, stage: data_ingestion, call: MOD:make, outputs: [data]}
  - name: shout
    stage: data_transformation
    image: registry.invalid/never-pulled:1
    command: ["sh", "-c", "tr a-z A-Z < {inputs.data} > {outputs.loud}"]
    inputs: [data]
    outputs: [loud]
    resources: {cpu: 2, memory: 1G, gpu: 1}
    env: {GREETING: hello}
"""

CODE = "def make(word, data):\n    data.write_text(word)\n    return {'letters': len(word)}\n"


@pytest.fixture
def spec(write_spec: Any) -> Path:
    path: Path = write_spec(SPEC, code=CODE, module="finish_steps")
    return path


def test_the_finish_pod_mounts_and_tracks_as_the_step_pods(spec: Path) -> None:
    options: dict[str, Any] = {"namespace": "ml", "params": {"word": "hello"}, "image": "example/sf:1"}
    steps = [valid(step_pod(spec, n, run_id_template="nightly-7", **options)) for n in ("make", "shout")]
    pod = valid(finish_pod(spec, run_id_template="nightly-7", **options))

    assert pod["metadata"] == {
        "name": "boxed-run-finish-nightly-7",
        "namespace": "ml",
        "labels": {
            "scanflow.io/run": "nightly-7",
            "scanflow.io/workflow": "boxed-run",
            "scanflow.io/role": "finish",
        },
    }
    (main_,) = pod["spec"]["containers"]
    assert main_["name"] == "finish" and main_["image"] == "example/sf:1"
    assert main_["command"][:5] == ["python3", "-m", "scanflow_core", "close", "/scanflow/work/scanflow.yaml"]
    args = flags(main_["command"])
    assert args["--run-id"] == ["nightly-7"] and args["--home"] == [HOME_MOUNT]
    assert args["--param"] == ["word=hello"] and args["--orchestrator"] == ["kubernetes"]
    assert args["--tracker-uri"] == ["http://tracker:5000"]  # the pod's own tracker sidecar
    for step in steps:
        assert pod["spec"]["volumes"] == step["spec"]["volumes"]
        assert main_["volumeMounts"] == step["spec"]["containers"][0]["volumeMounts"]
        assert main_["workingDir"] == step["spec"]["containers"][0]["workingDir"]
        assert pod["spec"]["initContainers"] == step["spec"]["initContainers"]  # the same tracker
        assert pod["spec"]["hostAliases"] == step["spec"]["hostAliases"]
    assert env_of(main_) == {"SCANFLOW_HOME": HOME_MOUNT, "MLFLOW_TRACKING_URI": "http://tracker:5000"}
    assert "resources" not in main_ and pod["spec"]["restartPolicy"] == "Never"  # no step's resources


def test_a_tracker_of_your_own_claim_and_work_volume(spec: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCANFLOW_POD_IMAGE", "example/from-env:2")
    options: dict[str, Any] = {
        "tracker_uri": "http://mlflow.ml.svc:5000",
        "claim": "team-scanflow",
        "work_volume": {"persistentVolumeClaim": {"claimName": "team-specs", "readOnly": True}},
        "checker_detector": "detectors/digits",  # a step pod's option; closing checks nothing
    }
    step = valid(step_pod(spec, "make", run_id_template="r1", **options))
    pod = valid(finish_pod(spec, run_id_template="r1", container_name="close", **options))

    assert "initContainers" not in pod["spec"] and "hostAliases" not in pod["spec"]
    assert pod["spec"]["volumes"] == step["spec"]["volumes"]
    (main_,) = pod["spec"]["containers"]
    assert main_["name"] == "close" and main_["image"] == "example/from-env:2"
    assert flags(main_["command"])["--tracker-uri"] == ["http://mlflow.ml.svc:5000"]
    assert env_of(main_)["MLFLOW_TRACKING_URI"] == "http://mlflow.ml.svc:5000"


def test_a_spec_with_a_server_of_its_own_or_no_tracking(write_spec: Any) -> None:
    own = write_spec(SPEC.replace("{uri: sidecar}", "{uri: 'http://mlflow:5000'}"), code=CODE)
    pod = valid(finish_pod(own, run_id_template="r1"))
    assert "initContainers" not in pod["spec"]
    assert "--tracker-uri" not in pod["spec"]["containers"][0]["command"]
    assert env_of(pod["spec"]["containers"][0])["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert pod["spec"]["containers"][0]["image"] == DEFAULT_POD_IMAGE

    off = write_spec(SPEC.replace("{uri: sidecar}", "{enabled: false}"), code=CODE)
    pod = valid(finish_pod(off, run_id_template="r1"))
    assert "initContainers" not in pod["spec"]
    assert env_of(pod["spec"]["containers"][0]) == {"SCANFLOW_HOME": HOME_MOUNT}


def test_a_templated_run_id_is_left_for_the_host(digits_spec: Path) -> None:
    pod = valid(finish_pod(digits_spec, run_id_template="{{ ti.xcom_pull(key='run') }}"))

    assert pod["metadata"]["name"] == "digits-finish"
    assert "scanflow.io/run" not in pod["metadata"]["labels"]
    assert flags(pod["spec"]["containers"][0]["command"])["--run-id"] == ["{{ ti.xcom_pull(key='run') }}"]
    for name in load_workflow(digits_spec).plan.steps:
        step = valid(step_pod(digits_spec, name, run_id_template="{{ ti.xcom_pull(key='run') }}"))
        assert step["spec"]["volumes"] == pod["spec"]["volumes"]
        assert step["spec"]["initContainers"] == pod["spec"]["initContainers"]  # digits' tracker sidecar


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"run_id_template": "two words"}, "run_id_template 'two words': a run id is letters"),
        ({"run_id_template": ""}, "run_id_template must be a run id"),
        ({"namespace": "ML_Team"}, "namespace must be a DNS-1123 label"),
        ({"container_name": "Main"}, "container_name must be a DNS-1123 label"),
        ({"claim": "Team Claim"}, "claim must be a DNS-1123 label"),
        ({"work_volume": "specs"}, "work_volume must be a volume source"),
        ({"checker_detector": 3}, "checker_detector must be a path, not 3"),
    ],
)
def test_bad_arguments_are_named(spec: Path, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        finish_pod(spec, **{"run_id_template": "r1", **options})


def test_the_validator_is_strict(spec: Path) -> None:
    pod = finish_pod(spec, run_id_template="r1")
    pod["spec"]["containers"][0]["volumeMount"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        valid(pod)


def test_the_pod_commands_run_and_close_one_run(spec: Path, tmp_path: Path, monkeypatch: Any) -> None:
    """The step pods' commands run the steps, then the finish pod's command closes the run (paths
    mapped as the pods' mounts); with the word too short, the same command exits 3."""
    home, work = tmp_path / "claim", tmp_path / "configmap"
    for path, text in work_files(load_workflow(spec)).items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(text)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")  # a pod has no engine
    monkeypatch.chdir(work)

    def run(pod: dict[str, Any]) -> int:
        container = valid(pod)["spec"]["containers"][0]
        monkeypatch.setenv("SCANFLOW_STEP_IMAGE", container["image"])
        argv = [
            a.replace(HOME_MOUNT, str(home)).replace("/scanflow/work", str(work))
            for a in container["command"]
        ]
        assert argv[:3] == ["python3", "-m", "scanflow_core"]
        return main(argv[3:])

    options: dict[str, Any] = {"tracker_uri": "http://unused.invalid:5000"}  # tracking is off in tests
    for word, run_id, expected in (("hello", "pods-1", 0), ("hi", "pods-2", 3)):
        for name in ("make", "shout"):
            pod = step_pod(spec, name, run_id_template=run_id, params={"word": word}, **options)
            assert run(pod) == 0
        assert run(finish_pod(spec, run_id_template=run_id, params={"word": word}, **options)) == expected
        manifest = json.loads((home / "runs" / run_id / "run.json").read_text())
        assert manifest["status"] == "succeeded" and manifest["orchestrator"] == "kubernetes"
        assert [o["passed"] for o in manifest["objectives"]] == [expected == 0]


def test_finish_command_alone() -> None:
    argv = finish_command("/w/s.yaml", run_id_template="r1", params={"n": 3}, tracker_uri="http://t:5000")

    assert argv == [
        "python3", "-m", "scanflow_core", "close", "/w/s.yaml", "--run-id", "r1",
        "--home", HOME_MOUNT, "--orchestrator", "kubernetes", "--tracker-uri", "http://t:5000",
        "--param", "n=3",
    ]  # fmt: skip
