"""Decode every image once: cache an ImageFolder in RAM or in a memory-mapped file.

Run: python examples/files_cache.py   (generates a small image tree in a temporary folder)
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from files_imagefolder import make_tree

import tensorfeed as tfd


def main(tmp: Path) -> None:
    root = make_tree(tmp / "pets")
    # --8<-- [start:cache]
    # a transform over uint8 tensors (decode="tensor"); transforms run per access
    ds = tfd.ImageFolder(root, transform=lambda img: img.flip(-1), decode="tensor")

    in_ram = ds.cache("memory")  # decoded once, one Arrow buffer shared by forked workers
    on_disk = ds.cache(tmp / "cache")  # written once to an Arrow file, memory-mapped
    again = tfd.ImageFolder(root, transform=lambda img: img.flip(-1), decode="tensor")
    again = again.cache(tmp / "cache")
    # `again` reuses the file (same paths, sizes, mtimes) and opens no image at all

    for cached in (in_ram, on_disk, again):
        for images, targets in tfd.DataLoader(cached, batch_size=8, shuffle=True, num_workers=2):
            assert images.shape[0] == targets.shape[0]
    print(len(on_disk), on_disk.path, on_disk.classes)
    # --8<-- [end:cache]
    assert np.array_equal(in_ram[5][0].numpy(), ds[5][0].numpy())
    assert again.path == on_disk.path


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        main(Path(tmp))
