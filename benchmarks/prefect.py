"""The Prefect adapter's own cost: a ``@scanflow_task`` around a trivial function vs a plain ``@task``
around the same function, called one after the other in the same flow run.

Prefect runs in this process against a temporary server and database (``prefect_test_harness``, a few
seconds to start). One flow run calls each task ``--calls`` times, alternating, after a few warm-up
calls; each call is timed as the flow sees it (the task run's creation, its state changes and its
body). Prints the median per call of each, their ratio, and where the Scanflow task's extra time
goes: the core's step path (the one-step spec, the run, attestation) and the adapter's own part. A
Scanflow task is not cached (a cached call would be no step of the run), so a plain task without
caching is shown too. Tracking is off (``SCANFLOW_TRACKER``);
a decorated task is always attested. Target (issue #8): within 1.1x of the plain task. The Scanflow run
directory is on a tmpfs when /dev/shm exists, on disk with ``--disk``.

    python benchmarks/prefect.py [--calls 200] [--disk]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Run as a script, this file's folder comes first on sys.path, where this file would hide the prefect package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

WARM_UP = 5


def trivial(x: int = 1) -> dict[str, int]:
    return {"value": x}


def _timed(record: list[float], function: Any) -> Any:
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            record.append(time.perf_counter() - started)

    return timed


def _measure(calls: int) -> dict[str, list[float]]:
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE

    import scanflow_prefect.tasks as adapter
    from scanflow_prefect import scanflow_task

    plain = task(trivial, name="plain")
    uncached = task(trivial, name="uncached", cache_policy=NO_CACHE)
    scanflow = scanflow_task(trivial, stage="data_analysis", name="scanflow")
    step = scanflow.scanflow_step  # type: ignore[attr-defined]
    body: list[float] = []  # the task run's body: the adapter, with the core's step path in it
    core: list[float] = []  # the core's step path alone (TaskStep.run)
    step.run = _timed(core, step.run)
    adapter._run = _timed(body, adapter._run)  # type: ignore[attr-defined]
    times: dict[str, list[float]] = {"plain": [], "uncached": [], "scanflow": []}

    @flow(name="bench-prefect")
    def bench() -> None:
        for i in range(WARM_UP + calls):
            for name, each in (("plain", plain), ("uncached", uncached), ("scanflow", scanflow)):
                started = time.perf_counter()
                each(x=i)
                if i >= WARM_UP:
                    times[name].append(time.perf_counter() - started)

    bench()
    times["step path"] = core[WARM_UP:]
    times["adapter"] = [b - c for b, c in zip(body[WARM_UP:], core[WARM_UP:], strict=True)]
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--disk", action="store_true", help="put the run directory on disk, not tmpfs")
    args = parser.parse_args()
    base = None if args.disk or not Path("/dev/shm").is_dir() else Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=base) as tmp, tempfile.TemporaryDirectory() as prefect_home:
        os.environ.update(
            {
                "SCANFLOW_HOME": str(Path(tmp) / ".scanflow"),
                "SCANFLOW_TRACKER": "off",
                "PREFECT_HOME": prefect_home,
                "PREFECT_LOCAL_STORAGE_PATH": str(Path(prefect_home) / "storage"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_LOGGING_LEVEL": "WARNING",
            }
        )
        from prefect.testing.utilities import prefect_test_harness

        with prefect_test_harness(server_startup_timeout=120):
            times = _measure(args.calls)
    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    ratio = medians["scanflow"] / medians["plain"]
    print(
        f"{args.calls} calls of each task in one flow run, median per call (run directory on {base or 'tmp'})"
    )
    print(f"  plain @task                                   {medians['plain']:8.2f} ms")
    print(f"  plain @task(cache_policy=NO_CACHE)            {medians['uncached']:8.2f} ms")
    print(f"  @scanflow_task (no cache, like the line above) {medians['scanflow']:7.2f} ms")
    print(f"    the core's step path (TaskStep.run)         {medians['step path']:8.2f} ms")
    print(f"    the adapter (run id, step name, references) {medians['adapter']:8.2f} ms")
    verdict = "within" if ratio <= 1.1 else "OVER"
    print(f"  ratio to the plain @task                      {ratio:8.2f}x ({verdict} the 1.1x target)")


if __name__ == "__main__":
    main()
