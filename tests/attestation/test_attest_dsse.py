"""DSSE (PAE, the spec's test vector, sign and verify) and signing keys (ids, files, resolution)."""

from __future__ import annotations

import base64
import hashlib
import shutil
import stat
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from scanflow_core.attestation.dsse import PAYLOAD_TYPE, EnvelopeError, pae, sign_envelope, verify_envelope
from scanflow_core.attestation.keys import (
    generate_key_pair,
    key_id,
    load_public_key,
    load_signing_key,
    resolve_signing_key,
)
from scanflow_core.attestation.statements import REDACTED, digest_set, redact_params
from scanflow_core.errors import AttestationError

# The test vector of the DSSE protocol (secure-systems-lab/dsse, protocol.md, "Test Vectors").
VECTOR_TYPE = "http://example.com/HelloWorld"
VECTOR_BODY = b"hello world"
VECTOR_PAE = b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
VECTOR_X = 46950820868899156662930047687818585632848591499744589407958293238635476079160
VECTOR_Y = 5640078356564379163099075877009565129882514886557779369047442380624545832820
VECTOR_ENVELOPE = {
    "payload": "aGVsbG8gd29ybGQ=",
    "payloadType": "http://example.com/HelloWorld",
    "signatures": [
        {"sig": "A3JqsQGtVsJ2O2xqrI5IcnXip5GToJ3F+FnZ+O88SjtR6rDAajabZKciJTfUiHqJPcIAriEGAHTVeCUjW2JIZA=="}
    ],
}


def test_pae_is_the_spec_test_vector_byte_for_byte() -> None:
    assert pae(VECTOR_TYPE, VECTOR_BODY) == VECTOR_PAE


def test_pae_counts_bytes_not_characters() -> None:
    assert pae("t/é", "ü".encode()) == b"DSSEv1 4 t/\xc3\xa9 2 \xc3\xbc"
    assert pae("", b"") == b"DSSEv1 0  0 "


def test_the_spec_test_vector_signature_verifies_over_our_pae() -> None:
    public = ec.EllipticCurvePublicNumbers(VECTOR_X, VECTOR_Y, ec.SECP256R1()).public_key()
    payload, keyid = verify_envelope(VECTOR_ENVELOPE, {"vector": public}, payload_type=VECTOR_TYPE)
    assert (payload, keyid) == (VECTOR_BODY, "vector")
    tampered = dict(VECTOR_ENVELOPE, payload=base64.b64encode(b"hello World").decode())
    with pytest.raises(EnvelopeError, match="changed after signing"):
        verify_envelope(tampered, {"vector": public}, payload_type=VECTOR_TYPE)


def test_sign_and_verify_an_envelope(tmp_path: Path) -> None:
    key = generate_key_pair(tmp_path / "k.key")
    envelope = sign_envelope(b'{"a":1}', PAYLOAD_TYPE, key)
    assert set(envelope) == {"payload", "payloadType", "signatures"}
    assert envelope["signatures"][0]["keyid"] == key.keyid
    public = key.private_key.public_key()
    assert verify_envelope(envelope, {key.keyid: public}) == (b'{"a":1}', key.keyid)
    with pytest.raises(EnvelopeError, match="payloadType is 'application/json'"):
        verify_envelope(dict(envelope, payloadType="application/json"), {key.keyid: public})
    other = generate_key_pair(tmp_path / "other.key")
    with pytest.raises(EnvelopeError, match=f"signed by another key \\({key.keyid}\\)"):
        verify_envelope(envelope, {other.keyid: other.private_key.public_key()})
    with pytest.raises(EnvelopeError, match="not a DSSE envelope: no signatures"):
        verify_envelope({"payload": "", "payloadType": PAYLOAD_TYPE}, {key.keyid: public})


def test_keyid_is_the_sha256_of_the_public_key_der(tmp_path: Path) -> None:
    key = generate_key_pair(tmp_path / "scanflow.key")
    der = key.private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert key.keyid == "sha256:" + hashlib.sha256(der).hexdigest()
    assert key_id(load_public_key(tmp_path / "scanflow.pub")) == key.keyid
    if shutil.which("openssl"):  # the same id from an independent tool
        der_out = subprocess.run(
            ["openssl", "pkey", "-pubin", "-in", str(tmp_path / "scanflow.pub"), "-outform", "DER"],
            capture_output=True,
            check=True,
        ).stdout
        assert key.keyid == "sha256:" + hashlib.sha256(der_out).hexdigest()


def test_key_files_formats_and_modes(tmp_path: Path) -> None:
    private = tmp_path / "keys" / "scanflow.key"
    generate_key_pair(private)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8
    assert (tmp_path / "keys" / "scanflow.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")  # SPKI
    assert not list((tmp_path / "keys").glob("*.tmp"))
    with pytest.raises(AttestationError, match="exists; pass --force"):
        generate_key_pair(private)
    first = load_signing_key(private).keyid
    assert generate_key_pair(private, force=True).keyid != first
    assert stat.S_IMODE(private.stat().st_mode) == 0o600


def test_key_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCANFLOW_SIGNING_KEY", raising=False)
    home = tmp_path / "home"
    spec_key = generate_key_pair(tmp_path / "project" / "signing" / "spec.key")
    env_key = generate_key_pair(tmp_path / "env.key")
    home_key = generate_key_pair(home / "keys" / "scanflow.key")
    spec_file = str(tmp_path / "project" / "scanflow.yaml")

    def resolved(spec_key_setting: str | None) -> str:
        return resolve_signing_key(spec_file=spec_file, spec_key=spec_key_setting, home=home).keyid

    assert resolved(None) == home_key.keyid
    monkeypatch.setenv("SCANFLOW_SIGNING_KEY", str(tmp_path / "env.key"))
    assert resolved(None) == env_key.keyid
    monkeypatch.setenv("SCANFLOW_SIGNING_KEY", (tmp_path / "env.key").read_text())  # the PEM itself
    pem_key = resolve_signing_key(spec_file=spec_file, spec_key=None, home=home)
    assert pem_key.keyid == env_key.keyid
    assert "BEGIN" not in pem_key.origin  # where a key came from never repeats the key
    assert resolved("signing/spec.key") == spec_key.keyid  # relative to the spec's folder
    with pytest.raises(AttestationError, match="cannot read the signing key"):
        resolved("signing/missing.key")


def test_the_default_key_is_made_once_and_said_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SCANFLOW_SIGNING_KEY", raising=False)
    home = tmp_path / "home"
    found: list[str] = []

    def resolve() -> None:
        found.append(resolve_signing_key(spec_file=None, spec_key=None, home=home).keyid)

    threads = [threading.Thread(target=resolve) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(found)) == 1
    err = capsys.readouterr().err
    assert err.count("generated a signing key") == 1 and str(home / "keys" / "scanflow.key") in err
    with pytest.raises(AttestationError, match="scanflow keys generate"):
        resolve_signing_key(spec_file=None, spec_key=None, home=tmp_path / "empty", create=False)


def test_a_key_that_is_not_ed25519_is_refused(tmp_path: Path) -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "ec.key").write_bytes(pem)
    with pytest.raises(AttestationError, match="Scanflow signs with Ed25519"):
        load_signing_key(tmp_path / "ec.key")


def test_secret_looking_params_are_redacted_and_digests_lose_their_prefix() -> None:
    params = {"n": 3, "api_token": "s3cr3t", "db_password": "x", "author": "ann", "path": Path("/a")}
    assert redact_params(params) == {
        "n": 3,
        "api_token": REDACTED,
        "db_password": REDACTED,
        "author": "ann",
        "path": "/a",
    }
    assert digest_set("sha256:abc") == {"sha256": "abc"}
    assert digest_set("registry/app@sha256:abc") == {"sha256": "abc"}
