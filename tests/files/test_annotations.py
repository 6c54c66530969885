"""AnnotationsDataset: rows of a CSV/Parquet file naming images under a root."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import tensorfeed as tfd

from .files_helpers import Image, ids_of_images, tagged_pixels


@pytest.fixture
def images(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    for i in range(6):
        Image.fromarray(tagged_pixels(i, (8, 10))).save(root / "sub" / f"im{i}.png")
    return root


def _rows() -> dict:
    return {
        "file": [f"sub/im{i}.png" for i in range(6)],
        "label": ["zebra", "ant", "zebra", "bee", "ant", "bee"],
        "left": [0, 1, 2, 0, 0, 3],
        "top": [0, 0, 1, 2, 0, 1],
        "right": [4, 5, 6, 4, 4, 7],
        "bottom": [3, 3, 4, 5, 3, 4],
    }


def _write_csv(path: Path, rows: dict) -> Path:
    cols = list(rows)
    lines = [",".join(cols)] + [
        ",".join(str(rows[c][i]) for c in cols) for i in range(len(rows[cols[0]]))
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_with_labels_and_crops(tmp_path, images):
    csv = _write_csv(tmp_path / "ann.csv", _rows())
    ds = tfd.AnnotationsDataset(csv, images, "file", "label", ["left", "top", "right", "bottom"])
    assert ds.classes == ["ant", "bee", "zebra"] and ds.class_to_idx["zebra"] == 2
    assert ds.targets == [2, 0, 2, 1, 0, 1] and len(ds) == 6
    img, y = ds[2]
    assert img.shape == (3, 3, 4) and y == 2  # rows 1..4, columns 2..6 of image 2
    full = torch.from_numpy(tagged_pixels(2, (8, 10))).permute(2, 0, 1)
    assert torch.equal(img, full[:, 1:4, 2:6])
    x, y = next(iter(tfd.DataLoader(ds, batch_size=6, num_workers=0)))
    assert x.shape == (6, 3, 3, 4) and y.tolist() == [2, 0, 2, 1, 0, 1]


@pytest.mark.parametrize("workers", [0, 2])
def test_parquet_without_labels_every_row_once(tmp_path, images, workers):
    path = tmp_path / "ann.parquet"
    pq.write_table(pa.table({"file": [f"sub/im{i}.png" for i in range(6)]}), path)
    ds = tfd.AnnotationsDataset(path, images, "file")
    assert isinstance(ds[0], torch.Tensor) and ds[0].shape == (3, 8, 10)
    ids = []
    for batch in tfd.DataLoader(ds, batch_size=4, shuffle=True, num_workers=workers):
        assert isinstance(batch, torch.Tensor)
        ids += ids_of_images(batch)
    assert sorted(ids) == list(range(6))


def test_dataframe_numeric_labels_and_transforms(images):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"path": ["sub/im1.png", "sub/im4.png"], "score": [0.5, 1.5]})
    ds = tfd.AnnotationsDataset(
        frame, images, "path", "score", transform=lambda t: t.float() / 255, decode="tensor"
    )
    x, y = ds[1]
    assert x.dtype == torch.float32 and y == 1.5 and ds.classes is None
    _, yb = next(iter(tfd.DataLoader(ds, batch_size=2)))
    assert yb.dtype == torch.float32 and yb.tolist() == [0.5, 1.5]


def test_paths_escaping_root_are_refused(tmp_path, images):
    outside = tmp_path / "secret.png"
    Image.fromarray(tagged_pixels(99)).save(outside)
    for bad in ("../secret.png", "sub/../../secret.png", str(outside)):
        rows = {"file": ["sub/im0.png", bad]}
        with pytest.raises(
            tfd.DataError,
            match=r"row 1 .*" + ("absolute" if bad.startswith("/") else "escapes root"),
        ):
            tfd.AnnotationsDataset(pa.table(rows), images, "file")
    os.symlink(outside, images / "sub" / "link.png")
    os.symlink(images / "sub" / "im3.png", images / "sub" / "inside.png")
    ds = tfd.AnnotationsDataset(
        pa.table({"file": ["sub/inside.png", "sub/link.png"]}), images, "file"
    )
    assert ids_of_images(ds[0][None]) == [3]  # a link that stays inside root is fine
    with pytest.raises(tfd.DataError, match=r"row 1 .*'sub/link.png'.*outside root"):
        ds[1]
    skipping = tfd.AnnotationsDataset(
        pa.table({"file": ["sub/link.png"]}), images, "file", on_error="skip"
    )
    with pytest.raises(tfd.DataError, match="outside root"):  # never skipped silently
        skipping.__getitems__([0])


def test_bad_rows_name_the_row(tmp_path, images):
    with pytest.raises(tfd.NotFoundError, match=r"'label'.*available columns: \['file'\]"):
        tfd.AnnotationsDataset(pa.table({"file": ["sub/im0.png"]}), images, "file", "label")
    with pytest.raises(tfd.DataError, match=r"row 1 .*empty"):
        tfd.AnnotationsDataset(pa.table({"file": ["sub/im0.png", None]}), images, "file")
    with pytest.raises(tfd.DataError, match=r"row 1 .*'sub/notes.txt' has an unknown extension"):
        tfd.AnnotationsDataset(pa.table({"file": ["sub/im0.png", "sub/notes.txt"]}), images, "file")
    with pytest.raises(tfd.DataError, match=r"row 0 .*label column 'y' is NULL"):
        tfd.AnnotationsDataset(
            pa.table({"file": ["sub/im0.png"], "y": pa.array([None], pa.string())}),
            images,
            "file",
            "y",
        )
    crops = {
        "file": ["sub/im0.png", "sub/im1.png"],
        "l": [0, 5],
        "t": [0, 0],
        "r": [2, 5],
        "b": [2, 2],
    }
    with pytest.raises(tfd.DataError, match=r"row 1 .*crop box \(5, 0, 5, 2\) is empty"):
        tfd.AnnotationsDataset(pa.table(crops), images, "file", crop_columns=["l", "t", "r", "b"])
    crops["r"] = [2, 50]
    ds = tfd.AnnotationsDataset(pa.table(crops), images, "file", crop_columns=["l", "t", "r", "b"])
    with pytest.raises(
        tfd.DataError,
        match=r"im1\.png \(row 1 of the annotations table\) crop box .* not inside the 10x8",
    ):
        ds[1]
    with pytest.raises(tfd.ConfigError, match="4 columns"):
        tfd.AnnotationsDataset(pa.table(crops), images, "file", crop_columns=["l", "t"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tfd.AnnotationsDataset(tmp_path / "missing.csv", images, "file")


def test_pickles_and_fingerprint_tracks_the_files(tmp_path, images):
    import pickle

    csv = _write_csv(tmp_path / "ann.csv", _rows())
    ds = tfd.AnnotationsDataset(csv, images, "file", "label")
    again = pickle.loads(pickle.dumps(ds))
    assert torch.equal(again[4][0], ds[4][0]) and again.targets == ds.targets
    fp = ds.fingerprint()
    assert tfd.AnnotationsDataset(csv, images, "file", "label").fingerprint() == fp
    img = images / "sub" / "im0.png"
    st = img.stat()
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert tfd.AnnotationsDataset(csv, images, "file", "label").fingerprint() != fp
    np.testing.assert_array_equal(ds.column("target"), [2, 0, 2, 1, 0, 1])


def test_custom_loader_crops_and_unlabelled_samples_setter(images):
    from tensorfeed.sources.files import pil_loader

    rows = pa.table(
        {"f": ["sub/im0.png", "sub/im5.png"], "l": [1, 2], "t": [0, 1], "r": [4, 6], "b": [2, 5]}
    )
    ds = tfd.AnnotationsDataset(
        rows, images, "f", crop_columns=["l", "t", "r", "b"], loader=pil_loader
    )
    assert ds[0].size == (3, 2) and ds[1].size == (4, 4)
    as_tensor = tfd.AnnotationsDataset(
        rows, images, "f", crop_columns=["l", "t", "r", "b"], loader=lambda p: torch.zeros(3, 8, 10)
    )
    assert as_tensor[1].shape == (3, 4, 4)
    with pytest.raises(tfd.ConfigError, match="crop boxes"):
        ds.samples = ds.samples[::-1]
    plain = tfd.AnnotationsDataset(rows, images, "f")
    plain.samples = plain.samples[::-1]
    assert plain.paths == ["sub/im5.png", "sub/im0.png"] and plain._target_values is None
