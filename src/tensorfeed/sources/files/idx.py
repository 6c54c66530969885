"""The IDX format of MNIST-style files: locate, validate and read them into one numpy array.

An IDX file is a 4-byte magic number ``00 00 TT NN`` (TT the element type, 0x08 for unsigned
bytes; NN the number of dimensions), NN big-endian uint32 sizes, then the data. Plain files are
memory-mapped (copy-on-write, so torch gets a writable array and pages stay shared); gzipped
files are decompressed once into one buffer.

No file can make the reader run out of memory: the header is read and checked first (sizes
multiplied in Python integers, which never overflow), a plain file must be exactly as long as
its header says, and a gzipped one is decompressed as a stream into a buffer of the size its
header says, which must fit what its compressed size can hold (deflate expands at most ~1032x);
more or less data than the header says is an error naming the file.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from dataclasses import dataclass

import numpy as np

from ...errors import DataError
from .errors import DatasetNotFoundError

UBYTE = 0x08
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


@dataclass(frozen=True)
class IdxFiles:
    images: str
    labels: str


def file_names(train: bool) -> tuple[str, str]:
    prefix = "train" if train else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def search_dirs(root: str, folder: str) -> list[str]:
    """torchvision's layout (root/MNIST/raw) first, then root/MNIST, then root itself."""
    return [os.path.join(root, folder, "raw"), os.path.join(root, folder), root]


def find_file(name: str, dirs: list[str]) -> str | None:
    for d in dirs:
        for candidate in (name, name + ".gz"):
            p = os.path.join(d, candidate)
            if os.path.isfile(p):
                return p
    return None


def locate(root: str, folder: str, train: bool, dataset: str, download: bool) -> IdxFiles:
    dirs = search_dirs(root, folder)
    names = file_names(train)
    found = [find_file(n, dirs) for n in names]
    missing = [n for n, p in zip(names, found) if p is None]
    if missing:
        raise DatasetNotFoundError(_missing_message(dataset, folder, root, missing, dirs, download))
    assert found[0] is not None and found[1] is not None
    return IdxFiles(found[0], found[1])


def _missing_message(
    dataset: str, folder: str, root: str, missing: list[str], dirs: list[str], download: bool
) -> str:
    split_files = ", ".join(f"{n}.gz" for n in missing)
    everything = ", ".join(f"{n}.gz" for n in (*file_names(True), *file_names(False)))
    head = (
        f"{dataset}(download=True) cannot download: tensorfeed never fetches data itself and "
        "this environment has no network access. "
        if download
        else f"{dataset} files not found: "
    )
    return (
        f"{head}missing {split_files} (gzipped or not) in any of {', '.join(dirs)}. "
        f"Copy the standard IDX files ({everything}) from a machine that has them into "
        f"{os.path.join(root, folder, 'raw')} (torchvision's layout) or directly into {root}."
    )


_MAX_DEFLATE_RATIO = 1032  # deflate's largest expansion (258-byte matches in 2 bits each)
_CHUNK = 1 << 20


def read_idx(path: str, magic: int, what: str) -> np.ndarray:
    """The array stored in ``path`` (plain or .gz), checked against ``magic``."""
    if path.endswith(".gz"):
        return _read_gzip(path, magic, what)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(4 + 4 * (magic & 0xFF))
    dims, header, body = _header(head, path, magic, what)
    if size != header + body:
        raise DataError(
            f"{what} file {path} has {size} bytes but its header ({' x '.join(map(str, dims))}) "
            f"says {header + body}: the file is truncated or corrupt"
        )
    if body == 0:
        return np.zeros(dims, dtype=np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="c", offset=header, shape=tuple(dims))


def _read_gzip(path: str, magic: int, what: str) -> np.ndarray:
    packed = os.path.getsize(path)
    try:
        with gzip.open(path, "rb") as f:
            dims, _header_len, body = _header(f.read(4 + 4 * (magic & 0xFF)), path, magic, what)
            if body > packed * _MAX_DEFLATE_RATIO + _CHUNK:
                raise DataError(
                    f"{what} file {path} says it holds {' x '.join(map(str, dims))} = {body} "
                    f"bytes, more than a {packed}-byte gzip file can hold: it is corrupt"
                )
            out = np.empty(body, dtype=np.uint8)
            view, got = memoryview(out.data), 0
            while got < body:
                n = f.readinto(view[got : got + _CHUNK])
                if not n:
                    raise DataError(
                        f"{what} file {path} ends after {got} of the {body} bytes its header "
                        f"({' x '.join(map(str, dims))}) says: the file is truncated or corrupt"
                    )
                got += n
            if f.read(1):
                raise DataError(
                    f"{what} file {path} holds more than the {body} bytes its header "
                    f"({' x '.join(map(str, dims))}) says: the file is corrupt"
                )
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{what} file {path} is not a readable gzip file ({exc})") from exc
    return out.reshape(dims)


def _header(head: bytes, path: str, magic: int, what: str) -> tuple[list[int], int, int]:
    """(dims, header length, body length) from the first bytes of an IDX file."""
    if len(head) < 4:
        raise DataError(
            f"{what} file {path} is truncated: {len(head)} bytes, not even a magic number"
        )
    got = int.from_bytes(head[:4], "big")
    if got != magic:
        hint = ""
        if head[:2] == b"\x1f\x8b":
            hint = " It looks gzip-compressed: name it with a .gz suffix."
        raise DataError(
            f"{what} file {path} has magic number {got:#010x}, expected {magic:#010x} "
            f"(IDX, unsigned bytes, {magic & 0xFF} dimensions).{hint}"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(head) < header:
        raise DataError(f"{what} file {path} is truncated inside its header ({len(head)} bytes)")
    dims = [int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return dims, header, math.prod(dims)  # Python ints: no overflow
