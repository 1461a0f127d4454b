"""Running the model server: build the app for a model URI and serve it with uvicorn.

:func:`build_app` loads the model (and the drift reference, when given) and wires the log, metrics,
drift monitor and alert tracker; :func:`serve` runs it in the foreground (``scanflow serve``);
:class:`ModelServer` runs it on a background thread (tests, notebooks).

Examples:
    >>> server = ModelServer(build_app("models:/digits@champion", tracking_uri)).start()  # doctest: +SKIP
    >>> server.url  # doctest: +SKIP
    'http://127.0.0.1:39041'
    >>> server.stop()  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import importlib.util
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from scanflow_core.errors import ScanflowError
from scanflow_core.serving.app import ServingApp, ServingConfig
from scanflow_core.serving.metrics import ServingMetrics

__all__ = ["DriftSettings", "ModelServer", "build_app", "serve"]


class DriftSettings:
    """Live drift settings: the ``reference`` (a saved detector folder or a data file) and the window."""

    def __init__(
        self,
        reference: Path,
        *,
        window: int = 500,
        every: int = 100,
        min_rows: int = 50,
        alpha: float | None = None,
        epochs: int = 60,
    ) -> None:
        self.reference = reference
        self.window = window
        self.every = every
        self.min_rows = min_rows
        self.alpha = alpha
        self.epochs = epochs


def build_app(
    model_uri: str,
    tracking_uri: str,
    config: ServingConfig | None = None,
    *,
    variant: str = "original",
    prefer: str | None = None,
    max_accuracy_drop: float | None = None,
    drift: DriftSettings | None = None,
    track_alerts: bool = True,
) -> ServingApp:
    """Load the model at ``model_uri`` and build its app.

    Args:
        model_uri: an MLflow model URI (see :mod:`scanflow_core.serving.model`).
        tracking_uri: the MLflow store of the registry, runs and alerts.
        config: limits and logging.
        variant: ``original``, ``onnx``, ``int8`` or ``auto``.
        prefer: the rule for ``auto`` (``latency`` or ``accuracy``), over the manifest's.
        max_accuracy_drop: for ``prefer: latency``.
        drift: live drift monitoring, or ``None``.
        track_alerts: record drift alerts in MLflow (a serving run).

    Raises:
        ScanflowError: the model, the variant or the drift reference cannot be had.
    """
    from scanflow_core.serving.model import load_served_model
    from scanflow_core.serving.monitor import DriftMonitor, MlflowAlerts, load_reference

    config = config or ServingConfig()
    detector = load_reference(drift.reference, epochs=drift.epochs) if drift is not None else None
    model = load_served_model(
        model_uri, tracking_uri, variant=variant, prefer=prefer, max_accuracy_drop=max_accuracy_drop
    )
    if detector is None or drift is None:
        return ServingApp(model, config)
    width = model.input_spec.shape[-1] if model.input_spec.shape else None
    if width not in (None, -1) and width != len(detector.columns):
        raise ScanflowError(
            f"--drift-reference {drift.reference}: it has {len(detector.columns)} features, the model"
            f" takes {width}"
        )
    metrics = ServingMetrics(model.labels())
    alerts = None
    if track_alerts:
        described = {
            "uri": model_uri,
            "name": model.name,
            "version": model.version,
            "run_id": model.source.run_id,
            "variant": model.variant,
        }
        alerts = MlflowAlerts(tracking_uri, described)
    try:
        monitor = DriftMonitor(
            detector,
            metrics,
            window=drift.window,
            every=drift.every,
            min_rows=drift.min_rows,
            alpha=drift.alpha,
            on_alert=alerts.record if alerts is not None else None,
        )
    except ValueError as exc:
        raise ScanflowError(f"drift monitoring: {exc}") from None
    return ServingApp(model, config, metrics=metrics, monitor=monitor, alerts=alerts)


def _uvicorn_config(app: ServingApp, host: str, port: int) -> Any:
    import uvicorn

    fast_http = importlib.util.find_spec("httptools") is not None
    fast_loop = importlib.util.find_spec("uvloop") is not None
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http="httptools" if fast_http else "h11",
        loop="uvloop" if fast_loop else "asyncio",
        lifespan="on",
        access_log=False,
        # Leave the process's logging as it is: uvicorn's default log_config calls logging.config.dictConfig,
        # which replaces the host's handlers (and deadlocks Prefect when a step serves inside a flow run).
        log_config=None,
        log_level="warning",
        timeout_keep_alive=30,
        backlog=2048,
    )


def serve(app: ServingApp, *, announce: Callable[[ServingApp], None] | None = None) -> None:
    """Serve ``app`` on its configured host and port until interrupted (SIGINT/SIGTERM); ``announce``
    is called once the socket listens."""
    import uvicorn

    class _Server(uvicorn.Server):  # type: ignore[misc]
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and announce is not None:
                announce(app)

    config = app.config
    server = _Server(_uvicorn_config(app, config.host, config.port))
    # uvicorn shuts down gracefully on SIGTERM, then raises it again for the handler it found: a no-op
    # here, so that a stop on request (docker stop, kill) ends the command with status 0.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: None) if main_thread else None
    try:
        with contextlib.suppress(SystemExit):  # uvicorn exits when it cannot bind; say why in our words
            server.run()
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    if not server.started:
        raise ScanflowError(
            f"cannot serve on {config.host}:{config.port} (is the port taken? give another with --port)"
        )


class ModelServer:
    """The app served by uvicorn on a background thread; ``port=0`` picks a free port (see ``url``)."""

    def __init__(self, app: ServingApp, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.app = app
        self.app.config = replace(app.config, host=host, port=port)
        self._server = uvicorn.Server(_uvicorn_config(app, host, port))
        self._thread = threading.Thread(target=self._server.run, name="scanflow-serve", daemon=True)
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{self.app.config.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> ModelServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ScanflowError(f"the model server did not start on {self.app.config.host}:{self.port}")
            time.sleep(0.02)
        sockets = [s for server in self._server.servers for s in server.sockets]
        self.port = int(sockets[0].getsockname()[1])
        self.app.config = replace(self.app.config, port=self.port)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
