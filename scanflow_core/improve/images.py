"""A queued sample as a picture: ASCII art for the terminal, a PNG for the web page (NumPy and zlib only).

A sample is shown as an image when it is one: a 2-D array (``8 x 8``), a flat vector whose length is a
square number (64 pixels: an 8 x 8 digit), or ``height x width x 3`` (RGB). Values are scaled to the
sample's own range unless they already lie in [0, 1] (or are 8-bit).

Example::

    print(ascii_art(np.eye(8)))
    Path("digit.png").write_bytes(png_bytes(sample.data, scale=24))
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import Any

import numpy as np

__all__ = ["as_image", "ascii_art", "png_bytes"]

#: Darkest to brightest, for a terminal with a dark background.
RAMP = " .:-=+*#%@"


def as_image(data: Any) -> np.ndarray | None:
    """``data`` as a ``height x width`` (grey) or ``height x width x 3`` (RGB) array of floats in
    [0, 1], or None when it is not an image."""
    array = np.asarray(data)
    if array.dtype == object or not np.issubdtype(array.dtype, np.number) or array.size == 0:
        return None
    if array.ndim == 1:
        side = math.isqrt(array.size)
        if side < 2 or side * side != array.size:
            return None
        array = array.reshape(side, side)
    elif array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    elif not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        return None
    values = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    if array.dtype == np.uint8 or (high > 1.0 and low >= 0.0 and high <= 255.0 and np.all(values % 1 == 0)):
        scaled: np.ndarray = values / 255.0
    elif low >= 0.0 and high <= 1.0:
        scaled = values
    else:
        scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return scaled


def ascii_art(data: Any, *, width: int = 2) -> str:
    """The sample as text, each pixel ``width`` characters wide (so it looks square); a short
    description instead when it is not an image."""
    image = as_image(data)
    if image is None:
        array = np.asarray(data)
        return f"(not an image: an array of shape {array.shape} and type {array.dtype})"
    grey = image.mean(axis=2) if image.ndim == 3 else image
    levels = np.minimum((grey * len(RAMP)).astype(int), len(RAMP) - 1)
    return "\n".join("".join(RAMP[v] * width for v in row) for row in levels)


def png_bytes(data: Any, *, scale: int = 1) -> bytes:
    """The sample as a PNG file (8-bit grey or RGB), each pixel a ``scale x scale`` block.

    Raises:
        ValueError: the sample is not an image, or ``scale`` is not from 1 to 64.
    """
    image = as_image(data)
    if image is None:
        raise ValueError(f"not an image: an array of shape {np.asarray(data).shape}")
    if not 1 <= scale <= 64:
        raise ValueError(f"scale must be from 1 to 64, not {scale}")
    pixels = np.round(image * 255.0).astype(np.uint8)
    pixels = np.repeat(np.repeat(pixels, scale, axis=0), scale, axis=1)
    height, width = pixels.shape[:2]
    colour_type = 2 if pixels.ndim == 3 else 0
    rows = pixels.reshape(height, -1)
    raw = np.hstack([np.zeros((height, 1), dtype=np.uint8), rows]).tobytes()  # filter type 0 per row
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 6))
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
