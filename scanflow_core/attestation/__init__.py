"""Attestations: in-toto statements of each step, signed in DSSE envelopes, and their verification.

``scanflow_core.attestation.plugin`` is the built-in plugin that writes them; ``verify_attestation``
checks a run directory or a bundle; ``make_bundle`` packs a run to move it elsewhere. Nothing here
imports ``cryptography`` until a key is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scanflow_core.attestation.bundle import make_bundle
    from scanflow_core.attestation.dsse import pae, sign_envelope, verify_envelope
    from scanflow_core.attestation.keys import generate_key_pair, key_id, load_public_key, load_signing_key
    from scanflow_core.attestation.verify import Finding, Verification, verify_attestation, verify_run

__all__ = [
    "Finding",
    "Verification",
    "generate_key_pair",
    "key_id",
    "load_public_key",
    "load_signing_key",
    "make_bundle",
    "pae",
    "sign_envelope",
    "verify_attestation",
    "verify_envelope",
    "verify_run",
]

_EXPORTS = {
    "make_bundle": "bundle",
    "pae": "dsse",
    "sign_envelope": "dsse",
    "verify_envelope": "dsse",
    "generate_key_pair": "keys",
    "key_id": "keys",
    "load_public_key": "keys",
    "load_signing_key": "keys",
    "Finding": "verify",
    "Verification": "verify",
    "verify_attestation": "verify",
    "verify_run": "verify",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
