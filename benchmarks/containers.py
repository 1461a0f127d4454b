"""A container step through Scanflow vs a plain ``docker run`` of the same image and command.

Both sides use the Docker SDK against the same engine, with the same image and the command
``sh -c 'echo hi > /tmp/x'``:

- plain:    ``client.containers.run(IMAGE, CMD, remove=True)`` (create, start, wait, logs, remove), and
- Scanflow: ``run_step`` of a one-step workflow with that image and command: the whole step path
  (mounts, the run's network, log streaming, metrics read back, output and attestation, record).
  Scanflow removes a finished step's container in the background while it attests the step (the
  step's latency, as a workflow sees it); that removal is waited for, untimed, before the next
  measurement, so it never overlaps the plain side.

Pairs are interleaved (the order flips every pair) after one warm-up of each. The warm-up step
makes the run's network and its holder, as a run does once for all its steps (its time is printed
too); the steps then join the holder's network namespace, so they skip the network setup a plain
``docker run`` pays for each container: that, not a cheaper measurement, is why Scanflow's side can
be faster. Prints both medians and the ratio (target: within 1.2x). The tracker is off:
``benchmarks/tracking.py`` measures that.

Starts an engine and builds the test image when missing (``scripts/docker-engine.sh``,
``scripts/base-image.sh``).

    python benchmarks/containers.py [--pairs 20] [--image scanflow-test/python:3.11-bookworm]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.2
COMMAND = ["sh", "-c", "echo hi > /tmp/x"]

SPEC = """\
apiVersion: scanflow/v1
name: containers_bench
steps:
  - {name: hi, stage: packaging, image: "IMAGE", command: ["sh", "-c", "echo hi > /tmp/x"]}
"""


def _engine_and_image(image: str) -> None:
    env = {**os.environ, "SCANFLOW_TEST_IMAGE": image}
    for script in ("docker-engine.sh", "base-image.sh"):
        command = ["bash", str(ROOT / "scripts" / script)]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"scripts/{script} failed: {done.stderr.strip()}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument(
        "--image", default=os.environ.get("SCANFLOW_TEST_IMAGE", "scanflow-test/python:3.11-bookworm")
    )
    args = parser.parse_args()
    if args.pairs < 10:
        parser.error("--pairs: at least 10")
    os.environ["SCANFLOW_TRACKER"] = "off"
    _engine_and_image(args.image)

    import docker

    from scanflow_core.plugins import get_plugin_manager
    from scanflow_core.runs import WorkflowRun
    from scanflow_core.runtimes.docker import wait_removed
    from scanflow_core.spec import load_workflow
    from scanflow_core.steps import run_step

    client = docker.from_env()
    with tempfile.TemporaryDirectory(prefix="scanflow-containers-") as tmp:
        spec = Path(tmp) / "scanflow.yaml"
        spec.write_text(SPEC.replace("IMAGE", args.image), encoding="utf-8")
        run = WorkflowRun(load_workflow(spec), home=Path(tmp) / "home", pm=get_plugin_manager(autoload=False))
        run.open()

        def plain() -> float:
            started = time.perf_counter()
            client.containers.run(args.image, COMMAND, remove=True)
            return time.perf_counter() - started

        def scanflow() -> float:
            started = time.perf_counter()
            step_run = run_step(run, "hi")
            took = time.perf_counter() - started
            assert step_run.execution is not None and step_run.execution.runtime == "docker"
            wait_removed(run)  # not timed, but done before the next measurement starts
            return took

        try:
            plain()  # warm-up: image layers in the page cache
            first = scanflow()  # and the run's network and its holder made, once per run
            times: dict[str, list[float]] = {"plain": [], "scanflow": []}
            for i in range(args.pairs):
                order = (("plain", plain), ("scanflow", scanflow))
                for name, measure in order if i % 2 == 0 else order[::-1]:
                    times[name].append(measure())
        finally:
            run.finish("succeeded", [])
            run.pm.hook.scanflow_workflow_finish(run=run)  # removes the run's network
            client.close()

    plain_s, scanflow_s = statistics.median(times["plain"]), statistics.median(times["scanflow"])
    ratio = scanflow_s / plain_s
    verdict = "within" if ratio <= TARGET else "OVER"
    print(f"{args.pairs} interleaved pairs, image {args.image}, command {' '.join(COMMAND)!r}")
    print(f"  plain docker run (SDK)  median {plain_s * 1000:7.1f} ms")
    print(f"  Scanflow run_step       median {scanflow_s * 1000:7.1f} ms")
    print(f"  ratio {ratio:.3f}x ({verdict} the {TARGET}x target)")
    print(f"  a run's first container step, which makes its network and holder: {first * 1000:.1f} ms")
    ratios = sorted(s / p for p, s in zip(times["plain"], times["scanflow"], strict=True))
    middle = statistics.median(ratios)
    print(f"  per-pair ratios: min {ratios[0]:.2f}  median {middle:.2f}  max {ratios[-1]:.2f}")


if __name__ == "__main__":
    main()
