"""Calling a step's Python function: import ``module:function``, bind params, inputs and outputs.

The calling convention: the function receives keyword arguments by name — each parameter, each
input and output as a :class:`pathlib.Path`, and ``ctx`` (the :class:`~scanflow_core.runs.StepRun`,
or ``None`` in a child process) — only those its signature accepts, unless it takes ``**kwargs``.
A returned mapping of numbers is recorded as the step's metrics.

Functions that no module can give back by name (a decorated task defined in a notebook, a test or
another function) are registered with :func:`register_callable`; :func:`load_callable` answers a
registered ref from this process's registry before it imports anything.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["bind_arguments", "load_callable", "numeric_metrics", "register_callable", "registered_callable"]

_import_lock = threading.Lock()
_registry: dict[str, Callable[..., Any]] = {}
_registry_lock = threading.Lock()
_NOT_WORD = re.compile(r"[^\w.]+")


def _identity(func: Callable[..., Any]) -> tuple[object, ...]:
    """What makes two function objects "the same function" (a module parsed again by an orchestrator
    makes new objects of the same code): where its code was written, and its qualified name."""
    code = getattr(func, "__code__", None)
    where = (code.co_filename, code.co_firstlineno) if code is not None else (id(func),)
    return (*where, getattr(func, "__qualname__", None))


def register_callable(func: Callable[..., Any]) -> str:
    """Register ``func`` in this process; return the ``module:function`` ref that names it in a spec.

    The ref is ``<module>:<qualified name>`` (dots and ``<locals>`` turned into ``_``). Registering a
    function again, or a new object of the same code (a module imported again), keeps its ref and
    makes the newest object the one :func:`load_callable` returns; another function whose ref would
    clash gets a numbered one (``tasks:train_2``).

    Examples:
        >>> def train(lr: float = 0.1) -> dict[str, float]:
        ...     return {"loss": lr}
        >>> ref = register_callable(train)
        >>> load_callable(ref) is train
        True
    """
    if not callable(func):
        raise TypeError(f"register_callable() needs a function, not {type(func).__name__}")
    module = ".".join(
        part if part[:1].isalpha() or part[:1] == "_" else "_" + part
        for part in _NOT_WORD.sub("_", str(getattr(func, "__module__", None) or "__main__")).split(".")
    )
    qualname = str(getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or "function")
    name = re.sub(r"\W+", "_", qualname).strip("_") or "function"
    if name[0].isdigit():
        name = "_" + name
    identity = _identity(func)
    with _registry_lock:
        ref, n = f"{module}:{name}", 1
        while ref in _registry and _identity(_registry[ref]) != identity:
            n += 1
            ref = f"{module}:{name}_{n}"
        _registry[ref] = func
    return ref


def registered_callable(ref: str) -> Callable[..., Any] | None:
    """The function registered under ``ref`` in this process, if any."""
    with _registry_lock:
        return _registry.get(ref)


def load_callable(ref: str, search_path: Iterable[Path] = ()) -> Callable[..., Any]:
    """Import ``module:function``, with ``search_path`` folders put first on ``sys.path``.

    A ref made by :func:`register_callable` in this process gives the registered function.
    """
    registered = registered_callable(ref)
    if registered is not None:
        return registered
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
    signature = _signature(func)
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


def _signature(func: Callable[..., Any]) -> inspect.Signature:
    """``inspect.signature(func)``, kept for functions called again and again (a decorated task)."""
    try:
        return _signatures(func)
    except TypeError:  # not hashable
        return inspect.signature(func)


_signatures = functools.lru_cache(maxsize=512)(inspect.signature)


def numeric_metrics(value: Any) -> dict[str, float]:
    """The numbers in a returned mapping (``{"accuracy": 0.97}``); anything else gives nothing."""
    if not isinstance(value, Mapping):
        return {}
    return {
        str(k): float(v) for k, v in value.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
