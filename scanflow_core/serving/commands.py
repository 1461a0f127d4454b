"""``scanflow serve MODEL_URI`` and ``scanflow variants MODEL_URI --data EVAL``.

``serve`` answers ``/predict``, ``/ok``, ``/varz``, ``/metrics`` and KServe v2 for one MLflow model
(:mod:`scanflow_core.serving.app`), writing one log line per request, with live drift checks when
given ``--drift-reference``. ``variants`` exports the ONNX and int8 variants of a PyTorch model,
measures them on evaluation data and stores them beside the model for ``serve --variant``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["add_commands"]

EXIT_BAD_INPUT = 2
VARIANT_CHOICES = ("auto", "original", "onnx", "int8")


def add_commands(subparsers: Any, handlers: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    serve = subparsers.add_parser("serve", help="serve an MLflow model: /predict, /ok, /varz, /metrics")
    serve.add_argument(
        "model", metavar="MODEL_URI", help="models:/NAME@ALIAS, models:/NAME/3, runs:/ID/PATH, a folder"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8080, help="port to listen on (default 8080)")
    serve.add_argument(
        "--variant",
        choices=VARIANT_CHOICES,
        default="auto",
        help="which variant to serve (default auto: the spec's rule, else the original)",
    )
    serve.add_argument("--prefer", choices=("latency", "accuracy"), help="the rule for --variant auto")
    serve.add_argument("--spec", type=Path, help="a scanflow.yaml whose serving: and tracker: settings apply")
    serve.add_argument("--log-file", metavar="PATH", help="append one line per request here (default stdout)")
    serve.add_argument("--log-inputs", action="store_true", help="log each request's raw input too")
    serve.add_argument(
        "--user-header", default="X-User-Id", help="the header naming the user (default X-User-Id)"
    )
    serve.add_argument(
        "--drift-reference",
        type=Path,
        metavar="PATH",
        help="check live inputs for drift against this data file or saved detector",
    )
    serve.add_argument(
        "--drift-window", type=_positive, default=500, metavar="N", help="rows in the window (500)"
    )
    serve.add_argument(
        "--drift-every", type=_positive, default=100, metavar="N", help="new rows between tests (100)"
    )
    serve.add_argument(
        "--drift-min-rows", type=_positive, default=50, metavar="N", help="rows before a test (50)"
    )
    serve.add_argument("--drift-alpha", type=_share, metavar="A", help="significance level (default 0.05)")
    serve.add_argument(
        "--max-body-mb", type=float, default=8.0, metavar="MB", help="largest request body (8)"
    )
    serve.add_argument(
        "--max-rows", type=_positive, default=10_000, metavar="N", help="most rows per request"
    )
    serve.add_argument(
        "--max-batch", type=_positive, default=256, metavar="N", help="most rows per model call"
    )
    serve.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help="torch threads per model call (default 1; 0: the library's default)",
    )
    _store_options(serve)

    variants = subparsers.add_parser("variants", help="export and measure ONNX and int8 variants of a model")
    variants.add_argument("model", metavar="MODEL_URI")
    variants.add_argument("--data", type=Path, required=True, help="evaluation data (.npz with X and y, ...)")
    variants.add_argument(
        "--only", choices=("onnx", "int8"), action="append", help="export only this variant"
    )
    variants.add_argument("--prefer", choices=("latency", "accuracy"), help="the rule recorded for serve")
    variants.add_argument("--max-accuracy-drop", type=_share, help="for prefer latency (default 0.01)")
    variants.add_argument(
        "--spec", type=Path, help="a scanflow.yaml whose serving: and tracker: settings apply"
    )
    variants.add_argument("--repeats", type=_positive, default=200, help="timed predictions per variant")
    variants.add_argument("--json", action="store_true", help="print the manifest as JSON")
    _store_options(variants)

    handlers["serve"] = _cmd_serve
    handlers["variants"] = _cmd_variants


def _store_options(parser: Any) -> None:
    parser.add_argument(
        "--tracking-uri", help="the MLflow store (default $MLFLOW_TRACKING_URI or HOME/mlflow.db)"
    )
    parser.add_argument("--home", type=Path, help="Scanflow's home (default $SCANFLOW_HOME or ./.scanflow)")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"give 1 or more, not {value}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port lies in 0..65535, not {value}")
    return value


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"give a share in [0, 1), not {value}")
    return value


def _settings(args: argparse.Namespace) -> tuple[str, Any]:
    """The tracking URI and the spec's serving settings (or ``None``)."""
    from scanflow_core.runs import scanflow_home
    from scanflow_core.tracking.mlflow_tracker import resolve_uri

    serving, spec_uri = None, None
    if args.spec is not None:
        from scanflow_core.spec import load_workflow

        workflow = load_workflow(args.spec)
        serving, spec_uri = workflow.serving, workflow.tracker.uri
    home = scanflow_home(args.home)
    return args.tracking_uri or resolve_uri(spec_uri, home), serving


def _cmd_serve(args: argparse.Namespace) -> int:
    from scanflow_core.serving.app import ServingConfig
    from scanflow_core.serving.server import DriftSettings, build_app, serve
    from scanflow_core.tracking.mlflow_tracker import enabled

    if args.max_body_mb <= 0:
        print(f"error: --max-body-mb must be above 0, not {args.max_body_mb}", file=sys.stderr)
        return EXIT_BAD_INPUT
    tracking_uri, serving = _settings(args)
    config = ServingConfig(
        host=args.host,
        port=args.port,
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        max_rows=args.max_rows,
        max_batch_rows=args.max_batch,
        log_file=args.log_file,
        log_inputs=args.log_inputs,
        user_header=args.user_header,
        threads=max(0, args.threads),
    )
    drift = None
    if args.drift_reference is not None:
        drift = DriftSettings(
            args.drift_reference,
            window=args.drift_window,
            every=args.drift_every,
            min_rows=min(args.drift_min_rows, args.drift_window),
            alpha=args.drift_alpha,
        )
    app = build_app(
        args.model,
        tracking_uri,
        config,
        variant=args.variant,
        prefer=args.prefer or (serving.prefer if serving is not None else None),
        max_accuracy_drop=serving.max_accuracy_drop if serving is not None else None,
        drift=drift,
        track_alerts=enabled(True),
    )
    serve(app, announce=_announce)
    return 0


def _announce(app: Any) -> None:
    model = app.model
    version = f" v{model.version}" if model.version else ""
    attested = f", attested {model.attestation[:19]}…" if model.attestation else ", no attestation found"
    drift = ", live drift on" if app.monitor is not None else ""
    print(
        f"serving {model.name}{version} ({model.variant}{attested}{drift}) on "
        f"http://{app.config.host}:{app.config.port}  POST /predict · GET /ok /varz /metrics",
        file=sys.stderr,
        flush=True,
    )


def _cmd_variants(args: argparse.Namespace) -> int:
    from scanflow_core.checking.data import load_arrays
    from scanflow_core.serving.variants import log_variants

    if not args.data.exists():
        print(f"error: --data {args.data}: no such file", file=sys.stderr)
        return EXIT_BAD_INPUT
    tracking_uri, serving = _settings(args)
    x, y = load_arrays(args.data)
    prefer = args.prefer or (serving.prefer if serving is not None else "accuracy")
    drop = args.max_accuracy_drop
    if drop is None:
        drop = serving.max_accuracy_drop if serving is not None else 0.01
    only = args.only or (list(serving.variants) if serving is not None else ["onnx", "int8"])
    manifest = log_variants(
        args.model,
        tracking_uri,
        x,
        y,
        variants=only,
        prefer=prefer,
        max_accuracy_drop=drop,
        repeats=args.repeats,
    )
    if args.json:
        print(json.dumps(manifest, indent=2))
        return 0
    print(f"variants of {args.model} on {len(x)} rows of {args.data}:")
    for name, report in manifest["variants"].items():
        accuracy = f"{report['accuracy']:.4f}" if "accuracy" in report else "-"
        print(
            f"  {name:<9} accuracy {accuracy}  1 row {report['latency_ms']:.3f} ms  "
            f"{report['batch_rows']} rows {report['batch_latency_ms']:.3f} ms  {report.get('uri', '')}"
        )
    chosen = manifest["chosen"]
    others = f"accuracy → {chosen['accuracy']}, latency → {chosen['latency']}"
    print(f"rule: prefer {prefer} → {chosen[prefer]} ({others})")
    return 0
