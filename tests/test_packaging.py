"""The model card and model registration: a real workflow (scikit-learn model saved as an MLflow model),
the local runner, real attestations, and for registration a real embedded MLflow store."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from scanflow_core import load_workflow, run_workflow
from scanflow_core.digests import digest_path
from scanflow_core.errors import ScanflowError
from scanflow_core.packaging import (
    CARD_SCHEMA,
    load_model_card,
    model_card,
    pipeline_digest,
    register_model,
    render_model_card,
)
from scanflow_core.plugins import get_plugin_manager
from scanflow_core.runs import WorkflowRun

pytestmark = [
    # mlflow.pyfunc, imported by mlflow.sklearn, warns about a type hint of its own on import.
    pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning"),
]

STEPS = """
import json
import shutil
from pathlib import Path

import numpy as np


def make(table):
    rng = np.random.default_rng(0)
    x = rng.random((80, 3))
    y = (x[:, 0] + 0.3 * x[:, 1] > 0.65).astype(np.int64)
    with table.open("wb") as f:
        np.savez(f, X=x, y=y)
    return {"rows": 80}


def fit(table, model, c=1.0):
    import mlflow.sklearn
    import sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    with np.load(table) as d:
        x, y = d["X"], d["y"]
    clf = LogisticRegression(C=c).fit(x, y)
    mlflow.sklearn.save_model(
        clf, str(model), signature=infer_signature(x, clf.predict(x)),
        pip_requirements=[f"scikit-learn=={sklearn.__version__}"],
    )
    return {"train_accuracy": float(clf.score(x, y))}


def evaluate(model, table):
    import mlflow.sklearn

    with np.load(table) as d:
        x, y = d["X"], d["y"]
    return {"accuracy": float(mlflow.sklearn.load_model(str(model)).score(x, y))}


def package(model, mlflow_model, card, card_md, ctx, register=False):
    from scanflow_core.packaging import register_model, write_model_card

    shutil.copytree(model, mlflow_model)
    registered = register_model(ctx, mlflow_model) if register else None
    written = write_model_card(
        ctx, mlflow_model, card, card_md, description="A tiny | linear model",
        registry=registered.to_dict() if registered else None,
    )
    return {"card_bytes": len(json.dumps(written)), "registered": float(registered is not None)}
"""

SPEC = """
apiVersion: scanflow/v1
name: tiny
params: {seed: 0}
tracker: {enabled: TRACKING}
objectives:
  - "evaluate.accuracy >= 0.5"
  - {name: impossible, expr: "evaluate.accuracy > 2", blocking: false}
steps:
  - {name: make, stage: data_ingestion, call: STEPS:make, outputs: {table: {kind: data, path: table.npz}}}
  - name: fit
    stage: training
    call: STEPS:fit
    params: {c: 0.5}
    inputs: [table]
    outputs: {model: {kind: model, path: model}}
  - {name: evaluate, stage: evaluation, call: STEPS:evaluate, inputs: [model, table]}
  - name: package
    stage: packaging
    call: STEPS:package
    needs: [evaluate]
    params: {register: REGISTER}
    inputs: [model]
    resources: {cpu: 0.5, memory: 256Mi}
    outputs:
      mlflow_model: {kind: model, path: mlflow_model}
      card: {kind: report, path: model_card.json}
      card_md: {kind: report, path: model_card.md}
  - name: card_in_a_child
    stage: packaging
    needs: [evaluate]
    command: [PYTHON, -c, "import os; from scanflow_core.packaging import write_model_card; write_model_card(None, os.environ['SCANFLOW_INPUT_MODEL'], os.environ['SCANFLOW_OUTPUT_CHILD_CARD'])"]
    inputs: [model]
    outputs:
      child_card: {kind: report, path: model_card.json}
      child_card_md: {kind: report, path: model_card.md}
"""


def make_workflow(folder: Path, *, tracking: bool = False, register: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    module = f"packaging_steps_{folder.name.replace('-', '_')}"
    (folder / f"{module}.py").write_text(textwrap.dedent(STEPS), encoding="utf-8")
    text = (
        SPEC.replace("STEPS", module)
        .replace("TRACKING", str(tracking).lower())
        .replace("REGISTER", str(register).lower())
        .replace("PYTHON", json.dumps(sys.executable))
    )
    (folder / "scanflow.yaml").write_text(text, encoding="utf-8")
    return folder / "scanflow.yaml"


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> WorkflowRun:
    """The tiny workflow, run once with tracking off (the spec says so)."""
    folder = tmp_path_factory.mktemp("packaging")
    run = run_workflow(
        load_workflow(make_workflow(folder)), home=folder / ".scanflow", pm=get_plugin_manager(autoload=False)
    )
    assert run.status == "succeeded", run.step_summaries()
    return run


def card_of(run: WorkflowRun, step: str = "package") -> dict[str, Any]:
    return load_model_card(run.step_dir(step) / "outputs" / "model_card.json")


@pytest.mark.slow
def test_the_card_holds_provenance_with_the_attestation_digests_of_every_upstream_step(
    packaged: WorkflowRun,
) -> None:
    card = card_of(packaged)
    provenance = card["provenance"]

    assert card["schema"] == CARD_SCHEMA and card["name"] == "tiny"
    assert card["description"] == "A tiny | linear model"
    assert provenance["run_id"] == packaged.run_id and provenance["workflow"] == "tiny"
    assert provenance["spec_digest"] == packaged.workflow.digest == digest_path(Path(packaged.workflow.file))
    assert provenance["packaged_by"] == "package" and provenance["attested"] is True
    assert [s["name"] for s in provenance["steps"]] == [
        "make",
        "fit",
        "evaluate",
    ]  # not the sibling card step
    for step in provenance["steps"]:
        attestation = packaged.attestation_dir / f"{step['name']}.intoto.jsonl"
        assert step["attestation"] == f"attestations/{step['name']}.intoto.jsonl"
        assert step["attestation_digest"] == digest_path(attestation)
        assert step["status"] == "succeeded"
        recorded = packaged.step_summary(step["name"])["outputs"]  # type: ignore[index]
        assert step["outputs"] == {name: entry["digest"] for name, entry in recorded.items()}
    assert provenance["pipeline_digest"] == pipeline_digest(packaged, "package")
    assert provenance["verify"] == f"scanflow verify {packaged.directory}"


@pytest.mark.slow
def test_the_card_holds_hyperparameters_metrics_objectives_data_signature_and_infrastructure(
    packaged: WorkflowRun,
) -> None:
    card = card_of(packaged)

    assert card["hyperparameters"] == {"fit": {"seed": 0, "c": 0.5}}
    assert card["metrics"]["evaluate"]["accuracy"] > 0.8
    assert set(card["metrics"]) == {"fit", "evaluate"}
    objectives = {o["name"]: (o["passed"], o["blocking"]) for o in card["objectives"]}
    assert objectives == {"evaluate.accuracy >= 0.5": (True, True), "impossible": (False, False)}
    table = packaged.step_summary("make")["outputs"]["table"]  # type: ignore[index]
    assert card["data"] == [
        {
            "artifact": "table",
            "step": "make",
            "path": table["path"],
            "digest": table["digest"],
            "size": table["size"],
        }
    ]
    assert card["signature"]["inputs"] == [
        {"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 3]}}
    ]
    assert card["signature"]["outputs"][0]["tensor-spec"]["dtype"] == "int64"
    model_dir = packaged.step_dir("package") / "outputs" / "mlflow_model"
    assert card["model"] == {
        "path": "steps/package/outputs/mlflow_model",
        "digest": digest_path(model_dir),
        "size": sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file()),
        "format": "mlflow",
        "flavors": ["python_function", "sklearn"],
        "mlflow_version": card["model"]["mlflow_version"],
    }
    infrastructure = card["infrastructure"]
    assert infrastructure["resources"] == {"cpu": 0.5, "memory": "256Mi", "gpu": 0}
    assert infrastructure["device"] == "cpu"
    import mlflow
    import sklearn

    # the MLflow model's requirements.txt: what the step pinned, and mlflow itself
    assert infrastructure["packages"] == {"mlflow": mlflow.__version__, "scikit-learn": sklearn.__version__}
    assert infrastructure["python"] == ".".join(map(str, sys.version_info[:3]))
    assert card["registry"] is None


@pytest.mark.slow
def test_both_card_files_are_outputs_the_core_attests(packaged: WorkflowRun, tmp_path: Path) -> None:
    from scanflow_core.attestation.verify import verify_run

    statement = packaged.attestation_dir / "package.intoto.jsonl"
    envelope = json.loads(statement.read_text().splitlines()[0])
    import base64

    subjects = {
        s["name"]: s["digest"]["sha256"] for s in json.loads(base64.b64decode(envelope["payload"]))["subject"]
    }
    outputs = packaged.step_dir("package") / "outputs"
    for name in ("model_card.json", "model_card.md", "mlflow_model"):
        assert subjects[f"steps/package/outputs/{name}"] == digest_path(outputs / name).split(":")[1]
    assert verify_run(packaged.directory).ok

    # A card edited after the run no longer verifies.
    home = tmp_path / "home"
    shutil.copytree(packaged.home / "keys", home / "keys")
    copy = home / "runs" / packaged.run_id
    shutil.copytree(packaged.directory, copy)
    card = copy / "steps" / "package" / "outputs" / "model_card.json"
    card.write_text(card.read_text().replace('"attested": true', '"attested": false'))
    result = verify_run(copy, spec=packaged.workflow.file)
    assert not result.ok
    assert [(f.step, f.file) for f in result.failures] == [
        ("package", "steps/package/outputs/model_card.json")
    ]


@pytest.mark.slow
def test_the_markdown_card_is_readable_and_its_tables_hold(packaged: WorkflowRun) -> None:
    text = (packaged.step_dir("package") / "outputs" / "model_card.md").read_text()

    assert text.startswith("# Model card: tiny\n\nA tiny \\| linear model\n")
    for heading in (
        "Provenance",
        "Hyperparameters",
        "Metrics",
        "Objectives",
        "Data",
        "Signature",
        "Infrastructure",
    ):
        assert f"\n## {heading}\n" in text
    assert "| evaluate.accuracy >= 0.5 | evaluate.accuracy >= 0.5 | met |" in text
    assert "| impossible | evaluate.accuracy > 2 | NOT met |" in text
    assert "| fit | c | 0.5 |" in text
    assert "- cpu 0.5, memory 256Mi, gpu 0" in text
    card = card_of(packaged)
    assert text == render_model_card(card)
    for step in card["provenance"]["steps"]:
        assert f"| {step['name']} | {step['stage']} | succeeded | {step['attestation_digest']} |" in text


@pytest.mark.slow
def test_a_step_in_a_child_process_writes_the_same_card_from_its_environment(packaged: WorkflowRun) -> None:
    child, parent = card_of(packaged, "card_in_a_child"), card_of(packaged)

    assert child["provenance"]["packaged_by"] == "card_in_a_child"
    assert child["model"]["path"] == "steps/fit/outputs/model"  # the input it was given
    for key in ("hyperparameters", "metrics", "data", "signature", "objectives"):
        assert child[key] == parent[key], key
    assert child["provenance"]["steps"] == parent["provenance"]["steps"]
    assert (
        (packaged.step_dir("card_in_a_child") / "outputs" / "model_card.md")
        .read_text()
        .startswith("# Model card")
    )


@pytest.mark.slow
def test_bad_arguments_are_named(
    packaged: WorkflowRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scanflow_core.runs import StepRun

    step = StepRun(packaged, packaged.plan["package"])
    model = packaged.step_dir("package") / "outputs" / "mlflow_model"

    with pytest.raises(
        ScanflowError, match=r"model card of step 'package': the model .*nowhere does not exist"
    ):
        model_card(step, tmp_path / "nowhere")
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(ScanflowError, match=r"no signature for bare: pass signature="):
        model_card(step, bare)
    with pytest.raises(ScanflowError, match=r"package 'no-such-distribution' is not installed"):
        model_card(step, model, packages=["no-such-distribution"])
    with pytest.raises(ScanflowError, match=r"resources \['disk'\] unknown; expected cpu, memory and gpu"):
        model_card(step, model, resources={"disk": "1G"})
    with pytest.raises(ScanflowError, match=r"metrics\['evaluate'\] must be a mapping"):
        model_card(step, model, metrics={"evaluate": 0.9})  # type: ignore[dict-item]
    monkeypatch.delenv("SCANFLOW_RUN_DIR", raising=False)
    with pytest.raises(ScanflowError, match=r"no step context: .*\$SCANFLOW_RUN_DIR and \$SCANFLOW_STEP"):
        model_card(None, model)
    with pytest.raises(ScanflowError, match=r"ctx must be the running step \(a StepRun\), not str"):
        model_card("package", model)  # type: ignore[arg-type]

    given = model_card(step, bare, signature={"inputs": ["x"], "outputs": ["y"]}, packages=["pytest"])
    assert given["signature"] == {"inputs": ["x"], "outputs": ["y"]}
    assert given["infrastructure"]["packages"] == {"pytest": pytest.__version__}
    assert given["model"]["format"] == "folder"


def test_load_model_card_refuses_what_is_no_card(tmp_path: Path) -> None:
    with pytest.raises(ScanflowError, match=r"no model card at .*missing.json"):
        load_model_card(tmp_path / "missing.json")
    (tmp_path / "text.json").write_text("not json")
    with pytest.raises(ScanflowError, match=r"text.json: not JSON"):
        load_model_card(tmp_path / "text.json")
    (tmp_path / "other.json").write_text('{"schema": "something/else"}')
    with pytest.raises(
        ScanflowError,
        match=r"not a model card \(schema 'something/else', expected 'scanflow/model-card/v1'\)",
    ):
        load_model_card(tmp_path / "other.json")


@pytest.mark.slow
def test_register_model_makes_a_version_tagged_with_its_run_and_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tracking on (an embedded store under tmp_path): the packaging step registers the model under the
    workflow's name, and its card names the version."""
    from mlflow import MlflowClient

    monkeypatch.delenv("SCANFLOW_TRACKER", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    home = tmp_path / ".scanflow"
    spec = make_workflow(tmp_path / "wf", tracking=True, register=True)

    run = run_workflow(load_workflow(spec), home=home, pm=get_plugin_manager(autoload=False))

    assert run.status == "succeeded", run.step_summaries()
    card = card_of(run)
    uri = f"sqlite:///{home / 'mlflow.db'}"
    assert (
        card["registry"]["name"] == "tiny"
        and card["registry"]["uri"] == f"models:/tiny/{card['registry']['version']}"
    )
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = client.get_model_version("tiny", card["registry"]["version"])
    assert version.tags["scanflow.run_id"] == run.run_id
    assert version.tags["scanflow.step"] == "package"
    assert version.tags["scanflow.spec_digest"] == run.workflow.digest
    assert version.tags["scanflow.model_digest"] == card["model"]["digest"]
    assert version.tags["scanflow.attestation_digest"] == card["provenance"]["pipeline_digest"]
    ids = json.loads((run.directory / "tracking" / "parent.json").read_text())
    assert version.run_id == ids["steps"]["package"]  # the packaging step's own MLflow run
    assert (Path(client.download_artifacts(version.run_id, "model")) / "MLmodel").is_file()

    monkeypatch.setenv("SCANFLOW_TRACKER", "off")
    fresh = WorkflowRun(load_workflow(spec), home=home, pm=get_plugin_manager(autoload=False))
    from scanflow_core.runs import StepRun

    assert register_model(StepRun(fresh, fresh.plan["package"]), card_path_model(run)) is None
    with pytest.raises(ScanflowError, match=r"register_model: .* is not an MLflow model folder"):
        register_model(StepRun(fresh, fresh.plan["package"]), tmp_path)


def card_path_model(run: WorkflowRun) -> Path:
    return run.step_dir("package") / "outputs" / "mlflow_model"
