"""Code written for torchvision runs unchanged on tensorfeed's file datasets (#13).

torchvision cannot be installed here (no CPU build), so its documented behaviour is written out
with Pillow and numpy: ``ToTensor`` (PIL ``HWC`` uint8 -> float ``CHW`` / 255), ``Resize(int)``
(shorter side to ``size``, the other ``int(size * long / short)``, PIL's resample),
``CenterCrop`` (offsets ``int(round((H - h) / 2))``), ``Normalize``; each refuses what
torchvision's PIL-only transforms refuse (``TypeError: pic should be PIL Image``). Expected
tensors come from the file through Pillow, the way torchvision's ``default_loader`` opens it.
"""

from __future__ import annotations

import io
import os
import sys

import numpy as np
import pytest
import torch

import tensorfeed as tfd
from tensorfeed.sources.files import default_loader

from .files_helpers import Image, ids_of_images, tagged_pixels, write_mnist


def _pil_only(img):
    if not isinstance(img, Image.Image):
        raise TypeError(f"pic should be PIL Image. Got {type(img)}")
    return img


class ToTensor:
    def __call__(self, pic):
        arr = np.array(_pil_only(pic), copy=True)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        return torch.from_numpy(arr.transpose(2, 0, 1).copy()).float().div(255)


class Resize:
    def __init__(self, size, interpolation=None):
        self.size = size
        self.interpolation = Image.BILINEAR if interpolation is None else interpolation

    def __call__(self, img):
        w, h = _pil_only(img).size
        short, long = (w, h) if w <= h else (h, w)
        new_long = int(self.size * long / short)
        size = (self.size, new_long) if w <= h else (new_long, self.size)
        return img.resize(size, self.interpolation)


class CenterCrop:
    def __init__(self, size):
        self.size = size

    def __call__(self, img):
        w, h = _pil_only(img).size
        top, left = round((h - self.size) / 2.0), round((w - self.size) / 2.0)
        return img.crop((left, top, left + self.size, top + self.size))


class Normalize:
    def __init__(self, mean, std):
        self.mean, self.std = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]

    def __call__(self, t):
        return (t - self.mean) / self.std


class Compose:
    def __init__(self, steps):
        self.steps = steps

    def __call__(self, x):
        for step in self.steps:
            x = step(x)
        return x


TUTORIAL = Compose(
    [
        Resize(20),
        CenterCrop(16),
        ToTensor(),
        Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ]
)


def _expected(path, transform):
    with open(path, "rb") as f:
        return transform(Image.open(f).convert("RGB"))


@pytest.fixture
def photos(tmp_path):
    """Class folders of noisy RGB photos of several sizes and formats (JPEG, PNG, WebP)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    for c, cls in enumerate(("cat", "dog")):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            h, w = 24 + 7 * i, 30 + 5 * c
            px = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            fmt = ("jpeg", "png", "webp", "png")[i]
            Image.fromarray(px).save(root / cls / f"{i}.{'jpg' if fmt == 'jpeg' else fmt}", fmt)
    return root


def test_the_tutorials_pil_transforms_give_torchvisions_tensors(photos):
    ds = tfd.ImageFolder(photos, transform=TUTORIAL)
    assert len(ds) == 8 and ds.classes == ["cat", "dog"]
    for i, (path, target) in enumerate(ds.samples):
        x, y = ds[i]
        assert y == target and torch.equal(x, _expected(path, TUTORIAL)), path
    # the same through the loader, with workers: batches are the transform's tensors, stacked
    expected = torch.stack([_expected(p, TUTORIAL) for p, _ in ds.samples])
    for workers in (0, 2):
        xb, yb = next(iter(tfd.DataLoader(ds, batch_size=8, num_workers=workers)))
        assert torch.equal(xb, expected) and yb.tolist() == ds.targets


def test_a_transform_that_also_takes_tensors_sees_pil_pixels(photos):
    """Resize(NEAREST) accepts tensors too, but differs on them: it gets the PIL image."""
    nearest = Compose([Resize(9, Image.NEAREST), ToTensor()])
    ds = tfd.ImageFolder(photos, transform=nearest)
    for i, (path, _) in enumerate(ds.samples):
        assert torch.equal(ds[i][0], _expected(path, nearest))


def test_samples_are_pil_images_as_in_torchvision_when_asked(photos):
    ds = tfd.ImageFolder(photos, transform=lambda img: img)  # any transform: PIL in
    img, _ = ds[0]
    assert isinstance(img, Image.Image) and img.mode == "RGB"
    assert np.asarray(img).shape == (24, 30, 3)  # HWC, as np.asarray gives torchvision's
    plain = tfd.ImageFolder(photos, decode="pil")
    assert isinstance(plain[0][0], Image.Image)
    fast = tfd.ImageFolder(photos)  # no transform: the fast path, uint8 [C, H, W]
    assert fast[0][0].dtype == torch.uint8 and fast[0][0].shape == (3, 24, 30)
    assert np.array_equal(fast[0][0].permute(1, 2, 0).numpy(), np.asarray(img))
    # a transform set after construction switches to the PIL path, as in torchvision
    fast.transform = ToTensor()
    assert torch.equal(fast[1][0], _expected(fast.samples[1][0], ToTensor()))


def test_the_loader_attribute_is_torchvisions(photos):
    ds = tfd.ImageFolder(photos)
    assert ds.loader is default_loader
    assert isinstance(ds.loader(ds.samples[0][0]), Image.Image)

    class Gray(tfd.ImageFolder):  # a subclass in torchvision's style
        def __getitem__(self, index):
            path, target = self.samples[index]
            return np.asarray(self.loader(path).convert("L")), target

    g, y = Gray(photos)[5]
    assert g.shape == (24 + 7, 35) and y == 1
    ds.loader = lambda p: "loaded " + os.path.basename(p)  # set later: used from then on
    assert ds[0] == ("loaded 0.jpg", 0)


def test_edits_to_samples_are_what_the_dataset_serves(tmp_path):
    root = tmp_path / "t"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
    for i in range(6):
        Image.fromarray(tagged_pixels(i)).save(root / ("a" if i < 3 else "b") / f"{i}.png")
    ds = tfd.ImageFolder(root)
    ds.samples.append(ds.samples[0])  # in place, as torchvision code does
    del ds.samples[1]
    ds.samples[0] = (ds.samples[0][0], 9)
    assert len(ds) == 6
    served = [(ids_of_images(x[None])[0], y) for x, y in (ds[i] for i in range(len(ds)))]
    assert served == [(0, 9), (2, 0), (3, 1), (4, 1), (5, 1), (0, 0)]
    for workers in (0, 2):
        batches = list(tfd.DataLoader(ds, batch_size=4, num_workers=workers))
        got = [(i, y) for xb, yb in batches for i, y in zip(ids_of_images(xb), yb.tolist())]
        assert got == served
    ds.samples = [s for s in ds.samples if s[1] == 1]  # filtered, as in torchvision
    assert len(ds) == 3 and [ids_of_images(ds[i][0][None])[0] for i in range(3)] == [3, 4, 5]
    ds.targets = [0, 0, 0]  # torchvision: a list of its own, the labels come from samples
    assert ds.targets == [0, 0, 0] and ds[0][1] == 1


def test_errors_are_what_torchvision_code_catches(photos, tmp_path):
    good = photos / "cat" / "1.png"
    (photos / "cat" / "7.png").write_bytes(b"not an image at all")
    (photos / "cat" / "8.jpg").write_bytes((photos / "cat" / "0.jpg").read_bytes()[:200])
    os.symlink(tmp_path / "nowhere.png", photos / "dog" / "9.png")  # broken symlink
    ds = tfd.ImageFolder(photos)
    by_name = {os.path.basename(p): i for i, (p, _) in enumerate(ds.samples)}
    for name in ("7.png", "8.jpg", "9.png"):
        with pytest.raises(OSError, match=name):  # Pillow's errors for these are OSErrors
            ds[by_name[name]]
        with pytest.raises(tfd.DataError):  # and they are tensorfeed's DataError as well
            ds[by_name[name]]
    assert ds[by_name["1.png"]][0].shape[0] == 3 and good.exists()

    class MyError(Exception):
        pass

    def strict(path):
        raise MyError(f"refused {path}")

    with pytest.raises(MyError):  # a loader's own exception type reaches the caller
        tfd.ImageFolder(photos, loader=strict)[0]
    with pytest.raises(FileNotFoundError):
        tfd.ImageFolder(tmp_path / "missing")
    with pytest.raises(RuntimeError):  # torchvision's MNIST raises RuntimeError here
        tfd.MNIST(tmp_path / "no-mnist")
    with pytest.raises(FileNotFoundError):
        tfd.MNIST(tmp_path / "no-mnist")


def test_pillows_own_settings_are_honoured(tmp_path, monkeypatch):
    from PIL import ImageFile

    root = tmp_path / "big"
    (root / "x").mkdir(parents=True)
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(root / "x" / "big.png")
    buf = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buf, "JPEG")
    (root / "x" / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 1,600 pixels: over twice the limit
    with pytest.raises(OSError, match="decompression bomb"):
        tfd.ImageFolder(root)[0]
    assert tfd.ImageFolder(root, max_image_pixels=2000)[0][0].shape == (3, 40, 40)  # ours wins
    with pytest.raises(tfd.DataError, match="over max_image_pixels=1000"):
        tfd.ImageFolder(root, max_image_pixels=1000)[0]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # Pillow's "no limit"
    assert tfd.ImageFolder(root)[0][0].shape == (3, 40, 40)
    with pytest.raises(OSError, match=r"cut\.jpg"):
        tfd.ImageFolder(root)[1]
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    assert tfd.ImageFolder(root)[1][0].shape == (3, 40, 40)
    # a spawn worker starts with Pillow's defaults: it gets the main process's settings
    loader = tfd.DataLoader(
        tfd.ImageFolder(root), batch_size=2, num_workers=1, multiprocessing_context="spawn"
    )
    images, _ = next(iter(loader))
    assert images.shape == (2, 3, 40, 40)


def test_mnist_is_torchvisions(tmp_path):
    arrays = write_mnist(tmp_path / "MNIST" / "raw", n_train=30)
    ds = tfd.MNIST(tmp_path, transform=ToTensor())
    x, y = ds[4]  # the transform got torchvision's PIL "L" image
    assert x.shape == (1, 28, 28) and y == 4
    assert torch.equal(x, torch.from_numpy(arrays["train"][0][4]).float()[None] / 255)
    assert isinstance(tfd.MNIST(tmp_path, decode="pil")[0][0], Image.Image)
    keep = ds.targets % 2 == 0
    ds.data, ds.targets = ds.data[keep], ds.targets[keep]  # torchvision's filtering idiom
    assert len(ds) == 15 and ds.targets.tolist() == [0, 2, 4, 6, 8] * 3
    plain = tfd.MNIST(tmp_path)
    plain.data, plain.targets = plain.data[keep], plain.targets[keep]
    for workers in (0, 2):
        got = [t for _, yb in tfd.DataLoader(plain, batch_size=4, num_workers=workers) for t in yb]
        assert [int(t) for t in got] == [0, 2, 4, 6, 8] * 3
    half = tfd.MNIST(tmp_path)
    half.data = half.data[:10]
    with pytest.raises(tfd.DataError, match="10 images in data but 30 labels in targets"):
        len(half)


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS file systems refuse non-UTF-8 names")
def test_file_names_that_are_not_utf8(tmp_path):
    root = tmp_path / "t"
    (root / "caf\udce9").mkdir(parents=True)  # b"caf\xe9": Latin-1, not UTF-8
    name = os.fsdecode(b"\xe9t\xe9.png")
    Image.fromarray(tagged_pixels(3)).save(os.path.join(root, "caf\udce9", name))
    with open(os.path.join(root, "caf\udce9", os.fsdecode(b"bad\xff.png")), "wb") as f:
        f.write(b"broken")
    ds = tfd.ImageFolder(root)
    assert ds.classes == ["caf\udce9"] and os.path.basename(ds.samples[1][0]) == name
    assert ids_of_images(ds[1][0][None]) == [3]
    with pytest.raises(tfd.DataError) as caught:
        ds[0]
    assert "bad\\xff.png" in str(caught.value)  # printable: the byte is shown, not lost
    str(caught.value).encode("utf-8")  # and it encodes (a surrogate would not)
    cached = tfd.ImageFolder(root, on_error="skip").cache(tmp_path / "cache")
    with pytest.warns(RuntimeWarning, match="bad"):
        assert ids_of_images(next(iter(tfd.DataLoader(cached, batch_size=2)))[0]) == [3]
