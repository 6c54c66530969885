"""Bad files: corrupt, truncated, decompression bombs; raise by default, skip-and-count on ask."""

from __future__ import annotations

import re
import struct
import warnings
import zlib
from pathlib import Path

import pytest
import torch

import tensorfeed as tfd

from .files_helpers import Image, ids_of_images, write_tree


def _corrupt(tree: Path) -> tuple[Path, Path]:
    bad = tree / "dog" / "0005.png"
    bad.write_bytes(b"this is not a png at all")
    truncated = tree / "emu" / "0009.png"
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    return bad, truncated


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height pixels (no pixel data follows)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def test_corrupt_image_raises_naming_the_file(tree):
    bad, truncated = _corrupt(tree)
    ds = tfd.ImageFolder(tree)
    with pytest.raises(tfd.DataError, match=rf"{bad}.*cannot be decoded.*on_error='skip'"):
        ds[5]
    with pytest.raises(tfd.DataError, match=rf"{truncated}.*(truncated|broken|cannot be decoded)"):
        ds.__getitems__([8, 9])
    with pytest.raises(tfd.DataError, match=str(bad)):
        list(tfd.DataLoader(ds, batch_size=4))
    assert ds[4][1] == 1  # good files still read


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_leaves_bad_files_out_and_counts_them(tree, workers):
    bad, truncated = _corrupt(tree)
    ds = tfd.ImageFolder(tree, on_error="skip")
    assert ds.num_skipped == 0
    ids = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for _ in range(2):  # counted once per file, however many epochs
            for x, _ in tfd.DataLoader(ds, batch_size=4, num_workers=workers):
                ids += ids_of_images(x)
    assert sorted(ids) == sorted(2 * [i for i in range(12) if i not in (5, 9)])
    assert ds.num_skipped == 2
    assert [(s.index, s.path) for s in ds.skipped] == [(5, str(bad)), (9, str(truncated))]
    assert "cannot be decoded" in ds.skipped[0].reason


def test_skip_single_index_explains(tree):
    _corrupt(tree)
    ds = tfd.ImageFolder(tree, on_error="skip")
    with (
        pytest.warns(RuntimeWarning, match="skipped"),
        pytest.raises(tfd.DataError, match="on_error='skip' leaves it out"),
    ):
        ds[5]
    with pytest.warns(RuntimeWarning):
        batch = ds.__getitems__([4, 5, 6])
    assert len(batch) == 2 and [t for _, t in batch] == [1, 1]
    with pytest.warns(RuntimeWarning):
        x, y = tfd.collate(ds.__getitems__([5]))
    assert x.shape == (0,) and y.shape == (0,)
    with pytest.raises(tfd.ConfigError, match="on_error"):
        tfd.ImageFolder(tree, on_error="ignore")


def test_decompression_bomb_is_refused_with_a_configurable_limit(tree):
    big = tree / "cat" / "big.png"
    Image.new("RGB", (1200, 1000)).save(big)  # 1.2 Mpixel, a few KB on disk
    limit_before = Image.MAX_IMAGE_PIXELS
    ds = tfd.ImageFolder(tree, max_image_pixels=1_000_000)
    index = ds.samples.index((str(big), 0))
    with pytest.raises(tfd.DataError, match=rf"{big}.*1200x1000.*max_image_pixels=1000000.*bomb"):
        ds[index]
    assert limit_before == Image.MAX_IMAGE_PIXELS  # our limit is ours, not a global mutation
    assert tfd.ImageFolder(tree, max_image_pixels=None)[index][0].shape == (3, 1000, 1200)
    assert tfd.ImageFolder(tree)[index][0].shape == (3, 1000, 1200)  # under Pillow's default


def test_header_claiming_billions_of_pixels_is_refused_before_decoding(tree):
    huge = tree / "dog" / "huge.png"
    _png_header_only(huge, 100_000, 100_000)
    ds = tfd.ImageFolder(tree)
    index = ds.samples.index((str(huge), 1))
    with pytest.raises(tfd.DataError, match=rf"{huge}.*(bomb)"):
        ds[index]
    skipping = tfd.ImageFolder(tree, on_error="skip")
    with pytest.warns(RuntimeWarning, match="bomb"):
        x, _ = tfd.collate(skipping.__getitems__(list(range(len(skipping)))))
    assert x.shape == (12, 3, 6, 5) and skipping.num_skipped == 1


def test_loader_errors_name_the_file(tree):
    def fussy(path: str):
        if path.endswith("0003.png"):
            raise ValueError("unsupported header")
        return torch.zeros(1)

    ds = tfd.ImageFolder(tree, loader=fussy)
    # the loader's own exception, as under torchvision, with a note naming the file
    with pytest.raises(ValueError, match="unsupported header") as caught:
        ds[3]
    assert any(re.search(r"fussy read .*0003\.png", n) for n in caught.value.__notes__)
    skipping = tfd.ImageFolder(tree, loader=fussy, on_error="skip")
    with pytest.warns(RuntimeWarning, match=r"0003\.png could not be loaded by .*fussy"):
        batch = skipping.__getitems__([2, 3, 4])
    assert len(batch) == 2 and [s.index for s in skipping.skipped] == [3]


def test_file_deleted_after_the_scan(tree):
    ds = tfd.ImageFolder(tree)
    (tree / "cat" / "0001.png").unlink()
    with pytest.raises(tfd.DataError, match=r"0001\.png no longer exists"):
        ds[1]


def test_unknown_extension_in_a_class_folder(tmp_path):
    root = tmp_path / "t"
    write_tree(root, {"a": 2})
    (root / "b").mkdir()
    (root / "b" / "scan.heic").write_bytes(b"...")
    with pytest.raises(tfd.NotFoundError, match=r"classes b\. Supported extensions are: \.jpg"):
        tfd.ImageFolder(root)
    ds = tfd.ImageFolder(root, extensions=(".png", ".heic"))
    with pytest.raises(tfd.DataError, match=r"scan\.heic cannot be decoded"):
        ds[2]
