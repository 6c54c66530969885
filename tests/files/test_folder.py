"""ImageFolder / DatasetFolder: torchvision's semantics, samples, batches and loaders."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import tensorfeed as tfd
from tensorfeed.sources.files import IMG_EXTENSIONS, find_classes, make_dataset, pil_loader

from .files_helpers import Image, ids_of_images, reference_scan, tagged_pixels, write_tree


def _messy_tree(root: Path) -> None:
    """Nested folders, mixed-case and unknown extensions, a hidden-ish class, a stray file."""
    write_tree(root, {"b_dog": 2, "a_cat": 2, "C_upper": 1})
    nested = root / "a_cat" / "zz" / "deeper"
    nested.mkdir(parents=True)
    Image.fromarray(tagged_pixels(50)).save(nested / "x.PNG")
    Image.fromarray(tagged_pixels(51)).save(root / "a_cat" / "zz" / "y.jpeg")
    Image.fromarray(tagged_pixels(52)).save(root / "a_cat" / "aa.bmp")
    (root / "b_dog" / "notes.txt").write_text("not an image")
    (root / "stray.png").write_bytes(b"files at the root are not samples")
    (root / ".hidden").mkdir()
    Image.fromarray(tagged_pixels(53)).save(root / ".hidden" / "h.png")


def test_same_classes_and_samples_as_torchvisions_algorithm(tmp_path):
    root = tmp_path / "messy"
    _messy_tree(root)
    ds = tfd.ImageFolder(str(root))
    classes, class_to_idx, samples = reference_scan(str(root), extensions=IMG_EXTENSIONS)
    assert ds.classes == classes == [".hidden", "C_upper", "a_cat", "b_dog"]
    assert ds.class_to_idx == class_to_idx
    assert ds.samples == samples and ds.imgs == samples
    assert ds.targets == [t for _, t in samples]
    assert len(ds) == len(samples) == 9
    assert find_classes(str(root)) == (classes, class_to_idx)
    assert make_dataset(str(root), class_to_idx, IMG_EXTENSIONS) == samples


def test_is_valid_file_replaces_extensions(tmp_path):
    root = tmp_path / "messy"
    _messy_tree(root)

    def only_png(p: str) -> bool:
        return p.endswith(".png")

    ds = tfd.ImageFolder(str(root), is_valid_file=only_png)
    assert ds.samples == reference_scan(str(root), is_valid_file=only_png)[2]
    with pytest.raises(ValueError, match="Both extensions and is_valid_file"):
        tfd.ImageFolder(str(root), is_valid_file=only_png, extensions=(".png",))
    with pytest.raises(tfd.ConfigError, match="Both extensions and is_valid_file"):
        tfd.DatasetFolder(str(root), None)


def test_samples_are_uint8_chw_tensors_and_int_targets(tree):
    ds = tfd.ImageFolder(tree)
    img, target = ds[5]
    assert img.dtype == torch.uint8 and img.shape == (3, 6, 5)
    assert target == 1 and isinstance(target, int)
    assert torch.equal(img, torch.from_numpy(tagged_pixels(5)).permute(2, 0, 1))
    assert ds[-1][1] == 2
    with pytest.raises(IndexError):
        ds[12]


def test_batches_are_stacked_tensors(tree):
    for workers in (0, 2):
        loader = tfd.DataLoader(tfd.ImageFolder(tree), batch_size=5, num_workers=workers)
        batches = list(loader)
        x, y = batches[0]
        assert x.dtype == torch.uint8 and x.shape == (5, 3, 6, 5)
        assert y.dtype == torch.int64 and y.tolist() == [0, 0, 0, 0, 1]
        assert [i for b in batches for i in ids_of_images(b[0])] == list(range(12))


@pytest.mark.parametrize("workers", [0, 2])
def test_every_image_exactly_once_per_epoch(tmp_path, workers):
    root = tmp_path / "t"
    write_tree(root, {"a": 13, "b": 7, "c": 20})
    loader = tfd.DataLoader(
        tfd.ImageFolder(root), batch_size=6, shuffle=True, num_workers=workers, seed=3
    )
    for _ in range(2):
        ids, targets = [], []
        for x, y in loader:
            ids += ids_of_images(x)
            targets += y.tolist()
        assert sorted(ids) == list(range(40))
        expected = {i: 0 if i < 13 else 1 if i < 20 else 2 for i in range(40)}
        assert [expected[i] for i in ids] == targets


def test_plain_torch_dataloader_and_default_collate(tree):
    ds = tfd.ImageFolder(tree, target_transform=lambda t: t * 10)
    x, y = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert x.shape == (4, 3, 6, 5) and y.tolist() == [0, 0, 0, 0]
    x, y = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=tfd.collate)))
    assert x.shape == (4, 3, 6, 5) and y.tolist() == [0, 0, 0, 0]


def test_transforms_run_per_sample_and_can_be_set_later(tree):
    ds = tfd.ImageFolder(tree, transform=lambda img: img.float() / 255, decode="tensor")
    x, _ = ds[0]
    assert x.dtype == torch.float32
    ds.transform = lambda img: img[:, :2, :2]
    ds.target_transform = str
    assert ds[4][0].shape == (3, 2, 2) and ds[4][1] == "1"
    xb, yb = next(iter(tfd.DataLoader(ds, batch_size=3)))
    assert xb.shape == (3, 3, 2, 2) and yb == ["0", "0", "0"]


def test_pil_loader_gives_pil_images(tree):
    ds = tfd.ImageFolder(tree, loader=pil_loader)
    img, target = ds[1]
    assert img.mode == "RGB" and img.size == (5, 6) and target == 0
    assert np.array_equal(np.asarray(img), tagged_pixels(1))
    img = pil_loader(str(tree / "cat" / "0000.png"))
    assert img.size == (5, 6)


def test_custom_loader_and_datasetfolder_with_any_file(tmp_path):
    root = tmp_path / "texts"
    for cls, words in {"neg": ["bad", "awful"], "pos": ["good"]}.items():
        (root / cls).mkdir(parents=True)
        for w in words:
            (root / cls / f"{w}.txt").write_text(w)

    def read_text(path: str) -> str:
        with open(path) as f:
            return f.read()

    ds = tfd.DatasetFolder(str(root), read_text, extensions=(".txt",))
    assert [ds[i] for i in range(3)] == [("awful", 0), ("bad", 0), ("good", 1)]
    numbers = tfd.DatasetFolder(str(root), lambda p: np.arange(3) + len(p), extensions=".txt")
    assert numbers[0][0].dtype == np.arange(3).dtype


def test_grayscale_mode_and_native_mode(tree):
    gray = tfd.ImageFolder(tree, mode="L")
    assert gray[0][0].shape == (1, 6, 5)
    native = tfd.ImageFolder(tree, mode=None)
    assert native[0][0].shape == (3, 6, 5)


def test_find_classes_and_make_dataset_overrides_are_used(tree):
    class OnlyCats(tfd.ImageFolder):
        def find_classes(self, directory):
            return ["cat"], {"cat": 0}

    ds = OnlyCats(str(tree))
    assert ds.classes == ["cat"] and len(ds) == 4

    class Reversed(tfd.ImageFolder):
        @staticmethod
        def make_dataset(
            directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False
        ):
            return list(reversed(make_dataset(directory, class_to_idx, extensions, is_valid_file)))

    assert Reversed(str(tree)).targets == [2] * 4 + [1] * 4 + [0] * 4
    with pytest.raises(ValueError, match="class_to_idx parameter cannot be None"):
        tfd.DatasetFolder.make_dataset(str(tree), None, IMG_EXTENSIONS)


def test_samples_can_be_replaced_like_torchvision(tree):
    ds = tfd.ImageFolder(tree)
    ds.samples = ds.samples[::3]
    assert len(ds) == 4 and [t for _, t in ds.samples] == [0, 0, 1, 2]
    assert ids_of_images(ds[3][0][None]) == [9]
    # as in torchvision, ``targets`` is a list of its own: the labels come from ``samples``
    ds.targets = [7, 7, 7, 7]
    assert ds.targets == [7, 7, 7, 7] and ds[0][1] == 0


def test_metadata_is_compact_and_lists_are_built_lazily(tmp_path):
    root = tmp_path / "t"
    write_tree(root, {"a": 3, "b": 3})
    ds = tfd.ImageFolder(root)
    state = ds.__getstate__()
    assert state["_samples_list"] is None and isinstance(state["_label_array"], np.ndarray)
    assert ds.samples[0][1] == 0
    assert pickle.loads(pickle.dumps(ds)).__dict__["_samples_list"] is None


def test_errors_for_missing_root_no_classes_and_empty_class(tmp_path, tree):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tfd.ImageFolder(tmp_path / "nowhere")
    (tmp_path / "flat").mkdir()
    Image.fromarray(tagged_pixels(0)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(tfd.NotFoundError, match="Couldn't find any class folder"):
        tfd.ImageFolder(tmp_path / "flat")
    (tree / "empty").mkdir()
    (tree / "txt_only").mkdir()
    (tree / "txt_only" / "a.txt").write_text("x")
    with pytest.raises(
        FileNotFoundError, match=r"no valid file for the classes empty, txt_only.*\.png"
    ):
        tfd.ImageFolder(tree)
    ds = tfd.ImageFolder(tree, allow_empty=True)
    assert ds.classes == ["cat", "dog", "empty", "emu", "txt_only"] and len(ds) == 12
    assert ds.targets[-1] == 3


def test_pickles_and_from_url(tree):
    ds = tfd.ImageFolder(tree, transform=None)
    again = pickle.loads(pickle.dumps(ds))
    assert again.samples == ds.samples and torch.equal(again[3][0], ds[3][0])
    by_url = tfd.ImageFolder.from_url(f"imagefolder://{tree}?mode=L")
    assert by_url.samples == ds.samples and by_url[0][0].shape == (1, 6, 5)
    assert tfd.ImageFolder.from_url(str(tree)).classes == ["cat", "dog", "emu"]


def test_split_and_stratify_use_targets_without_decoding(tree):
    ds = tfd.ImageFolder(tree, loader=_no_loading)
    assert ds.column("target").tolist() == ds.targets
    assert ds.column("path")[0].endswith(os.path.join("cat", "0000.png"))
    with pytest.raises(tfd.NotFoundError, match="available"):
        ds.column("label")


def _no_loading(path: str):  # pragma: no cover - must never run
    raise AssertionError("column() must not decode images")
