"""Retrain with new labels, judge the candidate, promote it in the MLflow model registry or keep the champion.

:class:`Improver` trains a candidate with the user's function, scores it with the user's evaluation
function, and checks the workflow's objectives on those metrics (the same expression language as
``objectives:`` in the spec). The candidate is logged as an MLflow model in a run of the experiment
``<name>-improve`` and registered as a new version of the registered model ``name``, tagged with the
decision. It becomes the ``champion`` (alias) only when every blocking objective holds **and** it beats
the current champion, scored by the same evaluation function now, on the chosen ``metric`` by more than
``min_gain``. The replaced champion gets the alias ``previous``; :func:`rollback` puts it back.

Where: the spec's tracker, ``$MLFLOW_TRACKING_URI``, or the embedded store ``<home>/mlflow.db`` (the
registry lives in the same store).

Example::

    improver = Improver.from_workflow(
        load_workflow("scanflow.yaml"),
        train=lambda x, y: fit_mlp(x, y),                 # returns a model
        evaluate=lambda model: {"evaluate.accuracy": score(model, x_eval, y_eval)},
    )
    decision = improver.improve(x_train_and_new, y_train_and_new)
    print(decision)        # promoted digits version 3: evaluate.accuracy 0.91 > champion's 0.87 ...
    rollback("digits")     # the previous champion is champion again
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scanflow_core.errors import ScanflowError
from scanflow_core.records import ObjectiveResult

if TYPE_CHECKING:
    from collections.abc import Iterator

    from scanflow_core.spec import Objective, Workflow

__all__ = ["CHAMPION", "PREVIOUS", "Decision", "ImproveError", "Improver", "rollback", "tracking_uri"]

CHAMPION, PREVIOUS = "champion", "previous"
TAG = "scanflow."


class ImproveError(ScanflowError):
    """The improve loop cannot go on: says which model, version or metric, and what to do."""


@dataclass(frozen=True)
class Decision:
    """What :meth:`Improver.consider` decided about a candidate.

    Attributes:
        promoted: whether the candidate is now the champion.
        name, version: the registered model and the candidate's version.
        metric: the metric compared; ``candidate`` and ``champion`` its values (``champion`` None when
            there was no champion).
        champion_version: the champion before the decision (None when there was none).
        objectives: each objective on the candidate's metrics.
        reason: the decision in one sentence.
        metrics: every metric of the candidate.
        run_id: the MLflow run that logged the candidate.
    """

    promoted: bool
    name: str
    version: str
    metric: str
    candidate: float
    champion: float | None
    champion_version: str | None
    objectives: list[ObjectiveResult]
    reason: str
    metrics: dict[str, float] = field(default_factory=dict)
    run_id: str = ""

    def __str__(self) -> str:
        verdict = "promoted" if self.promoted else "kept the champion over"
        return f"{verdict} {self.name} version {self.version}: {self.reason}"


def tracking_uri(uri: str | None = None, home: str | Path | None = None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else the embedded store ``<home>/mlflow.db``."""
    from scanflow_core.tracking.mlflow_tracker import resolve_uri

    return resolve_uri(uri, _home(home))


def _home(home: str | Path | None) -> Path:
    from scanflow_core.runs import scanflow_home

    return scanflow_home(Path(home) if home is not None else None)


class Improver:
    """Retrain, judge and promote (see the module's docstring).

    Args:
        name: the registered model's name.
        train: ``train(x, y) -> model``: trains a candidate on the labelled data it is given.
        evaluate: ``evaluate(model) -> metrics``: flat (``{"evaluate.accuracy": 0.9}``) or nested
            (``{"evaluate": {"accuracy": 0.9}}``) numbers; it scores candidate and champion alike.
        metric: the metric the candidate must beat the champion on (a name ``evaluate`` returns).
        objectives: expressions (or the spec's :class:`~scanflow_core.spec.Objective`) that must hold on
            the candidate's metrics; non-blocking objectives are reported but do not block.
        greater_is_better: False when a lower ``metric`` is better (a loss).
        min_gain: how much better than the champion the candidate must be (0: strictly better).
        log_model: ``log_model(model) -> model URI``, called inside the active MLflow run; the default
            logs torch modules with ``mlflow.pytorch`` and scikit-learn estimators with ``mlflow.sklearn``.
        load_model: ``load_model(model_uri) -> model`` for the champion; the default loads it from this
            improver's store with the flavour it was logged with.
        uri: the MLflow tracking (and registry) URI; see :func:`tracking_uri`.
        home: Scanflow's home, for the embedded store.
        experiment: the MLflow experiment of the candidates' runs (default ``<name>-improve``).
        input_example: a few input rows, logged with the model (and its signature inferred from them) by
            the default ``log_model``; :meth:`improve` takes the first rows of its training data.

    Raises:
        ValueError: a bad argument, named.
    """

    def __init__(
        self,
        *,
        name: str,
        train: Callable[[Any, Any], Any],
        evaluate: Callable[[Any], Mapping[str, Any]],
        metric: str,
        objectives: Iterable[str | Objective] = (),
        greater_is_better: bool = True,
        min_gain: float = 0.0,
        log_model: Callable[[Any], str] | None = None,
        load_model: Callable[[str], Any] | None = None,
        uri: str | None = None,
        home: str | Path | None = None,
        experiment: str | None = None,
        input_example: Any = None,
    ) -> None:
        from scanflow_core.expressions import parse

        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"name must be the registered model's name, not {name!r}")
        for label, function in (("train", train), ("evaluate", evaluate)):
            if not callable(function):
                raise ValueError(f"{label} must be a callable, not {type(function).__name__}")
        if not isinstance(metric, str) or not metric:
            raise ValueError(f"metric must name one of evaluate's metrics, not {metric!r}")
        if not (isinstance(min_gain, int | float) and min_gain >= 0 and math.isfinite(min_gain)):
            raise ValueError(f"min_gain must be a number >= 0, not {min_gain!r}")
        self.name, self.train, self.evaluate, self.metric = name, train, evaluate, metric
        self.objectives: list[tuple[str, str, bool]] = []
        for objective in objectives:
            expr, label, blocking = (
                (objective, objective, True)
                if isinstance(objective, str)
                else (objective.expr, objective.label, objective.blocking)
            )
            parse(expr)  # an ExpressionError says where it is wrong
            self.objectives.append((expr, label, blocking))
        self.greater_is_better, self.min_gain = greater_is_better, float(min_gain)
        self.input_example = input_example
        self.log_model = log_model or (lambda model: default_log_model(model, self.input_example))
        self.load_model = load_model or self._load_from_store
        self.uri = tracking_uri(uri, home)
        self.home = _home(home)
        self.experiment = experiment or f"{name}-improve"

    @classmethod
    def from_workflow(
        cls,
        workflow: Workflow,
        *,
        train: Callable[[Any, Any], Any],
        evaluate: Callable[[Any], Mapping[str, Any]],
        **options: Any,
    ) -> Improver:
        """An improver configured by the spec: ``improve.model_name`` (default: the workflow's name),
        ``improve.metric`` (default: the first name of the first objective), ``greater_is_better``,
        ``min_gain``, the workflow's objectives and its tracker's URI; ``options`` override them."""
        from scanflow_core.expressions import parse

        spec = workflow.improve
        metric = spec.metric
        if metric is None and workflow.objectives:
            metric = parse(workflow.objectives[0].expr)._order[0]
        if metric is None and "metric" not in options:
            raise ImproveError(
                f"{workflow.file}: improve.metric is not set and the workflow has no objectives: "
                "say which metric a candidate must beat the champion on"
            )
        settings: dict[str, Any] = {
            "name": spec.model_name or workflow.name,
            "metric": metric,
            "objectives": list(workflow.objectives),
            "greater_is_better": spec.greater_is_better,
            "min_gain": spec.min_gain,
            "uri": workflow.tracker.uri,
        }
        return cls(train=train, evaluate=evaluate, **(settings | options))

    # ------------------------------------------------------------------------------------------ improve

    def improve(self, x: Any, y: Any) -> Decision:
        """Train a candidate on ``x``, ``y`` (the old training data with the new labels) and
        :meth:`consider` it."""
        if self.input_example is None and hasattr(x, "__getitem__"):
            self.input_example = x[:5]
        return self.consider(self.train(x, y))

    def consider(self, model: Any) -> Decision:
        """Judge a trained candidate, log and register it, and promote it when it earns it."""
        import mlflow

        metrics = _flat_metrics(self.evaluate(model), "evaluate(candidate)")
        if self.metric not in metrics:
            raise ImproveError(
                f"evaluate() returned no metric {self.metric!r} to compare "
                f"(it returned: {', '.join(metrics) or 'none'})"
            )
        judged = [_judge(expr, label, blocking, metrics) for expr, label, blocking in self.objectives]
        client = _client(self.uri)
        # Read the champion, judge, register and move the aliases as one: a promotion at the same
        # moment (another process of this home) waits, then compares with what this one promoted.
        with _promotion_lock(self.home, self.name), _mlflow_at(self.uri):
            champion = _alias(client, self.name, CHAMPION)
            champion_value, note = self._champion_value(champion)
            promoted, reason = self._decide(metrics[self.metric], champion_value, judged, note)
            with mlflow.start_run(
                experiment_id=self._experiment_id(client), run_name=f"{self.name}-candidate"
            ) as run:
                mlflow.log_metrics({_metric_key(k): v for k, v in metrics.items()})
                if champion_value is not None:
                    mlflow.log_metric(_metric_key(f"champion.{self.metric}"), champion_value)
                model_uri = self.log_model(model)
                tags = {
                    f"{TAG}decision": "promoted" if promoted else "rejected",
                    f"{TAG}reason": reason[:5000],
                    f"{TAG}metric": self.metric,
                    f"{TAG}metric_value": repr(metrics[self.metric]),
                }
                mlflow.set_tags(tags)
                version = str(mlflow.register_model(model_uri, self.name, tags=tags).version)
            if promoted:
                _promote(client, self.name, version, champion)
        return Decision(
            promoted=promoted,
            name=self.name,
            version=version,
            metric=self.metric,
            candidate=metrics[self.metric],
            champion=champion_value,
            champion_version=None if champion is None else str(champion.version),
            objectives=judged,
            reason=reason,
            metrics=metrics,
            run_id=run.info.run_id,
        )

    def _load_from_store(self, model_uri: str) -> Any:
        """:func:`default_load_model`, from this improver's store."""
        with _mlflow_at(self.uri):
            return default_load_model(model_uri)

    def _experiment_id(self, client: Any) -> str:
        """The candidates' experiment, made when missing; for a store reached directly (not a server),
        its artifacts live under Scanflow's home, not in ``./mlruns`` of the working directory."""
        from urllib.parse import urlsplit

        experiment = client.get_experiment_by_name(self.experiment)
        if experiment is None:
            location = None
            if urlsplit(self.uri).scheme not in ("http", "https", "databricks", "uc"):
                safe = "".join(c if c.isalnum() or c in "_.-" else "_" for c in self.experiment)
                location = (self.home / "mlartifacts" / safe).as_uri()
            try:
                return str(client.create_experiment(self.experiment, artifact_location=location))
            except Exception:  # another process made it first
                experiment = client.get_experiment_by_name(self.experiment)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return str(experiment.experiment_id)

    def _champion_value(self, champion: Any) -> tuple[float | None, str]:
        """The champion's metric, scored now by ``evaluate``; its recorded value if it cannot be loaded."""
        if champion is None:
            return None, ""
        uri = f"models:/{self.name}/{champion.version}"
        try:
            loaded = self.load_model(uri)
        except Exception as exc:  # a model from elsewhere, a flavour that does not load here
            recorded = (champion.tags or {}).get(f"{TAG}metric_value")
            if recorded is None or (champion.tags or {}).get(f"{TAG}metric") != self.metric:
                raise ImproveError(
                    f"cannot load the champion {uri} to score it ({type(exc).__name__}: {exc}), and it "
                    f"records no {self.metric!r}: pass load_model= to load it"
                ) from exc
            return float(recorded), f" (the champion's recorded value: it could not be loaded: {exc})"
        value = _flat_metrics(self.evaluate(loaded), "evaluate(champion)").get(self.metric)
        if value is None:
            raise ImproveError(f"evaluate() returned no metric {self.metric!r} for the champion {uri}")
        return value, ""

    def _decide(
        self, candidate: float, champion: float | None, judged: list[ObjectiveResult], note: str
    ) -> tuple[bool, str]:
        missed = [o for o in judged if not o.passed and o.blocking]
        if missed:
            return False, "objectives not met: " + "; ".join(str(o) for o in missed)
        if champion is None:
            return True, f"no champion yet; {self.metric} {candidate:.4g} and every objective met"
        gain = candidate - champion if self.greater_is_better else champion - candidate
        better = "higher" if self.greater_is_better else "lower"
        comparison = f"{self.metric} {candidate:.4g} vs the champion's {champion:.4g}{note}"
        if gain > self.min_gain and not math.isclose(gain, 0.0, abs_tol=1e-12):
            return True, f"{comparison}: {better} by {abs(gain):.4g}, and every objective met"
        wanted = f"more than {self.min_gain:g} " if self.min_gain else ""
        return False, f"{comparison}: not {wanted}{better}"


# ---------------------------------------------------------------------------------------------- registry


def rollback(name: str, *, uri: str | None = None, home: str | Path | None = None) -> str:
    """Make the ``previous`` version of ``name`` the ``champion`` again; returns that version.

    The rolled-back version is tagged ``scanflow.rolled_back``; ``previous`` moves to the version the
    restored one had replaced (or is removed), so that rollbacks can go further back.

    Raises:
        ImproveError: the model has no champion or no previous version.
    """
    client = _client(tracking_uri(uri, home))
    with _promotion_lock(_home(home), name):
        return _rollback(client, name)


def _rollback(client: Any, name: str) -> str:
    champion = _alias(client, name, CHAMPION)
    previous = _alias(client, name, PREVIOUS)
    if champion is None:
        raise ImproveError(f"registered model {name!r} has no {CHAMPION!r} version to roll back")
    if previous is None:
        raise ImproveError(
            f"registered model {name!r} has no {PREVIOUS!r} version to roll back to "
            f"(its champion, version {champion.version}, replaced none still kept)"
        )
    client.set_registered_model_alias(name, CHAMPION, previous.version)
    client.set_model_version_tag(name, champion.version, f"{TAG}rolled_back", "true")
    older = (previous.tags or {}).get(f"{TAG}replaced")
    if older and older != str(champion.version):
        client.set_registered_model_alias(name, PREVIOUS, older)
    else:
        client.delete_registered_model_alias(name, PREVIOUS)
    return str(previous.version)


@contextmanager
def _promotion_lock(home: Path, name: str) -> Iterator[None]:
    """One promotion or rollback of model ``name`` at a time among the processes sharing ``home`` (an
    exclusive ``flock`` on ``<home>/locks/model-<name>.lock``). MLflow's registry has no compare-and-set
    for aliases, so processes on other machines promoting the same model need a home in common."""
    import fcntl
    import hashlib
    import re

    folder = home / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:80] + "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    with open(folder / f"model-{safe}.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _promote(client: Any, name: str, version: str, champion: Any) -> None:
    if champion is not None:
        client.set_model_version_tag(name, version, f"{TAG}replaced", str(champion.version))
        client.set_registered_model_alias(name, PREVIOUS, champion.version)
    client.set_registered_model_alias(name, CHAMPION, version)


def _client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _alias(client: Any, name: str, alias: str) -> Any:
    """The version of ``name`` with ``alias``, or None (no such model, or no such alias)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


@contextmanager
def _mlflow_at(uri: str) -> Iterator[None]:
    """Point mlflow's fluent API at ``uri`` for a while, then put back exactly what was set before:
    ``mlflow.set_tracking_uri`` also sets ``$MLFLOW_TRACKING_URI``, which would outlive the call."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    environment = {name: os.environ.get(name) for name in names}
    tracking = getattr(tracking_utils, "_tracking_uri", None)
    registry = getattr(registry_utils, "_registry_uri", None)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(tracking)
        registry_utils._registry_uri = registry
        for name, value in environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def default_log_model(model: Any, input_example: Any = None) -> str:
    """Log a torch module (``mlflow.pytorch``) or a scikit-learn estimator (``mlflow.sklearn``) in the
    active run, with pinned requirements (no inference); returns the model's URI.

    With ``input_example`` (a few input rows) the signature is inferred from it and a torch module is
    saved as a traced graph (``pt2``, no pickle); without, torch falls back to MLflow's pickle format.
    """
    import mlflow
    import numpy as np

    module = type(model).__module__.split(".")[0]
    if module == "torch" or _is_torch_module(model):
        import torch

        example = None if input_example is None else np.ascontiguousarray(input_example, dtype=np.float32)
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            input_example=example,
            pip_requirements=[f"torch=={torch.__version__}", f"numpy=={np.__version__}"],
            serialization_format="pt2" if example is not None else "pickle",  # pt2 traces an example
        )
    elif module == "sklearn" or hasattr(model, "get_params"):
        import sklearn

        info = mlflow.sklearn.log_model(
            model,
            name="model",
            input_example=input_example,
            pip_requirements=[f"scikit-learn=={sklearn.__version__}"],
        )
    else:
        raise ImproveError(
            f"no default way to log a {type(model).__name__} as an MLflow model: pass log_model= "
            "(a callable that logs it in the active run and returns its URI)"
        )
    uri: str = info.model_uri
    return uri


def default_load_model(uri: str) -> Any:
    """Load ``uri`` with the flavour it was logged with (pytorch, sklearn), else as a pyfunc."""
    import mlflow

    flavors = mlflow.models.get_model_info(uri).flavors
    if "pytorch" in flavors:
        return mlflow.pytorch.load_model(uri)
    if "sklearn" in flavors:
        return mlflow.sklearn.load_model(uri)
    return mlflow.pyfunc.load_model(uri)


def _is_torch_module(model: Any) -> bool:
    return any(c.__module__.startswith("torch.nn") and c.__name__ == "Module" for c in type(model).__mro__)


def _flat_metrics(metrics: Mapping[str, Any], where: str) -> dict[str, float]:
    if not isinstance(metrics, Mapping):
        raise ImproveError(
            f"{where} must return a mapping of metric names to numbers, not {type(metrics).__name__}"
        )
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            flat.update({f"{key}.{k}": v for k, v in _flat_metrics(value, where).items()})
            continue
        if isinstance(value, bool) or (
            not isinstance(value, int | float) and not hasattr(value, "__float__")
        ):
            raise ImproveError(f"{where}: metric {key!r} is {value!r}, not a number")
        flat[str(key)] = float(value)
    return flat


def _judge(expr: str, label: str, blocking: bool, metrics: Mapping[str, float]) -> ObjectiveResult:
    from scanflow_core.expressions import mapping_resolver, parse

    outcome = parse(expr).check(mapping_resolver(metrics))
    return ObjectiveResult(label, expr, outcome.passed, blocking, dict(outcome.observed), outcome.reason)


def _metric_key(name: str) -> str:
    """MLflow metric names allow letters, digits, ``_ - . /`` and spaces."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)
