"""``scanflow expectations suggest DATA`` and ``scanflow expectations validate SUITE DATA``.

``suggest`` profiles a sample of the data with pandas and writes a first Great Expectations suite
(columns and their types, nulls, numeric ranges from the observed min/max widened by a margin,
value sets of low-cardinality columns, a row-count range), then runs it on the whole data: an
expectation the whole data does not meet (a value the sample missed) is dropped and named, so
the suite written always passes on the data it came from. ``validate`` runs a suite on a data
file and exits 1 when an expectation is not met.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["add_commands"]

EXIT_NOT_MET = 1
EXIT_BAD_INPUT = 2


def add_commands(subparsers: Any, handlers: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    expectations = subparsers.add_parser("expectations", help="Great Expectations suites: suggest, validate")
    actions = expectations.add_subparsers(dest="expectations_command", required=True, metavar="ACTION")

    suggest = actions.add_parser("suggest", help="write a first suite from a sample of the data")
    suggest.add_argument("data", type=Path, metavar="DATA", help="CSV, TSV, Parquet, JSON lines, .npz …")
    suggest.add_argument(
        "--output", "-o", type=Path, help="the suite file to write (default: DATA's name + .suite.json)"
    )
    suggest.add_argument(
        "--sample", type=_positive, default=10_000, metavar="N", help="rows to profile (default 10000)"
    )
    suggest.add_argument("--seed", type=int, default=0, help="of the random sample (default 0)")
    suggest.add_argument(
        "--margin", type=float, default=0.1, help="widen ranges by this share of their span (default 0.1)"
    )
    suggest.add_argument(
        "--max-categories",
        type=_positive,
        default=20,
        metavar="N",
        help="columns with at most N distinct values get a value set (default 20)",
    )
    suggest.add_argument("--name", help="the suite's name (default: DATA's stem)")
    suggest.add_argument("--force", "-f", action="store_true", help="overwrite an existing suite file")

    validate = actions.add_parser("validate", help="run a suite on a data file")
    validate.add_argument("suite", type=Path, metavar="SUITE")
    validate.add_argument("data", type=Path, metavar="DATA")
    validate.add_argument("--json", action="store_true", help="print the result as JSON")

    handlers["expectations"] = _cmd_expectations


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"give 1 or more, not {value}")
    return value


def _cmd_expectations(args: argparse.Namespace) -> int:
    if not args.data.exists():
        print(f"error: no data file {args.data}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.expectations_command == "validate":
        return _validate(args)
    return _suggest(args)


def _suggest(args: argparse.Namespace) -> int:
    from scanflow_core.checking.data import load_frame
    from scanflow_core.checking.expectations import Suite, suite_from_data, validate_frame

    if not 0 <= args.margin < 1:
        print(f"error: --margin is a share from 0 to 1, not {args.margin}", file=sys.stderr)
        return EXIT_BAD_INPUT
    output: Path = args.output or Path(f"{args.data.stem}.suite.json")
    if output.exists() and not args.force:
        print(f"error: {output} exists; give --force to overwrite it", file=sys.stderr)
        return EXIT_BAD_INPUT
    frame = load_frame(args.data)
    sample = frame.sample(n=args.sample, random_state=args.seed) if len(frame) > args.sample else frame
    suggested = suite_from_data(
        sample,
        name=args.name or args.data.stem,
        rows=len(frame),
        margin=args.margin,
        max_categories=args.max_categories,
    )
    result = validate_frame(frame, suggested, target=args.data.name)
    failed = {f["index"] for f in result.details["failed"]}
    dropped = [e for i, e in enumerate(suggested.expectations) if i in failed]
    kept = [e for i, e in enumerate(suggested.expectations) if i not in failed]
    meta = {
        "scanflow": {
            "suggested_from": str(args.data),
            "rows": len(frame),
            "sample_rows": len(sample),
            "seed": args.seed,
            "margin": args.margin,
        }
    }
    suite = Suite(suggested.name, kept, str(output), meta)
    check = validate_frame(frame, suite, target=args.data.name)
    if not check.passed:  # cannot happen unless GE is not deterministic; never write a failing suite
        print(f"error: the suggested suite does not pass on {args.data}: {check.summary}", file=sys.stderr)
        return EXIT_NOT_MET
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(suite.to_dict(), indent=2) + "\n", encoding="utf-8")
    print(
        f"wrote {output}: suite {suite.name!r}, {len(kept)} expectations from {len(sample)} of "
        f"{len(frame)} rows; all met by {args.data}"
    )
    for expectation in dropped:
        column = expectation["kwargs"].get("column")
        where = f" ({column})" if column is not None else ""
        print(f"  dropped {expectation['type']}{where}: the sample's values do not hold for all rows")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from scanflow_core.checking.data import load_frame
    from scanflow_core.checking.expectations import read_suite, validate_frame

    suite = read_suite(args.suite)
    result = validate_frame(load_frame(args.data), suite, target=args.data.name)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        print(("✓ " if result.passed else "✗ ") + result.summary)
    return 0 if result.passed else EXIT_NOT_MET
