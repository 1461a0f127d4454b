"""Active learning on drifted digits: label k samples chosen by ``pick_informative`` or k chosen at random.

Run it from the repository root with the project's venv:

    python benchmarks/active_learning.py            # 8 seeds, k = 20, 40 and 80 (about 5 minutes on 2 cores)
    python benchmarks/active_learning.py --quick    # 3 seeds, k = 20 and 40, for a smoke test

The data are scikit-learn's bundled digits (1,797 images of 8 x 8 pixels in [0, 1], offline). For each
seed they are split at random into a clean training set (900 images), a pool of new data (600) and a
held-out set (297). New data drift the way ``benchmarks/drift.py`` shifts batches, but strongly enough to
hurt the model: each shifted image is rotated (+-20 degrees), noisy (Gaussian, sd 0.2) or partly hidden
(a 3 x 3 black square), one of the three at random. Half the pool is shifted (production data drift in
part), and so is the whole held-out set: the accuracy that matters is on the drifted data. Then, with
the same k:

- ``active``: ``pick_informative(pool, k, detector=..., model=...)`` with its defaults (``both``: the
  drift detector's reconstruction error and the model's margin, ranks averaged; ``cluster``: diverse
  picks), the detector fitted on the clean training set, the probabilities from the clean model;
- ``random``: k samples drawn uniformly from the pool;

their true labels are added to the clean training set, the model is trained again with the example's
training function (``examples/digits/digits_steps.py:train``: a one-hidden-layer torch MLP; two training
seeds, averaged, as training is noisy) and scored on the shifted held-out set. The table gives the
accuracy before labelling, after each kind of labelling (mean +- sd over the seeds), the gain of active
over random (mean +- sd of the paired per-seed differences) and how many seeds active won. Exit status 1
when active learning does not beat random on average at every k.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "examples" / "digits")]

TRAIN_ROWS, POOL_ROWS = 900, 600
#: The drift of new data: rotation (degrees, random sign), Gaussian noise (sd), occluded square (side).
ROTATION, NOISE, OCCLUSION = 20.0, 0.2, 3
#: The share of the pool that drifted (the held-out set drifted wholly).
SHIFTED_SHARE = 0.5
REPEATS = 2


def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.data / 16.0).astype(np.float32), bunch.target.astype(np.int64)


def shift(x: np.ndarray, rng: np.random.Generator, share: float = 1.0) -> np.ndarray:
    """Shift a ``share`` of the images (chosen at random), each by one of: a rotation, noise, or an
    occluding square (as in ``benchmarks/drift.py``, stronger), clipped to [0, 1]."""
    from scipy import ndimage

    images = x.reshape(-1, 8, 8).copy()
    kinds = rng.integers(0, 3, size=len(images))
    shifted = rng.random(len(images)) < share
    for image, kind, moved in zip(images, kinds, shifted, strict=True):
        if not moved:
            continue
        if kind == 0:
            image[:] = ndimage.rotate(
                image, float(rng.choice([-1.0, 1.0])) * ROTATION, reshape=False, order=1
            )
        elif kind == 1:
            image += rng.normal(0.0, NOISE, image.shape).astype(np.float32)
        else:
            row, column = rng.integers(0, 8 - OCCLUSION + 1, size=2)
            image[row : row + OCCLUSION, column : column + OCCLUSION] = 0.0
    return np.clip(images, 0.0, 1.0).reshape(len(x), -1).astype(np.float32)


class Trainer:
    """The example's training function on arrays (it reads and writes files), with the example's params."""

    def __init__(self, folder: Path, seed: int) -> None:
        self.folder, self.seed = folder, seed

    def fit(self, x: np.ndarray, y: np.ndarray) -> Any:
        import digits_steps

        data, model = self.folder / "train.npz", self.folder / "model.pt"
        digits_steps._save(data, x, y)
        digits_steps.train(data, model, seed=self.seed, epochs=30, lr=0.01, hidden=64)
        return digits_steps._restore(model)


def probabilities(net: Any) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(net(torch.from_numpy(x.astype(np.float32))), dim=1).numpy()

    return predict


def accuracy(net: Any, x: np.ndarray, y: np.ndarray) -> float:
    return float((probabilities(net)(x).argmax(axis=1) == y).mean())


def one_seed(
    seed: int, ks: tuple[int, ...], options: dict[str, Any], repeats: int = REPEATS
) -> dict[str, Any]:
    """Accuracy on the shifted held-out set before labelling and after each method at each k."""
    from scanflow_core.checking.drift import DriftDetector
    from scanflow_core.improve import pick_informative

    x, y = digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    train, pool, held = np.split(order, [TRAIN_ROWS, TRAIN_ROWS + POOL_ROWS])
    x_pool, x_held = shift(x[pool], rng, SHIFTED_SHARE), shift(x[held], rng)
    y_pool, y_held = y[pool], y[held]
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(Path(folder), seed)
        clean = trainer.fit(x[train], y[train])
        out["before"] = accuracy(clean, x_held, y_held)
        detector = DriftDetector(seed=seed).fit(x[train])
        for k in ks:
            picks = {
                "active": pick_informative(
                    x_pool, k, detector=detector, model=probabilities(clean), seed=seed, **options
                ),
                "random": np.random.default_rng(10_000 + seed).choice(len(pool), size=k, replace=False),
            }
            for method, chosen in picks.items():
                x_new = np.concatenate([x[train], x_pool[chosen]])
                y_new = np.concatenate([y[train], y_pool[chosen]])
                scores = []
                for repeat in range(repeats):  # training is noisy: average a few training seeds
                    trainer.seed = 100 * seed + repeat
                    scores.append(accuracy(trainer.fit(x_new, y_new), x_held, y_held))
                out[f"{method}@{k}"] = float(np.mean(scores))
    return out


def table(results: list[dict[str, Any]], ks: tuple[int, ...]) -> tuple[str, list[float]]:
    def mean_sd(values: list[float]) -> str:
        return f"{np.mean(values):.3f} +- {np.std(values, ddof=1):.3f}"

    before = [r["before"] for r in results]
    lines = [
        f"accuracy on shifted held-out data, {len(results)} seeds (mean +- sd)",
        f"  before labelling: {mean_sd(before)}",
        f"  {'k':>4}  {'random':>15}  {'active':>15}  {'gain (active - random)':>24}  active won",
    ]
    gains = []
    for k in ks:
        random_, active = [r[f"random@{k}"] for r in results], [r[f"active@{k}"] for r in results]
        diff = [a - b for a, b in zip(active, random_, strict=True)]
        gains.append(float(np.mean(diff)))
        wins = sum(d > 0 for d in diff)
        lines.append(
            f"  {k:>4}  {mean_sd(random_):>15}  {mean_sd(active):>15}  {mean_sd(diff):>24}  "
            f"{wins}/{len(diff)}"
        )
    return "\n".join(lines), gains


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 seeds, k = 20 and 40")
    parser.add_argument("--seeds", type=int, help="how many seeds (default 8; 3 with --quick)")
    parser.add_argument("--k", type=int, nargs="+", help="the label budgets (default 20 40 80)")
    parser.add_argument("--strategy", default="both", choices=["both", "uncertainty", "reconstruction"])
    parser.add_argument("--diversity", default="cluster", choices=["cluster", "kcenter", "none"])
    parser.add_argument("--uncertainty", default="margin", choices=["margin", "entropy", "least_confident"])
    parser.add_argument("--shortlist", type=float, default=3.0)
    parser.add_argument("--weight", type=float, default=0.5)
    args = parser.parse_args(argv)
    seeds = args.seeds or (3 if args.quick else 8)
    ks = tuple(args.k or ((20, 40) if args.quick else (20, 40, 80)))
    options = {
        "strategy": args.strategy,
        "diversity": args.diversity,
        "uncertainty": args.uncertainty,
        "shortlist": args.shortlist,
        "weight": args.weight,
    }
    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    results = [one_seed(seed, ks, options) for seed in range(seeds)]
    text, gains = table(results, ks)
    described = ", ".join(f"{k}={v}" for k, v in options.items())
    print(f"pick_informative({described})")
    print(text)
    print(f"({time.perf_counter() - started:.0f} s)")
    if min(gains) <= 0:
        print("CLAIM FAILED: active learning does not beat random at every k", file=sys.stderr)
        return 1
    print("claim holds: active learning beats random at every k")
    return 0


if __name__ == "__main__":
    sys.exit(main())
