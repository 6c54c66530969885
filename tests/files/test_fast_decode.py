"""The fast path's faster decoders give Pillow's pixels, or leave the file to Pillow (NOTE [ Faster
decoders, Pillow's pixels ] in sources/files/fast_decode.py)."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

import tensorfeed as tfd
from tensorfeed.sources.files import fast_decode

Image = pytest.importorskip("PIL.Image")
CASES = int(os.environ.get("TFD_FAST_DECODE_CASES", "800"))
pytest.importorskip("simplejpeg")
pytest.importorskip("pyspng")


def _pixels(h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, h * w * c).reshape(h, w, c)
    return (ramp + rng.integers(0, 55, (h, w, c))).astype(np.uint8)


def _jpeg(arr: np.ndarray, **kw) -> bytes:
    b = io.BytesIO()
    Image.fromarray(arr.squeeze(-1) if arr.shape[-1] == 1 else arr).save(b, "JPEG", **kw)
    return b.getvalue()


def _png(arr: np.ndarray, **kw) -> bytes:
    b = io.BytesIO()
    Image.fromarray(arr.squeeze(-1) if arr.shape[-1] == 1 else arr).save(b, "PNG", **kw)
    return b.getvalue()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _with_chunk(png: bytes, kind: bytes, payload: bytes) -> bytes:
    return png[:33] + _chunk(kind, payload) + png[33:]  # right after IHDR


FAST = {  # files the faster decoders take
    "jpeg 4:2:0": _jpeg(_pixels(37, 53, 3), quality=90),
    "jpeg 4:4:4": _jpeg(_pixels(16, 16, 3), quality=95, subsampling=0),
    "jpeg 4:2:2": _jpeg(_pixels(31, 17, 3), quality=75, subsampling=1),
    "jpeg progressive": _jpeg(_pixels(40, 24, 3), progressive=True),
    "jpeg restart markers": _jpeg(_pixels(64, 64, 3), restart_marker_blocks=2),
    "jpeg gray": _jpeg(_pixels(20, 30, 1)),
    "jpeg 1x1": _jpeg(_pixels(1, 1, 3)),
    "png rgb": _png(_pixels(19, 23, 3)),
    "png rgba": _png(_pixels(19, 23, 4)),
    "png gray": _png(_pixels(5, 70, 1)),
    "png gray with tRNS": _with_chunk(_png(_pixels(8, 8, 1)), b"tRNS", b"\x00\x07"),
    "png rgb with gAMA": _with_chunk(_png(_pixels(8, 9, 3)), b"gAMA", struct.pack(">I", 100000)),
    "png compressed hard": _png(_pixels(33, 12, 3), compress_level=9),
}


def _pillow_files() -> dict[str, bytes]:
    def save(img, fmt, **kw):
        b = io.BytesIO()
        img.save(b, fmt, **kw)
        return b.getvalue()

    rgb = Image.fromarray(_pixels(12, 10, 3))
    return {
        "png palette": save(rgb.convert("P"), "PNG"),
        "png gray+alpha": save(rgb.convert("LA"), "PNG"),
        "png 16-bit": save(
            Image.fromarray(_pixels(6, 6, 1)[..., 0].astype(np.uint16) * 257), "PNG"
        ),
        "png interlaced": _interlaced(rgb),
        "png 1-bit": save(rgb.convert("1"), "PNG"),
        "jpeg cmyk": save(rgb.convert("CMYK"), "JPEG"),
        "webp": save(rgb, "WEBP"),
        "bmp": save(rgb, "BMP"),
    }


def _interlaced(img) -> bytes:
    """An Adam7 PNG: Pillow writes none, so the IHDR's interlace byte is set on a file whose
    one IDAT is re-encoded in the 7 passes."""
    arr = np.asarray(img)
    h, w, _ = arr.shape
    passes = [(0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2)]
    passes.append((1, 0, 2, 1))
    raw = b""
    for y0, x0, dy, dx in passes:
        sub = arr[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\x00" + row.tobytes() for row in sub)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )


def _write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / (name.replace(" ", "_").replace(":", "") + ".img")
    path.write_bytes(data)
    return str(path)


def _pillow(path: str, mode: str | None) -> np.ndarray:
    with Image.open(path) as img:
        img.load()
        return np.asarray(img if mode is None or img.mode == mode else img.convert(mode))


@pytest.mark.parametrize("mode", ["RGB", None, "L"])
@pytest.mark.parametrize("name", sorted(FAST))
def test_the_faster_decoders_give_pillows_pixels(tmp_path, name, mode):
    path = _write(tmp_path, name, FAST[name])
    got = fast_decode.decode(path, mode, None)
    want = _pillow(path, mode)
    native = Image.open(path).mode
    if mode == "L" and native != "L":
        assert got is None  # Pillow's own luma conversion: left to Pillow
        return
    assert got is not None, f"{name} was left to Pillow"
    assert got.dtype == np.uint8 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", sorted(_pillow_files()))
def test_other_files_are_left_to_pillow(tmp_path, name):
    path = _write(tmp_path, name, _pillow_files()[name])
    assert _pillow(path, "RGB").ndim == 3  # Pillow reads it
    assert fast_decode.decode(path, "RGB", None) is None


def test_a_file_over_the_pixel_limit_is_left_to_pillow(tmp_path):
    for name, pixels in (("jpeg 4:2:0", 37 * 53), ("png rgb", 19 * 23)):
        path = _write(tmp_path, name, FAST[name])
        assert fast_decode.decode(path, "RGB", pixels - 1) is None
        assert fast_decode.decode(path, "RGB", pixels) is not None


def test_mutated_files_decode_as_pillow_decodes_them_or_go_to_pillow(tmp_path):
    """Bytes flipped, cut and inserted: the faster decoder never accepts a file Pillow refuses,
    and never gives other pixels than Pillow's."""
    rng = np.random.default_rng(7)
    seeds = [FAST["jpeg 4:2:0"], FAST["jpeg progressive"], FAST["png rgb"], FAST["png gray"]]
    fast_used = 0
    for case in range(CASES):
        data = bytearray(seeds[case % len(seeds)])
        kind = case % 3
        if kind == 0:
            for _ in range(int(rng.integers(1, 4))):
                data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        elif kind == 1:
            data = data[: int(rng.integers(1, len(data)))]
        else:
            at = int(rng.integers(0, len(data)))
            data[at:at] = bytes(rng.integers(0, 256, int(rng.integers(1, 9))).tolist())
        path = _write(tmp_path, f"m{case}", bytes(data))
        got = fast_decode.decode(path, "RGB", 10**7)
        if got is None:
            continue
        fast_used += 1
        try:
            want = _pillow(path, "RGB")
        except Exception as exc:
            raise AssertionError(
                f"case {case}: Pillow refuses ({exc!r}), the fast decoder not"
            ) from exc
        assert got.shape == want.shape and np.array_equal(got, want), f"case {case}"
    assert fast_used > CASES // 20  # the comparison ran on many mutated files


def _folder(tmp_path: Path) -> Path:
    root = tmp_path / "folder"
    for i, name in enumerate(sorted(FAST)):
        d = root / f"class{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        ext = "jpg" if name.startswith("jpeg") else "png"
        (d / f"{i:02d}.{ext}").write_bytes(FAST[name])
    (root / "class0" / "zz-palette.png").write_bytes(_pillow_files()["png palette"])
    return root


def _all(ds, workers: int) -> list[torch.Tensor]:
    loader = tfd.DataLoader(ds, batch_size=1, num_workers=workers)
    return [x[0] for x, _ in loader]


@pytest.mark.parametrize("workers", [0, 2])
def test_an_image_folder_reads_the_same_tensors_with_and_without_them(
    tmp_path, monkeypatch, workers
):
    root = _folder(tmp_path)
    fast = _all(tfd.ImageFolder(str(root)), workers)
    monkeypatch.setattr(fast_decode, "_MODULES", {"simplejpeg": None, "pyspng": None})
    assert not fast_decode.available()
    slow = _all(tfd.ImageFolder(str(root)), workers)
    assert len(fast) == len(slow) == len(FAST) + 1
    for a, b in zip(fast, slow, strict=True):
        assert a.dtype == b.dtype == torch.uint8
        assert torch.equal(a, b)


def test_a_truncated_jpeg_is_pillows_error_or_pillows_pixels(tmp_path, monkeypatch):
    from PIL import ImageFile

    root = tmp_path / "t" / "c"
    root.mkdir(parents=True)
    data = FAST["jpeg restart markers"]
    (root / "cut.jpg").write_bytes(data[: len(data) * 2 // 3])
    ds = tfd.ImageFolder(str(root.parent))
    with pytest.raises(OSError, match=r"cut\.jpg.*truncated"):
        ds[0]
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    x, _ = ds[0]
    with Image.open(root / "cut.jpg") as img:
        want = torch.from_numpy(np.asarray(img.convert("RGB")).transpose(2, 0, 1).copy())
    assert torch.equal(x, want)


def test_a_crop_of_the_fast_path_is_pillows_crop(tmp_path):
    rows = tmp_path / "ann.csv"
    img = tmp_path / "a.jpg"
    img.write_bytes(FAST["jpeg 4:2:0"])
    rows.write_text("path,label,left,top,right,bottom\na.jpg,1,3,5,40,30\n")
    ds = tfd.AnnotationsDataset(
        str(rows), str(tmp_path), "path", "label", crop_columns=["left", "top", "right", "bottom"]
    )
    x = ds[0][0]
    with Image.open(img) as im:
        want = np.asarray(im.convert("RGB").crop((3, 5, 40, 30))).transpose(2, 0, 1)
    assert torch.equal(x, torch.from_numpy(want.copy()))


@pytest.mark.parametrize("workers", [0, 2])
def test_a_transform_gets_the_same_pil_images_with_and_without_them(tmp_path, monkeypatch, workers):
    """The PIL path decodes through them too: a transform sees Pillow's pixels, mode and size."""
    root = _folder(tmp_path)

    def seen(img):  # what the transform saw: mode, size and a checksum of the pixels
        pixels = zlib.crc32(np.asarray(img).tobytes())
        return torch.tensor([img.mode == "RGB", *img.size, pixels], dtype=torch.int64)

    def run():
        ds = tfd.ImageFolder(str(root), transform=seen)
        one = [ds[i][0].tolist() for i in range(len(ds))]
        loader = tfd.DataLoader(ds, batch_size=4, num_workers=workers)
        return one, [row for x, _ in loader for row in x.tolist()]

    fast = run()
    monkeypatch.setattr(fast_decode, "_MODULES", {"simplejpeg": None, "pyspng": None})
    slow = run()
    assert fast == slow
    assert all(rgb == 1 for rgb, *_ in fast[0]) and len(fast[0]) == len(FAST) + 1


def test_a_png_whose_data_inflates_past_its_rows_is_left_to_pillow(tmp_path):
    """A 1x1 image whose IDAT inflates to 64 MiB: the check stops at the rows' size."""
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    bomb = zlib.compress(b"\x00" * (64 << 20), 9)
    data = (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", bomb) + _chunk(b"IEND", b"")
    )
    path = _write(tmp_path, "bomb", data)
    import tracemalloc

    tracemalloc.start()
    assert fast_decode.decode(path, "RGB", None) is None
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 << 20, peak
