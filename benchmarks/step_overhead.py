"""The step path's own overhead: a trivial step through ``run_step`` vs calling its function directly.

Every built-in plugin is registered (runtimes, stage metadata) and idle; the run directory is real
(on a tmpfs when /dev/shm exists, else a temporary folder). Prints the per-step overhead in
milliseconds and the breakdown of where it goes. Target (issue #3): under 1 ms per step.

    python benchmarks/step_overhead.py [--steps 300] [--disk]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from scanflow_core.plugins import get_plugin_manager
from scanflow_core.runs import WorkflowRun
from scanflow_core.spec import load_workflow
from scanflow_core.steps import run_step

SPEC = """
apiVersion: scanflow/v1
name: overhead
stage_metadata: STAGE_METADATA
steps:
  - {name: trivial, stage: data_analysis, call: bench_steps:trivial}
"""

CODE = """
def trivial(x=1):
    return {"value": x}
"""


def _measure(folder: Path, steps: int, stage_metadata: str) -> tuple[float, float]:
    (folder / "bench_steps.py").write_text(textwrap.dedent(CODE))
    spec = folder / "scanflow.yaml"
    spec.write_text(SPEC.replace("STAGE_METADATA", stage_metadata))
    workflow = load_workflow(spec)
    run = WorkflowRun(workflow, home=folder / ".scanflow", pm=get_plugin_manager(autoload=False))
    run.open()
    run_step(run, "trivial")  # warm: imports the step module, fills caches
    import bench_steps  # type: ignore[import-not-found]

    direct, through = [], []
    for _ in range(steps):
        started = time.perf_counter()
        bench_steps.trivial()
        direct.append(time.perf_counter() - started)
        started = time.perf_counter()
        run_step(run, "trivial")
        through.append(time.perf_counter() - started)
    return statistics.median(direct), statistics.median(through)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--disk", action="store_true", help="put the run directory on disk, not tmpfs")
    args = parser.parse_args()
    base = None if args.disk or not Path("/dev/shm").is_dir() else Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        print(f"{args.steps} trivial steps, median per step (run directory on {base or 'tmp'})")
        for stage_metadata in ("warn", "off"):
            folder = Path(tmp) / stage_metadata
            folder.mkdir()
            direct, through = _measure(folder, args.steps, stage_metadata)
            overhead_ms = (through - direct) * 1000
            print(
                f"  stage_metadata={stage_metadata:<4}  direct call {direct * 1e6:8.1f} µs   "
                f"through run_step {through * 1e6:8.1f} µs   overhead {overhead_ms:.3f} ms per step "
                f"({'under' if overhead_ms < 1 else 'OVER'} the 1 ms target)"
            )
            sys.modules.pop("bench_steps", None)
            sys.path.remove(str(folder))


if __name__ == "__main__":
    main()
