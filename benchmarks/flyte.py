"""The Flyte adapter's own cost: a ``@scanflow_task`` around a trivial function vs a plain flytekit ``@task``
around the same function, both executed locally by flytekit.

Each call is timed on its own (``perf_counter`` around the task call) inside one local workflow execution,
as the tasks of a ``@scanflow_workflow`` run: the Scanflow calls share one Scanflow run (one step per
call: ``trivial``, ``trivial_2``, …). The two kinds alternate, after warm-up calls; the median per call
of each and their ratio are printed. The run directory is real: on a tmpfs when /dev/shm exists, on
disk with ``--disk``. Tracking is off (``SCANFLOW_TRACKER=off``), as in ``benchmarks/step_overhead.py``.
A decorated task has no spec to switch attestation off in, so two cases are measured: every built-in
plugin registered (each call signs its Ed25519 statement), and the attestation plugin unregistered
(the plugins idle, the figure comparable with ``step_overhead.py``'s). Target (issue #9): within 1.1x.
Last, the floor under any such target, measured in the same run: what writing a step's record before
the call returns costs with no Scanflow code at all (a folder, an atomic write; then a signed
statement too), and the ratio a plain task plus only that would have.

    python benchmarks/flyte.py [--calls 200] [--disk]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from record_floor import step_floor

os.environ["SCANFLOW_TRACKER"] = "off"
os.environ.setdefault("FLYTE_SDK_RICH_TRACEBACKS", "0")


def trivial(x: int = 1) -> float:
    return float(x)


def _tasks() -> tuple[Any, Any]:
    from flytekit import task

    from scanflow_flyte import scanflow_task

    return task(trivial), scanflow_task(stage="data_analysis")(trivial)


def _time(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _measure(calls: int, attestation: bool) -> tuple[float, float]:
    from flytekit import FlyteContextManager
    from flytekit.core.context_manager import ExecutionState

    from scanflow_flyte.runs import local_execution_id, plugin_manager

    pm = plugin_manager()
    attest = pm.get_plugin("scanflow_core.attestation.plugin")
    if not attestation and attest is not None:
        pm.unregister(attest)
    plain, scanflow = _tasks()
    ctx = FlyteContextManager.current_context()
    state = ctx.new_execution_state().with_params(mode=ExecutionState.Mode.LOCAL_WORKFLOW_EXECUTION)
    try:
        running = FlyteContextManager.with_context(ctx.with_execution_state(state))
        with running as execution, local_execution_id(execution):  # one execution: one Scanflow run
            for _ in range(10):  # warm: imports, caches, the run's directory and keys
                plain(x=1)
                scanflow(x=1)
            direct, through = [], []
            for _ in range(calls):
                direct.append(_time(lambda: plain(x=1)))
                through.append(_time(lambda: scanflow(x=1)))
    finally:
        if not attestation and attest is not None:
            pm.register(attest, name="scanflow_core.attestation.plugin")
    return statistics.median(direct), statistics.median(through)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--disk", action="store_true", help="put the run directory on disk, not tmpfs")
    args = parser.parse_args()
    base = None if args.disk or not Path("/dev/shm").is_dir() else Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        os.environ["SCANFLOW_HOME"] = str(Path(tmp) / ".scanflow")
        print(
            f"{args.calls} local calls of a trivial task, median per call (run directory on {base or 'tmp'})"
        )
        plains = {}
        for label, attestation in (
            ("attestation on (Ed25519)", True),
            ("plugins idle (no attestation)", False),
        ):
            plain, scanflow = _measure(args.calls, attestation)
            plains[attestation] = plain
            ratio = scanflow / plain
            verdict = "within" if ratio <= 1.1 else "OVER"
            own = 1000 * (scanflow - plain)
            print(
                f"  {label:<30} @task {plain * 1000:7.3f} ms   @scanflow_task {scanflow * 1000:7.3f} ms"
                f"   ratio {ratio:5.2f}x ({verdict} the 1.1x target; Scanflow's own {own:.3f} ms)"
            )
        bare, signed = step_floor(Path(tmp), args.calls)
        print("  the floor of any step recorded before it returns (no Scanflow code: files and a signature)")
        for label, floor, plain in (
            ("a record and a signed statement", signed, plains[True]),
            ("a record alone", bare, plains[False]),
        ):
            print(
                f"  {label:<32} {floor * 1000:7.3f} ms   with the plain @task: "
                f"ratio {(plain + floor) / plain:5.2f}x at best"
            )


if __name__ == "__main__":
    main()
