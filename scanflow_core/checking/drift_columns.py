"""Reference and batch data as the drift detector reads them (:mod:`scanflow_core.checking.drift`).

:class:`~scanflow_core.checking.drift.DriftDetector` accepts a 2-D array or a pandas DataFrame. These
helpers turn either into what its tests need: the column names, the numeric columns as one float matrix
(``NaN`` for missing values) and each categorical column as an array of string levels (a missing value
is the level :data:`MISSING_LEVEL`); they also read labels and count levels. A DataFrame's ``object``,
``category``, ``bool`` and ``string`` columns are categorical, and so are the columns named in
``categorical``; an array of numbers or booleans is all numeric (columns ``f0``, ``f1``, ...), any
other array all categorical. pandas is imported only when a DataFrame (or a non-numeric array) is given.

Examples:
    >>> import numpy as np
    >>> names, numeric, categories = _columns(np.arange(6.0).reshape(3, 2), ())
    >>> names, numeric.shape, categories
    (['f0', 'f1'], (3, 2), {})
    >>> _counts(np.array(["b", "a", "b"], dtype=object))
    {'a': 1, 'b': 2}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

MISSING_LEVEL = "<NA>"


def _is_frame(data: Any) -> bool:
    """Whether ``data`` looks like a pandas DataFrame (duck-typed: pandas is not imported)."""
    return hasattr(data, "columns") and hasattr(data, "dtypes")


def _columns(
    data: Any, categorical: Sequence[str]
) -> tuple[list[str], np.ndarray | None, dict[str, np.ndarray]]:
    """Column names, the numeric columns as a float matrix, and each categorical column's levels."""
    if not _is_frame(data):
        array = np.asarray(data)
        array = array.reshape(len(array), -1) if array.ndim != 2 else array
        if not np.issubdtype(array.dtype, np.number) and array.dtype != np.bool_:
            import pandas as pd

            return _columns(
                pd.DataFrame(array, columns=[f"f{i}" for i in range(array.shape[1])]), categorical
            )
        return [f"f{i}" for i in range(array.shape[1])], array.astype(np.float64), {}
    import pandas as pd

    names = [str(c) for c in data.columns]
    if len(set(names)) != len(names):
        raise ValueError("the reference has duplicate column names")
    unknown = sorted(set(categorical) - set(names))
    if unknown:
        raise ValueError(f"categorical columns {unknown} are not in the reference")
    kinds = {
        name: name in categorical
        or not pd.api.types.is_numeric_dtype(data[column])
        or pd.api.types.is_bool_dtype(data[column])
        for name, column in zip(names, data.columns, strict=True)
    }
    numeric_cols = [c for c, n in zip(data.columns, names, strict=True) if not kinds[n]]
    numeric = data[numeric_cols].to_numpy(dtype=np.float64, na_value=np.nan) if numeric_cols else None
    categories = {
        n: _levels(data[c].to_numpy()) for c, n in zip(data.columns, names, strict=True) if kinds[n]
    }
    return names, numeric, categories


def _levels(values: np.ndarray) -> np.ndarray:
    """A categorical column as string levels, a missing value as :data:`MISSING_LEVEL`."""
    import pandas as pd

    return np.array([MISSING_LEVEL if pd.isna(v) else str(v) for v in values], dtype=object)


def _labels(labels: Any, rows: int) -> np.ndarray:
    """The labels as string levels, one per row (``ValueError`` when their number is not ``rows``)."""
    values = np.asarray(labels).reshape(-1)
    if len(values) != rows:
        raise ValueError(f"got {len(values)} labels for {rows} rows")
    return np.array([str(v.item() if hasattr(v, "item") else v) for v in values], dtype=object)


def _counts(levels: np.ndarray) -> dict[str, int]:
    """How often each level occurs, by level."""
    found, counts = np.unique(levels, return_counts=True)
    return {str(level): int(n) for level, n in zip(found, counts, strict=True)}


def _shares(counts: Mapping[str, int]) -> dict[str, float]:
    """Each level's share of the counts, rounded to 4 places, by level in sorted order."""
    total = sum(counts.values())
    return {k: round(v / total, 4) for k, v in sorted(counts.items())}
