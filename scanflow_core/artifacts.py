"""References to a run's artifacts: a step's output as a value that travels between tasks.

An :class:`ArtifactRef` is a path (``os.fspath(ref)``, ``open(ref)``) that also says which run and
step made the file and its digest. Its dict form (:meth:`ArtifactRef.to_dict`) is plain JSON, what
an orchestrator passes from task to task (Airflow's XCom, Prefect's results, Flyte's literals);
a decorated task (:mod:`scanflow_core.tasks`) receives it as an input file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

__all__ = ["REF_MARKER", "ArtifactRef", "is_artifact"]

#: The marker (and version) of an :class:`ArtifactRef`'s dict form.
REF_MARKER = "scanflow_artifact"


@dataclass(frozen=True)
class ArtifactRef:
    """A file or folder a step of a run wrote: what travels between decorated tasks.

    It is a path (``os.fspath(ref)``, ``open(ref)``) that also says which run and step made it and
    its digest; its dict form (:meth:`to_dict`) is plain JSON, for XCom and the like.

    Attributes:
        run_id / step / name: the run, the step and the step's output name (empty for a plain file).
        path: the absolute path.
        digest: ``sha256:<hex>`` when the step recorded it.
        kind: ``data``, ``model``, ``metrics``, ``report`` or ``file``.
    """

    run_id: str
    step: str
    name: str
    path: str
    digest: str
    kind: str = "data"

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", str(Path(os.fspath(self.path)).absolute()))

    def __fspath__(self) -> str:
        return self.path

    def as_path(self) -> Path:
        return Path(self.path)

    @property
    def uri(self) -> str:
        """``file:///abs/path``."""
        return Path(self.path).as_uri()

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``{"scanflow_artifact": 1, "run_id": …, "path": "/abs", "uri": "file:///abs"}``."""
        return {
            REF_MARKER: 1,
            "run_id": self.run_id,
            "step": self.step,
            "name": self.name,
            "path": self.path,
            "digest": self.digest,
            "kind": self.kind,
            "uri": self.uri,
        }

    @classmethod
    def from_value(cls, value: Any) -> ArtifactRef:
        """An :class:`ArtifactRef` from itself, its dict form (:meth:`to_dict`) or a path.

        A plain path gets no run or step, its file name as name, and its digest when it exists.

        Raises:
            TypeError: ``value`` is none of these.
            ValueError: a dict form without a path, or of another version.
        """
        if isinstance(value, ArtifactRef):
            return value
        if isinstance(value, Mapping):
            if value.get(REF_MARKER) != 1:
                raise ValueError(
                    f"not the dict form of an ArtifactRef: {REF_MARKER!r} is {value.get(REF_MARKER)!r}, "
                    "expected 1"
                )
            if not value.get("path"):
                raise ValueError("the dict form of an ArtifactRef has no 'path'")
            return cls(
                str(value.get("run_id") or ""),
                str(value.get("step") or ""),
                str(value.get("name") or Path(str(value["path"])).name),
                str(value["path"]),
                str(value.get("digest") or ""),
                str(value.get("kind") or "data"),
            )
        if isinstance(value, str | os.PathLike):
            path = Path(os.fspath(value)).absolute()
            from scanflow_core.digests import digest_path

            digest = digest_path(path) if path.exists() else ""
            return cls("", "", path.name, str(path), digest)
        raise TypeError(f"an ArtifactRef, its dict form or a path was expected, not {type(value).__name__}")


def is_artifact(value: Any) -> bool:
    """Whether a task argument is a file (an ArtifactRef, its dict form, a path) rather than a param."""
    return isinstance(value, ArtifactRef | PurePath) or (isinstance(value, Mapping) and REF_MARKER in value)
