"""``make demo``, end to end: ``scanflow run examples/digits/scanflow.yaml`` then ``scanflow report latest``,
as separate processes, with tracking on (the embedded MLflow store under the test's home). Every step
runs, is tracked and attested; the model is packaged with its card, registered, served; new digits
drift, are labelled, a candidate is retrained and promoted; the report shows it all in Chromium."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "examples" / "digits" / "scanflow.yaml"
STEPS = [
    "ingest", "validate", "split", "train", "evaluate", "test", "package", "serve",
    "traffic", "monitor", "drift", "label", "retrain", "promote",
]  # fmt: skip

pytestmark = [
    pytest.mark.slow,
    # mlflow.pyfunc, imported when reading the registry, warns about a type hint of its own.
    pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning"),
]


@dataclass
class Demo:
    home: Path
    cwd: Path
    run: Path
    out: str
    err: str
    report: Path
    report_out: str

    def outputs(self, step: str) -> Path:
        return self.run / "steps" / step / "outputs"

    def metrics(self, step: str) -> dict[str, float]:
        metrics: dict[str, float] = json.loads((self.run / "steps" / step / "step.json").read_text())[
            "metrics"
        ]
        return metrics

    @property
    def store(self) -> str:
        return f"sqlite:///{self.home / 'mlflow.db'}"


def scanflow(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scanflow_core", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    cwd = tmp_path_factory.mktemp("demo")
    home = cwd / ".scanflow"
    env = {k: v for k, v in os.environ.items() if k not in ("SCANFLOW_TRACKER", "MLFLOW_TRACKING_URI", "CI")}
    env |= {"SCANFLOW_HOME": str(home), "PYTHONPATH": str(ROOT)}
    ran = scanflow("run", str(SPEC), cwd=cwd, env=env)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    report = cwd / "digits-report.html"
    reported = scanflow("report", "latest", "-o", str(report), cwd=cwd, env=env)
    assert reported.returncode == 0, reported.stdout + reported.stderr
    (run,) = (home / "runs").iterdir()
    return Demo(home, cwd, run, ran.stdout, ran.stderr, report, reported.stdout)


@pytest.mark.timeout(900)
def test_every_step_succeeds_and_every_objective_is_met(demo: Demo) -> None:
    manifest = json.loads((demo.run / "run.json").read_text())

    assert manifest["status"] == "succeeded"
    assert list(manifest["steps"]) == STEPS
    assert {s["status"] for s in manifest["steps"].values()} == {"succeeded"}
    assert [(o["name"], o["passed"]) for o in manifest["objectives"]] == [
        ("accurate", True), ("test.accuracy >= 0.88", True), ("balanced", True), ("serves", True)
    ]  # fmt: skip
    summary = demo.out.split(f"run {demo.run.name} of 'digits': succeeded in ")[1]
    for step in STEPS:
        assert f"\n  {step} " in summary
    assert f"tracked in MLflow: {demo.store} (experiment 'digits')" in summary
    assert f"attested: 14 step(s); check with: scanflow verify {demo.run}" in summary
    assert demo.report_out.startswith(f"wrote {demo.report}: run {demo.run.name} succeeded, 14 steps, ")
    assert demo.report_out.rstrip().endswith("objectives 4/4 met, attestations verified")
    assert not (
        demo.cwd / "mlflow.db"
    ).exists()  # nothing went to mlflow's default store in the working directory


def test_every_step_is_tracked_as_a_child_of_the_run(demo: Demo) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=demo.store)
    experiment = client.get_experiment_by_name("digits")
    runs = client.search_runs([experiment.experiment_id], f"tags.`scanflow.run_id` = '{demo.run.name}'")
    (parent,) = [r for r in runs if r.data.tags.get("scanflow.kind") == "workflow"]
    children = {r.data.tags["scanflow.step"]: r for r in runs if r.data.tags.get("scanflow.kind") == "step"}
    assert sorted(children) == sorted(STEPS)
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children.values())
    assert {r.info.status for r in children.values()} == {"FINISHED"}
    assert children["promote"].data.metrics["promoted"] == 1.0
    assert children["drift"].data.metrics["check.drift.batch.passed"] == 0.0  # the drift it found


def test_the_model_is_packaged_with_an_attested_card_and_registered(demo: Demo) -> None:
    from mlflow import MlflowClient

    from scanflow_core.attestation.verify import verify_run
    from scanflow_core.packaging import load_model_card

    card = load_model_card(demo.outputs("package") / "model_card.json")
    assert card["registry"]["uri"] == "models:/digits/1" and card["registry"]["champion"] is True
    assert [s["name"] for s in card["provenance"]["steps"]] == STEPS[:6]
    assert card["provenance"]["attested"] and card["hyperparameters"]["train"]["hidden"] == 64
    assert card["metrics"]["test"]["accuracy"] >= 0.9 and card["signature"]["inputs"][0]["tensor-spec"][
        "shape"
    ] == [-1, 64]
    assert card["infrastructure"]["resources"] == {"cpu": 1.0, "memory": "512Mi", "gpu": 0}
    assert "torch" in card["infrastructure"]["packages"] and card["model"]["flavors"] == [
        "python_function",
        "pytorch",
    ]
    assert (demo.outputs("package") / "model_card.md").read_text().startswith("# Model card: digits\n")
    assert verify_run(demo.run).ok
    client = MlflowClient(tracking_uri=demo.store, registry_uri=demo.store)
    first = client.get_model_version("digits", "1")
    assert first.tags["scanflow.attestation_digest"] == card["provenance"]["pipeline_digest"]
    assert first.tags["scanflow.model_digest"] == card["model"]["digest"]


def test_the_served_model_answers_as_the_model_does(demo: Demo) -> None:
    smoke = json.loads((demo.outputs("serve") / "smoke.json").read_text())
    card = json.loads((demo.outputs("package") / "model_card.json").read_text())

    assert smoke["uri"] == "models:/digits/1" and smoke["ok"] == "ok" and smoke["agreement"] == 1.0
    assert smoke["varz"]["model"]["name"] == "digits" and smoke["varz"]["model"]["version"] == "1"
    assert smoke["varz"]["model"]["attestation_digest"] == card["provenance"]["pipeline_digest"]
    assert 400 <= smoke["bad_request"]["status"] < 500 and "error" in smoke["bad_request"]["answer"]
    lines = (demo.outputs("serve") / "inference.log").read_text().splitlines()
    assert len(lines) == demo.metrics("serve")["log_lines"] == 3 + 40 + 1 + 1
    assert sum('"POST /predict HTTP/1.1" 200' in line for line in lines) == 40


def test_drift_is_found_and_the_planner_asks_for_retraining(demo: Demo) -> None:
    drift = json.loads((demo.outputs("drift") / "drift.json").read_text())
    (check,) = json.loads((demo.run / "steps" / "drift" / "checks.json").read_text())

    assert drift["action"] == "retrain" and drift["drifted"] and drift["anomalous_share"] > 0.5
    assert check["checker"] == "drift" and not check["passed"] and check["policy"] == "warn"
    assert (demo.run / "steps" / "drift" / "checks" / "drift-batch.png").read_bytes().startswith(b"\x89PNG")


def test_the_informative_digits_are_labelled_and_the_retrained_model_promoted(demo: Demo) -> None:
    from mlflow import MlflowClient

    with sqlite3.connect(demo.outputs("label") / "queue" / "labels.db") as db:
        assert db.execute("SELECT COUNT(*), COUNT(label) FROM samples").fetchone() == (80, 80)
    decision = json.loads((demo.outputs("promote") / "decision.json").read_text())
    assert decision["promoted"] is True and decision["metric"] == "shifted.accuracy"
    assert decision["champion_version"] == "1" and decision["candidate_version"] == "2"
    assert decision["candidate"] >= decision["champion"] + 0.15  # the new labels help on the new data
    assert decision["metrics"]["evaluate.accuracy"] >= 0.9  # and the old data is not forgotten
    client = MlflowClient(tracking_uri=demo.store, registry_uri=demo.store)
    assert str(client.get_model_version_by_alias("digits", "champion").version) == "2"
    assert str(client.get_model_version_by_alias("digits", "previous").version) == "1"
    card = json.loads((demo.outputs("promote") / "model_card.json").read_text())
    assert card["registry"] == {"name": "digits", "version": "2", "uri": "models:/digits/2", "champion": True}
    assert "retrain" in [s["name"] for s in card["provenance"]["steps"]]


@pytest.mark.timeout(900)
def test_the_report_shows_the_demo_in_chromium(demo: Demo, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(demo.report.as_uri())

    def shown(css: str) -> list[str]:
        return [e.text for e in browser.find_elements(By.CSS_SELECTOR, css)]

    assert shown("#run-status") == ["run succeeded"]
    assert [row.split()[0] for row in shown("#steps tr.step")] == STEPS
    assert set(shown("#steps tr.step td.status")) == {"succeeded"}
    drift_rows = [row for row in shown("#checks tr.check.warn") if row.startswith("drift drift batch")]
    assert len(drift_rows) == 1 and "drift in 450 samples" in drift_rows[0]
    assert shown("#objectives tr.objective td.verdict") == ["met"] * 4
    assert shown("#verification")[0].startswith("verified: ")
    image = browser.find_element(By.CSS_SELECTOR, "#plots img")
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) > 0
    assert len(browser.find_elements(By.CSS_SELECTOR, "#lineage svg g.step")) == 14
    cards = shown("#model-cards .model-card h3")
    assert [c.split()[0] for c in cards] == ["digits", "digits"]
    assert "registered as models:/digits/2" in shown("#model-cards")[0]
    browser.save_screenshot(str(demo.cwd / "report.png"))
    assert base64.b64encode((demo.cwd / "report.png").read_bytes()[:8]) == base64.b64encode(
        b"\x89PNG\r\n\x1a\n"
    )
