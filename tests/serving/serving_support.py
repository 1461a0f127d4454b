"""Helpers and fixtures for the serving tests: a real model in a real MLflow store, produced by a real attested run.

``digits_store`` (once per session): a Scanflow workflow trains the digits MLP (torch) with the local
runner and attests the step; the trained network is logged with ``mlflow.pytorch`` to an embedded
SQLite store, the step's signed attestation is logged beside it (``attestations/train.intoto.jsonl``,
where Scanflow's tracker puts it), and the model is registered as ``digits`` with alias ``champion``.
``server`` runs ``scanflow serve models:/digits@champion`` in this process (uvicorn on a thread, a free
port); ``client`` talks to the server over a real socket.
"""

from __future__ import annotations

import http.client as httplib
import json
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scanflow_core.runner import run_workflow
from scanflow_core.serving.app import ServingConfig
from scanflow_core.serving.server import DriftSettings, ModelServer, build_app
from scanflow_core.spec import load_workflow

#: Third-party warnings the serving tests cannot fix, each filtered narrowly (``pytestmark`` of each module).
WARNINGS = [
    # mlflow.pyfunc.model infers a schema from its own pydantic types at import time (MLflow 3.17)
    pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning"),
]

SPEC = """
apiVersion: scanflow/v1
name: serving_digits
tracker: {enabled: false}
python_path: ["."]
steps:
  - name: train
    stage: training
    call: serving_digits_steps:train
    outputs: {model: {kind: model, path: model.pt}, held: {kind: data, path: held.npz}}
"""

STEPS = """
import numpy as np


def build():
    from torch import nn

    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def train(model, held, epochs=25):
    import torch
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x, y = (bunch.data / 16.0).astype(np.float32), bunch.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    train, rest = order[:1300], order[1300:]
    np.savez(held, X=x[rest], y=y[rest], X_train=x[train])
    torch.manual_seed(0)
    net = build()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    for _ in range(epochs):
        for batch in torch.randperm(len(xt)).split(64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[batch]), yt[batch]).backward()
            optimizer.step()
    torch.save(net.state_dict(), model)
    return {"rows": len(train)}
"""


@dataclass
class DigitsStore:
    """The store, the registered model, its run, the attestation and the data it was made from."""

    folder: Path
    uri: str
    run_id: str
    attestation: Path
    x_train: np.ndarray
    x_held: np.ndarray
    y_held: np.ndarray
    net: Any

    def expected(self, rows: np.ndarray) -> np.ndarray:
        """The network's own output for ``rows`` (what the server must answer)."""
        import torch

        with torch.no_grad():
            return np.asarray(self.net(torch.from_numpy(np.asarray(rows, dtype=np.float32))).numpy())


@pytest.fixture(scope="session")
def digits_store(tmp_path_factory: pytest.TempPathFactory) -> DigitsStore:
    import mlflow
    import torch
    from mlflow.models import infer_signature

    folder = tmp_path_factory.mktemp("serving-store")
    (folder / "scanflow.yaml").write_text(SPEC, encoding="utf-8")
    (folder / "serving_digits_steps.py").write_text(textwrap.dedent(STEPS), encoding="utf-8")
    run = run_workflow(load_workflow(folder / "scanflow.yaml"), home=folder / "home")
    assert run.status == "succeeded", run.step_summaries()
    attestation = run.attestation_dir / "train.intoto.jsonl"
    assert attestation.is_file()

    namespace: dict[str, Any] = {}
    exec(textwrap.dedent(STEPS), namespace)
    net = namespace["build"]()
    net.load_state_dict(torch.load(run.artifact_path("model"), weights_only=True))
    net.eval()
    with np.load(run.artifact_path("held")) as held:
        x_held, y_held, x_train = held["X"], held["y"], held["X_train"]

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("serving-digits", artifact_location=str(folder / "artifacts"))
    with torch.no_grad():
        signature = infer_signature(x_held[:5], net(torch.from_numpy(x_held[:5])).numpy())
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(experiment_id=experiment, run_name="train") as mlflow_run:
            mlflow.set_tags({"scanflow.run_id": run.run_id, "scanflow.spec_digest": run.workflow.digest})
            info = mlflow.pytorch.log_model(
                net,
                name="model",
                signature=signature,
                serialization_format="pickle",
                pip_requirements=["torch==2.13.0"],
                registered_model_name="digits",
            )
            mlflow.log_artifact(str(attestation), "attestations")
    finally:
        mlflow.set_tracking_uri(previous)
    client.set_registered_model_alias("digits", "champion", info.registered_model_version)
    return DigitsStore(folder, uri, mlflow_run.info.run_id, attestation, x_train, x_held, y_held, net)


@pytest.fixture(scope="session")
def detector_folder(digits_store: DigitsStore) -> Path:
    """A drift detector fitted on the training rows and saved (what ``--drift-reference`` may name)."""
    from scanflow_core.checking.drift import DriftDetector

    folder = digits_store.folder / "detector"
    DriftDetector(seed=0, epochs=30).fit(digits_store.x_train).save(folder)
    return folder


@pytest.fixture(scope="module")
def server_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serving-log") / "access.log"


@pytest.fixture(scope="module")
def server(digits_store: DigitsStore, server_log: Path) -> Iterator[ModelServer]:
    """``scanflow serve models:/digits@champion`` on a free port, logging to ``server_log``."""
    config = ServingConfig(log_file=str(server_log), max_body_bytes=1024 * 1024, max_rows=1000)
    with ModelServer(build_app("models:/digits@champion", digits_store.uri, config)) as running:
        yield running


def drift_server(store: DigitsStore, detector: Path, **drift: Any) -> ModelServer:
    settings = DriftSettings(detector, **({"window": 200, "every": 50, "min_rows": 100} | drift))
    config = ServingConfig(log_file=str(store.folder / "drift-access.log"))
    return ModelServer(build_app("models:/digits@champion", store.uri, config, drift=settings))


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Http:
    """A keep-alive HTTP/1.1 connection to a server (``http.client``: a real socket, nothing mocked)."""

    def __init__(self, url: str) -> None:
        host, _, port = url.removeprefix("http://").partition(":")
        self.connection = httplib.HTTPConnection(host, int(port), timeout=30)

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Answer:
        data = body if isinstance(body, bytes | None) else json.dumps(body).encode()
        self.connection.request(method, path, body=data, headers=headers or {})
        response = self.connection.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())

    def get(self, path: str, **kw: Any) -> Answer:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any, **kw: Any) -> Answer:
        return self.request("POST", path, body, **kw)

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> Http:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def client(server: ModelServer) -> Iterator[Http]:
    connection = Http(server.url)
    yield connection
    connection.close()
