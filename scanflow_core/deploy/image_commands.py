"""``scanflow image build``: build the default step-pod image (:mod:`scanflow_core.deploy.image`).

Exit codes: 0 built (the tag on stdout), 1 the build failed (the last lines of its output on stderr),
2 bad arguments (an unknown extra, a requirement not installed here) or no Docker engine.
``--print-dockerfile`` prints the Dockerfile and the pinned requirements and builds nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["add_commands"]

EXIT_BUILD_FAILED = 1
EXIT_BAD_INPUT = 2


def add_commands(subparsers: Any, handlers: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    image = subparsers.add_parser("image", help="build the image step pods run in")
    actions = image.add_subparsers(dest="image_command", required=True, metavar="ACTION")
    build = actions.add_parser(
        "build", help="build scanflow/scanflow:<version>: Python, a venv with scanflow and its pinned needs"
    )
    build.add_argument(
        "--base", metavar="IMAGE", help="build FROM this (default $SCANFLOW_BASE_IMAGE, or python:3.11-slim)"
    )
    build.add_argument("--tag", metavar="TAG", help="the image's tag (default scanflow/scanflow:<version>)")
    build.add_argument(
        "--extra",
        action="extend",
        nargs="+",
        default=[],
        metavar="NAME",
        help="also install this extra's requirements (tracking: mlflow), pinned to the versions here",
    )
    build.add_argument(
        "--print-dockerfile",
        action="store_true",
        help="print the Dockerfile and requirements; build nothing (no engine needed)",
    )
    build.add_argument("--quiet", "-q", action="store_true", help="no progress lines on stderr")
    handlers["image"] = _cmd_image


def _cmd_image(args: argparse.Namespace) -> int:
    from scanflow_core.deploy.image import (
        ImageBuildFailed,
        ImageRequirementError,
        build_pod_image,
        image_recipe,
    )

    try:
        recipe = image_recipe(args.base, args.tag, args.extra)
    except ImageRequirementError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.print_dockerfile:
        print("# Dockerfile")
        print(recipe.dockerfile, end="")
        print("\n# requirements.txt")
        print("".join(f"{line}\n" for line in recipe.requirements), end="")
        return 0

    from scanflow_core.runtimes.docker_engine import ENGINE_SCRIPT, engine_available, where

    if not engine_available():
        print(
            f"error: building {recipe.tag} needs a Docker engine, and no Docker engine answers at {where()}:"
            f" start one with {ENGINE_SCRIPT} (it installs and starts Debian's docker.io when missing)"
            " or point DOCKER_HOST at one",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    progress = _Progress(sys.stderr, args.quiet)
    progress.say(f"scanflow: building {recipe.tag} from {recipe.base}: {', '.join(recipe.requirements)}")
    started = time.perf_counter()
    try:
        image_id = build_pod_image(recipe, progress)
    except ImageBuildFailed as exc:
        print(f"error: {exc}\n{exc.log_tail}", file=sys.stderr)
        return EXIT_BUILD_FAILED
    progress.say(f"scanflow: built {recipe.tag} ({image_id[:19]}) in {time.perf_counter() - started:.1f}s")
    print(recipe.tag)
    return 0


class _Progress:
    """The build's output, of which each ``Step n/m`` line and cache hit goes to ``stream``."""

    def __init__(self, stream: Any, quiet: bool) -> None:
        self.stream, self.quiet = stream, quiet

    def say(self, line: str) -> None:
        if not self.quiet:
            print(line, file=self.stream, flush=True)

    def write(self, text: str, /) -> int:
        for line in text.splitlines():
            if line.startswith("Step "):
                self.say("  " + (line if len(line) <= 100 else line[:99] + "…"))
            elif "Using cache" in line:
                self.say("    (cached)")
        return len(text)

    def flush(self) -> None:
        if not self.quiet:
            self.stream.flush()
