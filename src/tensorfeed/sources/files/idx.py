"""The IDX format of MNIST-style files: locate, validate and read them into one numpy array.

An IDX file is a 4-byte magic number ``00 00 TT NN`` (TT the element type, 0x08 for unsigned
bytes; NN the number of dimensions), NN big-endian uint32 sizes, then the data. Plain files are
memory-mapped (copy-on-write, so torch gets a writable array and pages stay shared); gzipped
files are decompressed once into one buffer.
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass

import numpy as np

from ...errors import DataError
from .images import FolderNotFoundError

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
        raise FolderNotFoundError(_missing_message(dataset, folder, root, missing, dirs, download))
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


def read_idx(path: str, magic: int, what: str) -> np.ndarray:
    """The array stored in ``path`` (plain or .gz), checked against ``magic``."""
    if path.endswith(".gz"):
        try:
            with gzip.open(path, "rb") as f:
                raw = bytearray(f.read())
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{what} file {path} is not a readable gzip file ({exc})") from exc
        dims, header = _header(bytes(raw[:64]), path, magic, what, len(raw))
        return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(64)
    dims, header = _header(head, path, magic, what, size)
    if int(np.prod(dims)) == 0:
        return np.zeros(dims, dtype=np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="c", offset=header, shape=tuple(dims))


def _header(head: bytes, path: str, magic: int, what: str, size: int) -> tuple[list[int], int]:
    if len(head) < 4:
        raise DataError(f"{what} file {path} is truncated: {size} bytes, not even a magic number")
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
        raise DataError(f"{what} file {path} is truncated inside its header ({size} bytes)")
    dims = [int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims))
    if size != expected:
        raise DataError(
            f"{what} file {path} has {size} bytes but its header ({' x '.join(map(str, dims))}) "
            f"says {expected}: the file is truncated or corrupt"
        )
    return dims, header
