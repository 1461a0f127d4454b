"""Calling a step's Python function: import ``module:function``, bind params, inputs and outputs.

The calling convention: the function receives keyword arguments by name — each parameter, each
input and output as a :class:`pathlib.Path`, and ``ctx`` (the :class:`~scanflow_core.runs.StepRun`,
or ``None`` in a child process) — only those its signature accepts, unless it takes ``**kwargs``.
A returned mapping of numbers is recorded as the step's metrics.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["bind_arguments", "load_callable", "numeric_metrics"]

_import_lock = threading.Lock()


def load_callable(ref: str, search_path: Iterable[Path] = ()) -> Callable[..., Any]:
    """Import ``module:function``, with ``search_path`` folders put first on ``sys.path``."""
    module_name, _, attr = ref.partition(":")
    with _import_lock:
        for folder in reversed([str(p) for p in search_path]):
            if folder not in sys.path:
                sys.path.insert(0, folder)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name.split(".")[0] and exc.name != module_name:
                raise
            where = ", ".join(str(p) for p in search_path)
            raise ImportError(
                f"cannot import {module_name!r} for call {ref!r} (looked in {where} and sys.path)"
            ) from exc
    try:
        func: Callable[..., Any] = getattr(module, attr)
    except AttributeError:
        raise ImportError(f"module {module_name!r} has no function {attr!r} (call {ref!r})") from None
    if not callable(func):
        raise TypeError(f"{ref!r} is not callable")
    return func


def bind_arguments(
    func: Callable[..., Any],
    params: Mapping[str, Any],
    inputs: Mapping[str, Path],
    outputs: Mapping[str, Path],
    ctx: Any = None,
) -> dict[str, Any]:
    """The keyword arguments ``func`` accepts out of params, inputs, outputs and ``ctx``.

    Raises:
        TypeError: the function requires an argument that is none of these (named, with what
            is on offer).
    """
    offered: dict[str, Any] = {**params, **inputs, **outputs, "ctx": ctx}
    signature = inspect.signature(func)
    if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        return offered
    kwargs = {}
    for name, parameter in signature.parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.POSITIONAL_ONLY):
            continue
        if name in offered:
            kwargs[name] = offered[name]
        elif parameter.default is parameter.empty:
            names = ", ".join(sorted(k for k in offered if k != "ctx"))
            raise TypeError(
                f"{getattr(func, '__qualname__', func)}() requires {name!r}, which is no param, input or "
                f"output of the step (on offer: {names or 'nothing'})"
            )
    return kwargs


def numeric_metrics(value: Any) -> dict[str, float]:
    """The numbers in a returned mapping (``{"accuracy": 0.97}``); anything else gives nothing."""
    if not isinstance(value, Mapping):
        return {}
    return {
        str(k): float(v) for k, v in value.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
