"""``scanflow_pod_template``: a Scanflow step's pod as a flytekit ``PodTemplate``, attached to a real
``ContainerTask`` and serialized by flytekit itself into the pod Flyte would submit, which is then
validated offline against Kubernetes' own schema (strict). No cluster runs here."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from flytekit import ContainerTask, PodTemplate, Resources, kwtypes
from flytekit.configuration import ImageConfig, SerializationSettings
from flytekit.tools.translator import get_serializable

from scanflow_core.deploy.kubernetes import KUBERNETES_VERSION
from scanflow_core.errors import SpecError
from scanflow_flyte.pods import scanflow_pod_template, to_v1_pod_spec

pytestmark = [pytest.mark.flyte]

DIGITS = Path(__file__).resolve().parents[3] / "examples" / "digits" / "scanflow.yaml"

GPU_SPEC = """\
apiVersion: scanflow/v1
name: boxed
tracker: {uri: sidecar}
steps:
  - name: train
    stage: training
    image: registry.example.com/ml/train:3
    command: ["python", "train.py"]
    resources: {cpu: 4, memory: 8Gi, gpu: 1}
    env: {OMP_NUM_THREADS: "4"}
"""


def _submitted(task: ContainerTask) -> dict[str, Any]:
    """The pod spec flytekit serializes for ``task`` (what Flyte's backend would launch), as a Pod."""
    settings = SerializationSettings(image_config=ImageConfig.auto_default_image())
    get_serializable(OrderedDict(), settings, task)  # the whole task serializes, not only the pod
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "flyte-task"},
        "spec": task.get_k8s_pod(settings).pod_spec,
    }
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
    return pod


def test_a_container_task_runs_the_step_with_its_sidecars() -> None:
    template = scanflow_pod_template(DIGITS, "train", run_id_template="{{.inputs.run_id}}", attempt=1)

    assert isinstance(template, PodTemplate)
    assert template.primary_container_name == "primary"
    assert template.labels == {
        "scanflow.io/workflow": "digits",
        "scanflow.io/step": "train",
        "scanflow.io/stage": "training",
    }
    primary = template.pod_spec.containers[0]
    task = ContainerTask(
        name="digits_train",
        image=primary.image,
        command=primary.command,
        inputs=kwtypes(run_id=str),
        pod_template=template,
        requests=Resources(cpu="2", mem="2Gi"),
    )

    pod = _submitted(task)["spec"]
    (container,) = pod["containers"]
    assert container["name"] == "primary" and container["image"] == "scanflow/scanflow:0.1.0"
    command = container["command"]
    assert command[3:6] == ["step", "/scanflow/work/scanflow.yaml", "train"]
    assert command[command.index("--run-id") + 1] == "{{.inputs.run_id}}"  # Flyte fills it in
    assert command[command.index("--orchestrator") + 1] == "flyte"
    assert container["resources"]["requests"] == {"cpu": "2", "memory": "2Gi"}  # the task's
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MLFLOW_TRACKING_URI"] == "http://tracker:5000" and env["SCANFLOW_HOME"] == "/scanflow/home"
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/scanflow/home", "/scanflow/work"}
    (tracker,) = pod["initContainers"]
    assert tracker["name"] == "tracker" and tracker["restartPolicy"] == "Always"
    assert tracker["volumeMounts"] == [
        {"mountPath": "/mlflow", "name": "scanflow-home", "subPath": "tracker"}
    ]
    assert pod["hostAliases"] == [{"hostnames": ["tracker"], "ip": "127.0.0.1"}]
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert claims == ["digits-scanflow-home"]


def test_an_image_step_keeps_its_image_gpu_and_checker(tmp_path: Path) -> None:
    spec = tmp_path / "scanflow.yaml"
    spec.write_text(GPU_SPEC)
    template = scanflow_pod_template(
        spec,
        "train",
        run_id_template="nightly-3",
        primary_container_name="main",
        checker_detector="detectors/reference",
        image="registry.example.com/ml/scanflow:0.1.0",
    )
    primary = template.pod_spec.containers[0]
    assert primary.image == "registry.example.com/ml/train:3"
    assert primary.resources.limits == {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "1"}
    task = ContainerTask(
        name="boxed_train",
        image=primary.image,
        command=primary.command,
        pod_template=template,  # no resources of the task's own: the step's stay
    )

    pod = _submitted(task)["spec"]
    (container,) = pod["containers"]
    assert container["name"] == "main" and container["image"] == "registry.example.com/ml/train:3"
    assert container["resources"] == {
        "limits": {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "1"},
        "requests": {"cpu": "4", "memory": "8Gi"},
    }
    assert {"name": "OMP_NUM_THREADS", "value": "4"} in container["env"]
    assert [c["name"] for c in pod["initContainers"]] == ["tracker", "checker"]
    checker = pod["initContainers"][1]
    assert checker["image"] == "registry.example.com/ml/scanflow:0.1.0"
    assert checker["command"][:3] == ["python3", "-m", "scanflow_core.checking.service"]
    assert template.labels["scanflow.io/run"] == "nightly-3"


def test_bad_input_is_named() -> None:
    with pytest.raises(SpecError, match="did you mean 'train'"):
        scanflow_pod_template(DIGITS, "trian", run_id_template="r1")
    with pytest.raises(TypeError, match="takes no 'namespace'"):
        scanflow_pod_template(DIGITS, "train", run_id_template="r1", namespace="ml")
    with pytest.raises(ValueError, match="containers"):
        to_v1_pod_spec({"volumes": []})  # the client checks required fields
