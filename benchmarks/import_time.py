"""How long ``import scanflow_core`` takes, and that heavy libraries stay out of it.

Runs ``python -X importtime -c "import scanflow_core"`` in fresh interpreters and reports the
median cumulative import time of ``scanflow_core`` (target, issue #3: within 100 ms), next to the
time of importing the modules a run needs (the spec loader and the runner), and the bare
interpreter's start-up, all measured in this run.

    python benchmarks/import_time.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time

HEAVY = ("mlflow", "torch", "great_expectations", "docker", "airflow", "prefect", "flytekit", "pydantic")


def import_us(statement: str, module: str) -> int:
    """Cumulative microseconds ``-X importtime`` reports for ``module`` when running ``statement``."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement], capture_output=True, text=True, check=True
    ).stderr
    pattern = re.compile(rf"^import time:\s+\d+ \|\s+(\d+) \|\s*{re.escape(module)}$", re.M)
    match = pattern.search(out)
    if match is None:
        raise SystemExit(f"no import time for {module} in:\n{out[-2000:]}")
    return int(match.group(1))


def wall_ms(statement: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], check=True)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    core = [import_us("import scanflow_core", "scanflow_core") for _ in range(args.repeat)]
    run_path = [import_us("import scanflow_core.runner", "scanflow_core.runner") for _ in range(args.repeat)]
    bare = [wall_ms("pass") for _ in range(args.repeat)]
    with_core = [wall_ms("import scanflow_core") for _ in range(args.repeat)]
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, scanflow_core.runner, scanflow_core.cli; print(' '.join(sys.modules))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    heavy = sorted({m.split(".")[0] for m in loaded} & set(HEAVY) - {"pydantic"})
    median_core = statistics.median(core) / 1000
    runner_ms = statistics.median(run_path) / 1000
    share = median_core / 100
    print(f"import scanflow_core            {median_core:7.2f} ms  (target 100 ms: {share:.2f}x of it)")
    print(f"import scanflow_core.runner     {runner_ms:7.2f} ms  (spec, pydantic, pluggy, runner)")
    print(f"python -c pass (wall)           {statistics.median(bare):7.2f} ms")
    print(
        f"python -c 'import scanflow_core' {statistics.median(with_core):6.2f} ms  "
        f"(ratio to bare start-up {statistics.median(with_core) / statistics.median(bare):.2f})"
    )
    print(f"heavy libraries loaded by the runner and CLI: {', '.join(heavy) or 'none'}")


if __name__ == "__main__":
    main()
