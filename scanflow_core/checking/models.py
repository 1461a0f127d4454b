"""Loading a trained model for the model checks (``importance``, ``robustness``).

A check names the model artifact (``model:``) and a **loader** (``loader: module:function``,
resolved beside the spec like a step's ``call:``). The loader contract:

``loader(path: Path) -> model``, where ``model`` is any of

- an object with ``.predict(X) -> labels`` (a scikit-learn estimator, a :class:`LoadedModel`);
  if it also has ``.module`` (a ``torch.nn.Module`` mapping float inputs to class logits), the
  gradient-based checks (``robustness``) can use it;
- a ``torch.nn.Module`` mapping a float batch to class logits (labels are the arg-max);
- a plain function ``X -> labels``.

:func:`as_model` turns each of these into a :class:`LoadedModel`. The built-in loader
:func:`torch_mlp` (the default) reads what the digits example's ``train`` step saves with
``torch.save``: ``{"config": {"in_features": 64, "hidden": 64, "classes": 10}, "state_dict": ...}``,
the weights of ``nn.Sequential(Linear(in, hidden), ReLU(), Linear(hidden, classes))``. ``hidden`` may
also be a list of widths, one ``Linear`` + ``ReLU`` each (state-dict keys ``0``, ``2``, ``4``, …).
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scanflow_core.callables import load_callable
from scanflow_core.checking.data import CheckOptionError, load_arrays, load_frame, option, resolve_artifact

__all__ = [
    "DEFAULT_LOADER",
    "LoadedModel",
    "as_model",
    "build_mlp",
    "labelled_data",
    "load_model",
    "model_and_data",
    "module_model",
    "torch_mlp",
]

DEFAULT_LOADER = "scanflow_core.checking.models:torch_mlp"


@dataclass(frozen=True)
class LoadedModel:
    """A model as the checks use it: ``predict(X) -> labels``; ``module`` when it is a torch model."""

    predict: Callable[[np.ndarray], np.ndarray]
    module: Any = None  # a torch.nn.Module, or None


def build_mlp(config: Mapping[str, Any]) -> Any:
    """The ``nn.Sequential`` MLP that ``config`` (``in_features``, ``hidden``, ``classes``) describes."""
    from torch import nn

    try:
        hidden = config["hidden"]
        widths = [int(config["in_features"]), *([hidden] if isinstance(hidden, int) else hidden)]
        layers: list[nn.Module] = []
        for width_in, width_out in itertools.pairwise(widths):
            layers += [nn.Linear(width_in, int(width_out)), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], int(config["classes"])))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            f"an MLP config needs in_features, hidden (a width or a list) and classes, not {dict(config)!r}"
        ) from exc
    return nn.Sequential(*layers)


def torch_mlp(path: Path) -> LoadedModel:
    """Rebuild the MLP saved as ``{"config": ..., "state_dict": ...}`` (the digits example's format)."""
    import torch

    saved = torch.load(path, weights_only=True, map_location="cpu")
    if not isinstance(saved, Mapping) or not {"config", "state_dict"} <= set(saved):
        raise ValueError(f"{path.name}: expected a dict with 'config' and 'state_dict' saved by torch.save")
    net = build_mlp(saved["config"])
    net.load_state_dict(saved["state_dict"])
    return module_model(net.eval())


def module_model(module: Any) -> LoadedModel:
    """A torch classifier (float batch → logits) as a :class:`LoadedModel`: labels are the arg-max."""
    import torch

    module.eval()

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            logits = module(torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32)))
        labels: np.ndarray = logits.argmax(dim=1).numpy()
        return labels

    return LoadedModel(predict, module)


def as_model(value: Any) -> LoadedModel:
    """What a loader returned, as a :class:`LoadedModel` (see the module's contract)."""
    if isinstance(value, LoadedModel):
        return value
    module = getattr(value, "module", None)
    if hasattr(value, "predict") and callable(value.predict):
        return LoadedModel(lambda x: np.asarray(value.predict(x)), module if _is_module(module) else None)
    if _is_module(value):
        return module_model(value)
    if callable(value):
        return LoadedModel(lambda x: np.asarray(value(x)))
    raise TypeError(
        f"a model loader returned {type(value).__name__}: expected an object with .predict(X), "
        "a torch.nn.Module or a function X -> labels"
    )


def _is_module(value: Any) -> bool:
    torch = sys.modules.get("torch")  # a torch module exists only if torch was imported already
    return torch is not None and isinstance(value, torch.nn.Module)


def load_model(step_run: Any, check: Any, path: Path) -> LoadedModel:
    """The model at ``path``, loaded by the check's ``loader`` option (default :func:`torch_mlp`)."""
    ref = option(check.options, "loader", str, DEFAULT_LOADER, check=check.label)
    if ":" not in ref:
        raise CheckOptionError(
            f"check {check.label!r}: option 'loader' must be 'module:function', not {ref!r}"
        )
    try:
        loader = load_callable(ref, [Path(step_run.step.directory)])
    except (ImportError, TypeError) as exc:
        raise CheckOptionError(f"check {check.label!r}: option 'loader': {exc}") from exc
    return as_model(loader(path))


def model_and_data(
    step_run: Any, check: Any, target: str, path: Path
) -> tuple[LoadedModel, np.ndarray, np.ndarray, list[str]]:
    """The model and the labelled data a model check works on, with the feature names.

    The options ``model`` and ``data`` name artifacts (or files beside the spec); the one left out
    is the check's target (``on: model`` with ``data: eval``, or ``on: eval`` with ``model: model``).
    Data is an ``.npz`` with ``X`` and ``y`` or a table with a ``label`` column (option ``label``).
    """
    options = check.options
    if "model" not in options and "data" not in options:
        raise CheckOptionError(
            f"check {check.label!r} needs the option 'model' (the model artifact) or 'data' "
            f"(the labelled data); the other one is the target {target!r}"
        )
    model_name = option(options, "model", str, None, check=check.label)
    data_name = option(options, "data", str, None, check=check.label)
    model_path = resolve_artifact(step_run, model_name) if model_name else path
    data_path = resolve_artifact(step_run, data_name) if data_name else path
    x, y, names = labelled_data(data_path, option(options, "label", str, "label", check=check.label))
    if y is None:
        raise CheckOptionError(
            f"check {check.label!r}: the data {data_path.name} has no labels (an .npz needs 'y', a table "
            "the column named by option 'label')"
        )
    return load_model(step_run, check, model_path), x, y, names


def labelled_data(path: Path, label: str = "label") -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Features (2-D), labels or ``None``, and feature names (``f0 …`` for arrays, else columns)."""
    if path.suffix.lower() in (".npz", ".npy"):
        x, y = load_arrays(path)
        x = x.reshape(len(x), -1)
        return x, y, [f"f{i}" for i in range(x.shape[1])]
    frame = load_frame(path)
    y = frame.pop(label).to_numpy() if label in frame.columns else None
    text = [str(c) for c, kind in frame.dtypes.items() if kind.kind not in "biuf"]
    if text:
        raise CheckOptionError(f"{path.name}: the model checks need numeric features; not numeric: {text}")
    return frame.to_numpy(dtype=np.float32), y, [str(c) for c in frame.columns]
