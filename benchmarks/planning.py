"""Loading, validating and planning generated specs of 100 / 1,000 / 10,000 steps.

Each spec is a layered DAG (10 steps wide) where every step reads one artifact of a step in the
layer before, has params, a check and a ``when:`` on a parameter, with objectives over the last
steps: the loader parses the YAML, validates every model, flattens, orders and checks every graph
rule. Prints the median time per size and the time per step, so growth is visible (linear means a
flat per-step column). Target (issue #3): 1,000 steps under 1 s.

    python benchmarks/planning.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from scanflow_core.spec import load_workflow

WIDTH = 10


def generate(n: int) -> dict[str, object]:
    steps = []
    for i in range(n):
        step: dict[str, object] = {
            "name": f"s{i}",
            "stage": "data_transformation" if i < n - 1 else "evaluation",
            "call": "steps:work",
            "params": {"k": i},
            "outputs": {f"a{i}": {"kind": "data"}},
            "checks": [{"use": "rows", "on": f"a{i}", "min": 1}],
            "when": "params.enabled",
        }
        if i >= WIDTH:
            step["inputs"] = {"data": f"a{i - WIDTH + (i % 3)}"}
        steps.append(step)
    return {
        "apiVersion": "scanflow/v1",
        "name": f"generated_{n}",
        "params": {"enabled": True},
        "objectives": [f"s{n - 1}.accuracy >= 0.9", {"name": "fast", "expr": f"s{n - 2}.seconds < 60"}],
        "steps": steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="*", default=[100, 1000, 10000])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            path = Path(tmp) / f"spec_{n}.yaml"
            path.write_text(yaml.safe_dump(generate(n), sort_keys=False))
            times = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                workflow = load_workflow(path)
                times.append(time.perf_counter() - started)
            assert len(workflow.plan) == n
            rows.append((n, statistics.median(times)))
    print(f"{'steps':>7}  {'load+validate+plan':>20}  {'per step':>10}  growth vs smallest")
    first = rows[0][1] / rows[0][0]
    for n, seconds in rows:
        per_step = seconds / n
        print(
            f"{n:>7}  {seconds * 1000:>17.1f} ms  {per_step * 1e6:>7.1f} µs  {per_step / first:.2f}x per step"
        )
    thousand = dict(rows).get(1000)
    if thousand is not None:
        print(f"1,000 steps in {thousand:.3f} s ({'under' if thousand < 1 else 'OVER'} the 1 s target)")


if __name__ == "__main__":
    main()
