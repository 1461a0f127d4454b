"""``scanflow export compose|swarm|k8s SPEC -o DIR``: write a workflow's deployment files.

==========  =======================  =====================================================
target      file written in ``DIR``  deploy with
==========  =======================  =====================================================
compose     ``docker-compose.yml``   ``docker compose -f DIR/docker-compose.yml up``
swarm       ``stack.yml``            ``docker stack deploy -c DIR/stack.yml NAME``
k8s         ``manifests.yaml``       ``kubectl apply -f DIR/manifests.yaml``
==========  =======================  =====================================================
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["TARGETS", "add_commands", "export"]

TARGETS = ("compose", "swarm", "k8s")


def add_commands(subparsers: Any, handlers: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    export_parser = subparsers.add_parser(
        "export", help="write a workflow's docker-compose file, Swarm stack or Kubernetes manifests"
    )
    export_parser.add_argument("target", choices=TARGETS, help="what to write")
    export_parser.add_argument("spec", type=Path, help="the scanflow.yaml file")
    export_parser.add_argument(
        "--output", "-o", type=Path, required=True, metavar="DIR", help="the folder to write into"
    )
    export_parser.add_argument(
        "--param", "-p", action="append", default=[], metavar="K=V", help="override a parameter"
    )
    export_parser.add_argument("--namespace", metavar="NS", help="k8s: put every object in this namespace")
    export_parser.add_argument(
        "--image-prefix",
        default="",
        metavar="REG",
        help="put before the images Scanflow builds (e.g. registry.example.com/team/)",
    )
    export_parser.add_argument("--image", metavar="IMAGE", help="the image of steps that name none")
    export_parser.add_argument("--run-id", metavar="RUN_ID", help="the run recorded (default: workflow name)")
    export_parser.add_argument(
        "--replicas", type=_positive_int, default=1, metavar="N", help="pods or tasks of each serving step"
    )
    handlers["export"] = _cmd_export


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} replicas: give 1 or more")
    return value


def export(
    target: str,
    spec: str | Path,
    output: str | Path,
    *,
    params: list[str] | None = None,
    namespace: str | None = None,
    image_prefix: str = "",
    image: str | None = None,
    run_id: str | None = None,
    replicas: int = 1,
    pm: Any = None,
) -> tuple[Path, list[str]]:
    """Write the deployment files of ``spec`` for ``target`` into ``output``.

    Returns:
        The file written, and notes on what to do before deploying it (images to build, input files
        to copy).

    Raises:
        SpecError: the spec is not valid, or cannot be deployed.
    """
    from scanflow_core.deploy import compose, kubernetes, swarm
    from scanflow_core.deploy.common import INPUTS_MOUNT, dump_yaml, plan_deployment
    from scanflow_core.spec import load_workflow

    if target not in TARGETS:
        raise ValueError(f"target {target!r} is not one of {', '.join(TARGETS)}")
    workflow = load_workflow(spec, params or [])
    inputs_root = kubernetes.INPUTS_ROOT if target == "k8s" else INPUTS_MOUNT
    deployment = plan_deployment(
        workflow,
        run_id=run_id,
        image_prefix=image_prefix,
        default_image=image,
        inputs_root=inputs_root,
        pm=pm,
    )
    notes = list(deployment.notes)
    directory = Path(output)
    directory.mkdir(parents=True, exist_ok=True)
    header = f"# scanflow export {target}: workflow {workflow.name!r} ({workflow.digest})\n"
    if target == "compose":
        path = directory / compose.FILE_NAME
        text = dump_yaml([compose.compose_document(deployment)])
    elif target == "swarm":
        path = directory / swarm.FILE_NAME
        text = dump_yaml([swarm.stack_document(deployment, replicas)])
    else:
        path = directory / kubernetes.FILE_NAME
        docs = kubernetes.manifests(deployment, namespace=namespace, replicas=replicas)
        text = dump_yaml(docs)
        for container in deployment.steps:
            for item in container.input_files:
                notes.append(f"copy input {item.source} to {item.target} on the run volume")
    path.write_text(header + text, encoding="utf-8")
    return path, list(dict.fromkeys(notes))


def _cmd_export(args: argparse.Namespace) -> int:
    path, notes = export(
        args.target,
        args.spec,
        args.output,
        params=args.param,
        namespace=args.namespace,
        image_prefix=args.image_prefix,
        image=args.image,
        run_id=args.run_id,
        replicas=args.replicas,
    )
    print(f"wrote {path}")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return 0
