"""Logging metric points to MLflow: Scanflow against a naive loop and against ``log_batch``.

One fresh embedded store (SQLite, in a temporary folder); 10,000 points of one metric, three ways,
each into its own run of the same experiment:

* naive:     ``mlflow.log_metric`` in a loop, inside ``mlflow.start_run`` (the fluent API);
* log_batch: ``MlflowClient.log_batch`` in chunks of 1,000 (MLflow's maximum);
* scanflow:  a step that calls ``scanflow_core.log_metric`` 10,000 times, timed from its first call
  to the moment the tracker has landed the last batch (the final flush at the end of the step
  included), while every point is also journaled to the run directory.

Targets: naive / scanflow >= 10 and scanflow / log_batch <= 1.2.

    python benchmarks/tracking.py [--points 10000] [--naive-points N] [--rounds 3]

The two fast ways are timed ``--rounds`` times, alternating, and the best of each is kept.

``--naive-points`` times the naive loop on fewer points and scales it up (it is the slow one).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

STEP = """
import time
from scanflow_core import log_metric

STARTED = []

def emit(points):
    STARTED.append(time.perf_counter())
    for i in range(points):
        log_metric("loss", 1.0 / (i + 1), step=i)
"""

SPEC = """
apiVersion: scanflow/v1
name: bench
tracker: {uri: "URI", experiment: bench}
steps:
  - {name: emit, stage: training, call: bench_tracking_steps:emit, params: {points: POINTS}}
"""


class Landed:
    """Runs after the tracker on every ``scanflow_track`` call: when the last metric batch landed."""

    def __init__(self) -> None:
        self.at = 0.0
        self.points = 0

    from scanflow_core.plugins import hookimpl

    @hookimpl(trylast=True)
    def scanflow_track(self, batch: Any) -> None:
        if batch.metrics:
            self.points += len(batch.metrics)
            self.at = time.perf_counter()


def naive(uri: str, points: int) -> float:
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("bench")
    with mlflow.start_run(run_name="naive"):
        started = time.perf_counter()
        for i in range(points):
            mlflow.log_metric("loss", 1.0 / (i + 1), step=i)
        return time.perf_counter() - started


def log_batch(uri: str, experiment_id: str, points: int) -> float:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run(experiment_id, run_name="log_batch").info.run_id
    started = time.perf_counter()
    stamp = int(time.time() * 1000)
    chunk: list[Metric] = []
    for i in range(points):
        chunk.append(Metric("loss", 1.0 / (i + 1), stamp, i))
        if len(chunk) == 1000:
            client.log_batch(run_id, metrics=chunk)
            chunk = []
    if chunk:
        client.log_batch(run_id, metrics=chunk)
    return time.perf_counter() - started


def scanflow(uri: str, folder: Path, points: int) -> float:
    from mlflow import MlflowClient

    from scanflow_core.plugins import get_plugin_manager
    from scanflow_core.runner import run_workflow
    from scanflow_core.spec import load_workflow

    if not (folder / "bench_tracking_steps.py").exists():
        (folder / "bench_tracking_steps.py").write_text(textwrap.dedent(STEP), encoding="utf-8")
        sys.path.insert(0, str(folder))
    import bench_tracking_steps

    spec = folder / "scanflow.yaml"
    spec.write_text(textwrap.dedent(SPEC).replace("URI", uri).replace("POINTS", str(points)))
    landed = Landed()
    pm = get_plugin_manager([landed], autoload=False)
    run = run_workflow(load_workflow(spec), home=folder / ".scanflow", pm=pm)
    assert run.status == "succeeded", run.step_summaries()
    assert landed.points == points, landed.points
    journal = run.step_dir("emit") / "metrics.jsonl"
    journaled = sum(1 for line in journal.open() if line.startswith('{"m"'))
    assert journaled == points, journaled
    history = MlflowClient(tracking_uri=uri).get_metric_history(_child(uri, run.run_id), "loss")
    assert len(history) == points, len(history)
    return landed.at - bench_tracking_steps.STARTED[-1]


def _child(uri: str, run_id: str) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("bench").experiment_id
    query = f"tags.`scanflow.run_id` = '{run_id}' and tags.`scanflow.step` = 'emit'"
    return str(client.search_runs([experiment], filter_string=query)[0].info.run_id)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--naive-points", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3, help="best of this many runs of the two fast ways")
    args = parser.parse_args()
    os.environ.pop("SCANFLOW_TRACKER", None)
    with tempfile.TemporaryDirectory(prefix="scanflow-bench-") as tmp:
        folder = Path(tmp)
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        experiment_id = client.create_experiment("bench", artifact_location=(folder / "art").as_uri())
        # warm up: the store's engine and the first run
        log_batch(uri, experiment_id, 10)

        # best of --rounds, alternating, so that both meet the same machine (shared machines are noisy)
        t_batch = t_scanflow = float("inf")
        for _ in range(args.rounds):
            t_batch = min(t_batch, log_batch(uri, experiment_id, args.points))
            t_scanflow = min(t_scanflow, scanflow(uri, folder, args.points))
        naive_points = args.naive_points or args.points
        t_naive = naive(uri, naive_points) * args.points / naive_points
        scaled = f" (timed on {naive_points} points, scaled)" if naive_points != args.points else ""
        print(f"{args.points} metric points into one run of a fresh SQLite store ({uri})")
        print(f"  naive mlflow.log_metric loop  {t_naive:8.3f} s{scaled}")
        print(f"  MlflowClient.log_batch (1000) {t_batch:8.3f} s")
        print(f"  scanflow_core.log_metric      {t_scanflow:8.3f} s  (to the last batch landed)")
        print(f"  naive / scanflow     = {t_naive / t_scanflow:6.1f}   (target >= 10)")
        print(f"  scanflow / log_batch = {t_scanflow / t_batch:6.2f}   (target <= 1.2)")


if __name__ == "__main__":
    main()
