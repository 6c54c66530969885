"""A folder per class of images -> uint8 batches, with torchvision's ImageFolder semantics.

Run: python examples/files_imagefolder.py [ROOT]   (without ROOT a tiny tree is generated)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

import tensorfeed as tfd


def make_tree(root: Path) -> Path:
    """root/<class>/<n>.png: 3 classes x 8 small images (stands in for your own folder)."""
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog", "emu"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for n in range(8):
            pixels = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{n}.png")
    return root


def main(root: Path) -> None:
    # --8<-- [start:imagefolder]
    ds = tfd.ImageFolder(root)  # classes = sorted sub-folder names, as in torchvision
    print(ds.classes, ds.class_to_idx)  # ['cat', 'dog', 'emu'] {'cat': 0, 'dog': 1, 'emu': 2}
    image, target = ds[0]  # uint8 tensor [3, H, W], int
    print(image.shape, image.dtype, target, ds.samples[0])

    loader = tfd.DataLoader(ds, batch_size=8, shuffle=True, num_workers=2, seed=0)
    for images, targets in loader:  # uint8 [8, 3, 32, 32], int64 [8]
        x = images.float().div_(255)  # normalise on the whole batch (or on the GPU)
        y = targets
    print(x.shape, y.dtype, f"{loader.stats.rows_per_s:.0f} images/s")
    # --8<-- [end:imagefolder]
    assert x.shape == (8, 3, 32, 32)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(make_tree(Path(tmp) / "pets"))
