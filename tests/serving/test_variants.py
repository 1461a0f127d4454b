"""Model variants: ONNX and int8 exports of the digits MLP, measured on held-out digits, stored beside the
model, served with ``--variant``, and picked by the spec's rule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from serving_support import WARNINGS, DigitsStore, Http

from scanflow_core.cli import main
from scanflow_core.errors import SpecError
from scanflow_core.serving.app import ServingConfig
from scanflow_core.serving.server import ModelServer, build_app
from scanflow_core.serving.variants import choose_variant, log_variants
from scanflow_core.spec import load_workflow_text

pytestmark = [pytest.mark.slow, *WARNINGS]


@pytest.fixture(scope="module")
def variant_model(digits_store: DigitsStore) -> tuple[str, dict[str, Any]]:
    """The digits network logged to a run of its own, with its variants exported and measured."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=digits_store.uri)
    experiment = client.get_run(digits_store.run_id).info.experiment_id
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(digits_store.uri)
    try:
        with mlflow.start_run(experiment_id=experiment, run_name="variants") as run:
            signature = mlflow.models.infer_signature(
                digits_store.x_held[:5], digits_store.expected(digits_store.x_held[:5])
            )
            mlflow.pytorch.log_model(
                digits_store.net,
                name="model",
                signature=signature,
                serialization_format="pickle",
                pip_requirements=["torch==2.13.0"],
                registered_model_name="digits_variants",
            )
    finally:
        mlflow.set_tracking_uri(previous)
    uri = f"runs:/{run.info.run_id}/model"
    manifest = log_variants(
        uri, digits_store.uri, digits_store.x_held, digits_store.y_held, prefer="latency", repeats=50
    )
    return uri, manifest


def test_the_variants_are_measured_on_held_out_digits(variant_model: tuple[str, dict[str, Any]]) -> None:
    uri, manifest = variant_model
    reports = manifest["variants"]

    assert list(reports) == ["original", "onnx", "int8"]
    original, onnx, int8 = reports["original"], reports["onnx"], reports["int8"]
    print(
        {
            name: {k: r.get(k) for k in ("accuracy", "latency_ms", "batch_latency_ms")}
            for name, r in reports.items()
        }
    )
    assert original["accuracy"] >= 0.9
    assert onnx["accuracy"] == original["accuracy"] and onnx["agreement"] == 1.0
    assert onnx["max_abs_diff"] < 1e-4
    assert abs(int8["accuracy"] - original["accuracy"]) <= 0.03 and int8["agreement"] >= 0.95
    assert all(
        r["latency_ms"] > 0 and r["batch_latency_ms"] > 0 and r["rows"] == 497 for r in reports.values()
    )
    assert onnx["uri"] == uri.replace("/model", "/variants/model/onnx")
    assert manifest["rule"] == {"prefer": "latency", "max_accuracy_drop": 0.01}
    assert manifest["chosen"]["accuracy"] == "original"
    assert manifest["chosen"]["latency"] == choose_variant(reports, "latency", 0.01)


@pytest.mark.parametrize("variant", ["onnx", "int8"])
def test_a_variant_serves_what_the_network_computes(
    variant_model: tuple[str, dict[str, Any]], digits_store: DigitsStore, tmp_path: Path, variant: str
) -> None:
    uri, _ = variant_model
    rows = digits_store.x_held[:64]
    app = build_app(uri, digits_store.uri, ServingConfig(log_file=str(tmp_path / "a.log")), variant=variant)

    with ModelServer(app) as running, Http(running.url) as client:
        answer = client.post("/predict", {"inputs": rows.tolist()})
        varz = client.get("/varz").json()

    assert answer.status == 200, answer.body
    predictions, expected = np.array(answer.json()["predictions"]), digits_store.expected(rows)
    assert predictions.shape == (64, 10)
    if variant == "onnx":
        np.testing.assert_allclose(predictions, expected, atol=1e-4)
    else:
        assert (predictions.argmax(axis=1) == expected.argmax(axis=1)).mean() >= 0.95
    assert varz["model"]["variant"] == variant
    assert varz["model"]["variant_uri"].endswith(f"/variants/model/{variant}")
    assert "onnx" in varz["model"]["flavors"]


def test_the_registered_model_finds_the_variants_of_its_run(
    variant_model: tuple[str, dict[str, Any]], digits_store: DigitsStore, tmp_path: Path
) -> None:
    app = build_app(
        "models:/digits_variants/1",
        digits_store.uri,
        ServingConfig(log_file=str(tmp_path / "a.log")),
        variant="int8",
    )
    app.stop()

    assert app.model.variant == "int8" and app.model.version == "1"
    assert app.model.variant_uri == variant_model[1]["variants"]["int8"]["uri"]


@pytest.mark.parametrize("prefer", ["latency", "accuracy"])
def test_auto_serves_the_variant_the_rule_picks(
    variant_model: tuple[str, dict[str, Any]], digits_store: DigitsStore, tmp_path: Path, prefer: str
) -> None:
    uri, manifest = variant_model
    app = build_app(
        uri, digits_store.uri, ServingConfig(log_file=str(tmp_path / "a.log")), variant="auto", prefer=prefer
    )
    app.stop()

    assert app.model.variant == manifest["chosen"][prefer]


def test_the_rule_latency_takes_the_fastest_within_the_accuracy_budget() -> None:
    reports = {
        "original": {"accuracy": 0.97, "latency_ms": 0.30},
        "onnx": {"accuracy": 0.97, "latency_ms": 0.08},
        "int8": {"accuracy": 0.95, "latency_ms": 0.05},
    }

    assert choose_variant(reports, "latency", 0.01) == "onnx"
    assert choose_variant(reports, "latency", 0.05) == "int8"
    assert choose_variant(reports, "accuracy") == "original"
    reports["int8"]["accuracy"] = 0.98
    assert choose_variant(reports, "accuracy") == "int8"


def test_the_rule_without_measurements_falls_back_by_intent() -> None:
    unmeasured: dict[str, dict[str, Any]] = {"original": {}, "onnx": {}, "int8": {}}

    assert choose_variant(unmeasured, "accuracy") == "original"
    assert choose_variant(unmeasured, "latency") == "int8"
    assert choose_variant({}, "latency") == "original"
    with pytest.raises(ValueError, match="prefer is 'latency' or 'accuracy', not 'cheap'"):
        choose_variant(unmeasured, "cheap")


def test_scanflow_variants_keeps_a_local_model_folder_s_variants_beside_it(
    digits_store: DigitsStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import mlflow

    folder, data = tmp_path / "digits-model", tmp_path / "eval.npz"
    signature = mlflow.models.infer_signature(
        digits_store.x_held[:5], digits_store.expected(digits_store.x_held[:5])
    )
    mlflow.pytorch.save_model(
        digits_store.net,
        folder,
        signature=signature,
        serialization_format="pickle",
        pip_requirements=["torch==2.13.0"],
    )
    np.savez(data, X=digits_store.x_held[:100], y=digits_store.y_held[:100])

    code = main(
        [
            "variants",
            str(folder),
            "--data",
            str(data),
            "--only",
            "onnx",
            "--repeats",
            "10",
            "--prefer",
            "latency",
            "--tracking-uri",
            digits_store.uri,
        ]
    )

    out = capsys.readouterr().out
    assert code == 0
    assert f"variants of {folder} on 100 rows of {data}:" in out
    assert "onnx      accuracy " in out and "rule: prefer latency → " in out
    assert (tmp_path / "digits-model-variants" / "onnx" / "MLmodel").is_file()
    manifest = json.loads((tmp_path / "digits-model-variants" / "variants.json").read_text())
    assert list(manifest["variants"]) == ["original", "onnx"]
    assert manifest["variants"]["onnx"]["uri"] == str(tmp_path / "digits-model-variants" / "onnx")
    app = build_app(
        str(folder), digits_store.uri, ServingConfig(log_file=str(tmp_path / "a.log")), variant="onnx"
    )
    app.stop()
    assert app.model.variant == "onnx"


def test_a_model_that_is_not_pytorch_has_no_variants(tmp_path: Path, digits_store: DigitsStore) -> None:
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    from scanflow_core.errors import ScanflowError

    folder = tmp_path / "linear"
    model = LogisticRegression(max_iter=200).fit(digits_store.x_held, digits_store.y_held)
    mlflow.sklearn.save_model(model, folder, pip_requirements=[])

    with pytest.raises(
        ScanflowError, match="variants are exported from PyTorch models; it has python_function, sklearn"
    ):
        log_variants(str(folder), digits_store.uri, digits_store.x_held)


def test_the_spec_says_which_variant_serving_prefers() -> None:
    spec = """
    apiVersion: scanflow/v1
    name: served
    serving: {prefer: latency, max_accuracy_drop: 0.02, variants: [int8]}
    steps:
      - {name: a, stage: training, command: "true"}
    """
    workflow = load_workflow_text(spec)

    assert workflow.serving.prefer == "latency" and workflow.serving.max_accuracy_drop == 0.02
    assert workflow.serving.variants == ["int8"]
    assert (
        load_workflow_text(
            spec.replace("    serving: {prefer: latency, max_accuracy_drop: 0.02, variants: [int8]}\n", "")
        ).serving.prefer
        == "accuracy"
    )


@pytest.mark.parametrize(
    ("serving", "where"),
    [
        ("{prefer: fastest}", "serving.prefer"),
        ("{max_accuracy_drop: 2}", "serving.max_accuracy_drop"),
        ("{variants: [tflite]}", "serving.variants[0]"),
        ("{prefer: latency, budget: 3}", "serving.budget"),
    ],
)
def test_a_bad_serving_setting_is_named(serving: str, where: str) -> None:
    spec = f"""
apiVersion: scanflow/v1
name: served
serving: {serving}
steps:
  - {{name: a, stage: training, command: "true"}}
"""
    with pytest.raises(SpecError) as error:
        load_workflow_text(spec)

    assert where in str(error.value)
