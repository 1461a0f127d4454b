"""The Airflow adapter's own cost: ``ScanflowOperator`` around a trivial step vs a ``PythonOperator`` that
runs the same callable, both in ``dag.test()``; and ``dag_from_spec`` on a generated 200-step spec.

Airflow runs in this process against a throwaway ``AIRFLOW_HOME`` and SQLite metadata database (migrated
once, a few seconds). Each DAG has ``--tasks`` independent tasks; each kind's DAG runs ``--repeat`` times
after one warm-up run, alternating. Per-task time is each task instance's own duration (Airflow's
start to end, as the UI shows it); the median over every task of every timed run is reported, then the
ratio. Tracking and attestation are off in the spec (the plugins still answer every hook), as in
``benchmarks/step_overhead.py``. Targets (issue #7): within 1.1x of the PythonOperator; ``dag_from_spec``
on 200 steps under 1 s.

Then, for information, where a ScanflowOperator task's extra time goes: the cost of one XCom push in
``dag.test()`` (a PythonOperator with and without its return value pushed), and, measured alone, loading
the spec, making a plugin manager (``get_plugin_manager()`` looks for entry points in every installed
distribution) and opening the run plus ``run_step``.

    python benchmarks/airflow.py [--tasks 10] [--repeat 5] [--steps 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

# Run as a script, this file's folder comes first on sys.path, where this file would hide the airflow package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

CODE = """
def trivial(x=1):
    return {"value": x}
"""

DAG_FILE = """
import sys
sys.path.insert(0, {folder!r})
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG
from scanflow_airflow import ScanflowOperator
import bench_steps

with DAG("bench_python", schedule=None) as python_dag:
    for i in range({tasks}):
        PythonOperator(task_id=f"t{{i}}", python_callable=bench_steps.trivial)

with DAG("bench_python_no_xcom", schedule=None) as python_no_xcom_dag:
    for i in range({tasks}):
        PythonOperator(task_id=f"t{{i}}", python_callable=bench_steps.trivial, do_xcom_push=False)

with DAG("bench_scanflow", schedule=None) as scanflow_dag:
    for i in range({tasks}):
        ScanflowOperator(task_id=f"t{{i}}", spec={spec!r}, step=f"t{{i}}", home={home!r})
"""


def _airflow_home(folder: Path) -> Path:
    """Point Airflow at ``folder`` (before Airflow is imported) and migrate its database; → DAGs folder."""
    dags = folder / "dags"
    dags.mkdir(parents=True)
    os.environ.update(
        {
            "AIRFLOW_HOME": str(folder),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "SCANFLOW_TRACKER": "off",
        }
    )
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())
    return dags


def _spec(folder: Path, tasks: int) -> Path:
    (folder / "bench_steps.py").write_text(textwrap.dedent(CODE))
    lines = [
        "apiVersion: scanflow/v1",
        "name: bench",
        "tracker: {enabled: false}",
        "attestation: {enabled: false}",
        "steps:",
    ]
    lines += [f"  - {{name: t{i}, stage: data_analysis, call: bench_steps:trivial}}" for i in range(tasks)]
    spec = folder / "scanflow.yaml"
    spec.write_text("\n".join(lines) + "\n")
    return spec


def _durations(dag_run: Any) -> list[float]:
    tis = dag_run.get_task_instances()
    bad = [ti.task_id for ti in tis if str(ti.state) != "success"]
    if bad:
        raise RuntimeError(f"tasks did not succeed: {bad}")
    return [(ti.end_date - ti.start_date).total_seconds() for ti in tis]


def measure_operators(folder: Path, tasks: int, repeat: int) -> dict[str, tuple[float, float]]:
    """→ {kind: (median task-instance duration, dag.test() wall time per task)}."""
    dags_folder = _airflow_home(folder / "airflow")
    spec = _spec(folder, tasks)
    dag_file = dags_folder / "bench_dags.py"
    dag_file.write_text(
        DAG_FILE.format(folder=str(folder), tasks=tasks, spec=str(spec), home=str(folder / "scanflow-home"))
    )
    sys.path.insert(0, str(folder))
    from airflow.sdk import DAG

    namespace: dict[str, Any] = {"__file__": str(dag_file)}
    exec(compile(dag_file.read_text(), str(dag_file), "exec"), namespace)
    dags = {dag.dag_id.removeprefix("bench_"): dag for dag in namespace.values() if isinstance(dag, DAG)}
    for dag in dags.values():
        dag.fileloc = str(dag_file)
    durations: dict[str, list[float]] = {kind: [] for kind in dags}
    walls: dict[str, list[float]] = {kind: [] for kind in dags}
    for n in range(repeat + 1):
        for kind, dag in dags.items():
            started = time.perf_counter()
            dag_run = dag.test()
            wall = time.perf_counter() - started
            if n:  # the first run of each is the warm-up
                durations[kind] += _durations(dag_run)
                walls[kind].append(wall / tasks)
    return {kind: (statistics.median(durations[kind]), statistics.median(walls[kind])) for kind in dags}


def measure_dag_from_spec(folder: Path, steps: int, repeat: int) -> float:
    """Median seconds for ``dag_from_spec`` on a generated chain of ``steps`` steps passing an artifact."""
    from scanflow_airflow import dag_from_spec

    lines = ["apiVersion: scanflow/v1", "name: wide", "params: {seed: 0}", "steps:"]
    lines.append("  - {name: s0, stage: data_ingestion, call: m:f, outputs: [a0]}")
    for i in range(1, steps):
        lines.append(
            f"  - {{name: s{i}, stage: data_transformation, call: m:f, inputs: [a{i - 1}], outputs: [a{i}],"
            f" params: {{k: {i}}}, retries: 1}}"
        )
    spec = folder / "wide.yaml"
    spec.write_text("\n".join(lines) + "\n")
    times = []
    for n in range(repeat + 1):
        started = time.perf_counter()
        dag = dag_from_spec(spec, f"wide_{n}")
        elapsed = time.perf_counter() - started
        assert len(dag.task_dict) == steps + 1
        if n:
            times.append(elapsed)
    return statistics.median(times)


def measure_parts(folder: Path, repeat: int = 50) -> dict[str, float]:
    """Median seconds of what ``ScanflowOperator.execute`` does besides Airflow's XCom pushes, each alone."""
    from scanflow_core.plugins import get_plugin_manager
    from scanflow_core.runs import WorkflowRun
    from scanflow_core.spec import load_workflow
    from scanflow_core.steps import run_step

    spec = folder / "scanflow.yaml"
    pm = get_plugin_manager()
    made_pm = "a new plugin manager (tasks share one)"
    parts: dict[str, list[float]] = {"load the spec": [], made_pm: [], "open + run_step": []}
    for n in range(repeat):
        started = time.perf_counter()
        workflow = load_workflow(spec)
        loaded = time.perf_counter()
        get_plugin_manager()
        made = time.perf_counter()
        run = WorkflowRun(workflow, run_id=f"parts-{n}", home=folder / "scanflow-home", pm=pm)
        run.open()
        run_step(run, "t0")
        done = time.perf_counter()
        parts["load the spec"].append(loaded - started)
        parts[made_pm].append(made - loaded)
        parts["open + run_step"].append(done - made)
    return {label: statistics.median(times) for label, times in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=10, help="tasks per DAG (default 10)")
    parser.add_argument("--repeat", type=int, default=5, help="timed DAG runs of each kind (default 5)")
    parser.add_argument("--steps", type=int, default=200, help="steps of the generated spec (default 200)")
    args = parser.parse_args()
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        folder = Path(tmp)
        results = measure_operators(folder, args.tasks, args.repeat)
        print(
            f"dag.test(): {args.tasks} trivial tasks per DAG, {args.repeat} timed runs each after a warm-up"
        )
        labels = {
            "python": "PythonOperator",
            "python_no_xcom": "PythonOperator, do_xcom_push=False",
            "scanflow": "ScanflowOperator",
        }
        for kind, label in labels.items():
            task_s, wall_s = results[kind]
            print(f"  {label:<36} task {task_s * 1000:6.1f} ms   dag.test() per task {wall_s * 1000:6.1f} ms")
        ratio = results["scanflow"][0] / results["python"][0]
        walls = results["scanflow"][1] / results["python"][1]
        verdict = "within" if ratio <= 1.1 else "OVER"
        print(f"  ratio (median task)                  {ratio:.3f}x ({verdict} the 1.1x target)")
        print(f"  ratio (dag.test() per task)          {walls:.3f}x")
        xcom = results["python"][0] - results["python_no_xcom"][0]
        print("where a ScanflowOperator task's time goes besides Airflow's own (medians, for information):")
        print(f"  {'one XCom push (each operator pushes 1)':<64} {xcom * 1000:6.2f} ms")
        for label, seconds in measure_parts(folder).items():
            print(f"  {label:<64} {seconds * 1000:6.2f} ms")
        seconds = measure_dag_from_spec(folder, args.steps, 3)
        verdict = "under" if seconds < 1 else "OVER"
        print(f"dag_from_spec on a {args.steps}-step spec: {seconds:.3f} s median ({verdict} the 1 s target)")


if __name__ == "__main__":
    main()
