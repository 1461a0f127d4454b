"""The flytekit plugin: what ``import flytekit`` loads from this package (entry point group
``flytekit.plugins``, as flytekit's ``load_implicit_plugins`` reads it).

It registers :class:`ArtifactRefTransformer` with flytekit's type engine, so that a task's inputs
and outputs may be typed :class:`scanflow_core.tasks.ArtifactRef`: a reference to a file a step of a
Scanflow run wrote, with its run, step, name, digest and kind. It travels as a Flyte struct (its dict
form, :meth:`~scanflow_core.tasks.ArtifactRef.to_dict`), never as the data: the file stays in the
run directory, which the tasks of a run share.

The module is imported while flytekit itself is starting, so it imports only what it registers.
"""

from __future__ import annotations

from typing import Any

from flytekit.core.context_manager import FlyteContext
from flytekit.core.type_engine import TypeEngine, TypeTransformer, TypeTransformerFailedError
from flytekit.models.literals import Literal, Scalar
from flytekit.models.types import LiteralType, SimpleType

from scanflow_core.tasks import ArtifactRef

__all__ = ["ArtifactRefTransformer"]

#: The key that marks the dict form of an ArtifactRef (and its Flyte literal type).
REF_MARKER = "scanflow_artifact"


class ArtifactRefTransformer(TypeTransformer[ArtifactRef]):  # type: ignore[misc]
    """``ArtifactRef`` ↔ a Flyte struct literal holding its dict form."""

    def __init__(self) -> None:
        super().__init__(name="ScanflowArtifactRef", t=ArtifactRef)

    def get_literal_type(self, t: type[ArtifactRef]) -> LiteralType:
        return LiteralType(simple=SimpleType.STRUCT, metadata={REF_MARKER: 1})

    def to_literal(
        self, ctx: FlyteContext, python_val: Any, python_type: type[ArtifactRef], expected: LiteralType
    ) -> Literal:
        from google.protobuf import json_format, struct_pb2

        try:
            ref = ArtifactRef.from_value(python_val)
        except (TypeError, ValueError) as exc:
            raise TypeTransformerFailedError(f"cannot pass {python_val!r} as an ArtifactRef: {exc}") from exc
        struct = struct_pb2.Struct()
        json_format.ParseDict(ref.to_dict(), struct)
        return Literal(scalar=Scalar(generic=struct))

    def to_python_value(self, ctx: FlyteContext, lv: Literal, expected_python_type: type[ArtifactRef]) -> Any:
        from google.protobuf import json_format

        if not (lv and lv.scalar and lv.scalar.generic is not None):
            raise TypeTransformerFailedError(f"an ArtifactRef travels as a struct literal, not {lv}")
        try:
            return ArtifactRef.from_value(json_format.MessageToDict(lv.scalar.generic))
        except (TypeError, ValueError) as exc:
            raise TypeTransformerFailedError(f"not an ArtifactRef: {exc}") from exc

    def guess_python_type(self, literal_type: LiteralType) -> type[ArtifactRef]:
        if literal_type.simple == SimpleType.STRUCT and (literal_type.metadata or {}).get(REF_MARKER):
            return ArtifactRef
        raise ValueError(f"{self.name} cannot reverse {literal_type}")


TypeEngine.register(ArtifactRefTransformer())
