"""``scanflow label QUEUE_DB`` (terminal or ``--web``) and ``scanflow model rollback NAME``.

``label`` asks for the label of each queued sample in turn, most informative first: in the terminal
(the sample drawn in ASCII, a line to type the class; ``s`` skips, ``q`` quits) or on a small web page
(``--web``: the picture and a button per class). ``--export FILE`` writes the labelled pairs to an
``.npz`` (``X``, ``y``, ``ids``) instead. ``model rollback`` makes the registered model's ``previous``
version its ``champion`` again.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

__all__ = ["add_commands", "label_in_terminal"]

EXIT_BAD_INPUT = 2
_WHOLE = re.compile(r"^-?\d+$")


def add_commands(subparsers: Any, handlers: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    label = subparsers.add_parser("label", help="label the samples in a label queue (terminal or --web)")
    label.add_argument("queue", type=Path, metavar="QUEUE_DB", help="the label queue (a SQLite file)")
    label.add_argument(
        "--classes",
        nargs="+",
        metavar="CLASS",
        help="the allowed labels (space or comma separated); stored in a queue that has none",
    )
    label.add_argument("--labeller", default=None, help="who is labelling (default: your user name)")
    label.add_argument("--web", action="store_true", help="serve a labelling page instead of prompting")
    label.add_argument("--host", default="127.0.0.1", help="--web: the address to listen on (127.0.0.1)")
    label.add_argument("--port", type=_port, default=8765, help="--web: the port (8765; 0 picks a free one)")
    label.add_argument(
        "--exit-when-done", action="store_true", help="--web: stop once every sample is labelled"
    )
    label.add_argument("--export", type=Path, metavar="FILE", help="write the labelled pairs to FILE (.npz)")

    model = subparsers.add_parser("model", help="the MLflow model registry: roll back a champion")
    actions = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    back = actions.add_parser("rollback", help="make the previous version the champion again")
    back.add_argument("name", help="the registered model")
    back.add_argument(
        "--uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or the embedded store)"
    )
    back.add_argument("--home", type=Path, help="Scanflow's home, for the embedded store")

    handlers["label"] = _cmd_label
    handlers["model"] = _cmd_model


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (0 to 65535)")
    return value


def _classes(given: list[str] | None) -> list[Any] | None:
    """``--classes 0 1 2`` or ``--classes 0,1,2``; whole numbers become ints (``3`` names class 3)."""
    if not given:
        return None
    names = [part.strip() for item in given for part in item.split(",") if part.strip()]
    return [int(n) for n in names] if all(_WHOLE.match(n) for n in names) else names


def _cmd_label(args: argparse.Namespace) -> int:
    from scanflow_core.improve.queue import LabelQueue, QueueError

    try:
        queue = LabelQueue(args.queue, classes=_classes(args.classes), create=False)
    except (QueueError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    with queue:
        if args.export:
            try:
                pairs = queue.export(args.export)
            except QueueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return EXIT_BAD_INPUT
            print(f"wrote {args.export}: {len(pairs)} labelled samples")
            return 0
        if queue.classes is None:
            print(f"error: {args.queue} has no classes: give them with --classes", file=sys.stderr)
            return EXIT_BAD_INPUT
        if args.web:
            return _serve(queue, args)
        return label_in_terminal(queue, labeller=args.labeller or _user(), stdin=sys.stdin, out=sys.stdout)


def _serve(queue: Any, args: argparse.Namespace) -> int:
    from scanflow_core.improve.web import LabelServer

    try:
        server = LabelServer(queue, host=args.host, port=args.port, exit_when_done=args.exit_when_done)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    counts = queue.counts()
    print(
        f"labelling page: {server.url}  ({counts['unlabelled']} of {counts['total']} to label; Ctrl-C stops)"
    )
    sys.stdout.flush()
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    counts = queue.counts()
    print(f"{counts['labelled']} of {counts['total']} labelled")
    return 0


def label_in_terminal(queue: Any, *, labeller: str, stdin: TextIO, out: TextIO) -> int:
    """Prompt for each sample's label on ``out``, read answers from ``stdin`` (see the module's
    docstring); returns the exit code (0)."""
    from scanflow_core.improve.images import ascii_art
    from scanflow_core.improve.queue import QueueError

    classes = [str(c) for c in queue.classes]
    counts = queue.counts()
    print(
        f"{counts['unlabelled']} of {counts['total']} samples to label. Classes: {' '.join(classes)}"
        "  (s: skip, q: quit)",
        file=out,
    )
    labelled = 0
    while True:
        sample = queue.next(labeller)
        if sample is None:
            left = queue.counts()["unlabelled"]
            print("every sample is labelled" if left == 0 else f"{left} left, held by others", file=out)
            break
        print(f"\nsample {sample.id}" + "".join(f"  {k}={v}" for k, v in sample.metadata.items()), file=out)
        print(ascii_art(sample.data) if sample.data is not None else f"(at {sample.ref})", file=out)
        while True:
            print("label> ", end="", file=out, flush=True)
            line = stdin.readline()
            answer = line.strip()
            if not line or (answer in ("q", "quit") and answer not in classes):
                queue.release(sample.id, labeller)
                print(f"\nstopped: {labelled} labelled this time", file=out)
                return 0
            if answer in ("s", "skip", "") and answer not in classes:
                queue.skip(sample.id, labeller)
                break
            try:
                queue.submit(sample.id, answer, labeller=labeller)
            except QueueError as exc:
                print(f"  {exc}", file=out)
                continue
            labelled += 1
            break
    print(f"{labelled} labelled this time", file=out)
    return 0


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "terminal"


def _cmd_model(args: argparse.Namespace) -> int:
    from scanflow_core.improve.improver import ImproveError, rollback

    try:
        version = rollback(args.name, uri=args.uri, home=args.home)
    except ImproveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{args.name}: version {version} is the champion again")
    return 0
