"""The step path's own overhead: a trivial step through ``run_step`` vs calling its function directly.

Every built-in plugin is registered. "Idle" means tracking and attestation are switched off in the spec
(their plugins still answer every hook); a third case, for information, has both on (an embedded MLflow
store and Ed25519 signatures). The run directory is real: on a tmpfs when /dev/shm exists, on disk
with ``--disk``. Prints the median overhead per step. Target (issue #3): under 1 ms with plugins idle.

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
tracker: {enabled: TRACKING}
attestation: {enabled: ATTESTING}
steps:
  - {name: trivial, stage: data_analysis, call: bench_steps:trivial}
"""

CODE = """
def trivial(x=1):
    return {"value": x}
"""


def _measure(folder: Path, steps: int, stage_metadata: str, active: bool) -> tuple[float, float]:
    (folder / "bench_steps.py").write_text(textwrap.dedent(CODE))
    spec = folder / "scanflow.yaml"
    flag = "true" if active else "false"
    spec.write_text(
        SPEC.replace("STAGE_METADATA", stage_metadata).replace("TRACKING", flag).replace("ATTESTING", flag)
    )
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
        cases = [
            ("built-in plugins idle, stage metadata on", "warn", False),
            ("built-in plugins idle, stage metadata off", "off", False),
            ("tracking (embedded MLflow) and attestation (Ed25519) on", "warn", True),
        ]
        for n, (label, stage_metadata, active) in enumerate(cases):
            folder = Path(tmp) / f"case{n}"
            folder.mkdir()
            direct, through = _measure(folder, args.steps, stage_metadata, active)
            overhead_ms = (through - direct) * 1000
            verdict = "" if active else f" ({'under' if overhead_ms < 1 else 'OVER'} the 1 ms target)"
            print(f"  {label:<58} overhead {overhead_ms:7.3f} ms per step{verdict}")
            sys.modules.pop("bench_steps", None)
            sys.path.remove(str(folder))


if __name__ == "__main__":
    main()
