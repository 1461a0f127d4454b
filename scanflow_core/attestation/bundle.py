"""``scanflow bundle``: pack a run so it can be moved and verified elsewhere.

A bundle is a ``.tar.gz`` holding one folder, ``<run_id>/``::

    run.json, steps/<step>/step.json     the run's records
    steps/<step>/outputs/...             every output (the model among them): each is a subject
    attestations/<step>.intoto.jsonl     the signed statements
    bundle/spec/<scanflow.yaml>          the spec the run used (a run of decorated tasks has none:
                                         each steps/<step>/spec.yaml is bundled with its step)
    bundle/lock/<constraints.txt ...>    the dependency lock found beside the spec, if any
    bundle/images.json                   container images and their digests, from the statements
    bundle/scanflow.pub                  the public key that signed (a hint: pin yours with --key)
    bundle/bundle.json                   what is in the bundle, with digests
"""

from __future__ import annotations

import base64
import io
import json
import tarfile
import time
from pathlib import Path
from typing import Any

from scanflow_core.digests import digest_bytes, digest_path
from scanflow_core.errors import AttestationError

__all__ = ["LOCK_NAMES", "bundle_findings", "bundled_spec", "make_bundle"]

#: Files that pin dependencies, looked for beside the spec and in its parent folders.
LOCK_NAMES = ("constraints.txt", "uv.lock", "poetry.lock", "requirements.lock", "pdm.lock", "Pipfile.lock")
_PROJECT_ROOT_MARKERS = (".git", "pyproject.toml")


def find_lock(spec: Path) -> list[Path]:
    """The lock files in the nearest folder, from the spec's up to the project root, that has any."""
    for folder in [spec.parent, *spec.parent.parents]:
        found = [folder / name for name in LOCK_NAMES if (folder / name).is_file()]
        if found:
            return found
        if any((folder / marker).exists() for marker in _PROJECT_ROOT_MARKERS):
            return []
    return []


def _images(run_dir: Path) -> list[dict[str, Any]]:
    images = []
    for file in sorted((run_dir / "attestations").glob("*.intoto.jsonl")):
        for line in file.read_text(encoding="utf-8").splitlines():
            try:
                statement = json.loads(base64.b64decode(json.loads(line)["payload"]))
                deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
            except (ValueError, KeyError, TypeError):
                continue
            for dep in deps:
                if (dep.get("annotations") or {}).get("scanflow.role") == "image":
                    images.append({"step": file.name.removesuffix(".intoto.jsonl"), **dep})
    return images


def make_bundle(run_dir: Path, output: Path, *, public_key: Path | None = None) -> Path:
    """Write the bundle of the run in ``run_dir`` to ``output``; return ``output``.

    Raises:
        AttestationError: ``run_dir`` is not a run, or it has no attestations.
    """
    run_dir = run_dir.absolute()
    manifest = (
        json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        if (run_dir / "run.json").is_file()
        else None
    )
    if not isinstance(manifest, dict):
        raise AttestationError(f"{run_dir} is not a run directory (no run.json)")
    if not any((run_dir / "attestations").glob("*.intoto.jsonl")):
        raise AttestationError(f"run {run_dir.name} has no attestations to bundle")
    root = str(manifest.get("run_id") or run_dir.name)
    tasks = manifest.get("kind") == "tasks"  # decorated tasks: each step carries its own spec.yaml
    spec = Path(str(manifest.get("spec") or ""))
    if not tasks and not spec.is_file():
        raise AttestationError(f"the run's spec {spec} is not there; a bundle must carry it")
    public = public_key or run_dir.parent.parent / "keys" / "scanflow.pub"

    members: list[tuple[str, Path]] = [("run.json", run_dir / "run.json")]
    for path in sorted([*run_dir.glob("steps/*/step.json"), *run_dir.glob("steps/*/spec.yaml")]):
        members.append((path.relative_to(run_dir).as_posix(), path))
    for path in sorted(run_dir.glob("steps/*/outputs/**/*")):
        if path.is_file():
            members.append((path.relative_to(run_dir).as_posix(), path))
    for path in sorted((run_dir / "attestations").glob("*.intoto.jsonl")):
        members.append((path.relative_to(run_dir).as_posix(), path))
    locks = [] if tasks else find_lock(spec)
    if not tasks:
        members.append((f"bundle/spec/{spec.name}", spec))
    members.extend((f"bundle/lock/{p.name}", p) for p in locks)
    if public.is_file():
        members.append(("bundle/scanflow.pub", public))
    images = json.dumps(_images(run_dir), indent=2).encode()
    index = {
        "run_id": root,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "spec": None if tasks else {"name": spec.name, "digest": manifest.get("spec_digest")},
        "lock": {p.name: digest_path(p) for p in locks},
        "images": "bundle/images.json",
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(output, "w:gz") as tar:
        for name, path in members:
            tar.add(path, arcname=f"{root}/{name}", recursive=False)
        for name, data in (
            ("bundle/images.json", images),
            ("bundle/bundle.json", json.dumps(index, indent=2).encode()),
        ):
            info = tarfile.TarInfo(f"{root}/{name}")
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(data))
    return output


def bundled_spec(run_dir: Path) -> Path | None:
    """The spec an extracted bundle carries."""
    found = sorted((run_dir / "bundle" / "spec").glob("*"))
    return found[0] if found else None


def bundle_findings(run_dir: Path) -> list[Any]:
    """What the bundle's index says about its lock files, checked against the files it holds."""
    from scanflow_core.attestation.verify import RUN, Finding

    index = (
        json.loads((run_dir / "bundle" / "bundle.json").read_text(encoding="utf-8"))
        if (run_dir / "bundle" / "bundle.json").is_file()
        else {}
    )
    findings = []
    for name, digest in (index.get("lock") or {}).items():
        path = run_dir / "bundle" / "lock" / name
        actual = digest_path(path) if path.is_file() else None
        ok = actual == digest
        reason = f"lock {digest} matches" if ok else f"lock file is {'changed' if actual else 'missing'}"
        findings.append(Finding(RUN, f"bundle/lock/{name}", ok, reason, "bundle"))
    images = run_dir / "bundle" / "images.json"
    if images.is_file():
        findings.append(
            Finding(RUN, "bundle/images.json", True, f"{digest_bytes(images.read_bytes())}", "bundle")
        )
    return findings
