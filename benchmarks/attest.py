"""Attesting a large output: Scanflow (hash + statement + DSSE sign) vs ``openssl dgst -sha256``.

Makes a 1 GiB file (in /dev/shm when it has room, else the temporary folder; removed after), places
it as the output of a one-step workflow run, and times, in interleaved repetitions:

- ``openssl dgst -sha256 FILE`` (the fastest hash on the machine), and
- what Scanflow does when that step finishes: digest the output once (the core's ``digest_path``, the
  digest ``ArtifactRecord`` carries), build the in-toto statement and sign its DSSE envelope.

Prints both medians, the ratio (target, issue #4: within 1.15x) and the peak memory of the Scanflow
side (resident set growth and Python's traced peak): constant, whatever the file's size.

    python benchmarks/attest.py [--size-mib 1024] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from scanflow_core.attestation.plugin import attest_step
from scanflow_core.digests import digest_path, path_size
from scanflow_core.plugins import get_plugin_manager
from scanflow_core.records import ArtifactRecord, ExecutionResult
from scanflow_core.runs import StepRun, WorkflowRun
from scanflow_core.spec import load_workflow

SPEC = """\
apiVersion: scanflow/v1
name: attest_bench
steps:
  - {name: export, stage: packaging, command: "true", outputs: {model: {kind: model, path: model.bin}}}
"""


def _folder(size: int) -> Path:
    shm = Path("/dev/shm")
    if shm.is_dir() and shutil.disk_usage(shm).free > size * 1.5:
        return Path(tempfile.mkdtemp(prefix="scanflow-attest-", dir=shm))
    return Path(tempfile.mkdtemp(prefix="scanflow-attest-"))


def _write(path: Path, size: int) -> None:
    block = os.urandom(8 << 20)
    with path.open("wb") as f:
        written = 0
        while written < size:
            n = min(len(block), size - written)
            f.write(block[:n])
            written += n


def _openssl(path: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["openssl", "dgst", "-sha256", str(path)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def _scanflow(step_run: StepRun, path: Path) -> float:
    started = time.perf_counter()
    step_run.output_records = [
        ArtifactRecord("model", str(path), digest_path(path), path_size(path), "model")
    ]
    attest_step(step_run)
    return time.perf_counter() - started


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("openssl") is None:
        sys.exit("openssl is not on PATH")
    size = args.size_mib << 20
    folder = _folder(size)
    try:
        (folder / "scanflow.yaml").write_text(SPEC)
        run = WorkflowRun(
            load_workflow(folder / "scanflow.yaml"),
            home=folder / ".scanflow",
            pm=get_plugin_manager(autoload=False),
        )
        run.open()
        step_run = StepRun(run, run.plan["export"])
        step_run.started_at = time.time()
        step_run.execution = ExecutionResult("local", 0)
        step_run.output_dir.mkdir(parents=True)
        path = step_run.outputs["model"]
        _write(path, size)
        where = "tmpfs" if str(folder).startswith("/dev/shm") else "disk"
        print(f"file: {path} ({args.size_mib} MiB, on {where})")

        _scanflow(step_run, path)  # warm: imports, the key (generated here, once), the page cache
        _openssl(path)
        rss_before = _rss_mib()
        openssl, scanflow = [], []
        for i in range(args.repeat):
            pair = [("openssl", _openssl), ("scanflow", lambda p: _scanflow(step_run, p))]
            for name, timed in pair if i % 2 == 0 else reversed(pair):
                (openssl if name == "openssl" else scanflow).append(timed(path))
        rss_after = _rss_mib()
        tracemalloc.start()
        _scanflow(step_run, path)
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()

        o, s = statistics.median(openssl), statistics.median(scanflow)
        for label, median, runs in (
            ("openssl dgst -sha256   ", o, openssl),
            ("scanflow hash+stmt+sign", s, scanflow),
        ):
            print(
                f"{label}  median {median:.3f} s  ({args.size_mib / median:,.0f} MiB/s)  runs {_runs(runs)}"
            )
        print(f"ratio scanflow/openssl   {s / o:.3f}  (target <= 1.15)")
        print(
            f"peak RSS {rss_after:.1f} MiB (grew {rss_after - rss_before:.1f} MiB over the timed runs); "
            f"Python traced peak during one attestation {traced_peak / 1024:.0f} KiB"
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _runs(values: list[float]) -> str:
    return " ".join(f"{v:.3f}" for v in values)


if __name__ == "__main__":
    main()
