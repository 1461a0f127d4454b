"""``ScanflowOperator(..., executor="kubernetes")``: the pod a task launches, validated offline against
Kubernetes' own schema, and the cncf.kubernetes provider's ``KubernetesPodOperator`` that launches it.

No cluster runs here. The last test runs a real DAG (``dag.test()``) whose task launches its pod
through the real ``KubernetesPodOperator`` and Kubernetes client, against a local HTTP endpoint that
only records what the API server would receive (and refuses it): what the task sends is what is checked.
"""

from __future__ import annotations

import itertools
import json
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from scanflow_core.deploy.kubernetes import KUBERNETES_VERSION
from scanflow_core.deploy.pods import step_pod

pytestmark = [
    pytest.mark.airflow,
    # dag.test() imports Airflow's in-process execution API, whose svcs dependency imports
    # starlette.testclient; starlette warns there about httpx (a third-party import we can't fix).
    pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient` is deprecated"),
]

SPEC = """\
apiVersion: scanflow/v1
name: small
params: {rows: 5}
tracker: {uri: sidecar}
steps:
  - {name: make, stage: data_ingestion, call: small_steps:make, outputs: [table]}
  - name: count
    stage: evaluation
    image: registry.example.com/ml/count:2
    command: ["sh", "-c", "wc -l < {inputs.table}"]
    inputs: [table]
    resources: {cpu: 1, memory: 512Mi, gpu: 1}
"""


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    (tmp_path / "small_steps.py").write_text("def make(table, rows):\n    table.write_text('x\\n' * rows)\n")
    path = tmp_path / "scanflow.yaml"
    path.write_text(SPEC)
    return path


def valid(doc: dict[str, Any]) -> dict[str, Any]:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    return doc


def test_the_executor_and_its_options_are_checked_when_the_dag_is_parsed() -> None:
    from scanflow_airflow import ScanflowOperator

    op = ScanflowOperator(
        task_id="t", spec="missing.yaml", step="train", executor="kubernetes", pod_options={"namespace": "ml"}
    )
    assert op.step_executor == "kubernetes" and op.pod_options == {"namespace": "ml"}
    assert op.executor is None  # Airflow's own executor argument is left alone...
    assert ScanflowOperator(task_id="t", spec="s.yaml", step="train").step_executor == "local"
    airflow_executor = ScanflowOperator(
        task_id="t", spec="s.yaml", step="s", airflow_executor="CeleryExecutor"
    )
    assert airflow_executor.executor == "CeleryExecutor"  # ... and given as airflow_executor
    with pytest.raises(ValueError, match="executor must be one of 'local', 'kubernetes', not 'docker'"):
        ScanflowOperator(task_id="t", spec="s.yaml", step="train", executor="docker")
    with pytest.raises(ValueError, match="pod_options is for executor='kubernetes'"):
        ScanflowOperator(task_id="t", spec="s.yaml", step="train", pod_options={"namespace": "ml"})
    with pytest.raises(ValueError, match=r"pod_options: unknown option\(s\) replicas"):
        ScanflowOperator(
            task_id="t", spec="s.yaml", step="train", executor="kubernetes", pod_options={"replicas": 2}
        )
    with pytest.raises(ValueError, match="operator_options: full_pod_spec is set by the Scanflow operator"):
        ScanflowOperator(
            task_id="t",
            spec="s.yaml",
            step="train",
            executor="kubernetes",
            operator_options={"full_pod_spec": None},
        )


def test_the_pod_operator_launches_the_step_pod(spec: Path) -> None:
    """What ``KubernetesPodOperator`` would create (built by the provider itself, in dry-run mode)."""
    from kubernetes.client import ApiClient

    from scanflow_airflow.kubernetes import SKIPPED_EXIT_CODE, pod_operator

    pod = valid(
        step_pod(
            spec,
            "count",
            run_id_template="nightly",
            namespace="ml",
            attempt=3,
            orchestrator="airflow",
            skipped_exit_code=SKIPPED_EXIT_CODE,
        )
    )
    operator = pod_operator("count", pod, {"in_cluster": False, "service_account_name": "scanflow"})

    assert operator.base_container_name == "step"
    assert operator.skip_on_exit_code == [SKIPPED_EXIT_CODE]
    request = valid(ApiClient().sanitize_for_serialization(operator.build_pod_request_obj(dry_run=True)))
    assert request["metadata"]["namespace"] == "ml"
    assert request["metadata"]["name"].startswith("small-count-nightly-")  # one pod per attempt
    assert request["metadata"]["labels"]["scanflow.io/step"] == "count"
    spec_ = request["spec"]
    assert spec_["serviceAccountName"] == "scanflow" and spec_["restartPolicy"] == "Never"
    (step,) = spec_["containers"]
    assert step["name"] == "step" and step["image"] == "registry.example.com/ml/count:2"
    assert step["command"] == pod["spec"]["containers"][0]["command"]
    assert step["command"][4:6] == ["/scanflow/work/scanflow.yaml", "count"]
    assert "--in-image" in step["command"] and "--skipped-exit-code" in step["command"]
    assert step["resources"]["limits"] == {"cpu": "1", "memory": "512Mi", "nvidia.com/gpu": "1"}  # quantities
    (tracker,) = spec_["initContainers"]
    assert tracker["name"] == "tracker" and tracker["restartPolicy"] == "Always"
    assert spec_["hostAliases"] == [{"ip": "127.0.0.1", "hostnames": ["tracker"]}]
    assert {v["name"] for v in spec_["volumes"]} == {"scanflow-home", "scanflow-work"}


class _Recorder(BaseHTTPRequestHandler):
    """Answers as a Kubernetes API server that lists no pods and refuses to create one, recording each
    request (method, path, body)."""

    seen: list[tuple[str, str, Any]]

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _answer(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _status(self, code: int, reason: str) -> None:
        status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code}
        self._answer(code, {**status, "message": f"{reason} (a test endpoint, not a cluster)"})

    def do_GET(self) -> None:
        self.seen.append(("GET", self.path, None))
        if self.path.startswith("/api/v1/namespaces/ml/pods?"):
            self._answer(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": []})
        else:
            self._status(404, "NotFound")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.seen.append(("POST", self.path, json.loads(self.rfile.read(length) or b"null")))
        self._status(403, "Forbidden")

    def do_DELETE(self) -> None:
        self.seen.append(("DELETE", self.path, None))
        self._status(404, "NotFound")

    do_PATCH = do_DELETE


@pytest.fixture
def api_endpoint(tmp_path: Path) -> Iterator[tuple[Path, list[tuple[str, str, Any]]]]:
    """A kubeconfig naming the recording endpoint, and the requests it received."""
    seen: list[tuple[str, str, Any]] = []
    handler = type("Handler", (_Recorder,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    config = tmp_path / "kubeconfig"
    config.write_text(
        textwrap.dedent(
            f"""\
            apiVersion: v1
            kind: Config
            clusters: [{{name: test, cluster: {{server: "http://127.0.0.1:{server.server_address[1]}"}}}}]
            users: [{{name: test, user: {{token: not-a-secret}}}}]
            contexts: [{{name: test, context: {{cluster: test, user: test}}}}]
            current-context: test
            """
        )
    )
    yield config, seen
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_a_dag_run_launches_the_step_in_its_pod(
    airflow_db: Path, spec: Path, api_endpoint: tuple[Path, list[tuple[str, str, Any]]], tmp_path: Path
) -> None:
    kubeconfig, seen = api_endpoint
    dag_id = f"scanflow_k8s_{tmp_path.name}".replace("-", "_")
    source = textwrap.dedent(
        f"""\
        from airflow.sdk import DAG
        from scanflow_airflow import ScanflowOperator

        with DAG({dag_id!r}, schedule=None) as dag:
            ScanflowOperator(
                task_id="count",
                spec={str(spec)!r},
                step="count",
                params={{"rows": 7}},
                executor="kubernetes",
                pod_options={{"namespace": "ml", "tracker_uri": "http://mlflow.ml.svc:5000"}},
                operator_options={{"config_file": {str(kubeconfig)!r}, "in_cluster": False}},
            )
        """
    )
    dag_file = airflow_db / f"{dag_id}.py"
    dag_file.write_text(source)
    try:
        namespace: dict[str, Any] = {}
        exec(compile(source, str(dag_file), "exec"), namespace)
        dag_run = namespace["dag"].test(run_conf={"scanflow_run_id": "k8s-1"})
    finally:
        dag_file.unlink()

    # The API refused the pod, so the task failed; what matters is what the task sent it.
    assert str(dag_run.state) == "failed"
    posts = [(path, body) for method, path, body in seen if method == "POST"]
    assert [path for path, _ in posts] == ["/api/v1/namespaces/ml/pods"]
    pod = valid(posts[0][1])
    labels = pod["metadata"]["labels"]
    assert labels["scanflow.io/run"] == "k8s-1" and labels["scanflow.io/step"] == "count"
    assert labels["dag_id"] == dag_id and labels["task_id"] == "count"  # the provider's own labels
    (step,) = pod["spec"]["containers"]
    assert step["image"] == "registry.example.com/ml/count:2"
    command = step["command"]
    assert command[:6] == ["python3", "-m", "scanflow_core", "step", "/scanflow/work/scanflow.yaml", "count"]
    flags = {flag: value for flag, value in itertools.pairwise(command) if flag.startswith("--")}
    assert flags["--run-id"] == "k8s-1" and flags["--attempt"] == "1"
    assert flags["--orchestrator"] == "airflow" and flags["--tracker-uri"] == "http://mlflow.ml.svc:5000"
    assert flags["--param"] == "rows=7" and "--in-image" in command
    assert not pod["spec"].get("initContainers")  # a tracker of its own: no sidecar
    env = {e["name"]: e["value"] for e in step["env"]}
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.ml.svc:5000"


# ------------------------------------------------------------------------------------ the finish task


def test_the_finish_operator_takes_the_same_options_and_checks(spec: Path) -> None:
    from scanflow_airflow import ScanflowFinishOperator, dag_from_spec
    from scanflow_airflow.dags import FINISH_TASK_ID

    op = ScanflowFinishOperator(
        task_id="f", spec="missing.yaml", executor="kubernetes", pod_options={"namespace": "ml"}
    )
    assert op.step_executor == "kubernetes" and op.pod_options == {"namespace": "ml"}
    assert ScanflowFinishOperator(task_id="f", spec="s.yaml").step_executor == "local"
    with pytest.raises(ValueError, match="executor must be one of 'local', 'kubernetes', not 'docker'"):
        ScanflowFinishOperator(task_id="f", spec="s.yaml", executor="docker")
    with pytest.raises(ValueError, match="pod_options is for executor='kubernetes'"):
        ScanflowFinishOperator(task_id="f", spec="s.yaml", pod_options={"namespace": "ml"})
    with pytest.raises(ValueError, match=r"pod_options: unknown option\(s\) replicas"):
        ScanflowFinishOperator(task_id="f", spec="s.yaml", executor="kubernetes", pod_options={"replicas": 2})
    with pytest.raises(ValueError, match="operator_options: cmds is set by the Scanflow operator"):
        ScanflowFinishOperator(
            task_id="f", spec="s.yaml", executor="kubernetes", operator_options={"cmds": ["sh"]}
        )
    with pytest.raises(ValueError, match="pod_options is for executor='kubernetes'"):
        dag_from_spec(spec, pod_options={"namespace": "ml"})

    dag = dag_from_spec(spec, executor="kubernetes", pod_options={"namespace": "ml", "claim": "team"})
    for task in dag.tasks:  # every task, the finish task too
        assert task.step_executor == "kubernetes"
        assert task.pod_options == {"namespace": "ml", "claim": "team"}
    assert dag.get_task(FINISH_TASK_ID).trigger_rule == "all_done"


def test_the_finish_pod_operator_launches_the_finish_pod(spec: Path) -> None:
    from kubernetes.client import ApiClient

    from scanflow_airflow.kubernetes import pod_operator
    from scanflow_core.deploy.finish_pod import finish_pod

    pod = valid(finish_pod(spec, run_id_template="nightly", namespace="ml", orchestrator="airflow"))
    operator = pod_operator("scanflow_finish", pod, {"in_cluster": False})

    assert operator.base_container_name == "finish"
    request = valid(ApiClient().sanitize_for_serialization(operator.build_pod_request_obj(dry_run=True)))
    assert request["metadata"]["name"].startswith("small-finish-nightly-")
    (main,) = request["spec"]["containers"]
    assert main["command"][3:5] == ["close", "/scanflow/work/scanflow.yaml"]
    assert request["spec"]["volumes"] == valid(step_pod(spec, "make", run_id_template="x"))["spec"]["volumes"]


@pytest.mark.slow
def test_a_dag_run_launches_its_finish_task_in_a_pod_too(
    airflow_db: Path, spec: Path, api_endpoint: tuple[Path, list[tuple[str, str, Any]]], tmp_path: Path
) -> None:
    """A DAG of ``dag_from_spec(..., executor="kubernetes")``: the API refuses the first step's pod, so
    that task fails, the next is never run, and ``scanflow_finish`` (all done) sends the finish pod."""
    from scanflow_airflow.operators import scanflow_run_id
    from scanflow_core.deploy.common import dns_name

    kubeconfig, seen = api_endpoint
    dag_id = f"scanflow_k8s_finish_{tmp_path.name}".replace("-", "_")
    source = textwrap.dedent(
        f"""\
        from scanflow_airflow import dag_from_spec

        dag = dag_from_spec(
            {str(spec)!r},
            {dag_id!r},
            params={{"rows": 7}},
            executor="kubernetes",
            pod_options={{"namespace": "ml", "tracker_uri": "http://mlflow.ml.svc:5000"}},
            operator_options={{"config_file": {str(kubeconfig)!r}, "in_cluster": False}},
        )
        """
    )
    dag_file = airflow_db / f"{dag_id}.py"
    dag_file.write_text(source)
    try:
        namespace: dict[str, Any] = {}
        exec(compile(source, str(dag_file), "exec"), namespace)
        dag_run = namespace["dag"].test()
    finally:
        dag_file.unlink()

    assert str(dag_run.state) == "failed"
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    assert states == {"make": "failed", "count": "upstream_failed", "scanflow_finish": "failed"}
    posts = [valid(body) for method, path, body in seen if method == "POST"]
    assert [p["metadata"]["labels"]["task_id"] for p in posts] == ["make", "scanflow_finish"]
    step, finish = posts
    run_id = scanflow_run_id({"dag_run": dag_run})  # type: ignore[typeddict-item]
    assert run_id != "airflow-run" and run_id in str(dag_run.run_id).replace(":", "-").replace("+", "-")
    assert finish["metadata"]["labels"]["scanflow.io/role"] == "finish"
    labels = finish["metadata"]["labels"]
    assert labels["scanflow.io/run"] == dns_name(run_id) == step["metadata"]["labels"]["scanflow.io/run"]
    (main,) = finish["spec"]["containers"]
    command = main["command"]
    assert command[:5] == ["python3", "-m", "scanflow_core", "close", "/scanflow/work/scanflow.yaml"]
    flags = {flag: value for flag, value in itertools.pairwise(command) if flag.startswith("--")}
    step_flags = dict(itertools.pairwise(step["spec"]["containers"][0]["command"]))
    assert flags["--run-id"] == run_id == step_flags["--run-id"]  # the template, rendered
    assert flags["--home"] == "/scanflow/home" and flags["--orchestrator"] == "airflow"
    assert flags["--param"] == "rows=7" and flags["--tracker-uri"] == "http://mlflow.ml.svc:5000"
    assert finish["spec"]["volumes"] == step["spec"]["volumes"]  # the same claim and ConfigMap
    assert main["volumeMounts"] == step["spec"]["containers"][0]["volumeMounts"]
    assert not finish["spec"].get("initContainers")
