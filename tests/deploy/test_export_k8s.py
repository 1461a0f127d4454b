"""``scanflow export k8s``: every manifest is valid against Kubernetes' own schema (offline, strict) and
maps the spec: Jobs and Deployments, ordering, resources, volumes, sidecars, labels."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from scanflow_core.deploy.commands import export
from scanflow_core.deploy.kubernetes import KUBERNETES_VERSION
from scanflow_core.plugins import get_plugin_manager, hookimpl
from scanflow_core.records import SidecarSpec
from scanflow_core.spec import load_workflow

#: One service / Job per step of the digits example, in plan order.
DIGITS_STEPS = list(load_workflow(Path(__file__).parents[2] / "examples/digits/scanflow.yaml").plan.steps)


def _validated(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    return docs


def _by(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


class _Checker:
    @hookimpl
    def scanflow_sidecars(self, run: Any) -> list[SidecarSpec]:
        return [
            SidecarSpec(
                name="checker",
                image="example/checker:1",
                command=["serve", "--port=7000"],
                ports={7000: None},
                healthcheck="wget -q -O- http://localhost:7000/ok",
                inject_env={"CHECKER_URL": "http://checker:7000"},
            )
        ]


def test_the_digits_example_is_valid_kubernetes(digits_spec: Path, tmp_path: Path) -> None:
    path, _ = export("k8s", digits_spec, tmp_path, namespace="ml")
    docs = _validated(path)
    assert {d["kind"] for d in docs} == {
        "Namespace",
        "ConfigMap",
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
        "Job",
    }
    assert all(d["metadata"].get("namespace") == "ml" for d in docs if d["kind"] != "Namespace")
    jobs = _by(docs, "Job")
    # Every step is a Job but the serving stage's, which is a Deployment with a Service.
    assert list(jobs) == [f"digits-{s}" for s in DIGITS_STEPS if s != "serve"]
    assert "digits-serve" in _by(docs, "Deployment") and "digits-serve" in _by(docs, "Service")
    # The spec and the step module travel in a ConfigMap mounted at /scanflow/work.
    config = _by(docs, "ConfigMap")["digits-spec"]
    assert set(config["data"]) == {
        "scanflow.yaml",
        "digits_steps.py",
        "digits_production.py",
        "digits_improve.py",
    }
    # A Job waits for its upstream steps' markers in an init container, then runs the call.
    evaluate = jobs["digits-evaluate"]["spec"]
    pod = evaluate["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    wait = pod["initContainers"][0]
    assert wait["name"] == "wait-upstream"
    assert "/scanflow/run/steps/train/.done" in wait["command"][2]
    assert "/scanflow/run/steps/split/.done" in wait["command"][2]
    step = pod["containers"][0]
    assert step["args"] == ["python3", "-m", "scanflow_core.exec"]
    env = {e["name"]: e["value"] for e in step["env"]}
    assert env["SCANFLOW_CALL"] == "digits_steps:evaluate"
    assert env["MLFLOW_TRACKING_URI"] == "http://tracker:5000"
    assert {m["mountPath"] for m in step["volumeMounts"]} == {"/scanflow/run", "/scanflow/work"}
    claims = {v["name"]: v for v in pod["volumes"]}
    assert claims["run"]["persistentVolumeClaim"]["claimName"] == "digits-run"
    assert _by(docs, "PersistentVolumeClaim")["digits-run"]["spec"]["accessModes"] == ["ReadWriteMany"]
    # train: timeout 10m, retries 0 → backoffLimit 0; it waits for split, so no Job deadline (its
    # timeout is enforced per attempt by the wrapper).
    train = jobs["digits-train"]["spec"]
    assert train["backoffLimit"] == 0 and "activeDeadlineSeconds" not in train
    assert 'timeout 600 "$@"' in train["template"]["spec"]["containers"][0]["command"][2]
    # The tracker is shared: one Deployment, a Service named as the steps reach it, a claim of its own.
    assert _by(docs, "Deployment")["tracker"]["spec"]["template"]["spec"]["containers"][0]["ports"] == [
        {"containerPort": 5000}
    ]
    assert _by(docs, "Service")["tracker"]["spec"]["ports"][0]["port"] == 5000
    assert "digits-tracker" in _by(docs, "PersistentVolumeClaim")
    labels = jobs["digits-split"]["spec"]["template"]["metadata"]["labels"]
    assert labels == {
        "scanflow.io/run": "digits",
        "scanflow.io/workflow": "digits",
        "scanflow.io/step": "split",
        "scanflow.io/stage": "data_splitting",
    }


def test_serving_resources_and_sidecars(serving_spec: Path, tmp_path: Path) -> None:
    pm = get_plugin_manager([_Checker()], autoload=False)
    path, notes = export("k8s", serving_spec, tmp_path, replicas=3, run_id="Run_7", pm=pm)
    docs = _validated(path)
    assert all("namespace" not in d["metadata"] for d in docs)  # no --namespace: the context's
    assert "Namespace" not in {d["kind"] for d in docs}
    # Serving: a Deployment with replicas and a readiness probe on its port, and a Service.
    serve = _by(docs, "Deployment")["small-serve-serve"]
    assert serve["spec"]["replicas"] == 3
    assert serve["spec"]["selector"]["matchLabels"] == serve["spec"]["template"]["metadata"]["labels"]
    container = serve["spec"]["template"]["spec"]["containers"][0]
    assert container["ports"] == [{"name": "http", "containerPort": 9000}]
    assert container["readinessProbe"]["tcpSocket"]["port"] == 9000
    assert container["args"] == ["python", "-m", "http.server", "9000"]
    assert container["resources"] == {"requests": {"memory": "512Mi"}, "limits": {"memory": "512Mi"}}
    service = _by(docs, "Service")["small-serve-serve"]
    assert service["spec"]["ports"][0]["port"] == 9000
    assert service["metadata"]["labels"]["scanflow.io/run"] == "run-7"
    jobs = _by(docs, "Job")
    # prepare: retries as backoffLimit; it waits for its input file, so its timeout is the wrapper's only.
    prepare = jobs["small-serve-prepare"]["spec"]
    assert prepare["backoffLimit"] == 2 and "activeDeadlineSeconds" not in prepare
    pod = prepare["template"]["spec"]
    step = pod["containers"][0]
    assert step["resources"] == {
        "requests": {"cpu": "0.5", "memory": "256Mi"},
        "limits": {"cpu": "0.5", "memory": "256Mi"},
    }
    assert "while :" not in step["command"][2]  # Kubernetes retries the pod; the wrapper does not
    # It reads a workflow input file: from the run volume, where the user copies it (and it waits for it).
    assert pod["initContainers"][0]["name"] == "wait-upstream"
    assert "/scanflow/run/inputs/raw" in pod["initContainers"][0]["command"][2]
    assert any("raw.csv" in note and "/scanflow/run/inputs/raw" in note for note in notes)
    # train: a GPU limit; 1G stays a decimal quantity.
    train = jobs["small-serve-train"]["spec"]["template"]["spec"]
    assert train["containers"][0]["resources"]["limits"] == {"cpu": "2", "memory": "1G", "nvidia.com/gpu": 1}
    # The plugin's sidecar is an extra container in each pod: a native sidecar, reached by its name.
    sidecar = train["initContainers"][-1]
    assert sidecar["name"] == "checker" and sidecar["restartPolicy"] == "Always"
    assert sidecar["startupProbe"]["exec"]["command"][-1] == "wget -q -O- http://localhost:7000/ok"
    assert train["hostAliases"] == [{"ip": "127.0.0.1", "hostnames": ["checker"]}]
    env = {e["name"]: e["value"] for e in train["containers"][0]["env"]}
    assert env["CHECKER_URL"] == "http://checker:7000"
    assert serve["spec"]["template"]["spec"]["initContainers"][-1]["name"] == "checker"


def test_the_validator_is_strict(digits_spec: Path, tmp_path: Path) -> None:
    """The check above is worth something: a misspelt field or a wrong type fails it."""
    path, _ = export("k8s", digits_spec, tmp_path)
    job = next(d for d in yaml.safe_load_all(path.read_text()) if d["kind"] == "Job")
    misspelt = copy.deepcopy(job)
    misspelt["spec"]["backofLimit"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, KUBERNETES_VERSION, strict=True)
    wrong = copy.deepcopy(job)
    wrong["spec"]["template"]["spec"]["containers"][0]["env"] = {"A": "b"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, KUBERNETES_VERSION, strict=True)


def test_dollar_parentheses_stay_literal(write_spec: Any, tmp_path: Path) -> None:
    spec = write_spec(
        """
        apiVersion: scanflow/v1
        name: tiny
        tracker: {enabled: false}
        steps:
          - name: only
            stage: data_ingestion
            image: busybox:1
            command: ["sh", "-c", "echo $(date)"]
            env: {WHEN: "$(date)"}
            timeout: 30s
            retries: 1
        """
    )
    path, _ = export("k8s", spec, tmp_path)
    job = _by(_validated(path), "Job")["tiny-only"]
    # Nothing to wait for: the Job starts at once, and its deadline is timeout x attempts.
    assert job["spec"]["activeDeadlineSeconds"] == 60 and job["spec"]["backoffLimit"] == 1
    assert "initContainers" not in job["spec"]["template"]["spec"]
    step = job["spec"]["template"]["spec"]["containers"][0]
    assert step["args"][-1] == "echo $$(date)"
    assert {"name": "WHEN", "value": "$$(date)"} in step["env"]
