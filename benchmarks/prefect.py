"""The Prefect adapter's own cost: a ``@scanflow_task`` around a trivial function vs a plain ``@task``
around the same function, called one after the other in the same flow run.

Prefect runs in this process against a temporary server and database (``prefect_test_harness``, a few
seconds to start). One flow run calls each task ``--calls`` times, alternating, after a few warm-up
calls; each call is timed as the flow sees it (the task run's creation, its state changes and its
body). Prints the median per call of each, their ratio, and where the Scanflow task's extra time
goes: the core's step path (the one-step spec, the run, attestation), the adapter's own part and
Prefect's engine around the body (paired per call). The order of the tasks turns each round. A
Scanflow task is not cached (a cached call would be no step of the run), so a plain task without
caching is shown too. Tracking is off (``SCANFLOW_TRACKER``);
a decorated task is always attested. Target (issue #8): within 1.1x of the plain task. The Scanflow run
directory is on a tmpfs when /dev/shm exists, on disk with ``--disk``. A fourth task, called in turn with
the others, is the floor under the target: a no-cache task whose body writes the files a step writes and
signs a statement, with no Scanflow code (``record_floor.py``).

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


def _floor_module() -> Any:
    """``record_floor.py`` beside this file (this folder is off ``sys.path``, see above)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("record_floor", _HERE / "record_floor.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FloorStep = _floor_module().FloorStep


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

    floor_step = FloorStep(Path(os.environ["SCANFLOW_HOME"]).parent / "floor")

    def floor_body(x: int = 1) -> dict[str, int]:
        floor_step()
        return {"value": x}

    floor = task(floor_body, name="floor", cache_policy=NO_CACHE)
    times["floor"] = []
    kinds = [("plain", plain), ("uncached", uncached), ("scanflow", scanflow), ("floor", floor)]

    @flow(name="bench-prefect")
    def bench() -> None:
        for i in range(WARM_UP + calls):
            # The order turns each round: a task called right after a Scanflow task is slower (Prefect's
            # background threads are still sending that task run's events), so no kind always follows it.
            for name, each in kinds[i % 4 :] + kinds[: i % 4]:
                started = time.perf_counter()
                each(x=i)
                if i >= WARM_UP:
                    times[name].append(time.perf_counter() - started)

    bench()
    times["step path"] = core[WARM_UP:]
    times["adapter"] = [b - c for b, c in zip(body[WARM_UP:], core[WARM_UP:], strict=True)]
    # Paired per call (a median of differences, not a difference of medians).
    times["engine"] = [t - b for t, b in zip(times["scanflow"], body[WARM_UP:], strict=True)]
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
    print(f"    Prefect's engine around the body            {medians['engine']:8.2f} ms")
    verdict = "within" if ratio <= 1.1 else "OVER"
    print(f"  ratio to the plain @task                      {ratio:8.2f}x ({verdict} the 1.1x target)")
    floor_ratio = medians["floor"] / medians["plain"]
    print(
        f"  the floor: a no-cache @task writing what a step writes and signing a statement, no Scanflow "
        f"code\n                                                {medians['floor']:8.2f} ms, "
        f"ratio {floor_ratio:.2f}x (what is left for all of Scanflow's own work: "
        f"{max(0.0, 1.1 * medians['plain'] - medians['floor']):.2f} ms)"
    )


if __name__ == "__main__":
    main()
