"""Helpers for the file-source tests: small image trees and IDX files written by the tests
themselves (nothing is downloaded). A uniquely named module (not conftest) so test modules can
import it without clashing with other areas' conftest files."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

Image = pytest.importorskip("PIL.Image", reason="Pillow is in tensorfeed[images]")

H, W = 6, 5


def tagged_pixels(i: int, shape: tuple[int, int] = (H, W)) -> np.ndarray:
    """An RGB image whose pixel (0, 0) carries ``i`` (channels 0 and 1), the rest a gradient."""
    px = np.zeros((*shape, 3), dtype=np.uint8)
    px[..., 2] = (np.arange(shape[0] * shape[1]).reshape(shape) * 7) % 256
    px[0, 0, 0], px[0, 0, 1] = i % 256, i // 256
    return px


def ids_of_images(images) -> list[int]:
    """Recover the ids written by :func:`tagged_pixels` from a ``uint8 [B, 3, H, W]`` batch."""
    return (images[:, 0, 0, 0].long() + 256 * images[:, 1, 0, 0].long()).tolist()


def write_tree(root: Path, per_class: dict[str, int], ext: str = ".png") -> list[int]:
    """``root/<class>/<id>.png`` images tagged with a global id; returns ids in sample order."""
    i = 0
    for cls, n in per_class.items():
        d = root / cls
        d.mkdir(parents=True, exist_ok=True)
        for _ in range(n):
            Image.fromarray(tagged_pixels(i)).save(d / f"{i:04d}{ext}")
            i += 1
    return list(range(i))


def write_idx(path: Path, array: np.ndarray, magic: int | None = None, gz: bool = False) -> Path:
    """Write ``array`` (uint8) as an IDX file (optionally gzipped)."""
    ndim = array.ndim
    magic = (0x08 << 8 | ndim) if magic is None else magic
    data = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    data += np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def mnist_arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    images[:, 0, 0] = np.arange(n) % 256  # the id, to check order
    return images, labels


def write_mnist(folder: Path, n_train: int = 30, n_test: int = 12, gz: bool = False) -> dict:
    out = {}
    for split, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = mnist_arrays(n, seed)
        write_idx(folder / f"{split}-images-idx3-ubyte", images, gz=gz)
        write_idx(folder / f"{split}-labels-idx1-ubyte", labels, gz=gz)
        out[split] = (images, labels)
    return out


def reference_scan(root: str, extensions=None, is_valid_file=None):
    """torchvision's documented algorithm, written out from its docs: classes are the sorted
    names of ``os.scandir`` sub-directories; for each class in sorted order, ``os.walk`` the
    folder (following links) in sorted order and take sorted file names passing the check."""
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    class_to_idx = {c: i for i, c in enumerate(classes)}
    if extensions is not None:
        exts = tuple(extensions)

        def is_valid_file(p):
            return p.lower().endswith(exts)

    samples = []
    for c in sorted(class_to_idx):
        d = os.path.join(root, c)
        for dirpath, _, names in sorted(os.walk(d, followlinks=True)):
            for name in sorted(names):
                p = os.path.join(dirpath, name)
                if is_valid_file(p):
                    samples.append((p, class_to_idx[c]))
    return classes, class_to_idx, samples
