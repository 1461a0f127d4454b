"""Other models than the digits MLP, served from local folders: one that raises on some inputs (a 500
JSON error, no traceback, and the server goes on), a scikit-learn model over named columns, and a
model folder that carries its attestation."""

from __future__ import annotations

import hashlib
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from serving_support import WARNINGS, Http

from scanflow_core.serving.app import ServingConfig
from scanflow_core.serving.server import ModelServer, build_app

pytestmark = [
    pytest.mark.slow,
    *WARNINGS,
]

PICKY = '''
import numpy as np
import mlflow.pyfunc
from mlflow.models import set_model


class Picky(mlflow.pyfunc.PythonModel):
    """Sums each row; raises on a negative value (and says more on a second line)."""

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        x = np.asarray(model_input)
        if (x < 0).any():
            raise ValueError("negative values are not pixels\\nsecret internals on line two")
        if (x == 99).any():
            return np.array([object() for _ in x], dtype=object)
        return x.sum(axis=1)


set_model(Picky())
'''


@pytest.fixture(scope="module")
def picky_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import mlflow
    from mlflow.models import infer_signature

    folder = tmp_path_factory.mktemp("picky")
    code = folder / "picky_model.py"
    code.write_text(textwrap.dedent(PICKY), encoding="utf-8")
    signature = infer_signature(np.zeros((2, 3), np.float32), np.zeros(2, np.float32))
    example = np.ones((2, 3), np.float32)
    mlflow.pyfunc.save_model(
        folder / "model", python_model=str(code), signature=signature, input_example=example
    )
    (folder / "model" / "train.intoto.jsonl").write_text(
        '{"payload": "signed elsewhere"}\n', encoding="utf-8"
    )
    return folder / "model"


@pytest.fixture(scope="module")
def picky(picky_folder: Path) -> ModelServer:
    config = ServingConfig(log_file=str(picky_folder.parent / "access.log"))
    with ModelServer(
        build_app(str(picky_folder), f"sqlite:///{picky_folder.parent / 'unused.db'}", config)
    ) as running:
        yield running


def test_a_model_that_raises_gets_a_500_json_error_without_traceback(picky: ModelServer) -> None:
    with Http(picky.url) as client:
        answer = client.post("/predict", {"inputs": [[1, 2, 3], [-1, 0, 0]]})
        good = client.post("/predict", {"inputs": [[1, 2, 3]]})
        text = client.get("/metrics").body.decode()

    assert answer.status == 500
    body = answer.json()
    assert body["error"] == "the model failed on this input: ValueError: negative values are not pixels"
    assert b"Traceback" not in answer.body and b"secret internals" not in answer.body
    assert good.status == 200 and good.json()["predictions"] == [6.0]
    metrics = {f.name: f for f in text_string_to_metric_families(text)}
    assert metrics["scanflow_serving_model_errors"].samples[0].value == 1


def test_an_output_that_is_not_json_gets_a_500_json_error(picky: ModelServer) -> None:
    with Http(picky.url) as client:
        answer = client.post("/predict", {"inputs": [[99, 0, 0]]})
        assert client.get("/ok").status == 200

    assert answer.status == 500
    assert answer.json()["error"].startswith("the model's output cannot be written as JSON: ")


def test_in_a_batch_only_the_request_the_model_fails_on_fails(picky: ModelServer) -> None:
    def ask(i: int) -> tuple[int, object]:
        rows = [[i, 1, 1]] if i != 7 else [[-7, 1, 1]]
        with Http(picky.url) as client:
            answer = client.post("/predict", {"inputs": rows})
        return answer.status, answer.json().get("predictions")

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(40)))

    assert answers[7][0] == 500
    assert all(answers[i] == (200, [float(i + 2)]) for i in range(40) if i != 7)


def test_a_local_model_folder_is_named_after_itself_and_carries_its_attestation(
    picky: ModelServer, picky_folder: Path
) -> None:
    with Http(picky.url) as client:
        varz = client.get("/varz").json()

    assert varz["model"]["name"] == "model" and varz["model"]["version"] is None
    expected = "sha256:" + hashlib.sha256((picky_folder / "train.intoto.jsonl").read_bytes()).hexdigest()
    assert varz["attestation_digest"] == expected
    assert varz["model"]["input"].endswith("(shape [n, 3], float32)")


@pytest.fixture(scope="module")
def table_model(tmp_path_factory: pytest.TempPathFactory) -> ModelServer:
    """A scikit-learn logistic regression over two named columns (a DataFrame signature)."""
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"height": rng.normal(170, 10, 200), "weight": rng.normal(70, 10, 200)})
    labels = (frame["height"] + frame["weight"] > 240).astype(int)
    model = LogisticRegression().fit(frame, labels)
    folder = tmp_path_factory.mktemp("table") / "model"
    mlflow.sklearn.save_model(model, folder, signature=infer_signature(frame, labels), pip_requirements=[])
    config = ServingConfig(log_file=str(folder.parent / "access.log"))
    with ModelServer(build_app(str(folder), f"sqlite:///{folder.parent / 'unused.db'}", config)) as running:
        yield running


def test_a_table_model_takes_rows_records_and_split_frames(table_model: ModelServer) -> None:
    tall, short = [200.0, 90.0], [150.0, 50.0]

    with Http(table_model.url) as client:
        rows = client.post("/predict", {"inputs": [tall, short]})
        records = client.post("/predict", {"dataframe_records": [{"weight": 90.0, "height": 200.0}]})
        split = client.post(
            "/predict", {"dataframe_split": {"columns": ["height", "weight"], "data": [short]}}
        )

    assert rows.status == 200 and rows.json()["predictions"] == [1, 0]
    assert records.json()["predictions"] == [1]
    assert split.json()["predictions"] == [0]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"inputs": [[200.0]]}, "'inputs'[0] has 1 values, not 2"),
        ({"dataframe_records": [{"height": 200.0}]}, "lacks the columns weight"),
        ({"inputs": [[1.0, 2.0], {"height": 1.0, "weight": 2.0}]}, "mixes rows of different kinds"),
    ],
)
def test_a_table_model_names_the_columns_a_bad_request_lacks(
    table_model: ModelServer, body: object, says: str
) -> None:
    with Http(table_model.url) as client:
        answer = client.post("/predict", body)

    assert answer.status == 422
    assert says in answer.json()["error"]
    assert "2 values (height, weight)" in answer.json()["expected"]
