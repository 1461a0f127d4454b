"""Reading artifacts as data for checkers: CSV, TSV, Parquet, JSON lines, NumPy ``.npy`` / ``.npz``.

``.npz`` files hold arrays by name; the convention of the examples is ``X`` (features) and ``y``
(labels): :func:`load_frame` turns them into columns ``f0 … fN`` and ``label``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scanflow_core.errors import ScanflowError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["CheckOptionError", "load_arrays", "load_frame", "option", "resolve_artifact"]

LABEL_COLUMN = "label"


class CheckOptionError(ScanflowError):
    """A check's option is missing or wrong; the message names the check, the option and what was expected."""


def option(
    options: Mapping[str, Any], name: str, kind: type | tuple[type, ...], default: Any = ..., *, check: str
) -> Any:
    """``options[name]`` checked against ``kind`` (or ``default`` when absent and one is given)."""
    if name not in options:
        if default is ...:
            raise CheckOptionError(f"check {check!r} needs the option {name!r}")
        return default
    value = options[name]
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise CheckOptionError(f"check {check!r}: option {name!r} must be a number, not {value!r}")
    if not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise CheckOptionError(f"check {check!r}: option {name!r} must be {names}, not {value!r}")
    return value


def resolve_artifact(step_run: Any, name: str) -> Path:
    """Where an artifact named in a check's options lives: the step's own input or output of that
    name, an artifact of the run (``train``, ``prep.cleaned``), or a path relative to the spec."""
    if name in step_run.inputs:
        return Path(step_run.inputs[name])
    if name in step_run.outputs:
        return Path(step_run.outputs[name])
    if name in step_run.run.plan.artifacts:
        return Path(step_run.run.artifact_path(name))
    candidate = Path(step_run.step.directory) / name
    if candidate.exists():
        return candidate
    known = ", ".join(sorted(step_run.run.plan.artifacts))
    raise CheckOptionError(f"no artifact or file named {name!r} (artifacts of this run: {known})")


def load_frame(path: Path) -> pd.DataFrame:
    """A table from a data artifact (a folder: its first data file)."""
    import pandas as pd

    path = _data_file(path)
    suffix = path.suffix.lower()
    if suffix in (".csv", ".txt", ""):
        return pd.read_csv(path)
    if suffix == ".tsv":
        return pd.read_csv(path, sep="\t")
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if suffix in (".jsonl", ".ndjson"):
        return pd.read_json(path, lines=True)
    if suffix == ".json":
        return pd.read_json(path)
    if suffix in (".npz", ".npy"):
        features, labels = load_arrays(path)
        flat = features.reshape(len(features), -1)
        frame = pd.DataFrame(flat, columns=[f"f{i}" for i in range(flat.shape[1])])
        if labels is not None:
            frame[LABEL_COLUMN] = labels
        return frame
    raise ScanflowError(
        f"cannot read {path} as data: expected .csv, .tsv, .parquet, .jsonl, .json, .npz or .npy"
    )


def load_arrays(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Features and labels (or ``None``): ``.npz`` (``X``, ``y``), ``.npy``, or a table with ``label``."""
    import numpy as np

    path = _data_file(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False), None
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            keys = list(data.keys())
            x_key = "X" if "X" in keys else ("x" if "x" in keys else keys[0])
            y_key = next((k for k in ("y", "labels", "label") if k in keys), None)
            return data[x_key], (data[y_key] if y_key else None)
    frame = load_frame(path)
    labels = frame.pop(LABEL_COLUMN).to_numpy() if LABEL_COLUMN in frame.columns else None
    return frame.to_numpy(), labels


def _data_file(path: Path) -> Path:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not files:
            raise ScanflowError(f"{path} holds no data file")
        return files[0]
    return path
