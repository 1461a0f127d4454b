"""Drift detection: Scanflow's DriftDetector against alibi-detect's MMDDrift and KSDrift (and Evidently).

Run it from the repository root with the project's venv:

    python benchmarks/drift.py            # the full run (about 30 minutes on 2 busy cores)
    python benchmarks/drift.py --quick    # a smaller run (about 4 minutes), for a smoke test

The data are scikit-learn's bundled digits (1,797 images of 8 x 8 pixels in [0, 1], offline). Each
repetition splits them at random into a reference of 1,200 images and a pool of 597; batches of 20, 50
and 100 images are drawn from the pool, unshifted or shifted in one of five ways (Gaussian noise, a small
rotation, an occluding patch, lower brightness, more of digits 0-4 than of 5-9). Every detector is fitted
on the reference and tests the *same* batches (written to a temporary ``.npz``); each reports a verdict at
alpha = 0.05 and the time its test took. The table gives the false-positive rate on unshifted batches,
the power on each shift, and the median test latency.

alibi-detect and Evidently do not share the project's dependencies, so each runs in its own venv, in a
subprocess that is this same file run with ``--worker``. The venvs live under ``~/.cache/scanflow/bench``
(``--venvs``) and are made on first use with pip (alibi-detect with torch==2.13.0 for MMDDrift's PyTorch
backend; Evidently with pandas<3); pass ``--alibi-python`` / ``--evidently-python`` to use others, or
``--no-install`` to skip making them. When alibi-detect cannot be installed, the table compares against
re-implementations instead (an MMD test with a Gaussian kernel and a permutation test; per-feature KS
tests with a Bonferroni correction), labelled "(re-impl.)". Exit status 1 when a claim does not hold.

Claims checked: Scanflow's false-positive rate at most 0.06; its mean power at least the better of
MMDDrift's and KSDrift's (on the batches all of them tested); its median latency at least 10x below
MMDDrift's at every batch size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path
from typing import Any

import numpy as np

ALPHA = 0.05
SIZES = (20, 50, 100)
SHIFTS = ("noise", "rotation", "occlusion", "brightness", "label")
REFERENCE_ROWS = 1200
#: Shift severities: noise sd, rotation degrees, occluded patch side, brightness factor, weight of 0-4.
SEVERITY = {"noise": 0.02, "rotation": 5.0, "occlusion": 2, "brightness": 0.9, "label": 4.0}
PEERS = {
    "alibi": ["alibi-detect", "torch==2.13.0"],
    "evidently": ["evidently", "pandas<3"],
}
IMPORTS = {"alibi": "import alibi_detect.cd, torch", "evidently": "import evidently.presets"}


# ------------------------------------------------------------------------------------------ the batches


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.data / 16.0).astype(np.float32), bunch.target.astype(np.int64)


def _shift(x: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    from scipy import ndimage

    images = x.reshape(-1, 8, 8).copy()
    severity = SEVERITY[kind]
    if kind == "noise":
        images = images + rng.normal(0.0, severity, images.shape)
    elif kind == "rotation":
        images = np.stack(
            [
                ndimage.rotate(image, float(rng.choice([-1.0, 1.0])) * severity, reshape=False, order=1)
                for image in images
            ]
        )
    elif kind == "occlusion":
        side = int(severity)
        for image in images:
            row, column = rng.integers(1, 8 - side, size=2)
            image[row : row + side, column : column + side] = 0.0
    elif kind == "brightness":
        images = images * severity
    return np.clip(images, 0.0, 1.0).reshape(len(x), -1).astype(np.float32)


def make_batches(path: Path, splits: int, per_condition: dict[str, int]) -> None:
    """Write the references and batches: ``ref{s}``, ``yref{s}``, ``x{s}_{size}_{cond}`` and
    ``y{s}_{size}_{cond}`` (``s`` the split, ``cond`` ``none`` or a shift)."""
    x, y = _digits()
    arrays: dict[str, np.ndarray] = {}
    for split in range(splits):
        rng = np.random.default_rng(1000 + split)
        order = rng.permutation(len(x))
        reference, pool = order[:REFERENCE_ROWS], order[REFERENCE_ROWS:]
        arrays[f"ref{split}"], arrays[f"yref{split}"] = x[reference], y[reference]
        weights = np.where(y[pool] < 5, SEVERITY["label"], 1.0)
        weights /= weights.sum()
        for size in SIZES:
            for condition in ("none", *SHIFTS):
                xs, ys = [], []
                for _ in range(per_condition[condition]):
                    p = weights if condition == "label" else None
                    rows = rng.choice(pool, size=size, replace=False, p=p)
                    batch = x[rows] if condition in ("none", "label") else _shift(x[rows], condition, rng)
                    xs.append(batch)
                    ys.append(y[rows])
                arrays[f"x{split}_{size}_{condition}"] = np.stack(xs)
                arrays[f"y{split}_{size}_{condition}"] = np.stack(ys)
    np.savez(path, **arrays)


# ------------------------------------------------------------------------------------------ detectors


def run_detector(name: str, data: Path, limits: dict[str, int], splits: int) -> dict[str, Any]:
    """Fit ``name`` on each reference and test the first ``limits[cond]`` batches of each condition.

    Returns ``{"decisions": {key: [0/1, ...]}, "latency": {key: [seconds, ...]}, "fit_s": [...]}``
    with ``key`` = ``"{split}_{size}_{cond}"``. Imports only what ``name`` needs.
    """
    arrays = np.load(data)
    out: dict[str, Any] = {"decisions": {}, "latency": {}, "fit_s": []}
    for split in range(splits):
        reference, labels = arrays[f"ref{split}"], arrays[f"yref{split}"]
        started = time.perf_counter()
        test = _fit(name, reference, labels, split)
        out["fit_s"].append(time.perf_counter() - started)
        for size in SIZES:
            for condition in ("none", *SHIFTS):
                key = f"{split}_{size}_{condition}"
                xs, ys = arrays[f"x{key}"], arrays[f"y{key}"]
                decisions, latency = [], []
                for batch, batch_labels in list(zip(xs, ys, strict=True))[: limits[condition]]:
                    started = time.perf_counter()
                    drifted = test(batch, batch_labels)
                    latency.append(time.perf_counter() - started)
                    decisions.append(int(drifted))
                out["decisions"][key], out["latency"][key] = decisions, latency
    return out


def _fit(name: str, reference: np.ndarray, labels: np.ndarray, seed: int) -> Any:
    if name.startswith("scanflow"):
        from scanflow_core.checking.drift import DriftDetector

        with_labels = name == "scanflow+labels"
        detector = DriftDetector(alpha=ALPHA, seed=seed).fit(reference, labels if with_labels else None)
        return lambda batch, y: detector.test(batch, y if with_labels else None).drifted
    if name in ("alibi-mmd", "alibi-ks"):
        import torch
        from alibi_detect.cd import KSDrift, MMDDrift

        torch.set_num_threads(1)
        if name == "alibi-mmd":
            mmd = MMDDrift(reference, backend="pytorch", p_val=ALPHA, device="cpu")
            return lambda batch, y: mmd.predict(batch)["data"]["is_drift"]
        ks = KSDrift(reference, p_val=ALPHA, correction="bonferroni")
        return lambda batch, y: ks.predict(batch)["data"]["is_drift"]
    if name == "evidently":
        import pandas as pd
        from evidently import Report
        from evidently.metrics import DriftedColumnsCount

        columns = [f"f{i}" for i in range(reference.shape[1])]
        frame = pd.DataFrame(reference, columns=columns)
        report = Report([DriftedColumnsCount()])  # dataset drift: at least half the columns drifted

        def evidently_test(batch: np.ndarray, y: np.ndarray) -> bool:
            snapshot = report.run(current_data=pd.DataFrame(batch, columns=columns), reference_data=frame)
            return bool(snapshot.dict()["metrics"][0]["value"]["share"] >= 0.5)

        return evidently_test
    if name == "mmd-reimpl":
        return _mmd_reimplementation(reference)
    if name == "ks-reimpl":
        from scipy.stats import ks_2samp

        def ks_test(batch: np.ndarray, y: np.ndarray) -> bool:
            p = ks_2samp(reference, batch, axis=0).pvalue
            return bool(np.nanmin(p) < ALPHA / reference.shape[1])

        return ks_test
    raise ValueError(f"unknown detector {name!r}")


def _mmd_reimplementation(reference: np.ndarray, permutations: int = 100) -> Any:
    """MMD^2 with a Gaussian kernel (bandwidth: median pairwise distance of the reference, as
    alibi-detect configures it) and a permutation test: a stand-in when alibi-detect is absent."""
    import torch

    torch.set_num_threads(1)
    ref = torch.from_numpy(reference.astype(np.float32))
    sample = ref[torch.randperm(len(ref), generator=torch.Generator().manual_seed(0))[:500]]
    sigma = torch.cdist(sample, sample).median().item()
    generator = torch.Generator().manual_seed(0)

    def mmd_test(batch: np.ndarray, y: np.ndarray) -> bool:
        z = torch.cat([ref, torch.from_numpy(batch.astype(np.float32))])
        kernel = torch.exp(-(torch.cdist(z, z) ** 2) / (2 * sigma**2))
        n, total = len(ref), len(z)

        def statistic(order: torch.Tensor) -> float:
            a, b = order[:n], order[n:]
            return float(kernel[a][:, a].mean() + kernel[b][:, b].mean() - 2 * kernel[a][:, b].mean())

        observed = statistic(torch.arange(total))
        null = [statistic(torch.randperm(total, generator=generator)) for _ in range(permutations)]
        return (1 + sum(v >= observed for v in null)) / (permutations + 1) < ALPHA

    return mmd_test


# ------------------------------------------------------------------------------------------ peers' venvs


def peer_python(name: str, given: str | None, venvs: Path, install: bool) -> tuple[str | None, str]:
    """The Python of ``name``'s venv (made with pip on first use), or ``None`` and why not."""
    python = Path(given) if given else venvs / name / "bin" / "python"
    if python.exists() and _imports(python, name):
        return str(python), "ok"
    if given:
        return None, f"{given} cannot run: {IMPORTS[name]}"
    if not install:
        return None, f"no venv at {python.parent.parent} (--no-install)"
    print(f"making a venv for {name} under {python.parent.parent} (pip install {' '.join(PEERS[name])}) ...")
    venv.create(python.parent.parent, with_pip=True)
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *PEERS[name]], capture_output=True, text=True
    )
    if done.returncode != 0:
        return None, f"pip install {' '.join(PEERS[name])} failed: {done.stderr.strip()[-300:]}"
    if not _imports(python, name):
        return None, f"installed, but `{IMPORTS[name]}` fails in {python}"
    return str(python), "ok"


def _imports(python: Path, name: str) -> bool:
    done = subprocess.run([str(python), "-c", IMPORTS[name]], capture_output=True, text=True)
    return done.returncode == 0


def run_peer(python: str, name: str, data: Path, limits: dict[str, int], splits: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = Path(handle.name)
    command = [python, __file__, "--worker", name, "--data", str(data), "--out", str(out)]
    command += ["--splits", str(splits), "--limits", json.dumps(limits)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.read_text())
    out.unlink()
    return result


# ------------------------------------------------------------------------------------------ the table


def _rate(result: dict[str, Any], splits: int, size: int | None, condition: str, limit: int) -> float:
    values = [
        v
        for split in range(splits)
        for s in SIZES
        if size in (None, s)
        for v in result["decisions"][f"{split}_{s}_{condition}"][:limit]
    ]
    return float(np.mean(values)) if values else float("nan")


def _latency_ms(result: dict[str, Any], splits: int, size: int) -> float:
    values = [
        v
        for split in range(splits)
        for condition in ("none", *SHIFTS)
        for v in result["latency"][f"{split}_{size}_{condition}"]
    ]
    return float(np.median(values)) * 1000


def report(
    results: dict[str, dict[str, Any]], splits: int, limits: dict[str, tuple[dict[str, int], dict[str, int]]]
) -> tuple[str, dict[str, Any]]:
    """The table: per detector and batch size, FPR and power over the first ``limits[name]`` =
    (unshifted, shifted) batches of each condition, and the median latency over all it tested."""
    lines = [
        f"| detector | batch | FPR | {' | '.join(SHIFTS)} | mean power | median latency (ms) |",
        "|---|---:|---:|" + "---:|" * len(SHIFTS) + "---:|---:|",
    ]
    summary: dict[str, Any] = {}
    for name, result in results.items():
        fpr_limits, power_limits = limits[name]
        for size in (*SIZES, None):
            fpr = _rate(result, splits, size, "none", fpr_limits["none"])
            power = {shift: _rate(result, splits, size, shift, power_limits[shift]) for shift in SHIFTS}
            mean_power = float(np.mean(list(power.values())))
            latency = _latency_ms(result, splits, size) if size else float("nan")
            summary[f"{name}/{size or 'all'}"] = {"fpr": fpr, "power": mean_power, "latency_ms": latency}
            cells = " | ".join(f"{power[s]:.2f}" for s in SHIFTS)
            latency_text = f"{latency:.2f}" if size else ""
            lines.append(
                f"| {name} | {size or 'all'} | {fpr:.3f} | {cells} | {mean_power:.3f} | {latency_text} |"
            )
    return "\n".join(lines), summary


# ------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer batches and one reference split")
    parser.add_argument("--venvs", type=Path, default=Path.home() / ".cache" / "scanflow" / "bench")
    parser.add_argument("--alibi-python", help="a Python that can import alibi_detect and torch")
    parser.add_argument("--evidently-python", help="a Python that can import evidently")
    parser.add_argument("--no-install", action="store_true", help="do not make the peers' venvs")
    parser.add_argument("--no-evidently", action="store_true", help="leave Evidently out")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--splits", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--limits", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:  # in a peer's venv: only numpy and the peer are importable
        limits = json.loads(args.limits)
        names = {"alibi": ("alibi-mmd", "alibi-ks"), "evidently": ("evidently",)}[args.worker]
        results = {name: run_detector(name, args.data, limits, args.splits) for name in names}
        args.out.write_text(json.dumps(results))
        return 0

    splits = 1 if args.quick else 2
    # Scanflow tests every batch; the peers (100 ms to 1 s a test) the first ``shared`` of each condition.
    counts = {"none": 100 if args.quick else 500, **dict.fromkeys(SHIFTS, 20 if args.quick else 60)}
    shared = {"none": 10 if args.quick else 24, **dict.fromkeys(SHIFTS, 5 if args.quick else 10)}
    few = {"none": 3 if args.quick else 8, **dict.fromkeys(SHIFTS, 2 if args.quick else 4)}

    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "batches.npz"
        started = time.perf_counter()
        make_batches(data, splits, counts)
        elapsed = time.perf_counter() - started
        print(f"batches: {splits} reference split(s), {counts} per size, in {elapsed:.1f}s")

        results: dict[str, dict[str, Any]] = {}
        notes: list[str] = []
        for name in ("scanflow", "scanflow+labels"):
            results[name] = run_detector(name, data, counts, splits)
            print(f"{name}: fit {np.mean(results[name]['fit_s']):.2f}s per reference")

        alibi, why = peer_python("alibi", args.alibi_python, args.venvs, not args.no_install)
        if alibi:
            started = time.perf_counter()
            results.update(run_peer(alibi, "alibi", data, shared, splits))
            print(f"alibi-detect: {time.perf_counter() - started:.0f}s")
        else:
            notes.append(f"alibi-detect unavailable ({why}): compared with re-implementations")
            for name in ("mmd-reimpl", "ks-reimpl"):
                results[name] = run_detector(name, data, shared, splits)
        if not args.no_evidently:
            evidently, why = peer_python("evidently", args.evidently_python, args.venvs, not args.no_install)
            if evidently:
                started = time.perf_counter()
                results.update(run_peer(evidently, "evidently", data, few, 1))
                print(f"evidently: {time.perf_counter() - started:.0f}s")
            else:
                notes.append(f"Evidently unavailable: {why}")

    limits = {name: ((counts if name.startswith("scanflow") else shared), shared) for name in results}
    limits["evidently"] = (few, few)
    table, summary = report({k: v for k, v in results.items() if k != "evidently"}, splits, limits)
    print()
    print(f"alpha = {ALPHA}; severities {SEVERITY}; reference {REFERENCE_ROWS} rows; {splits} split(s).")
    print(f"FPR: Scanflow over {counts['none']} unshifted batches per size and split, the peers over the")
    print(f"first {shared['none']}; power: all over the first {shared['label']} batches of each shift.")
    print(table)
    if "evidently" in results:
        evidently_table, evidently_summary = report({"evidently": results["evidently"]}, 1, limits)
        summary.update(evidently_summary)
        print(f"\nEvidently (first split only; {few['none']} unshifted / {few['label']} shifted batches):")
        print(evidently_table.split("\n", 2)[2])
    for note in notes:
        print(f"note: {note}")

    mmd = "alibi-mmd" if "alibi-mmd" in results else "mmd-reimpl"
    ks = "alibi-ks" if "alibi-ks" in results else "ks-reimpl"
    ours = summary["scanflow/all"]
    best = max(summary[f"{mmd}/all"]["power"], summary[f"{ks}/all"]["power"])
    ratios = {
        size: summary[f"{mmd}/{size}"]["latency_ms"] / summary[f"scanflow/{size}"]["latency_ms"]
        for size in SIZES
    }
    claims = {
        f"FPR {ours['fpr']:.3f} <= 0.06": ours["fpr"] <= 0.06,
        f"mean power {ours['power']:.3f} >= best peer {best:.3f}": ours["power"] >= best,
        "latency ratio vs MMDDrift "
        + ", ".join(f"{s}: {r:.0f}x" for s, r in ratios.items())
        + " (>= 10x)": min(ratios.values()) >= 10,
    }
    print()
    for claim, holds in claims.items():
        print(f"{'PASS' if holds else 'FAIL'}  {claim}")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "claims": claims, "notes": notes}, indent=2))
    return 0 if all(claims.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
