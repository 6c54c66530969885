"""A CSV of annotations (path, label, crop box) -> cropped image batches.

Run: python examples/files_annotations.py   (writes a few images and a CSV to a temp folder)
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

import tensorfeed as tfd


def make_files(tmp: Path) -> tuple[Path, Path]:
    images = tmp / "images"
    (images / "2024").mkdir(parents=True)
    rows = ["file,species,left,top,right,bottom"]
    for n, species in enumerate(["heron", "egret", "heron", "ibis"]):
        Image.fromarray(np.full((40, 60, 3), 40 * n, np.uint8)).save(images / "2024" / f"{n}.jpg")
        rows.append(f"2024/{n}.jpg,{species},{n},{n},{n + 24},{n + 24}")
    csv = tmp / "boxes.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv, images


def main(csv: Path, images: Path) -> None:
    # --8<-- [start:annotations]
    ds = tfd.AnnotationsDataset(
        csv,  # or a .parquet file, an Arrow table, a pandas DataFrame
        root=images,  # every path is relative to root; ../, absolute paths and
        path_column="file",  # symlinks out of root are refused, naming the row
        label_column="species",  # strings -> indices over the sorted classes
        crop_columns=["left", "top", "right", "bottom"],  # cut out on load
    )
    print(ds.classes)  # ['egret', 'heron', 'ibis']
    crops, labels = next(iter(tfd.DataLoader(ds, batch_size=4)))
    print(crops.shape, labels.tolist())  # torch.Size([4, 3, 24, 24]) [1, 0, 1, 2]
    # --8<-- [end:annotations]
    assert crops.shape == (4, 3, 24, 24) and labels.tolist() == [1, 0, 1, 2]


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        main(*make_files(Path(tmp)))
