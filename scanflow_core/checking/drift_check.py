"""The ``drift`` checker: is a step's data drawn from the same distribution as a reference?

```yaml
checks:
  - {use: drift, on: batch, reference: train, alpha: 0.05, policy: warn}
```

Options: ``reference`` (an artifact of the run or a path relative to the spec; required unless
``detector`` is given), ``alpha`` (0.05), ``features`` (the columns to test; default all but the label),
``label`` (the label column for the class-balance test; default ``label`` when both tables have it),
``detector`` (an artifact or path of a detector saved with :meth:`DriftDetector.save`, used instead of
fitting one), ``seed`` (0) and ``plot`` (true: a PNG of reference vs batch reconstruction errors).

A detector fitted here is saved under ``<run>/checks/drift/<key>/``, the key a digest of the reference
file and the options that shape the fit, so the next check on the same reference reuses it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scanflow_core.checking.data import CheckOptionError, load_frame, option, resolve_artifact
from scanflow_core.digests import digest_path
from scanflow_core.records import CheckResult

if TYPE_CHECKING:
    from scanflow_core.checking.drift import DriftDetector, DriftResult

__all__ = ["check"]

NAME = "drift"


def check(step_run: Any, check: Any, target: str, path: Path) -> CheckResult:
    """Test ``path`` (a table, ``.npz`` or ``.npy``) for drift against the check's reference."""
    try:
        return _check(step_run, check, target, path)
    except CheckOptionError as error:
        return CheckResult(NAME, target, False, str(error), details={"error": str(error)})


def _check(step_run: Any, check: Any, target: str, path: Path) -> CheckResult:
    from scanflow_core.checking.drift import DriftDetector

    options = check.options
    saved = option(options, "detector", str, None, check=NAME)
    reference_name = option(options, "reference", str, None if saved else ..., check=NAME)
    alpha = float(option(options, "alpha", (int, float), 0.05, check=NAME))
    if not 0 < alpha < 1:
        raise CheckOptionError(f"check {NAME!r}: option 'alpha' must lie in (0, 1), not {alpha}")
    features = option(options, "features", list, None, check=NAME)
    if features is not None and (not features or not all(isinstance(f, str) for f in features)):
        raise CheckOptionError(f"check {NAME!r}: option 'features' must be a non-empty list of column names")
    if saved and features is not None:
        raise CheckOptionError(
            f"check {NAME!r}: give 'features' or 'detector', not both (a saved detector knows its columns)"
        )
    label = option(options, "label", str, None, check=NAME)
    seed = option(options, "seed", int, 0, check=NAME)
    plot = option(options, "plot", bool, True, check=NAME)

    batch = load_frame(path)
    details: dict[str, Any] = {}
    if saved:
        location = resolve_artifact(step_run, saved)
        detector = DriftDetector.load(location)
        details["detector"] = str(location)
        label = label or ("label" if detector.class_counts is not None and "label" in batch.columns else None)
        columns = detector.columns
    else:
        reference_path = resolve_artifact(step_run, reference_name)
        reference = load_frame(reference_path)
        # The reference's label column is never a feature, even when the new data comes unlabelled (as
        # it does in production); the class-balance test runs only when both tables have it.
        known = label or ("label" if "label" in reference.columns else None)
        if label is None and known is not None and known in batch.columns:
            label = known
        columns = features or [c for c in reference.columns if c != known]
        _require(reference, [*columns, *([label] if label else [])], f"the reference {reference_name!r}")
        detector, fitted, folder = _detector(step_run, reference_path, reference, columns, label, seed)
        details.update({"reference": str(reference_path), "detector": str(folder), "fitted": fitted})
    _require(batch, [*columns, *([label] if label else [])], f"the checked data {target!r}")
    detector.alpha = alpha

    result = detector.test(batch[columns], batch[label].to_numpy() if label else None)
    details.update(result.to_dict())
    if plot:
        details["artifacts"] = _plot(step_run, detector, result, target)
    return CheckResult(
        NAME, target, not result.drifted, result.summary(), metrics=_metrics(result), details=details
    )


def _require(frame: Any, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        shown = ", ".join(map(str, list(frame.columns)[:10]))
        raise CheckOptionError(f"check {NAME!r}: {what} lacks the columns {missing} (it has {shown}, ...)")


def _detector(
    step_run: Any, reference_path: Path, reference: Any, columns: list[str], label: str | None, seed: int
) -> tuple[DriftDetector, bool, Path]:
    """The detector for this reference and these options: from the run's cache, or fitted and cached."""
    from scanflow_core.checking.drift import FORMAT_VERSION, DriftDetector

    shape = json.dumps({"columns": columns, "label": label, "seed": seed, "format": FORMAT_VERSION})
    key = hashlib.sha256(f"{digest_path(reference_path)}\n{shape}".encode()).hexdigest()[:24]
    folder = Path(step_run.run.directory) / "checks" / "drift" / key
    if (folder / "detector.json").exists():
        return DriftDetector.load(folder), False, folder
    labels = reference[label].to_numpy() if label else None
    detector = DriftDetector(seed=seed).fit(reference[columns], labels)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=folder.parent))
    detector.save(staging)
    try:
        os.rename(staging, folder)  # atomic: a check running beside this one sees all or nothing
    except OSError:  # another check cached the same detector first
        shutil.rmtree(staging, ignore_errors=True)
    return detector, True, folder


def _metrics(result: DriftResult) -> dict[str, float]:
    metrics = {
        "p_value": result.p_value,
        "score": result.score,
        "reference_score": result.reference_score,
        "anomalous_share": result.anomalous_share,
        "drifted_features": float(len(result.drifted_features)),
        "new_levels": float(sum(len(v) for v in result.new_levels.values())),
        **{f"p_{name}": p for name, p in result.tests.items()},
    }
    return {k: float(v) for k, v in metrics.items() if not math.isnan(v)}


def _plot(step_run: Any, detector: DriftDetector, result: DriftResult, target: str) -> list[str]:
    """Histograms of the reference's (calibration) and the batch's reconstruction errors, as a PNG."""
    import numpy as np

    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return []
    reference = detector.reference_scores
    if not len(reference) or np.isnan(result.sample_scores).all():
        return []
    low = max(float(min(reference.min(), result.sample_scores.min())), 1e-6)
    high = max(float(max(reference.max(), result.sample_scores.max())), low * 1.01)
    bins = np.geomspace(low, high, 40).tolist()
    figure = Figure(figsize=(6.4, 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.hist(reference, bins=bins, density=True, alpha=0.55, label=f"reference ({len(reference)})")
    axes.hist(result.sample_scores, bins=bins, density=True, alpha=0.55, label=f"{target} ({result.size})")
    axes.set_xscale("log")
    axes.set_xlabel("reconstruction error")
    axes.set_ylabel("density")
    verdict = "drift" if result.drifted else "no drift"
    axes.set_title(f"{target}: {verdict} (p = {result.p_value:.3g})")
    axes.legend()
    out = Path(step_run.directory) / "checks" / f"drift-{target}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    return [str(out)]
