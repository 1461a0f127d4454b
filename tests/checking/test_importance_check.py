"""``use: importance``: permutation importance ranks a planted feature first and flags a shortcut;
the model loaders (``scanflow_core.checking.models``) honour their contract."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scanflow_core.checking.models import as_model, build_mlp, torch_mlp
from scanflow_core.plugins import get_plugin_manager
from scanflow_core.runner import run_workflow
from scanflow_core.runs import WorkflowRun
from scanflow_core.spec import load_workflow

CODE = """
import pickle
import numpy as np
from sklearn.linear_model import LogisticRegression

def save(path, x, y):
    with path.open("wb") as file:
        np.savez(file, X=x, y=y)

def make(informative, shortcut):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 6))
    # f3 drives the label; f0 and f1 help a little; f2, f4, f5 are noise
    y = (2.0 * x[:, 3] + 0.7 * x[:, 0] + 0.7 * x[:, 1] + rng.normal(scale=0.5, size=600) > 0).astype(int)
    save(informative, x, y)
    # a leaked column: f5 is the label itself, while f0 carries a weak real signal
    x = rng.normal(size=(600, 6))
    y = (x[:, 0] + rng.normal(size=600) > 0).astype(int)
    x[:, 5] = y
    save(shortcut, x, y)

def train(informative, shortcut, model, shortcut_model):
    for data, out in ((informative, model), (shortcut, shortcut_model)):
        with np.load(data) as arrays:
            fitted = LogisticRegression().fit(arrays["X"], arrays["y"])
        out.write_bytes(pickle.dumps(fitted))

def load(path):
    return pickle.loads(path.read_bytes())

def constant(path):
    return lambda x: np.zeros(len(x), dtype=int)

def evaluate(model, informative):
    return {}
"""


def _run(write_spec: Any, checks: str) -> WorkflowRun:
    spec = write_spec(
        f"""
        apiVersion: scanflow/v1
        name: importance
        steps:
          - name: make
            stage: data_ingestion
            call: MOD:make
            outputs: {{informative: {{path: informative.npz}}, shortcut: {{path: shortcut.npz}}}}
          - name: train
            stage: training
            call: MOD:train
            inputs: [informative, shortcut]
            outputs: {{model: {{kind: model}}, shortcut_model: {{kind: model}}}}
          - name: evaluate
            stage: evaluation
            call: MOD:evaluate
            inputs: [model, shortcut_model, informative, shortcut]
            checks: {checks}
        """,
        code=CODE,
    )
    return run_workflow(load_workflow(spec), pm=get_plugin_manager(autoload=False))


def _results(run: WorkflowRun) -> dict[str, dict[str, Any]]:
    report = json.loads((run.step_dir("evaluate") / "checks.json").read_text())
    return {r["check"]: r for r in report}


def test_the_planted_feature_ranks_first_and_a_shortcut_fails(write_spec: Any, home: Path) -> None:
    run = _run(
        write_spec,
        """
              - {use: importance, on: model, data: informative, loader: MOD:load, repeats: 5,
                 max_single_feature_share: 0.9}
              - {use: importance, name: shortcut, on: shortcut_model, data: shortcut, loader: MOD:load,
                 policy: warn}
              - {use: importance, name: ignores, on: model, data: informative, loader: MOD:constant,
                 min_top_importance: 0.01, policy: warn}
        """,
    )

    assert run.status == "succeeded", run.step_summaries()
    results = _results(run)
    fair = results["importance"]
    assert fair["passed"], fair["summary"]
    ranked = [row["feature"] for row in fair["details"]["importances"]]
    assert ranked[0] == "f3" and set(ranked[1:3]) == {"f0", "f1"}
    importances = {row["feature"]: row["importance"] for row in fair["details"]["importances"]}
    assert importances["f3"] > 0.2 and all(abs(importances[f]) < 0.02 for f in ("f2", "f4", "f5"))
    assert fair["metrics"]["baseline_accuracy"] > 0.85
    assert fair["metrics"]["importance.f3"] == importances["f3"]
    assert len([k for k in fair["metrics"] if k.startswith("importance.")]) == 5  # top_k

    shortcut = results["shortcut"]
    assert not shortcut["passed"] and shortcut["policy"] == "warn"
    assert shortcut["metrics"]["top_share"] > 0.9
    assert "'f5' carries" in shortcut["summary"] and "> 50%" in shortcut["summary"]

    ignores = results["ignores"]  # a loader may return a plain function X -> labels
    assert not ignores["passed"] and ignores["metrics"]["top_importance"] == 0.0
    assert "below 0.01" in ignores["summary"]


def test_bad_options_give_failed_results_naming_the_option(write_spec: Any, home: Path) -> None:
    run = _run(
        write_spec,
        """
              - {use: importance, name: neither, on: model, policy: warn}
              - {use: importance, name: no_colon, on: model, data: informative, loader: load, policy: warn}
              - {use: importance, name: no_function, on: model, data: informative, loader: "MOD:nope",
                 policy: warn}
              - {use: importance, name: repeats, on: model, data: informative, loader: MOD:load, repeats: 0,
                 policy: warn}
              - {use: importance, name: share, on: model, data: informative, loader: MOD:load,
                 max_single_feature_share: 2, policy: warn}
        """,
    )

    expected = {
        "neither": "needs the option 'model'",
        "no_colon": "option 'loader' must be 'module:function'",
        "no_function": "option 'loader': module",
        "repeats": "option 'repeats' must be at least 1",
        "share": "option 'max_single_feature_share' must lie in (0, 1]",
    }
    results = _results(run)
    for name, words in expected.items():
        assert not results[name]["passed"]
        assert words in results[name]["summary"], results[name]["summary"]


# ------------------------------------------------------------------------------------------ loaders


def test_torch_mlp_reads_the_digits_format_and_deeper_mlps(tmp_path: Path) -> None:
    import torch

    torch.manual_seed(0)
    for hidden, keys in ((16, ["0", "2"]), ([16, 8], ["0", "2", "4"])):
        config = {"in_features": 5, "hidden": hidden, "classes": 3}
        net = build_mlp(config)
        assert sorted({k.split(".")[0] for k in net.state_dict()}) == keys
        path = tmp_path / "model.pt"
        torch.save({"config": config, "state_dict": net.state_dict()}, path)

        model = torch_mlp(path)
        x = np.random.default_rng(0).random((20, 5)).astype(np.float32)
        with torch.no_grad():
            expected = net(torch.from_numpy(x)).argmax(dim=1).numpy()
        assert (model.predict(x) == expected).all()
        assert model.module is not None


def test_torch_mlp_names_what_it_expected(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "weights.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="expected a dict with 'config' and 'state_dict'"):
        torch_mlp(path)
    with pytest.raises(ValueError, match="an MLP config needs in_features, hidden"):
        build_mlp({"in_features": 5})


def test_as_model_accepts_estimators_modules_and_functions() -> None:
    import torch

    x = np.eye(3, dtype=np.float32)

    class Estimator:
        def predict(self, x: np.ndarray) -> list[int]:
            return [2] * len(x)

    assert as_model(Estimator()).predict(x).tolist() == [2, 2, 2]
    assert as_model(Estimator()).module is None
    identity = torch.nn.Identity()
    assert as_model(identity).predict(x).tolist() == [0, 1, 2]  # logits → arg-max
    assert as_model(identity).module is identity
    assert as_model(lambda x: np.ones(len(x))).predict(x).tolist() == [1, 1, 1]
    with pytest.raises(TypeError, match=r"expected an object with \.predict"):
        as_model(42)
