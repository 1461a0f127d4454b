"""The floor under any overhead target for a step recorded before it returns: the files such a step must
write and the statement it must sign, with no Scanflow code around them. ``flyte.py`` and ``prefect.py``
run it as the body of a plain task beside the others, so it is measured under the same conditions."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path


class FloorStep:
    """One call: a folder of its own, then its spec, metrics and record each written atomically (a
    temporary file, then a rename), and, with ``sign``, one Ed25519 signature of a statement written
    the same way. What Scanflow's step path writes per call, and nothing else."""

    def __init__(self, directory: Path, sign: bool = True) -> None:
        from cryptography.hazmat.primitives.asymmetric import ed25519

        self.directory, self.sign = directory, sign
        self.key = ed25519.Ed25519PrivateKey.generate()
        self.record = json.dumps({"status": "succeeded", "params": {"x": 1}, "pad": "." * 900}).encode()
        self._numbers = itertools.count()

    def __call__(self) -> None:
        folder = self.directory / f"floor_{next(self._numbers)}"
        folder.mkdir(parents=True)
        files = {"spec.yaml": self.record, "metrics.jsonl": self.record, "step.json": self.record}
        if self.sign:
            files["statement.intoto.jsonl"] = self.key.sign(self.record)
        for name, data in files.items():
            tmp = folder / f".{name}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, folder / name)
