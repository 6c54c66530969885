"""MNIST / FashionMNIST from IDX files the tests write (plain and gzipped, both layouts)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

import tensorfeed as tfd

from .files_helpers import write_idx, write_mnist


@pytest.mark.parametrize("gz", [False, True])
def test_reads_torchvision_layout(tmp_path, gz):
    arrays = write_mnist(tmp_path / "MNIST" / "raw", gz=gz)
    train = tfd.MNIST(tmp_path)
    test = tfd.MNIST(tmp_path, train=False)
    assert len(train) == 30 and len(test) == 12
    images, labels = arrays["train"]
    img, y = train[7]
    assert img.dtype == torch.uint8 and img.shape == (1, 28, 28)
    assert torch.equal(img[0], torch.from_numpy(images[7])) and y == 7 and isinstance(y, int)
    assert train.data.shape == (30, 28, 28) and train.targets.dtype == torch.int64
    assert train.targets.tolist() == labels.tolist()
    assert train.classes[3] == "3 - three" and train.class_to_idx["9 - nine"] == 9
    assert isinstance(train._get()[0], np.memmap) != gz  # plain files are memory-mapped
    assert train.raw_folder == str(tmp_path / "MNIST" / "raw")


def test_reads_files_directly_in_root_and_fashion(tmp_path):
    write_mnist(tmp_path)
    assert len(tfd.MNIST(tmp_path)) == 30
    write_mnist(tmp_path / "FashionMNIST" / "raw", n_train=5, gz=True)
    fashion = tfd.FashionMNIST(tmp_path)
    assert len(fashion) == 5 and fashion.classes[9] == "Ankle boot"


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_every_image_once(tmp_path, workers):
    write_mnist(tmp_path / "MNIST" / "raw", n_train=50)
    ds = tfd.MNIST(tmp_path, transform=None)
    seen = []
    for x, y in tfd.DataLoader(ds, batch_size=8, shuffle=True, num_workers=workers):
        assert x.dtype == torch.uint8 and x.shape[1:] == (1, 28, 28) and y.dtype == torch.int64
        seen += x[:, 0, 0, 0].tolist()
        assert (y == (x[:, 0, 0, 0] % 10)).all()
    assert sorted(seen) == list(range(50))


def test_transforms_and_pickling(tmp_path):
    write_mnist(tmp_path / "MNIST" / "raw", gz=True)
    ds = tfd.MNIST(
        tmp_path,
        transform=lambda t: t.float().div(255),
        target_transform=lambda y: -y,
        decode="tensor",
    )
    x, y = ds[3]
    assert x.dtype == torch.float32 and y == -3
    plain = tfd.MNIST(tmp_path)
    again = pickle.loads(pickle.dumps(plain))
    assert again.__dict__["_arrays"] is None and torch.equal(again[5][0], plain[5][0])


def test_download_true_explains_where_to_put_the_files(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        tfd.MNIST(tmp_path, download=True)
    msg = str(err.value)
    assert "cannot download" in msg and "no network access" in msg
    assert "train-images-idx3-ubyte.gz" in msg and "t10k-labels-idx1-ubyte.gz" in msg
    assert str(tmp_path / "MNIST" / "raw") in msg
    write_mnist(tmp_path / "MNIST" / "raw")
    assert len(tfd.MNIST(tmp_path, download=True)) == 30  # present: nothing to download


def test_missing_file_is_named(tmp_path):
    write_mnist(tmp_path / "MNIST" / "raw")
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    assert len(tfd.MNIST(tmp_path)) == 30
    with pytest.raises(tfd.NotFoundError, match=r"missing t10k-labels-idx1-ubyte\.gz .*MNIST/raw"):
        tfd.MNIST(tmp_path, train=False)


def test_wrong_magic_truncated_and_mismatched_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    write_mnist(raw)
    images = np.zeros((30, 28, 28), np.uint8)
    write_idx(raw / "train-images-idx3-ubyte", images, magic=0x00000801)
    with pytest.raises(
        tfd.DataError,
        match=r"train-images-idx3-ubyte has magic number 0x00000801, expected 0x00000803",
    ):
        tfd.MNIST(tmp_path)
    path = write_idx(raw / "train-images-idx3-ubyte", images)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(
        tfd.DataError,
        match=r"train-images-idx3-ubyte has 23436 bytes but its header \(30 x 28 x 28\) says 23536: the file is truncated",
    ):
        tfd.MNIST(tmp_path)
    write_idx(raw / "train-images-idx3-ubyte", images[:10])
    with pytest.raises(tfd.DataError, match=r"has 10 images but .* has 30 labels"):
        tfd.MNIST(tmp_path)
    import gzip

    path.write_bytes(gzip.compress(path.read_bytes()))  # gzipped but not named .gz
    with pytest.raises(tfd.DataError, match="looks gzip-compressed"):
        tfd.MNIST(tmp_path)
    path.unlink()
    (raw / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b broken")
    with pytest.raises(tfd.DataError, match=r"idx3-ubyte\.gz is not a readable gzip file"):
        tfd.MNIST(tmp_path)


def test_from_url_and_column(tmp_path):
    write_mnist(tmp_path / "MNIST" / "raw")
    ds = tfd.MNIST.from_url(f"mnist://{tmp_path}?train=false")
    assert len(ds) == 12 and ds.column("target").tolist() == (np.arange(12) % 10).tolist()
