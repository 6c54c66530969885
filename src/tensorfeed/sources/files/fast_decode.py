"""Faster decoders for the common image files, with Pillow's pixels.

NOTE [ Faster decoders, Pillow's pixels ]
On small images Pillow's per-file work (identify the format, build the image object, convert)
costs more than the decoding itself. When the built-in decoder reads a file (the fast
path's ``uint8 [C, H, W]`` rows, or the PIL path's images, which are stored as their pixels
anyway) and the ``images`` extra's decoders are installed, two kinds of file skip Pillow:

- baseline or progressive JPEG in YCbCr or grayscale, through ``simplejpeg`` (libjpeg-turbo
  with Pillow's settings: the accurate integer DCT and fancy upsampling);
- 8-bit non-interlaced PNG in gray, RGB or RGBA, through ``pyspng`` (libspng).

Everything else, and every file these decoders refuse, goes to Pillow, so what Pillow would say
about it (its errors, ``ImageFile.LOAD_TRUNCATED_IMAGES``, its pixel limit) is what is said. A
file over the dataset's pixel limit goes to Pillow too, so its warning or refusal stays
Pillow's. The pixels are Pillow's: the tests compare both paths on every mode and subsampling
here, and on mutated files.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np

_MODULES: dict[str, Any] = {}


def _module(name: str) -> Any:
    """``simplejpeg`` or ``pyspng``, or None when it is not installed (Pillow decodes)."""
    if name not in _MODULES:
        try:
            _MODULES[name] = __import__(name)
        except ImportError:
            _MODULES[name] = None
    return _MODULES[name]


def available() -> bool:
    """Whether both faster decoders are installed (``pip install 'tensorfeed[images]'``)."""
    return _module("simplejpeg") is not None and _module("pyspng") is not None


# JPEG colour spaces (simplejpeg's names) -> (Pillow's mode of the file, {mode: decoder space})
_JPEG = {"YCbCr": ("RGB", {"RGB": "RGB"}), "Gray": ("L", {"L": "GRAY", "RGB": "RGB"})}
# 8-bit PNG colour types -> (Pillow's mode of the file, {mode: pyspng format})
_PNG = {
    0: ("L", {"L": "L", "RGB": "RGB"}),
    2: ("RGB", {"RGB": "RGB"}),
    6: ("RGBA", {"RGBA": "RGBA", "RGB": "RGBA"}),  # Pillow's RGBA -> RGB drops the alpha
}


def decode(path: str, mode: str | None, limit: int | None) -> np.ndarray | None:
    """The file's pixels as ``uint8 [H, W]`` or ``[H, W, C]``, exactly Pillow's after converting
    to ``mode`` (None: the file's own); None when Pillow should decode it (a kind of file not
    listed in the NOTE above, one over ``limit`` pixels, one the faster decoder refuses)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None  # Pillow opens it again and names what is wrong
    try:
        if data[:3] == b"\xff\xd8\xff":
            return _jpeg(data, mode, limit)
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            return _png(data, mode, limit)
    except MemoryError:
        raise
    except Exception:  # refused by the faster decoder: Pillow says what it makes of it
        return None
    return None


def _jpeg(data: bytes, mode: str | None, limit: int | None) -> np.ndarray | None:
    sj = _module("simplejpeg")
    if sj is None:
        return None
    height, width, colorspace, _ = sj.decode_jpeg_header(data)
    native, spaces = _JPEG.get(colorspace, ("", {}))
    space = spaces.get(native if mode is None else mode)
    if space is None or (limit is not None and width * height > limit):
        return None
    out = sj.decode_jpeg(data, colorspace=space, fastdct=False, fastupsample=False, strict=True)
    return out[:, :, 0] if space == "GRAY" else out


def _png(data: bytes, mode: str | None, limit: int | None) -> np.ndarray | None:
    spng = _module("pyspng")
    if spng is None or len(data) < 33:
        return None
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    native, formats = _PNG.get(color, ("", {}))
    target = native if mode is None else mode
    fmt = formats.get(target)
    if depth != 8 or interlace or fmt is None or (limit is not None and width * height > limit):
        return None
    if not _png_intact(data, height, width * {0: 1, 2: 3, 6: 4}[color]):
        return None
    out = spng.load(data, fmt)
    if out.dtype != np.uint8 or out.shape[:2] != (height, width):
        return None
    return out[:, :, :3] if fmt == "RGBA" and target == "RGB" else out


def _png_intact(data: bytes, height: int, row_bytes: int) -> bool:
    """Whether every chunk's CRC holds and the image data inflates (its Adler-32 checked) to
    exactly its rows with valid filter bytes. libspng, as pyspng runs it, checks neither sum;
    Pillow checks the Adler-32 and most CRCs, so a file failing either is left to Pillow."""
    at, idat = 8, []
    while at + 12 <= len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        end = at + 12 + length
        if end > len(data):
            return False
        kind = data[at + 4 : at + 8]
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(data[at + 4 : end - 4]) != crc:
            return False
        if kind == b"IDAT":
            idat.append(data[at + 8 : end - 4])
        at = end
        if kind == b"IEND":
            break
    else:
        return False  # no IEND
    stride = row_bytes + 1
    inflate = zlib.decompressobj()
    try:  # at most the rows' size (+1 to see more): a small file cannot inflate without bound
        raw = inflate.decompress(b"".join(idat), height * stride + 1)
    except zlib.error:
        return False
    if not inflate.eof or len(raw) != height * stride:
        return False
    return bool((np.frombuffer(raw, np.uint8)[::stride] <= 4).all())
