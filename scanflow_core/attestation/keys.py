"""Signing keys: generate an Ed25519 pair, load it, and find the one a run signs with.

The private key is PKCS#8 PEM (mode 0600), the public key SubjectPublicKeyInfo PEM. A key's id is
``sha256:`` + the hex SHA-256 of its public key's DER encoding.

Which key signs (first found wins):

1. the spec's ``attestation.key`` (a path, relative to the spec's folder);
2. ``$SCANFLOW_SIGNING_KEY``: a path, or the PEM text itself;
3. ``<home>/keys/scanflow.key``, generated on first use when nothing else is set.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scanflow_core.errors import AttestationError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

__all__ = [
    "KEY_ENV",
    "PRIVATE_KEY_NAME",
    "PUBLIC_KEY_NAME",
    "SigningKey",
    "default_key_path",
    "generate_key_pair",
    "key_id",
    "load_public_key",
    "load_signing_key",
    "resolve_signing_key",
]

KEY_ENV = "SCANFLOW_SIGNING_KEY"
PRIVATE_KEY_NAME = "scanflow.key"
PUBLIC_KEY_NAME = "scanflow.pub"
_PEM_START = "-----BEGIN"

_generate_lock = threading.Lock()
_cache: dict[tuple[str, int, int], SigningKey] = {}


@dataclass(frozen=True)
class SigningKey:
    """A private key ready to sign, with its id and where it came from (never the key material)."""

    private_key: Any  # cryptography's Ed25519PrivateKey (typed loosely so this module imports cheaply)
    keyid: str
    origin: str

    def sign(self, data: bytes) -> bytes:
        signature: bytes = self.private_key.sign(data)
        return signature

    def public_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        pem: bytes = self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem


def default_key_path(home: Path) -> Path:
    """``<home>/keys/scanflow.key``: where ``scanflow keys generate`` writes the private key."""
    return home / "keys" / PRIVATE_KEY_NAME


def key_id(public_key: PublicKeyTypes) -> str:
    """``sha256:`` + hex SHA-256 of the public key's DER (SubjectPublicKeyInfo)."""
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def generate_key_pair(private_path: Path, *, force: bool = False) -> SigningKey:
    """Write a new Ed25519 pair: ``private_path`` (PKCS#8 PEM, 0600) and the ``.pub`` beside it.

    Raises:
        AttestationError: the key exists and ``force`` is not set.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public_path = private_path.with_suffix(".pub")
    if not force and private_path.exists():
        raise AttestationError(
            f"{private_path} exists; pass --force to replace it (old signatures then fail)"
        )
    private_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    tmp_private = private_path.with_name(f".{private_path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp_private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem)
    os.chmod(tmp_private, 0o600)  # whatever the umask
    try:
        if force:
            os.replace(tmp_private, private_path)
        else:
            os.link(tmp_private, private_path)  # atomic, and never over a key another process just made
    except FileExistsError:
        raise AttestationError(f"{private_path} exists; pass --force to replace it") from None
    finally:
        tmp_private.unlink(missing_ok=True)
    tmp = public_path.with_suffix(f".pub.{os.getpid()}.tmp")
    tmp.write_bytes(public_pem)
    os.replace(tmp, public_path)
    return SigningKey(key, key_id(key.public_key()), str(private_path))


def load_signing_key(source: str | Path, *, origin: str | None = None) -> SigningKey:
    """A private key from a PEM file, or from PEM text (a ``str`` starting with ``-----BEGIN``)."""
    if isinstance(source, str) and source.lstrip().startswith(_PEM_START):
        return _parse_private(source.encode(), origin or f"${KEY_ENV}")
    path = Path(source).expanduser()
    try:
        stat = path.stat()
    except OSError as exc:
        raise AttestationError(f"cannot read the signing key {path}: {exc.strerror or exc}") from None
    cache_key = (str(path.absolute()), stat.st_mtime_ns, stat.st_size)
    if cache_key not in _cache:
        _cache[cache_key] = _parse_private(path.read_bytes(), origin or str(path))
    return _cache[cache_key]


def _parse_private(pem: bytes, origin: str) -> SigningKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise AttestationError(
            f"the signing key from {origin} is encrypted; give an unencrypted one"
        ) from None
    except ValueError:
        raise AttestationError(f"the signing key from {origin} is not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AttestationError(
            f"the signing key from {origin} is {type(key).__name__}; Scanflow signs with Ed25519 "
            "(make one with `scanflow keys generate`)"
        )
    return SigningKey(key, key_id(key.public_key()), origin)


def load_public_key(source: str | Path | bytes) -> PublicKeyTypes:
    """A public key from a SubjectPublicKeyInfo PEM file or bytes (a private key PEM works too)."""
    from cryptography.hazmat.primitives import serialization

    if isinstance(source, bytes):
        data, origin = source, "the given PEM"
    else:
        path = Path(source).expanduser()
        origin = str(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise AttestationError(f"cannot read the public key {path}: {exc.strerror or exc}") from None
    try:
        return serialization.load_pem_public_key(data)
    except ValueError:
        pass
    try:
        return serialization.load_pem_private_key(data, password=None).public_key()
    except (TypeError, ValueError):
        raise AttestationError(f"{origin} is not a PEM public key") from None


def resolve_signing_key(
    *, spec_file: str | None, spec_key: str | None, home: Path, create: bool = True
) -> SigningKey:
    """The key a run signs with: spec ``attestation.key`` → ``$SCANFLOW_SIGNING_KEY`` → the home's key.

    When none is set and the home has no key, one is generated there (once, even with steps
    finishing in parallel) and a line on stderr says where; ``create=False`` raises instead.
    """
    if spec_key:
        base = Path(spec_file).parent if spec_file and spec_file != "<string>" else Path.cwd()
        path = (base / spec_key).expanduser()
        return load_signing_key(path, origin=f"attestation.key ({path})")
    from_env = os.environ.get(KEY_ENV)
    if from_env:
        if from_env.lstrip().startswith(_PEM_START):
            return load_signing_key(from_env, origin=f"${KEY_ENV}")
        return load_signing_key(from_env, origin=f"${KEY_ENV} ({from_env})")
    path = default_key_path(home)
    if not path.exists():
        if not create:
            raise AttestationError(f"no signing key: run `scanflow keys generate` or set ${KEY_ENV}")
        with _generate_lock:
            if not path.exists():
                try:
                    key = generate_key_pair(path)
                except AttestationError:  # another process made it first
                    return load_signing_key(path)
                print(
                    f"scanflow: generated a signing key for attestations: {path} "
                    f"(public key {path.with_suffix('.pub')}, keyid {key.keyid})",
                    file=sys.stderr,
                )
                return key
    return load_signing_key(path)
