"""The improver on a real MLflow registry (an embedded SQLite store under the test's folder): promote only
a candidate that meets the objectives and beats the champion, keep the previous version, roll back."""

from __future__ import annotations

import numpy as np
import pytest

from scanflow_core.cli import main
from scanflow_core.improve import Improver, LabelQueue, answer_with, pick_informative, rollback
from scanflow_core.improve.improver import ImproveError
from scanflow_core.spec import load_workflow

pytestmark = [
    pytest.mark.slow,  # every test here logs and registers real MLflow models (seconds each)
    # scikit-learn: a deliberately under-trained candidate (max_iter=1) does not converge.
    pytest.mark.filterwarnings("ignore:lbfgs failed to converge:sklearn.exceptions.ConvergenceWarning"),
    # mlflow, importing its own response types (mlflow/types/responses.py) while logging a model.
    pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning"),
]


def client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def alias(uri: str, name: str, which: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client(uri).get_model_version_by_alias(name, which).version)
    except MlflowException:
        return None


def shift(x: np.ndarray, seed: int) -> np.ndarray:
    """Rotated by 20 degrees and noisy: digits the clean model gets wrong."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    images = np.stack([ndimage.rotate(i, 20.0, reshape=False, order=1) for i in x.reshape(-1, 8, 8)])
    images = images + rng.normal(0.0, 0.1, images.shape)
    return np.clip(images, 0, 1).reshape(len(x), -1).astype(np.float32)


def accuracy(net, x: np.ndarray, y: np.ndarray) -> float:
    import torch

    with torch.no_grad():
        return float((net(torch.from_numpy(x)).argmax(dim=1).numpy() == y).mean())


def probabilities(net):
    import torch

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(net(torch.from_numpy(x.astype(np.float32))), dim=1).numpy()

    return predict


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_improve_loop_promotes_a_model_retrained_on_new_labels_and_rolls_it_back(
    digits, train_digits, mlflow_uri, tmp_path, capsys
):
    """Clean model → champion; drifted pool → pick 60 → label queue → answered → retrain → better on
    drifted data → champion, the clean one kept as previous → rollback."""
    from scanflow_core.checking.drift import DriftDetector

    x, y = digits
    order = np.random.default_rng(0).permutation(len(x))
    train, pool, held = order[:900], order[900:1400], order[1400:]
    x_pool, x_held = shift(x[pool], 1), shift(x[held], 2)
    improver = Improver(
        name="digits",
        train=lambda xs, ys: train_digits(xs, ys),
        evaluate=lambda net: {"evaluate": {"accuracy": accuracy(net, x_held, y[held])}},
        metric="evaluate.accuracy",
        objectives=["evaluate.accuracy >= 0.3"],
    )

    first = improver.improve(x[train], y[train])

    assert first.promoted and first.version == "1" and first.champion is None
    assert alias(mlflow_uri, "digits", "champion") == "1"
    detector = DriftDetector(seed=0, epochs=30).fit(x[train])
    clean = improver.load_model(f"models:/digits/{first.version}")
    chosen = pick_informative(x_pool, 60, detector=detector, model=probabilities(clean), seed=0)
    queue = LabelQueue(tmp_path / "labels.db", classes=range(10))
    queue.enqueue_many(
        x_pool[chosen], ids=[f"pool-{i}" for i in chosen], metadata=[{"row": int(i)} for i in chosen]
    )
    assert answer_with(queue, lambda sample: y[pool][sample.metadata["row"]]) == 60
    new = queue.export()

    second = improver.improve(np.concatenate([x[train], new.x]), np.concatenate([y[train], new.y]))

    assert second.promoted, second.reason
    assert second.version == "2" and second.champion_version == "1"
    assert second.champion == pytest.approx(first.candidate)
    assert second.candidate > second.champion
    assert alias(mlflow_uri, "digits", "champion") == "2"
    assert alias(mlflow_uri, "digits", "previous") == "1"
    served = improver.load_model("models:/digits@champion")
    assert accuracy(served, x_held, y[held]) == pytest.approx(second.candidate)
    version = client(mlflow_uri).get_model_version("digits", "2")
    assert version.tags["scanflow.decision"] == "promoted" and version.tags["scanflow.replaced"] == "1"
    run = client(mlflow_uri).get_run(second.run_id)
    assert run.data.metrics["evaluate.accuracy"] == pytest.approx(second.candidate)
    assert run.data.metrics["champion.evaluate.accuracy"] == pytest.approx(first.candidate)
    assert run.info.artifact_uri.startswith((tmp_path / ".scanflow" / "mlartifacts").as_uri())

    assert rollback("digits") == "1"
    assert alias(mlflow_uri, "digits", "champion") == "1"
    assert alias(mlflow_uri, "digits", "previous") is None
    assert client(mlflow_uri).get_model_version("digits", "2").tags["scanflow.rolled_back"] == "true"

    assert main(["model", "rollback", "digits"]) == 2
    assert "has no 'previous' version to roll back to" in capsys.readouterr().err


# --------------------------------------------------------------------------- fast models (scikit-learn)


@pytest.fixture
def data(digits):
    x, y = digits
    return x[:1200], y[:1200], x[1200:], y[1200:]


def logistic(max_iter: int):
    from sklearn.linear_model import LogisticRegression

    def train(x, y):
        return LogisticRegression(max_iter=max_iter).fit(x, y)

    return train


def scorer(x, y):
    def evaluate(model):
        predicted = model.predict(x)
        return {
            "evaluate.accuracy": float((predicted == y).mean()),
            "evaluate.errors": float((predicted != y).sum()),
        }

    return evaluate


def test_a_worse_candidate_is_registered_but_the_champion_stays(data, mlflow_uri):
    x, y, xe, ye = data
    improver = Improver(
        name="lr",
        train=logistic(200),
        evaluate=scorer(xe, ye),
        metric="evaluate.accuracy",
        objectives=["evaluate.accuracy >= 0.1"],
    )
    good = improver.improve(x, y)
    improver.train = logistic(1)

    worse = improver.improve(x, y)

    assert good.promoted and not worse.promoted
    assert "not higher" in worse.reason and f"{worse.champion:.4g}" in worse.reason
    assert alias(mlflow_uri, "lr", "champion") == good.version
    assert alias(mlflow_uri, "lr", "previous") is None
    assert client(mlflow_uri).get_model_version("lr", worse.version).tags["scanflow.decision"] == "rejected"


def test_an_equal_candidate_is_not_promoted(data, mlflow_uri):
    x, y, xe, ye = data
    improver = Improver(name="same", train=logistic(200), evaluate=scorer(xe, ye), metric="evaluate.accuracy")

    assert improver.improve(x, y).promoted
    again = improver.improve(x, y)

    assert not again.promoted and again.candidate == again.champion


def test_objectives_block_promotion_even_without_a_champion(data, mlflow_uri):
    x, y, xe, ye = data
    improver = Improver(
        name="strict",
        train=logistic(200),
        evaluate=scorer(xe, ye),
        metric="evaluate.accuracy",
        objectives=["evaluate.accuracy >= 0.999", "evaluate.errors <= 1000"],
    )

    decision = improver.improve(x, y)

    assert not decision.promoted
    assert decision.reason.startswith("objectives not met: evaluate.accuracy >= 0.999: NOT met")
    assert [o.passed for o in decision.objectives] == [False, True]
    assert alias(mlflow_uri, "strict", "champion") is None


def test_lower_is_better_and_a_minimum_gain(data, mlflow_uri):
    x, y, xe, ye = data
    improver = Improver(
        name="errors",
        train=logistic(1),
        evaluate=scorer(xe, ye),
        metric="evaluate.errors",
        greater_is_better=False,
        min_gain=1000,
    )
    assert improver.improve(x, y).promoted  # the first one: no champion to beat
    improver.train = logistic(200)

    decision = improver.improve(x, y)  # fewer errors, but not 1000 fewer

    assert not decision.promoted and decision.candidate < decision.champion
    assert "not more than 1000 lower" in decision.reason


SPEC = """\
apiVersion: scanflow/v1
name: digits
objectives: ["evaluate.accuracy >= 0.5", {{expr: "evaluate.errors < 1", blocking: false}}]
{improve}
steps:
  - {{name: evaluate, stage: evaluation, command: "true"}}
"""


def test_from_workflow_takes_the_improve_section(data, mlflow_uri, tmp_path):
    x, y, xe, ye = data
    path = tmp_path / "scanflow.yaml"
    path.write_text(
        SPEC.format(
            improve="improve: {model_name: digits-lr, metric: evaluate.errors, greater_is_better: false}"
        )
    )

    improver = Improver.from_workflow(load_workflow(path), train=logistic(200), evaluate=scorer(xe, ye))
    decision = improver.improve(x, y)

    assert (improver.name, improver.metric, improver.greater_is_better) == (
        "digits-lr",
        "evaluate.errors",
        False,
    )
    assert decision.promoted  # the non-blocking objective is not met, and does not block
    assert [(o.passed, o.blocking) for o in decision.objectives] == [(True, True), (False, False)]
    assert alias(mlflow_uri, "digits-lr", "champion") == "1"


def test_from_workflow_defaults_to_the_first_objectives_metric(tmp_path, mlflow_uri):
    path = tmp_path / "scanflow.yaml"
    path.write_text(SPEC.format(improve=""))

    improver = Improver.from_workflow(load_workflow(path), train=logistic(1), evaluate=lambda m: {})

    assert (improver.name, improver.metric, improver.greater_is_better) == (
        "digits",
        "evaluate.accuracy",
        True,
    )


def test_a_metric_evaluate_does_not_return_is_named(data, mlflow_uri):
    x, y, xe, ye = data
    improver = Improver(name="m", train=logistic(1), evaluate=scorer(xe, ye), metric="evaluate.f1")

    with pytest.raises(
        ImproveError, match=r"no metric 'evaluate.f1' .*it returned: evaluate.accuracy, evaluate.errors"
    ):
        improver.improve(x, y)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "name must be the registered model's name"),
        ({"train": 3}, "train must be a callable"),
        ({"metric": ""}, "metric must name one of evaluate's metrics"),
        ({"min_gain": -1}, "min_gain must be a number >= 0"),
        ({"objectives": ["evaluate.accuracy >"]}, "expected a value after '>'"),
    ],
)
def test_bad_arguments_are_named(kwargs, message, mlflow_uri):
    arguments = {"name": "m", "train": logistic(1), "evaluate": lambda m: {}, "metric": "evaluate.accuracy"}

    with pytest.raises(ValueError, match=message):
        Improver(**(arguments | kwargs))


def test_a_model_with_no_default_logger_is_named(mlflow_uri):
    improver = Improver(name="odd", train=lambda x, y: object(), evaluate=lambda m: {"a": 1.0}, metric="a")

    with pytest.raises(
        ImproveError, match="no default way to log a object as an MLflow model: pass log_model="
    ):
        improver.improve(np.zeros((2, 2)), np.zeros(2))


def test_rollback_without_a_champion_is_named(mlflow_uri, capsys):
    with pytest.raises(ImproveError, match="registered model 'ghost' has no 'champion' version to roll back"):
        rollback("ghost")
    assert main(["model", "rollback", "ghost"]) == 2
    assert "no 'champion' version" in capsys.readouterr().err


def test_two_promotions_at_once_are_taken_one_after_the_other(data, mlflow_uri):
    """Two candidates judged at the same moment, both better than the champion: the second to take the
    lock compares with what the first promoted, so the best becomes champion and the aliases chain."""
    import threading
    import time

    x, y, xe, ye = data
    evaluate = scorer(xe, ye)

    def slow_evaluate(model):  # holds each judgement open long enough for the other to start
        time.sleep(1.0)
        return evaluate(model)

    # Champion, weak and strong: the same model trained on 30, 150 and 1,200 rows.
    first_champion = Improver(
        name="raced", train=logistic(300), evaluate=evaluate, metric="evaluate.accuracy"
    )
    first = first_champion.improve(x[:30], y[:30]).version
    decisions, errors = {}, []
    models = {"weak": logistic(300)(x[:150], y[:150]), "strong": logistic(300)(x, y)}
    start = threading.Barrier(2)

    def consider(label: str) -> None:
        improver = Improver(
            name="raced", train=logistic(300), evaluate=slow_evaluate, metric="evaluate.accuracy"
        )
        start.wait()
        try:
            decisions[label] = improver.consider(models[label])
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=consider, args=(label,)) for label in models]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert not errors
    weak, strong = decisions["weak"], decisions["strong"]
    assert weak.candidate < strong.candidate
    assert strong.promoted and alias(mlflow_uri, "raced", "champion") == strong.version
    registry = client(mlflow_uri)
    replaced = {v: registry.get_model_version("raced", v).tags.get("scanflow.replaced") for v in ("2", "3")}
    if weak.promoted:  # weak went first: strong then beat weak, not the first champion
        assert replaced[strong.version] == weak.version and replaced[weak.version] == first
        assert alias(mlflow_uri, "raced", "previous") == weak.version
    else:  # strong went first: weak was judged against strong
        assert weak.champion == strong.candidate and replaced[strong.version] == first
        assert alias(mlflow_uri, "raced", "previous") == first
