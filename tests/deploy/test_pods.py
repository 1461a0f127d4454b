"""One step as a Kubernetes Pod: valid against Kubernetes' own schema (offline, strict), with the
tracker and checker sidecars, and a command that really runs the step (here, paths mapped)."""

from __future__ import annotations

import copy
import itertools
import json
import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from scanflow_core.cli import main
from scanflow_core.deploy.kubernetes import KUBERNETES_VERSION
from scanflow_core.deploy.pods import (
    DEFAULT_POD_IMAGE,
    HOME_MOUNT,
    pod_template_spec,
    shared_objects,
    step_command,
    step_pod,
    work_files,
)
from scanflow_core.errors import SpecError
from scanflow_core.plugins import get_plugin_manager, hookimpl
from scanflow_core.records import SidecarSpec
from scanflow_core.spec import load_workflow, parse_overrides

DIGITS_STEPS = ["ingest", "validate", "split", "train", "evaluate", "test"]


def valid(doc: dict[str, Any]) -> dict[str, Any]:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    return doc


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


def arguments(command: list[str]) -> dict[str, list[str]]:
    """``--flag value`` pairs of a ``scanflow step`` command, by flag."""
    found: dict[str, list[str]] = {}
    for flag, value in itertools.pairwise(command):
        if flag.startswith("--") and not value.startswith("--"):
            found.setdefault(flag, []).append(value)
    return found


class _Checker:
    @hookimpl
    def scanflow_sidecars(self, run: Any) -> list[SidecarSpec]:
        return [
            SidecarSpec(
                name="profiler",
                image="example/profiler:1",
                command=["serve", "--port=7000"],
                ports={7000: None},
                healthcheck="wget -q -O- http://localhost:7000/ok",
                inject_env={"PROFILER_URL": "http://profiler:7000"},
            )
        ]


def test_every_digits_step_is_a_valid_pod_that_runs_exactly_that_step(digits_spec: Path) -> None:
    shared = [valid(doc) for doc in shared_objects(digits_spec, namespace="ml")]
    config, claim = shared
    assert config["kind"] == "ConfigMap" and claim["kind"] == "PersistentVolumeClaim"
    assert {"scanflow.yaml", "digits_steps.py"} <= set(config["data"])
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]

    steps = list(load_workflow(digits_spec).plan.steps)
    assert set(DIGITS_STEPS) <= set(steps)
    for name in steps:
        pod = valid(step_pod(digits_spec, name, run_id_template="nightly-7", namespace="ml", attempt=2))
        assert pod["metadata"]["name"] == f"digits-{name}-nightly-7"
        assert pod["metadata"]["namespace"] == "ml"
        (step,) = pod["spec"]["containers"]
        assert step["command"][:6] == [
            "python3",
            "-m",
            "scanflow_core",
            "step",
            "/scanflow/work/scanflow.yaml",
            name,
        ]
        args = arguments(step["command"])
        assert args["--run-id"] == ["nightly-7"] and args["--home"] == [HOME_MOUNT]
        assert args["--attempt"] == ["2"] and "--in-image" in step["command"]
        assert step["image"] == DEFAULT_POD_IMAGE  # call steps name no image
        # The pods of a run share the claim (the run directory) and the ConfigMap (the spec).
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert volumes["scanflow-home"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
        assert volumes["scanflow-work"]["configMap"]["name"] == config["metadata"]["name"]
        items = volumes["scanflow-work"]["configMap"]["items"]
        assert {i["key"] for i in items} == set(config["data"])
        assert pod["spec"]["restartPolicy"] == "Never"

    train = step_pod(digits_spec, "train", run_id_template="nightly-7")
    assert train["metadata"]["labels"] == {
        "scanflow.io/run": "nightly-7",
        "scanflow.io/workflow": "digits",
        "scanflow.io/step": "train",
        "scanflow.io/stage": "training",
    }
    # digits tracks to no server of its own: an MLflow tracker is a native sidecar of the pod, its
    # store on the shared claim, reached as http://tracker:5000 by the step path and the step's code.
    (tracker,) = train["spec"]["initContainers"]
    assert tracker["name"] == "tracker" and tracker["restartPolicy"] == "Always"
    assert tracker["image"] == "ghcr.io/mlflow/mlflow:v3.17.2"
    assert tracker["volumeMounts"] == [
        {"name": "scanflow-home", "mountPath": "/mlflow", "subPath": "tracker"}
    ]
    assert "--backend-store-uri=sqlite:////mlflow/mlflow.db" in tracker["args"]
    assert tracker["startupProbe"]["exec"]["command"][0] == "sh"
    assert train["spec"]["hostAliases"] == [{"ip": "127.0.0.1", "hostnames": ["tracker"]}]
    step = train["spec"]["containers"][0]
    assert arguments(step["command"])["--tracker-uri"] == ["http://tracker:5000"]
    env = env_of(step)
    assert env["MLFLOW_TRACKING_URI"] == "http://tracker:5000"
    assert env["SCANFLOW_HOME"] == HOME_MOUNT and env["SCANFLOW_STEP_IMAGE"] == DEFAULT_POD_IMAGE


SIDECAR_SPEC = """
apiVersion: scanflow/v1
name: Boxed_GPU
params: {lr: 0.1, tag: "true"}
tracker: {uri: sidecar}
steps:
  - name: prepare
    stage: data_transformation
    image: python:3.11-slim
    command: ["sh", "-c", "echo $(date) > {outputs.table}"]
    outputs: [table]
    resources: {cpu: 0.5, memory: 256Mi}
    env: {GREETING: "$(HOME)"}
  - name: train
    stage: training
    build: {requirements: requirements.txt}
    params: {notes: none}
    call: MOD:train
    inputs: [table]
    outputs: [model]
    resources: {cpu: 2, memory: 1G, gpu: 2}
    timeout: 10m
"""

STEP_CODE = "def train(table, model):\n    model.write_text(table.read_text())\n    return {'rows': 1}\n"


@pytest.fixture
def sidecar_spec(write_spec: Any) -> Path:
    path: Path = write_spec(SIDECAR_SPEC, code=STEP_CODE)
    return path


def test_image_steps_gpu_and_sidecars(sidecar_spec: Path) -> None:
    pm = get_plugin_manager([_Checker()], autoload=False)
    params = {"lr": 0.01, "tag": "true", "train.notes": "costs $(a lot)"}
    prepare = valid(step_pod(sidecar_spec, "prepare", run_id_template="r-1", params=params, pm=pm))
    train = valid(
        step_pod(
            sidecar_spec,
            "train",
            run_id_template="r-1",
            params={"lr": 0.01},
            image_prefix="registry.example.com/ml/",
            checker_detector="detectors/reference",
            pm=pm,
        )
    )

    step = prepare["spec"]["containers"][0]
    assert step["image"] == "python:3.11-slim"  # the step's own image runs `scanflow step`
    assert env_of(step)["SCANFLOW_STEP_IMAGE"] == "python:3.11-slim"
    assert step["resources"] == {
        "requests": {"cpu": "0.5", "memory": "256Mi"},
        "limits": {"cpu": "0.5", "memory": "256Mi"},
    }
    assert env_of(step)["GREETING"] == "$$(HOME)"  # Kubernetes must not expand it
    # Params go in as --param text that reads back as the same values (a string "true" stays a string).
    passed = parse_overrides([p.replace("$$(", "$(") for p in arguments(step["command"])["--param"]])
    assert passed == params
    # tracker.uri: sidecar → the pod's tracker; --tracker-uri tells the step path where it is.
    assert arguments(step["command"])["--tracker-uri"] == ["http://tracker:5000"]
    names = [c["name"] for c in prepare["spec"]["initContainers"]]
    assert names == ["profiler", "tracker"]
    assert prepare["spec"]["hostAliases"] == [{"ip": "127.0.0.1", "hostnames": ["profiler", "tracker"]}]
    assert env_of(step)["PROFILER_URL"] == "http://profiler:7000"
    assert prepare["metadata"]["labels"]["scanflow.io/workflow"] == "boxed-gpu"

    main = train["spec"]["containers"][0]
    assert main["image"] == "registry.example.com/ml/scanflow/boxed-gpu-train:latest"  # a `build` step
    assert main["resources"]["limits"] == {"cpu": "2", "memory": "1G", "nvidia.com/gpu": 2}
    assert "nvidia.com/gpu" not in main["resources"]["requests"]
    checker = train["spec"]["initContainers"][-1]
    assert checker["name"] == "checker" and checker["restartPolicy"] == "Always"
    assert checker["image"] == DEFAULT_POD_IMAGE
    assert checker["command"] == [
        "python3", "-m", "scanflow_core.checking.service",
        "--detector", f"{HOME_MOUNT}/detectors/reference", "--port", "8080",
    ]  # fmt: skip
    assert checker["volumeMounts"] == [{"name": "scanflow-home", "mountPath": HOME_MOUNT, "readOnly": True}]
    assert env_of(main)["SCANFLOW_CHECKER_URL"] == "http://checker:8080"
    assert train["spec"]["hostAliases"][0]["hostnames"] == ["profiler", "tracker", "checker"]


def test_a_tracker_of_your_own_replaces_the_sidecar(sidecar_spec: Path) -> None:
    pod = valid(
        step_pod(
            sidecar_spec,
            "prepare",
            run_id_template="r1",
            tracker_uri="http://mlflow.ml.svc:5000",
            claim="team-scanflow",
            work_volume={"persistentVolumeClaim": {"claimName": "team-specs", "readOnly": True}},
        )
    )

    assert "initContainers" not in pod["spec"] and "hostAliases" not in pod["spec"]
    step = pod["spec"]["containers"][0]
    assert arguments(step["command"])["--tracker-uri"] == ["http://mlflow.ml.svc:5000"]
    assert env_of(step)["MLFLOW_TRACKING_URI"] == "http://mlflow.ml.svc:5000"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["scanflow-home"]["persistentVolumeClaim"]["claimName"] == "team-scanflow"
    assert volumes["scanflow-work"] == {
        "name": "scanflow-work",
        "persistentVolumeClaim": {"claimName": "team-specs", "readOnly": True},
    }


def test_a_spec_with_a_server_of_its_own_or_no_tracking_gets_no_tracker(write_spec: Any) -> None:
    own = write_spec(SIDECAR_SPEC.replace("{uri: sidecar}", "{uri: 'http://mlflow:5000'}"), code=STEP_CODE)
    pod = valid(step_pod(own, "prepare", run_id_template="r1"))
    assert "initContainers" not in pod["spec"]
    assert "--tracker-uri" not in pod["spec"]["containers"][0]["command"]
    assert env_of(pod["spec"]["containers"][0])["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"

    off = write_spec(SIDECAR_SPEC.replace("{uri: sidecar}", "{enabled: false}"), code=STEP_CODE)
    pod = valid(step_pod(off, "prepare", run_id_template="r1"))
    assert "initContainers" not in pod["spec"]
    assert "MLFLOW_TRACKING_URI" not in env_of(pod["spec"]["containers"][0])


def test_templated_run_ids_and_attempts_are_left_for_the_host(digits_spec: Path) -> None:
    pod = valid(
        step_pod(
            digits_spec,
            "split",
            run_id_template="{{ ti.xcom_pull(key='run') }}",
            attempt="{{ ti.try_number }}",
            name="split-pod",
        )
    )

    assert pod["metadata"]["name"] == "split-pod"
    assert "scanflow.io/run" not in pod["metadata"]["labels"]  # no value yet
    args = arguments(pod["spec"]["containers"][0]["command"])
    assert args["--run-id"] == ["{{ ti.xcom_pull(key='run') }}"]
    assert args["--attempt"] == ["{{ ti.try_number }}"]
    assert (
        valid(step_pod(digits_spec, "split", run_id_template="$(RUN_ID)"))["metadata"]["name"]
        == "digits-split"
    )


def test_a_pod_template_for_flyte(digits_spec: Path) -> None:
    template = pod_template_spec(digits_spec, "evaluate", run_id_template="{{.inputs.run_id}}")

    assert set(template) == {"metadata", "spec"}
    assert template["spec"]["containers"][0]["name"] == "primary"
    valid({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "evaluate"}, "template": template})
    with pytest.raises(TypeError, match="takes no 'namespace'"):
        pod_template_spec(digits_spec, "evaluate", run_id_template="r1", namespace="ml")


def test_nested_workflow_files_travel_with_the_spec(write_spec: Any, tmp_path: Path) -> None:
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "inner_steps.py").write_text("def clean():\n    return {'ok': 1}\n")
    (inner / "prep.yaml").write_text(
        "apiVersion: scanflow/v1\nname: prep\nsteps:\n  - {name: clean, stage: data_transformation, call: inner_steps:clean}\n"
    )
    spec = write_spec(
        """
        apiVersion: scanflow/v1
        name: outer
        steps:
          - {name: prep, stage: data_transformation, workflow: inner/prep.yaml}
          - {name: fit, stage: training, call: MOD:fit, needs: [prep]}
        """,
        code="def fit():\n    return {'loss': 0.1}\n",
    )

    files = work_files(load_workflow(spec))
    pod = valid(step_pod(spec, "prep.clean", run_id_template="r1"))

    assert {"scanflow.yaml", "inner/prep.yaml", "inner/inner_steps.py"} <= set(files)
    items = pod["spec"]["volumes"][1]["configMap"]["items"]
    assert {"key": "inner__prep.yaml", "path": "inner/prep.yaml"} in items
    assert pod["metadata"]["name"] == "outer-prep-clean-r1"


def test_what_cannot_be_a_pod_is_named(write_spec: Any, digits_spec: Path, serving_spec: Path) -> None:
    with pytest.raises(SpecError, match=r"step trian: no step named 'trian'.*did you mean 'train'"):
        step_pod(digits_spec, "trian", run_id_template="r1")
    with pytest.raises(SpecError, match=r"steps.prepare.inputs: the step reads workflow input files \(raw"):
        step_pod(serving_spec, "prepare", run_id_template="r1")
    pod = step_pod(serving_spec, "prepare", run_id_template="r1", work_volume={"emptyDir": {}})
    assert valid(pod)["spec"]["volumes"][1] == {"name": "scanflow-work", "emptyDir": {}}
    bare = write_spec(
        "apiVersion: scanflow/v1\nname: bare\nsteps:\n  - {name: serve, stage: serving, image: 'nginx:1'}\n"
    )
    with pytest.raises(SpecError, match=r"steps\.serve: a step pod runs the step through 'scanflow step'"):
        step_pod(bare, "serve", run_id_template="r1")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"run_id_template": "two words"}, "run_id_template 'two words': a run id is letters"),
        ({"run_id_template": ""}, "run_id_template must be a run id"),
        ({"namespace": "ML_Team"}, "namespace must be a DNS-1123 label"),
        ({"attempt": 0}, "attempt must be a number from 1 or a template, not 0"),
        ({"container_name": "Main"}, "container_name must be a DNS-1123 label"),
        ({"work_volume": "specs"}, "work_volume must be a volume source"),
        ({"skipped_exit_code": 256}, "skipped_exit_code must be an exit code 0-255, not 256"),
    ],
)
def test_bad_arguments_are_named(digits_spec: Path, options: dict[str, Any], message: str) -> None:
    arguments = {"run_id_template": "r1", **options}
    with pytest.raises(ValueError, match=message):
        step_pod(digits_spec, "train", **arguments)


def test_the_validator_is_strict(digits_spec: Path) -> None:
    """The checks above are worth something: a misspelt field or a wrong type fails them."""
    pod = step_pod(digits_spec, "train", run_id_template="r1")
    misspelt = copy.deepcopy(pod)
    misspelt["spec"]["initContainers"][0]["restartPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        valid(misspelt)
    wrong = copy.deepcopy(pod)
    wrong["spec"]["containers"][0]["command"] = "python3 -m scanflow_core"
    with pytest.raises(kubernetes_validate.ValidationError):
        valid(wrong)


BOXED = """
apiVersion: scanflow/v1
name: boxed
params: {word: quiet}
steps:
  - {name: make, stage: data_ingestion, call: MOD:make, outputs: [data]}
  - name: shout
    stage: data_transformation
    image: registry.invalid/never-pulled:1
    command: ["sh", "-c", "tr a-z A-Z < {inputs.data} > {outputs.loud}"]
    inputs: [data]
    outputs: [loud]
"""


def test_the_pod_commands_run_the_steps_of_one_run(write_spec: Any, tmp_path: Path, monkeypatch: Any) -> None:
    """Each pod's command, run here with the pod's mounts mapped to folders (the claim, and the
    ConfigMap's files written out), runs its step of the shared run: the pods together run the workflow."""
    spec = write_spec(BOXED, code="def make(word, data):\n    data.write_text(word)\n", module="boxed_steps")
    home, work = tmp_path / "claim", tmp_path / "configmap"
    for path, text in work_files(load_workflow(spec)).items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(text)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")  # a pod has no engine
    monkeypatch.chdir(work)

    for name in ("make", "shout"):
        pod = valid(step_pod(spec, name, run_id_template="pods-1", params={"word": "hello"}, attempt=1))
        container = pod["spec"]["containers"][0]
        monkeypatch.setenv("SCANFLOW_STEP_IMAGE", container["image"])
        argv = [
            a.replace(HOME_MOUNT, str(home)).replace("/scanflow/work", str(work))
            for a in container["command"]
        ]
        assert argv[:3] == ["python3", "-m", "scanflow_core"]
        assert main(argv[3:]) == 0

    run = home / "runs" / "pods-1"
    assert (run / "steps" / "shout" / "outputs" / "loud").read_text() == "HELLO"
    records = {n: json.loads((run / "steps" / n / "step.json").read_text()) for n in ("make", "shout")}
    assert records["make"]["runtime"] == "inprocess"
    assert records["shout"]["runtime"] == "in-image"
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["orchestrator"] == "kubernetes" and manifest["params"] == {"word": "hello"}
    assert os.path.exists(run / "attestations" / "shout.intoto.jsonl")


def test_step_command_alone() -> None:
    argv = step_command("/w/s.yaml", "fit", run_id_template="r1", params={"n": 3}, skipped_exit_code=4)

    assert argv == [
        "python3", "-m", "scanflow_core", "step", "/w/s.yaml", "fit", "--run-id", "r1",
        "--home", HOME_MOUNT, "--in-image", "--orchestrator", "kubernetes",
        "--skipped-exit-code", "4", "--param", "n=3",
    ]  # fmt: skip
