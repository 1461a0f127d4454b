"""Model serving: ``scanflow serve MODEL_URI`` with MLSpec's endpoints, one log line per inference,
live drift checks, and model variants (ONNX, int8) picked by a rule.

Modules, by noun: ``model`` (find and load an MLflow model), ``payloads`` (request and answer bodies),
``batching`` (predictions off the event loop), ``metrics`` (Prometheus text), ``logs`` (the NCSA
log line and its parser), ``monitor`` (live drift and alerts), ``app`` (the ASGI app), ``server``
(uvicorn), ``variants`` (ONNX and int8 exports and the rule), ``commands`` (the CLI). Nothing heavy
is imported until used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scanflow_core.serving.app import ServingApp, ServingConfig
    from scanflow_core.serving.logs import LogRecord, format_line, parse_line
    from scanflow_core.serving.model import ServedModel, load_served_model, resolve_model
    from scanflow_core.serving.server import DriftSettings, ModelServer, build_app, serve
    from scanflow_core.serving.variants import choose_variant, export_variants, log_variants

__all__ = [
    "DriftSettings",
    "LogRecord",
    "ModelServer",
    "ServedModel",
    "ServingApp",
    "ServingConfig",
    "build_app",
    "choose_variant",
    "export_variants",
    "format_line",
    "load_served_model",
    "log_variants",
    "parse_line",
    "resolve_model",
    "serve",
]

_EXPORTS = {
    "ServingApp": "app",
    "ServingConfig": "app",
    "LogRecord": "logs",
    "format_line": "logs",
    "parse_line": "logs",
    "ServedModel": "model",
    "load_served_model": "model",
    "resolve_model": "model",
    "DriftSettings": "server",
    "ModelServer": "server",
    "build_app": "server",
    "serve": "server",
    "choose_variant": "variants",
    "export_variants": "variants",
    "log_variants": "variants",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
