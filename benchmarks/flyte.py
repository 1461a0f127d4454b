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
A third task, called in turn with the other two, is the floor under any such target: a plain ``@task``
whose body writes the files a step writes (and signs a statement, in the first case) with no Scanflow
code (``record_floor.py``).

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

from record_floor import FloorStep

os.environ["SCANFLOW_TRACKER"] = "off"
os.environ.setdefault("FLYTE_SDK_RICH_TRACEBACKS", "0")


def trivial(x: int = 1) -> float:
    return float(x)


_floor: list[FloorStep] = []


def floor_trivial(x: int = 1) -> float:
    """The floor: what a recorded step writes and signs (``record_floor.py``), then the trivial body."""
    _floor[0]()
    return float(x)


def _tasks() -> tuple[Any, Any, Any]:
    from flytekit import task

    from scanflow_flyte import scanflow_task

    return task(trivial), scanflow_task(stage="data_analysis")(trivial), task(floor_trivial)


def _time(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _measure(calls: int, attestation: bool) -> tuple[float, float, float]:
    from flytekit import FlyteContextManager
    from flytekit.core.context_manager import ExecutionState

    from scanflow_flyte.runs import local_execution_id, plugin_manager

    pm = plugin_manager()
    attest = pm.get_plugin("scanflow_core.attestation.plugin")
    if not attestation and attest is not None:
        pm.unregister(attest)
    _floor[:] = [FloorStep(Path(os.environ["SCANFLOW_HOME"]).parent / f"floor-{attestation}", attestation)]
    plain, scanflow, floor = _tasks()
    ctx = FlyteContextManager.current_context()
    state = ctx.new_execution_state().with_params(mode=ExecutionState.Mode.LOCAL_WORKFLOW_EXECUTION)
    try:
        running = FlyteContextManager.with_context(ctx.with_execution_state(state))
        with running as execution, local_execution_id(execution):  # one execution: one Scanflow run
            kinds = [plain, scanflow, floor]
            for _ in range(10):  # warm: imports, caches, the run's directory and keys
                for each in kinds:
                    each(x=1)
            times: dict[Any, list[float]] = {each: [] for each in kinds}
            for i in range(calls):
                for each in kinds[i % 3 :] + kinds[: i % 3]:  # the order turns each round
                    times[each].append(_time(lambda each=each: each(x=1)))
    finally:
        if not attestation and attest is not None:
            pm.register(attest, name="scanflow_core.attestation.plugin")
    return tuple(statistics.median(times[each]) for each in kinds)  # type: ignore[return-value]


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
        for label, attestation in (
            ("attestation on (Ed25519)", True),
            ("plugins idle (no attestation)", False),
        ):
            plain, scanflow, floor = _measure(args.calls, attestation)
            ratio = scanflow / plain
            verdict = "within" if ratio <= 1.1 else "OVER"
            own = 1000 * (scanflow - plain)
            print(
                f"  {label:<30} @task {plain * 1000:7.3f} ms   @scanflow_task {scanflow * 1000:7.3f} ms"
                f"   ratio {ratio:5.2f}x ({verdict} the 1.1x target; Scanflow's own {own:.3f} ms)"
            )
            what = "the files a step writes" + (" and a signature" if attestation else "")
            print(
                f"  {'':<30} floor @task {floor * 1000:7.3f} ms ({what}, no Scanflow code)"
                f"   ratio {floor / plain:5.2f}x"
            )


if __name__ == "__main__":
    main()
