"""What ``/predict`` reads and answers: request bodies checked against the model's signature, and
predictions made JSON-ready.

A request body is a JSON object with one of these keys (MLflow's and TF Serving's formats):

``inputs`` / ``instances``
    a list of rows (``[[0.1, 0.2, ...], ...]``); for a model whose signature names columns, a row may
    also be an object (``{"pixel0": 0.1, ...}``).
``dataframe_records``
    a list of objects, one per row.
``dataframe_split``
    ``{"columns": [...], "data": [[...], ...]}``.

Anything else is a :class:`RequestError` that names the field and says what was expected; the app
answers it as a 4xx JSON error.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "V2_NAMES",
    "V2_TYPES",
    "InputSpec",
    "RequestError",
    "digest_input",
    "dumps",
    "loads",
    "split_output",
    "to_jsonable",
]

_orjson: Any
try:  # orjson is several times faster at both ends; the stdlib is the fallback
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson is in the serving extra
    _orjson = None

FLOAT32 = np.dtype(np.float32)
BODY_KEYS = ("inputs", "instances", "dataframe_records", "dataframe_split")


class RequestError(Exception):
    """A request the server cannot answer with a prediction: ``status`` (4xx), what is wrong and what
    was expected."""

    def __init__(self, status: int, message: str, expected: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.expected = expected

    def to_dict(self) -> dict[str, Any]:
        answer: dict[str, Any] = {"error": self.message}
        if self.expected:
            answer["expected"] = self.expected
        return answer


def loads(body: bytes) -> Any:
    """Parse a JSON body; a :class:`RequestError` (400) when it is not JSON."""
    if not body.strip():
        raise RequestError(400, "the request body is empty", 'a JSON object such as {"inputs": [[...]]}')
    try:
        return _orjson.loads(body) if _orjson is not None else json.loads(body)
    except ValueError as exc:
        raise RequestError(400, f"the request body is not valid JSON: {str(exc).splitlines()[0]}") from None


def _default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: Any) -> bytes:
    """Compact JSON bytes (NumPy arrays and scalars included; NaN and infinities become ``null``)."""
    if _orjson is not None:
        return bytes(_orjson.dumps(value, option=_orjson.OPT_SERIALIZE_NUMPY, default=_default))
    return json.dumps(_finite(value), separators=(",", ":"), default=_default).encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class InputSpec:
    """What the model takes, from its MLflow signature.

    ``kind`` is ``tensor`` (one array: ``dtype`` and ``shape``, ``-1`` for any size), ``columns``
    (a table: ``columns`` and their ``column_types``) or ``any`` (no signature: numbers of any shape,
    as float32).
    """

    kind: str
    dtype: Any = FLOAT32
    shape: tuple[int, ...] | None = None
    columns: tuple[str, ...] = ()
    column_types: tuple[str, ...] = field(default=())

    @classmethod
    def of(cls, metadata: Any) -> InputSpec:
        """The spec of a pyfunc model's ``metadata`` (``mlflow.models.Model``)."""
        schema = metadata.get_input_schema() if metadata is not None else None
        if schema is None:
            return cls("any")
        if schema.is_tensor_spec():
            if len(schema.inputs) != 1:
                names = ", ".join(str(i.name) for i in schema.inputs)
                raise ValueError(f"the model takes {len(schema.inputs)} tensors ({names}); one is served")
            tensor = schema.inputs[0]
            return cls("tensor", dtype=np.dtype(tensor.type), shape=tuple(int(d) for d in tensor.shape))
        columns = tuple(str(n) for n in schema.input_names())
        types = tuple(str(getattr(c.type, "name", c.type)) for c in schema.inputs)
        return cls("columns", columns=columns, column_types=types)

    def describe(self) -> str:
        """The expected input, in words (what an error about a bad request says was expected)."""
        if self.kind == "tensor" and self.shape is not None:
            dims = ", ".join(
                "n" if i == 0 and d == -1 else ("any" if d == -1 else str(d))
                for i, d in enumerate(self.shape)
            )
            inner = self.shape[1:]
            if len(inner) == 1 and inner[0] != -1:
                rows = f"a list of rows of {inner[0]} numbers"
            else:
                rows = "a list of rows"
            return f'{{"inputs": {rows}}} (shape [{dims}], {self.dtype.name})'
        if self.kind == "columns":
            shown = ", ".join(self.columns[:8]) + (", ..." if len(self.columns) > 8 else "")
            return f'{{"inputs": a list of rows of {len(self.columns)} values ({shown}), or objects}}'
        return '{"inputs": a list of rows of numbers}'

    # ---------------------------------------------------------------------------------------- parsing

    def parse(self, payload: Any, max_rows: int) -> Any:
        """The model input in a request body: an array (``tensor``, ``any``) or a DataFrame (``columns``).

        Raises:
            RequestError: the body is not an object, has none of the known keys, or its rows do not fit
                the signature (wrong shape, wrong type, empty, more than ``max_rows`` rows).
        """
        if not isinstance(payload, dict):
            raise RequestError(
                400, f"the body is a JSON {_json_type(payload)}, not an object", self.describe()
            )
        keys = [k for k in BODY_KEYS if k in payload]
        if len(keys) != 1:
            found = ", ".join(map(repr, list(payload)[:5])) or "none"
            what = "more than one of" if keys else "none of"
            raise RequestError(
                400, f"the body has {what} the keys {', '.join(BODY_KEYS)} (it has {found})", self.describe()
            )
        key = keys[0]
        value = payload[key]
        if key == "dataframe_split":
            return self._split(value, max_rows)
        if not isinstance(value, list):
            raise RequestError(422, f"'{key}' is a JSON {_json_type(value)}, not a list", self.describe())
        if not value:
            raise RequestError(422, f"'{key}' is empty: there is nothing to predict", self.describe())
        if len(value) > max_rows:
            raise RequestError(413, f"'{key}' has {len(value)} rows; this server takes at most {max_rows}")
        if self.kind == "columns" or isinstance(value[0], dict):
            return self._frame(key, value)
        return self._array(key, value)

    def _array(self, key: str, rows: list[Any]) -> np.ndarray:
        try:
            raw = np.array(rows)
        except (ValueError, TypeError):
            raise RequestError(422, f"'{key}': {_ragged(rows)}", self.describe()) from None
        if raw.dtype.kind not in "biuf":
            raise RequestError(422, f"'{key}': {_first_non_number(rows)}", self.describe())
        return self.check_array(key, raw)

    def check_array(self, key: str, raw: np.ndarray) -> np.ndarray:
        """``raw`` (numbers) checked against the signature's shape and cast to its dtype."""
        dtype = self.dtype
        if (dtype.kind in "iu" and raw.dtype.kind == "f") and (
            not np.all(np.isfinite(raw)) or not np.all(raw == np.round(raw))
        ):
            raise RequestError(422, f"'{key}': the model takes whole numbers ({dtype.name})", self.describe())
        if self.shape is not None:
            if raw.ndim != len(self.shape) or any(
                want != -1 and got != want for got, want in zip(raw.shape, self.shape, strict=True)
            ):
                got = "[" + ", ".join(map(str, raw.shape)) + "]"
                raise RequestError(422, f"'{key}' has shape {got}", self.describe())
        elif raw.ndim < 1 or raw.ndim > 8:
            raise RequestError(422, f"'{key}' has {raw.ndim} dimensions", self.describe())
        return np.ascontiguousarray(raw, dtype=dtype)

    def _frame(self, key: str, rows: list[Any]) -> Any:
        import pandas as pd

        if all(isinstance(r, dict) for r in rows):
            frame = pd.DataFrame.from_records(rows)
        elif all(isinstance(r, list) for r in rows):
            if self.columns and any(len(r) != len(self.columns) for r in rows):
                bad = next(i for i, r in enumerate(rows) if len(r) != len(self.columns))
                raise RequestError(
                    422,
                    f"'{key}'[{bad}] has {len(rows[bad])} values, not {len(self.columns)}",
                    self.describe(),
                )
            frame = pd.DataFrame(rows, columns=list(self.columns) or None)
        else:
            raise RequestError(
                422, f"'{key}' mixes rows of different kinds (lists and objects)", self.describe()
            )
        return self._check_columns(key, frame)

    def _split(self, value: Any, max_rows: int) -> Any:
        import pandas as pd

        if not isinstance(value, dict) or not isinstance(value.get("data"), list):
            raise RequestError(
                422,
                "'dataframe_split' must be an object with 'data' (and 'columns')",
                '{"dataframe_split": {"columns": [...], "data": [[...], ...]}}',
            )
        data, columns = value["data"], value.get("columns")
        if not data:
            raise RequestError(422, "'dataframe_split.data' is empty: there is nothing to predict")
        if len(data) > max_rows:
            raise RequestError(
                413, f"'dataframe_split.data' has {len(data)} rows; at most {max_rows} are taken"
            )
        if self.kind != "columns" and columns is None:
            return self._array("dataframe_split.data", data)
        try:
            frame = pd.DataFrame(data, columns=columns)
        except (ValueError, TypeError) as exc:
            raise RequestError(422, f"'dataframe_split' is not a table: {exc}") from None
        return self._check_columns("dataframe_split", frame)

    def _check_columns(self, key: str, frame: Any) -> Any:
        if self.columns:
            missing = [c for c in self.columns if c not in frame.columns]
            if missing:
                shown = ", ".join(missing[:8]) + (", ..." if len(missing) > 8 else "")
                raise RequestError(422, f"'{key}' lacks the columns {shown}", self.describe())
            frame = frame[list(self.columns)]
        elif self.kind == "tensor":
            return self._array(key, frame.to_numpy().tolist())
        return frame

    def parse_v2(self, payload: Any, max_rows: int) -> Any:
        """The model input of a KServe v2 ``infer`` request (``{"inputs": [{"name", "shape",
        "datatype", "data"}]}``): one tensor, or one named column per input for a table model."""
        if (
            not isinstance(payload, dict)
            or not isinstance(payload.get("inputs"), list)
            or not payload["inputs"]
        ):
            raise RequestError(
                400,
                "a v2 infer request is an object with a non-empty list 'inputs'",
                '{"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [...]}]}',
            )
        tensors: dict[str, np.ndarray] = {}
        for i, item in enumerate(payload["inputs"]):
            where = f"inputs[{i}]"
            if not isinstance(item, dict) or not {"name", "shape", "datatype", "data"} <= set(item):
                raise RequestError(422, f"'{where}' needs 'name', 'shape', 'datatype' and 'data'")
            dtype = V2_TYPES.get(str(item["datatype"]).upper())
            if dtype is None:
                raise RequestError(
                    422, f"'{where}.datatype' {item['datatype']!r} is not served", ", ".join(V2_TYPES)
                )
            shape = item["shape"]
            if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
                raise RequestError(422, f"'{where}.shape' must be a list of sizes")
            try:
                array: np.ndarray = np.array(item["data"], dtype=dtype).reshape(shape)
            except (ValueError, TypeError) as exc:
                raise RequestError(
                    422,
                    f"'{where}.data' does not fit shape {shape} of {item['datatype']}: "
                    f"{str(exc).splitlines()[0]}",
                ) from None
            if array.ndim == 0 or len(array) == 0:
                raise RequestError(422, f"'{where}' is empty: there is nothing to predict")
            if len(array) > max_rows:
                raise RequestError(
                    413, f"'{where}' has {len(array)} rows; this server takes at most {max_rows}"
                )
            tensors[str(item["name"])] = array
        if self.kind == "columns":
            import pandas as pd

            frame = pd.DataFrame(
                {
                    name: a.reshape(len(a)) if a.ndim == 2 and a.shape[1] == 1 else list(a)
                    for name, a in tensors.items()
                }
            )
            return self._check_columns("inputs", frame)
        if len(tensors) != 1:
            raise RequestError(422, f"this model takes one input tensor, not {len(tensors)}", self.describe())
        return self.check_array("inputs[0].data", next(iter(tensors.values())))


V2_TYPES = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
V2_NAMES = {np.dtype(v).str: k for k, v in V2_TYPES.items()}


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _ragged(rows: list[Any]) -> str:
    lengths = sorted({len(r) if isinstance(r, list) else -1 for r in rows})
    if -1 in lengths and len(lengths) > 1:
        return "mixes rows and single values"
    return f"rows have different lengths ({', '.join(map(str, lengths[:5]))})"


def _first_non_number(rows: list[Any]) -> str:
    stack: list[tuple[str, Any]] = [(f"[{i}]", r) for i, r in enumerate(rows)]
    while stack:
        where, value = stack.pop(0)
        if isinstance(value, list):
            stack[:0] = [(f"{where}[{i}]", v) for i, v in enumerate(value)]
        elif isinstance(value, bool) or not isinstance(value, int | float):
            return f"the value at {where} is a JSON {_json_type(value)} ({str(value)[:40]!r}), not a number"
    return "the values are not all numbers"


# ---------------------------------------------------------------------------------------------- outputs


def digest_input(model_input: Any) -> str:
    """``sha256:<hex>`` of the input as the model saw it: an array's bytes (C order, its dtype), a
    table's CSV text."""
    if isinstance(model_input, np.ndarray):
        data = np.ascontiguousarray(model_input).tobytes()
    else:
        data = model_input.to_csv(index=False).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()


def to_jsonable(output: Any) -> Any:
    """A model's output as JSON values: arrays as (nested) lists, a DataFrame as a list of records,
    a dict of outputs as a dict of lists (a dict with one output: that output)."""
    if isinstance(output, dict):
        if len(output) == 1:
            return to_jsonable(next(iter(output.values())))
        return {str(k): to_jsonable(v) for k, v in output.items()}
    if isinstance(output, np.ndarray):
        return output
    if hasattr(output, "to_dict") and hasattr(output, "columns"):
        return output.to_dict(orient="records")
    if hasattr(output, "to_numpy"):  # a pandas Series
        return output.to_numpy()
    if isinstance(output, tuple):
        return list(output)
    return output


def split_output(output: Any, sizes: list[int]) -> list[Any] | None:
    """The output of a batch of requests, cut back into one output per request (``sizes`` rows each);
    ``None`` when the output does not have one row per input row."""
    total = sum(sizes)
    bounds = np.cumsum([0, *sizes])
    pieces = list(itertools.pairwise(bounds))
    if isinstance(output, dict):
        parts = {k: split_output(v, sizes) for k, v in output.items()}
        if any(p is None for p in parts.values()):
            return None
        return [{k: p[i] for k, p in parts.items() if p is not None} for i in range(len(sizes))]
    if isinstance(output, np.ndarray) and output.ndim >= 1 and len(output) == total:
        return [output[a:b] for a, b in pieces]
    if hasattr(output, "iloc") and len(output) == total:
        return [output.iloc[a:b] for a, b in pieces]
    if isinstance(output, list) and len(output) == total:
        return [output[a:b] for a, b in pieces]
    return None
