"""``use: robustness``: FGSM on the digits example's own model, read by the default loader.

One module-wide run of the example's real steps (ingest, split, a shorter train, evaluate), with
every check of this file on its evaluate step: the model is trained once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scanflow_core.checking.models import torch_mlp
from scanflow_core.checking.robustness import fgsm
from scanflow_core.plugins import get_plugin_manager
from scanflow_core.runner import run_workflow
from scanflow_core.runs import WorkflowRun
from scanflow_core.spec import load_workflow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits"

SPEC = """
apiVersion: scanflow/v1
name: digits_robustness
params: {seed: 0}
steps:
  - {name: ingest, stage: data_ingestion, call: digits_steps:ingest, outputs: {digits: {path: digits.npz}}}
  - name: split
    stage: data_splitting
    call: digits_steps:split
    inputs: [digits]
    outputs: {train: {path: train.npz}, eval: {path: eval.npz}, test: {path: test.npz}}
  - name: train
    stage: training
    call: digits_steps:train
    params: {epochs: 15, hidden: 32}
    inputs: [train]
    outputs: {model: {kind: model, path: model.pt}}
  - name: evaluate
    stage: evaluation
    call: digits_steps:evaluate
    inputs: [model, eval]
    outputs: {eval_metrics: {kind: metrics, path: metrics.json}}
    checks:
      - {use: robustness, name: strong, on: model, data: eval, epsilon: 0.1, max_drop: 0.1, policy: warn}
      - {use: robustness, name: gentle, on: model, data: eval, epsilon: 0.01, max_drop: 0.1, policy: warn}
      - {use: robustness, name: floor, on: eval, model: model, min_accuracy: 0.99, policy: warn}
      - {use: importance, name: pixels, on: model, data: eval, repeats: 2, policy: warn}
      - {use: robustness, name: no_gradients, on: model, data: eval, loader: "robust_loaders:labels_only",
         policy: warn}
      - {use: robustness, name: clip, on: model, data: eval, clip: [0, 0.5], policy: warn}
      - {use: robustness, name: epsilon, on: model, data: eval, epsilon: -0.1, policy: warn}
"""

LOADERS = """
import numpy as np
from scanflow_core.checking.models import torch_mlp

def labels_only(path):
    model = torch_mlp(path)
    return model.predict
"""


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> WorkflowRun:
    folder = tmp_path_factory.mktemp("robustness")
    (folder / "scanflow.yaml").write_text(SPEC, encoding="utf-8")
    (folder / "robust_loaders.py").write_text(LOADERS, encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SCANFLOW_TRACKER", "off")  # module scope: the autouse fixture has not run yet
        patch.syspath_prepend(str(EXAMPLE))  # digits_steps lives in the example's folder
        workflow = load_workflow(folder / "scanflow.yaml")
        return run_workflow(workflow, pm=get_plugin_manager(autoload=False), home=folder / ".scanflow")


@pytest.fixture(scope="module")
def results(digits_run: WorkflowRun) -> dict[str, dict[str, Any]]:
    assert digits_run.status == "succeeded", digits_run.step_summaries()
    report = json.loads((digits_run.step_dir("evaluate") / "checks.json").read_text())
    return {r["check"]: r for r in report}


def test_fgsm_lowers_accuracy_measurably_at_epsilon_0_1(results: dict[str, dict[str, Any]]) -> None:
    strong = results["strong"]
    metrics = strong["metrics"]
    assert not strong["passed"] and strong["policy"] == "warn"
    assert metrics["clean_accuracy"] > 0.9
    assert metrics["drop"] > 0.2, metrics  # adversarial, not just noisy:
    assert metrics["noise_accuracy"] - metrics["adversarial_accuracy"] > 0.2
    assert metrics["epsilon"] == 0.1
    assert "drop" in strong["summary"] and "> 0.1" in strong["summary"]


def test_a_lenient_threshold_passes_at_epsilon_0_01(results: dict[str, dict[str, Any]]) -> None:
    gentle, strong = results["gentle"], results["strong"]
    assert gentle["passed"], gentle["summary"]
    assert 0 <= gentle["metrics"]["drop"] < 0.1
    assert gentle["metrics"]["adversarial_accuracy"] > strong["metrics"]["adversarial_accuracy"]


def test_min_accuracy_and_the_target_as_data(results: dict[str, dict[str, Any]]) -> None:
    floor = results["floor"]  # on: eval, model: model; default epsilon 0.05
    assert floor["target"] == "eval" and floor["phase"] == "inputs"
    assert floor["metrics"]["epsilon"] == 0.05
    assert not floor["passed"] and "< 0.99" in floor["summary"]


def test_the_default_loader_reads_the_example_model_for_both_checks(
    digits_run: WorkflowRun, results: dict[str, dict[str, Any]]
) -> None:
    accuracy = digits_run.step_summary("evaluate")["metrics"]["accuracy"]  # type: ignore[index]
    assert results["strong"]["metrics"]["clean_accuracy"] == pytest.approx(accuracy)
    pixels = results["pixels"]
    assert pixels["metrics"]["baseline_accuracy"] == pytest.approx(accuracy)
    assert pixels["passed"] and len(pixels["details"]["importances"]) == 64
    assert pixels["metrics"]["top_share"] < 0.5  # digits spread over many pixels: no shortcut


def test_bad_options_give_failed_results_naming_the_option(results: dict[str, dict[str, Any]]) -> None:
    expected = {
        "no_gradients": "option 'loader' must give a torch model",
        "clip": "outside option 'clip'",
        "epsilon": "option 'epsilon' must be >= 0",
    }
    for name, words in expected.items():
        assert not results[name]["passed"]
        assert words in results[name]["summary"], results[name]["summary"]


def test_fgsm_moves_each_input_by_epsilon_within_bounds(digits_run: WorkflowRun) -> None:
    model = torch_mlp(digits_run.artifact_path("model"))
    assert model.module is not None
    with np.load(digits_run.artifact_path("eval")) as arrays:
        x, y = arrays["X"][:50], arrays["y"][:50]

    moved = fgsm(model.module, x, y, 0.1, (0.0, 1.0), batch_size=16)

    assert moved.shape == x.shape and moved.min() >= 0 and moved.max() <= 1
    step = np.abs(moved - x)
    inside = (x >= 0.1) & (x <= 0.9)  # away from the bounds every value moves by exactly epsilon
    assert np.allclose(step[inside], 0.1, atol=1e-6)
    assert np.array_equal(fgsm(model.module, x, y, 0.0, None), x.astype(np.float32))
