"""Digests of files and folders, as ``sha256:<hex>`` strings (the form in-toto subjects use)."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["digest_bytes", "digest_path", "path_size"]

_CHUNK = 1 << 20


def digest_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _file_hex(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def digest_path(path: Path) -> str:
    """A file's SHA-256; a folder's SHA-256 over its sorted ``relative-path\\0file-digest\\n`` lines."""
    if path.is_dir():
        h = hashlib.sha256()
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(f"{child.relative_to(path).as_posix()}\0{_file_hex(child)}\n".encode())
        return "sha256:" + h.hexdigest()
    return "sha256:" + _file_hex(path)


def path_size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size
