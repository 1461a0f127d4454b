"""DSSE envelopes: the pre-authentication encoding (PAE), signing and verifying.

An envelope is ``{"payload": b64, "payloadType": ..., "signatures": [{"keyid": ..., "sig": b64}]}``;
each signature is over ``PAE(payloadType, payload)`` exactly as the DSSE protocol defines it::

    "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body

See https://github.com/secure-systems-lab/dsse/blob/master/protocol.md.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from scanflow_core.errors import AttestationError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

    from scanflow_core.attestation.keys import SigningKey

__all__ = ["PAYLOAD_TYPE", "EnvelopeError", "make_envelope", "pae", "sign_envelope", "verify_envelope"]

#: The payload type of an in-toto statement.
PAYLOAD_TYPE = "application/vnd.in-toto+json"


class EnvelopeError(AttestationError):
    """An envelope that does not verify; ``reason`` says why in one line."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding of ``payload_type`` (as UTF-8) and ``payload``."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def make_envelope(
    payload: bytes, payload_type: str, signatures: list[tuple[str | None, bytes]]
) -> dict[str, Any]:
    """An envelope from a payload and ``(keyid, signature)`` pairs (``keyid`` ``None``: left out)."""
    sigs: list[dict[str, str]] = []
    for keyid, sig in signatures:
        entry = {"keyid": keyid} if keyid else {}
        entry["sig"] = base64.b64encode(sig).decode("ascii")
        sigs.append(entry)
    return {
        "payload": base64.b64encode(payload).decode("ascii"),
        "payloadType": payload_type,
        "signatures": sigs,
    }


def sign_envelope(payload: bytes, payload_type: str, key: SigningKey) -> dict[str, Any]:
    """Sign ``PAE(payload_type, payload)`` with ``key`` and wrap it all in an envelope."""
    return make_envelope(payload, payload_type, [(key.keyid, key.sign(pae(payload_type, payload)))])


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise EnvelopeError(f"not a DSSE envelope: {what} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        try:  # DSSE allows URL-safe base64 too
            return base64.urlsafe_b64decode(value)
        except (binascii.Error, ValueError):
            raise EnvelopeError(f"not a DSSE envelope: {what} is not valid base64") from None


def _verifies(public_key: PublicKeyTypes, signature: bytes, data: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    try:
        if isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, data)
            return True
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            size = (public_key.curve.key_size + 7) // 8
            if len(signature) == 2 * size:  # raw r || s, as the DSSE test vector has it
                r, s = int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
                signature = encode_dss_signature(r, s)
            public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
            return True
    except InvalidSignature:
        return False
    raise EnvelopeError(f"keys of type {type(public_key).__name__} are not supported (use Ed25519)")


def verify_envelope(
    envelope: Mapping[str, Any],
    keys: Mapping[str, PublicKeyTypes],
    *,
    payload_type: str | None = PAYLOAD_TYPE,
) -> tuple[bytes, str]:
    """Check an envelope against trusted ``keys`` (by keyid); return ``(payload, keyid that verified)``.

    Every trusted key is tried on every signature: a signature's ``keyid`` is an unauthenticated
    hint that only names, in the error, which other key signed.

    Raises:
        EnvelopeError: malformed, another payload type, or no signature by a trusted key.
    """
    if not keys:
        raise EnvelopeError("no trusted public key to verify with")
    if not isinstance(envelope, Mapping):
        raise EnvelopeError("not a DSSE envelope: not a JSON object")
    missing = [k for k in ("payload", "payloadType", "signatures") if k not in envelope]
    if missing:
        raise EnvelopeError(f"not a DSSE envelope: no {', '.join(missing)}")
    kind = envelope["payloadType"]
    if not isinstance(kind, str):
        raise EnvelopeError("not a DSSE envelope: payloadType is not a string")
    if payload_type is not None and kind != payload_type:
        raise EnvelopeError(f"payloadType is {kind!r}, expected {payload_type!r}")
    payload = _b64(envelope["payload"], "payload")
    signatures = envelope["signatures"]
    if not isinstance(signatures, list) or not signatures:
        raise EnvelopeError("the envelope has no signatures")
    data = pae(kind, payload)
    hinted: list[str] = []
    for entry in signatures:
        if not isinstance(entry, Mapping) or "sig" not in entry:
            raise EnvelopeError("not a DSSE envelope: a signature without 'sig'")
        sig = _b64(entry["sig"], "sig")
        for keyid, public_key in keys.items():
            if _verifies(public_key, sig, data):
                return payload, keyid
        hint = entry.get("keyid")
        if isinstance(hint, str) and hint:
            hinted.append(hint)
    trusted = ", ".join(keys) or "none"
    others = [h for h in hinted if h not in keys]
    if others:
        raise EnvelopeError(
            f"signed by another key ({', '.join(others)}), not by the trusted key ({trusted})"
        )
    raise EnvelopeError(
        "the signature does not match the payload and its type: the statement was changed after signing"
    )
