"""``use: great_expectations``: validate a table with a Great Expectations 1.x suite.

The target is read with pandas (CSV, TSV, Parquet, JSON lines, ``.npz`` …, see
:func:`~scanflow_core.checking.data.load_frame`) and validated in an ephemeral GE context; a
DataFrame in memory is validated with :func:`validate_frame`.

Options (one of ``suite`` / ``expectations``):
    suite: a suite file (JSON or YAML, relative to the spec), or a suite inline (a mapping).
        GE's own suite JSON (``{"name": ..., "expectations": [{"type": ..., "kwargs": {...}}]}``)
        is read as is; so is the older ``expectation_type`` / ``expectation_suite_name`` form.
    expectations: the expectations inline: ``[{type: expect_column_values_to_not_be_null,
        kwargs: {column: a}}, ...]``; without ``kwargs``, the keys besides ``type`` and ``meta``
        are the kwargs (``{type: expect_column_to_exist, column: a}``).
    result_format: GE's result format (``BASIC``, ``SUMMARY`` (default), ``COMPLETE``).

The result passes when every expectation does. Metrics: ``evaluated``, ``successful``,
``unsuccessful``, ``success_percent``; details: each failed expectation (type, column, kwargs,
what was observed, GE's error when it could not run), the suite and where it came from, and the
full GE validation result written to ``<step>/checks/expectations-<suite>-<target>.json``
(listed in ``artifacts``). An expectation GE does not know, or whose kwargs it rejects, fails the
result with its index, type and suite named.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scanflow_core.checking.data import CheckOptionError, load_frame, option
from scanflow_core.records import CheckResult

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Suite", "check", "read_suite", "suite_from_data", "validate_frame"]

CHECKER = "great_expectations"
RESULT_FORMATS = ("BOOLEAN_ONLY", "BASIC", "SUMMARY", "COMPLETE")
#: How many failed expectations the one-line summary names (details hold them all).
SUMMARY_FAILURES = 3
#: Where each expectation's index in the suite travels through GE (in its ``meta``).
INDEX_KEY = "scanflow_index"

# One validation at a time: GE resolves a suite without a context through the "current" one, a
# global, so two threads validating at once could cross their contexts.
_GE_LOCK = threading.Lock()


@dataclass(frozen=True)
class Suite:
    """A suite as Scanflow reads it: GE's own JSON, with where it came from (for messages)."""

    name: str
    expectations: list[dict[str, Any]]
    source: str = "inline"
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """GE's suite JSON: ``name``, ``expectations`` (``type``, ``kwargs``, ``meta``), ``meta``."""
        return {"name": self.name, "expectations": self.expectations, "meta": self.meta}


def read_suite(source: str | Path | Mapping[str, Any] | Sequence[Any], *, base: Path | None = None) -> Suite:
    """A suite from a file (JSON or YAML), a mapping (GE's suite JSON) or a list of expectations.

    Raises:
        CheckOptionError: the file is missing or unreadable, or the suite has no expectation list.
    """
    if isinstance(source, str | Path):
        path = Path(source)
        if base is not None and not path.is_absolute():
            path = base / path
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CheckOptionError(f"cannot read the suite {path}: {exc.strerror or exc}") from None
        data = _parse(text, path)
        return _suite(data, str(source), default_name=path.stem)
    return _suite(source, "inline", default_name="inline")


def _parse(text: str, path: Path) -> Any:
    try:
        return json.loads(text)
    except ValueError as json_error:
        if path.suffix.lower() == ".json":
            raise CheckOptionError(f"the suite {path} is not valid JSON: {json_error}") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CheckOptionError(f"the suite {path} is neither JSON nor YAML: {exc}") from None


def _suite(data: Any, source: str, *, default_name: str) -> Suite:
    if isinstance(data, Sequence) and not isinstance(data, str):
        data = {"expectations": data}
    if not isinstance(data, Mapping) or not isinstance(data.get("expectations"), list):
        raise CheckOptionError(
            f"suite {source}: expected a mapping with a list 'expectations' (GE's suite JSON), "
            f"or a list of expectations"
        )
    if not data["expectations"]:
        raise CheckOptionError(f"suite {source} has no expectations: it would check nothing")
    name = data.get("name") or data.get("expectation_suite_name") or default_name
    expectations = [_expectation(item) for item in data["expectations"]]
    meta = data.get("meta")
    return Suite(str(name), expectations, source, dict(meta) if isinstance(meta, Mapping) else {})


def _expectation(item: Any) -> dict[str, Any]:
    """``{"type", "kwargs", "meta"}`` from GE's form, the 0.x form or the flat inline form."""
    if not isinstance(item, Mapping):
        return {"type": None, "kwargs": {}, "meta": {}, "raw": item}
    kind = item.get("type", item.get("expectation_type"))
    if "kwargs" in item:
        kwargs = item["kwargs"]
    else:
        kwargs = {k: v for k, v in item.items() if k not in ("type", "expectation_type", "meta", "id")}
    entry: dict[str, Any] = {"type": kind, "kwargs": kwargs, "meta": item.get("meta") or {}}
    if item.get("severity"):
        entry["severity"] = item["severity"]
    return entry


def suite_from_options(options: Mapping[str, Any], base: Path, label: str) -> Suite:
    """The suite a check's options name (``suite:`` file or mapping, or ``expectations:``)."""
    given = [k for k in ("suite", "expectations") if k in options]
    if len(given) != 1:
        raise CheckOptionError(
            f"check {label!r} needs one of the options 'suite' (a suite file or mapping) or "
            f"'expectations' (a list), not {' and '.join(given) or 'neither'}"
        )
    if given[0] == "suite":
        suite = option(options, "suite", (str, dict), check=label)
        return read_suite(suite, base=base)
    expectations = option(options, "expectations", list, check=label)
    return read_suite(expectations)


# ------------------------------------------------------------------------------------------ the check


def check(step_run: Any, check: Any, target: str, path: Path) -> CheckResult:
    label = check.label
    options = check.options
    suite = suite_from_options(options, Path(step_run.step.directory), label)
    result_format = str(option(options, "result_format", str, "SUMMARY", check=label)).upper()
    if result_format not in RESULT_FORMATS:
        raise CheckOptionError(
            f"check {label!r}: option 'result_format' must be one of {RESULT_FORMATS}, not {result_format!r}"
        )
    frame = load_frame(path)
    result, full = _validate(frame, suite, target, result_format)
    report = Path(step_run.directory) / "checks" / f"expectations-{_slug(suite.name)}-{_slug(target)}.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(full, indent=2, default=str), encoding="utf-8")
    result.details["artifacts"] = [str(report)]
    return result


def validate_frame(
    frame: pd.DataFrame, suite: Suite | Mapping[str, Any] | Sequence[Any], *, target: str = "data"
) -> CheckResult:
    """Validate a DataFrame with a suite (or GE's suite JSON, or a list of expectations)."""
    if not isinstance(suite, Suite):
        suite = read_suite(suite)
    result, _ = _validate(frame, suite, target, "SUMMARY")
    return result


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "suite"


def _validate(
    frame: pd.DataFrame, suite: Suite, target: str, result_format: str
) -> tuple[CheckResult, dict[str, Any]]:
    """Run ``suite`` on ``frame``; the result and GE's full validation result (as JSON)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    invalid: list[dict[str, Any]] = []
    valid: list[Any] = []
    for index, entry in enumerate(suite.expectations):
        try:
            if not isinstance(entry.get("type"), str):
                raise ValueError(f"an expectation needs a 'type', not {entry.get('raw', entry)!r}")
            if not isinstance(entry["kwargs"], Mapping):
                raise ValueError(f"'kwargs' must be a mapping, not {entry['kwargs']!r}")
            # GE's results do not keep the suite's order: the index in ``meta`` finds each one's own.
            meta = {**entry["meta"], INDEX_KEY: index}
            config = ExpectationConfiguration(type=entry["type"], kwargs=dict(entry["kwargs"]), meta=meta)
            valid.append(config.to_domain_obj())
        except Exception as exc:  # GE raises its own errors and pydantic's for bad kwargs
            invalid.append(
                {
                    "index": index,
                    "type": entry.get("type"),
                    "column": _column(entry.get("kwargs")),
                    "kwargs": entry.get("kwargs"),
                    "error": _invalid_reason(exc, entry.get("type")),
                }
            )

    with _GE_LOCK:
        config = DataContextConfig(
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
            store_backend_defaults=InMemoryStoreBackendDefaults(),
        )
        context = gx.get_context(mode="ephemeral", project_config=config)
        asset = context.data_sources.add_pandas("scanflow").add_dataframe_asset(name=target)
        batch = asset.add_batch_definition_whole_dataframe("all").get_batch(
            batch_parameters={"dataframe": frame}
        )
        ge_suite = gx.ExpectationSuite(name=suite.name, expectations=valid)
        validation = batch.validate(ge_suite, result_format=result_format)
        full: dict[str, Any] = validation.to_json_dict()

    failures = list(invalid)
    for outcome in full["results"]:
        if not outcome["success"]:
            failures.append(_failure(outcome))
    failures.sort(key=lambda f: f["index"])

    evaluated = len(suite.expectations)
    unsuccessful = len(failures)
    successful = evaluated - unsuccessful
    metrics = {
        "evaluated": float(evaluated),
        "successful": float(successful),
        "unsuccessful": float(unsuccessful),
        "success_percent": round(100.0 * successful / evaluated, 4) if evaluated else 100.0,
    }
    passed = unsuccessful == 0
    details: dict[str, Any] = {
        "suite": suite.name,
        "suite_source": suite.source,
        "failed": failures,
        "statistics": full.get("statistics", {}),
    }
    if invalid:
        details["invalid"] = [f["index"] for f in invalid]
    return CheckResult(
        CHECKER, target, passed, _summary(suite, evaluated, failures), metrics=metrics, details=details
    ), full


def _failure(outcome: Mapping[str, Any]) -> dict[str, Any]:
    config = outcome.get("expectation_config") or {}
    index = (config.get("meta") or {}).get(INDEX_KEY, -1)
    kwargs = {k: v for k, v in (config.get("kwargs") or {}).items() if k != "batch_id"}
    failure: dict[str, Any] = {
        "index": index,
        "type": config.get("type"),
        "column": _column(kwargs),
        "kwargs": kwargs,
        "observed": _observed(outcome.get("result") or {}),
    }
    error = _error(outcome.get("exception_info") or {})
    if error:
        failure["error"] = error
    return failure


def _column(kwargs: Any) -> Any:
    if not isinstance(kwargs, Mapping):
        return None
    for key in ("column", "column_list", "column_set"):
        if key in kwargs:
            return kwargs[key]
    if "column_A" in kwargs or "column_B" in kwargs:
        return [kwargs.get("column_A"), kwargs.get("column_B")]
    return None


def _observed(result: Mapping[str, Any]) -> Any:
    if "observed_value" in result:
        return result["observed_value"]
    keys = ("element_count", "unexpected_count", "unexpected_percent", "missing_count")
    observed: dict[str, Any] = {k: result[k] for k in keys if k in result}
    if "partial_unexpected_list" in result:
        observed["unexpected_examples"] = list(result["partial_unexpected_list"])[:10]
    return observed or None


def _error(info: Mapping[str, Any]) -> str | None:
    """GE's exception message: directly in ``exception_info``, or per metric that raised."""
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "raised an exception")
    for value in info.values():
        if isinstance(value, Mapping) and value.get("raised_exception", True):
            message = value.get("exception_message")
            if message:
                return _one_line(str(message)).removeprefix("Error: ")
    return None


def _invalid_reason(exc: BaseException, kind: Any) -> str:
    """Why GE rejected an expectation, in one line: an unknown type (with the closest known one),
    or each kwarg it refused."""
    from great_expectations.exceptions import ExpectationNotFoundError

    if isinstance(exc, ExpectationNotFoundError):
        import difflib

        from great_expectations.expectations.registry import list_registered_expectation_implementations

        known = list_registered_expectation_implementations()
        close = difflib.get_close_matches(str(kind), known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"{kind!r} is not a Great Expectations expectation type{hint}"
    errors = getattr(exc, "errors", None)
    if callable(errors):  # pydantic's ValidationError: one message per field it refused
        seen: dict[str, str] = {}
        for error in errors():
            where = ".".join(str(part) for part in error.get("loc", ())) or "kwargs"
            seen.setdefault("kwargs" if where == "__root__" else where, str(error.get("msg", "")))
        return "invalid kwargs: " + "; ".join(f"{k}: {v}" for k, v in seen.items())
    return _one_line(exc)


def _one_line(exc: BaseException | str) -> str:
    text = exc if isinstance(exc, str) else (str(exc) or type(exc).__name__)
    return " ".join(text.split())


def _describe(failure: Mapping[str, Any]) -> str:
    column = failure.get("column")
    where = f"({column})" if column not in (None, [], "") else ""
    text = f"#{failure['index']} {failure.get('type')}{where}"
    if failure.get("error"):
        return f"{text}: {failure['error']}"
    observed = failure.get("observed")
    if isinstance(observed, Mapping) and "unexpected_count" in observed:
        total = observed.get("element_count")
        return f"{text}: {observed['unexpected_count']} unexpected" + (f" of {total}" if total else "")
    if observed is not None:
        return f"{text}: observed {_short(observed)}"
    return text


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _summary(suite: Suite, evaluated: int, failures: list[dict[str, Any]]) -> str:
    where = f"suite {suite.name!r}" + (f" ({suite.source})" if suite.source != "inline" else "")
    if not failures:
        return f"all {evaluated} expectations of {where} met"
    named = "; ".join(_describe(f) for f in failures[:SUMMARY_FAILURES])
    more = f"; and {len(failures) - SUMMARY_FAILURES} more" if len(failures) > SUMMARY_FAILURES else ""
    return f"{len(failures)} of {evaluated} expectations of {where} not met: {named}{more}"


# ------------------------------------------------------------------------------------------ suggest


def suite_from_data(
    frame: pd.DataFrame,
    *,
    name: str,
    rows: int | None = None,
    margin: float = 0.1,
    max_categories: int = 20,
) -> Suite:
    """A first suite from (a sample of) the data, with pandas: every column exists, has its dtype,
    has no nulls (or at most the observed share, less ``margin``), numbers lie within the observed
    range widened by ``margin`` of its span, low-cardinality columns hold their observed values,
    and the row count (``rows``, the full data's; default the frame's) lies within ``margin``.
    """
    import math

    import pandas as pd

    expectations: list[dict[str, Any]] = []

    def add(kind: str, **kwargs: Any) -> None:
        expectations.append({"type": kind, "kwargs": kwargs, "meta": {}})

    total = len(frame) if rows is None else rows
    add(
        "expect_table_row_count_to_be_between",
        min_value=max(0, math.floor(total * (1 - margin))),
        max_value=math.ceil(total * (1 + margin)),
    )
    add("expect_table_columns_to_match_set", column_set=[str(c) for c in frame.columns], exact_match=True)
    for column in frame.columns:
        series = frame[column]
        name_ = str(column)
        add("expect_column_to_exist", column=name_)
        add("expect_column_values_to_be_of_type", column=name_, type_=series.dtype.type.__name__)
        present = series.notna()
        share = float(present.mean()) if len(series) else 1.0
        if share == 1.0:
            add("expect_column_values_to_not_be_null", column=name_)
        elif share - margin > 0:
            add("expect_column_values_to_not_be_null", column=name_, mostly=round(share - margin, 4))
        values = series[present]
        if values.empty:
            continue
        is_bool = pd.api.types.is_bool_dtype(series)
        if pd.api.types.is_numeric_dtype(series) and not is_bool:
            low, high = float(values.min()), float(values.max())
            pad = margin * (high - low) or margin * abs(low) or margin
            low, high = _outward(low - pad, high + pad)
            if pd.api.types.is_integer_dtype(series):
                low, high = math.floor(low), math.ceil(high)
            add("expect_column_values_to_be_between", column=name_, min_value=low, max_value=high)
        distinct = values.nunique()
        categorical = is_bool or not pd.api.types.is_float_dtype(series)
        if (
            categorical
            and not pd.api.types.is_datetime64_any_dtype(series)
            and distinct <= max_categories
            and distinct < len(values)
        ):
            value_set = sorted((_native(v) for v in values.unique()), key=lambda v: (str(type(v)), v))
            add("expect_column_values_to_be_in_set", column=name_, value_set=value_set)
    return Suite(name, expectations, "suggested", {})


def _outward(low: float, high: float, digits: int = 4) -> tuple[float, float]:
    """``low`` rounded down and ``high`` up to ``digits`` significant digits of the larger one."""
    import math

    largest = max(abs(low), abs(high))
    if largest == 0 or not math.isfinite(largest):
        return low, high
    places = digits - 1 - math.floor(math.log10(largest))
    step = 10.0**-places
    keep = max(0, places)  # rounding away the float noise of ``· step`` (0.30000000000000004)
    return round(math.floor(low / step) * step, keep), round(math.ceil(high / step) * step, keep)


def _native(value: Any) -> Any:
    """A NumPy scalar as the Python value JSON can hold."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value
