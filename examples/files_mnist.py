"""MNIST from its IDX files (place them yourself: tensorfeed never downloads).

Run: python examples/files_mnist.py [ROOT]   (without ROOT, tiny stand-in IDX files are written)
"""

from __future__ import annotations

import gzip
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np

import tensorfeed as tfd


def write_stand_in(root: Path) -> Path:
    """root/MNIST/raw/*-ubyte.gz with random digits, in the real files' format."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 600), ("t10k", 100)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        for kind, arr, magic in (("images-idx3", images, 0x803), ("labels-idx1", labels, 0x801)):
            header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape)
            with gzip.open(raw / f"{split}-{kind}-ubyte.gz", "wb") as f:
                f.write(header + arr.tobytes())
    return root


def main(root: Path) -> None:
    # --8<-- [start:mnist]
    train = tfd.MNIST(root, train=True)  # root/MNIST/raw/ (torchvision's layout) or root/
    test = tfd.MNIST(root, train=False)
    image, label = train[0]  # uint8 tensor [1, 28, 28], int
    loader = tfd.DataLoader(train.cache("memory"), batch_size=128, shuffle=True)
    for images, labels in loader:  # uint8 [128, 1, 28, 28], int64 [128]
        x, y = images.float().div_(255), labels
    print(len(train), len(test), image.shape, label, train.classes[:3], x.shape, y.dtype)
    # --8<-- [end:mnist]
    assert x.shape[1:] == (1, 28, 28)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(write_stand_in(Path(tmp)))
