"""Commands: ``scanflow keys generate``, ``scanflow verify``, ``scanflow bundle``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["add_commands"]

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


def add_commands(subparsers: Any, handlers: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    keys = subparsers.add_parser("keys", help="manage the key that signs attestations")
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    generate = actions.add_parser(
        "generate", help="write <home>/keys/scanflow.key (private, 0600) and scanflow.pub"
    )
    generate.add_argument("--force", action="store_true", help="replace an existing key")
    generate.add_argument("--home", type=Path, help="default $SCANFLOW_HOME or ./.scanflow")

    verify = subparsers.add_parser(
        "verify", help="verify a run's attestations (a run directory or a bundle .tar.gz)"
    )
    verify.add_argument(
        "path", type=Path, metavar="PATH", help="RUN_DIR or a bundle made by `scanflow bundle`"
    )
    verify.add_argument(
        "--key", type=Path, metavar="PUB", help="the trusted public key (default <home>/keys/scanflow.pub)"
    )

    bundle = subparsers.add_parser("bundle", help="pack a run to move it elsewhere (verify it with `verify`)")
    bundle.add_argument("run_id", metavar="RUN_ID", help="a run id under <home>/runs, or a run directory")
    bundle.add_argument("-o", "--output", type=Path, required=True, metavar="FILE", help="e.g. app.tar.gz")
    bundle.add_argument("--home", type=Path, help="default $SCANFLOW_HOME or ./.scanflow")

    handlers.update({"keys": _cmd_keys, "verify": _cmd_verify, "bundle": _cmd_bundle})


def _cmd_keys(args: argparse.Namespace) -> int:
    from scanflow_core.attestation.keys import default_key_path, generate_key_pair
    from scanflow_core.errors import AttestationError
    from scanflow_core.runs import scanflow_home

    path = default_key_path(scanflow_home(args.home))
    try:
        key = generate_key_pair(path, force=args.force)
    except AttestationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"wrote {path} (private, mode 0600) and {path.with_suffix('.pub')}")
    print(f"keyid {key.keyid}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from scanflow_core.attestation.verify import verify_attestation
    from scanflow_core.errors import AttestationError

    try:
        result = verify_attestation(args.path, key=args.key)
    except AttestationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(result.table())
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if result.ok:
        statements = sum(f.ok for f in result.findings if f.kind == "signature")
        print(f"ok: run {result.run_id}: {statements} statements verified")
        return 0
    print(f"\nFAILED: run {result.run_id}: {len(result.failures)} problem(s)")
    for finding in result.failures:
        print(f"  {finding.step}  {finding.file}: {finding.reason}")
    return EXIT_FAILED


def _cmd_bundle(args: argparse.Namespace) -> int:
    from scanflow_core.attestation.bundle import make_bundle
    from scanflow_core.errors import AttestationError
    from scanflow_core.runs import scanflow_home

    run_dir = Path(args.run_id)
    if not (run_dir / "run.json").is_file():
        run_dir = scanflow_home(args.home) / "runs" / args.run_id
    if not (run_dir / "run.json").is_file():
        print(f"error: no run {args.run_id!r} under {run_dir.parent}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        out = make_bundle(run_dir, args.output)
    except AttestationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"wrote {out} ({out.stat().st_size} bytes); check it with: scanflow verify {out}")
    return 0
