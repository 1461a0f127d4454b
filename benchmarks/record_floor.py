"""The floor under any overhead target for a step recorded before it returns: what writing the record
(and signing a statement) costs with no Scanflow code at all. Used by ``flyte.py`` and ``prefect.py``."""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def step_floor(directory: Path, calls: int) -> tuple[float, float]:
    """The least a step that is recorded before it returns can cost here, whatever the code around it:
    its record written atomically (a temporary file, then a rename) into a folder of its own; and that
    plus one Ed25519 signature of a statement, written the same way. Medians, in seconds."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    record = json.dumps({"status": "succeeded", "params": {"x": 1}, "pad": "." * 900}).encode()
    bare, signed = [], []
    for i in range(calls):
        folder = directory / f"floor_{i}"
        started = time.perf_counter()
        folder.mkdir()
        _write(folder / "step.json", record)
        bare.append(time.perf_counter() - started)
        started = time.perf_counter()
        _write(folder / "statement.json", key.sign(record))
        signed.append(time.perf_counter() - started + bare[-1])
    return statistics.median(bare), statistics.median(signed)
