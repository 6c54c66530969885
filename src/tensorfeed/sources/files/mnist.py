"""``MNIST`` and ``FashionMNIST``: torchvision's datasets read straight from the IDX files
(``idx.py``) into one uint8 array, with torchvision's folders, attributes and samples.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from ...columns import SampleSpec
from ...dataset import MapDataset
from ...errors import DataError, NotFoundError
from . import idx
from .base import _decode_kwargs, _file_stats, _path_and_options, _sha
from .decode import DecodeOptions
from .images import ImageBatch, check_data_rows, uniform_rows


class MNIST(MapDataset):
    """The MNIST digits from the standard IDX files (gzipped or not) under ``root``.

    Files are looked for in ``root/MNIST/raw`` (torchvision's layout), ``root/MNIST`` and
    ``root``. Samples are ``(image, int)``: with a ``transform`` the image reaches it as a PIL
    ``L`` image, as in torchvision; without one it is a ``uint8 [1, 28, 28]`` tensor (``decode=``
    picks either way: NOTE [ The PIL path and the fast path ] in ``decode.py``).
    ``download=True`` never downloads: when the files are missing the error (a
    :class:`DatasetNotFoundError`, also torchvision's ``RuntimeError``) says which files to put
    where. ``data`` / ``targets`` are tensors over one array (memory-mapped when the file is not
    compressed), and assignable as in torchvision (``ds.data, ds.targets = ds.data[keep],
    ds.targets[keep]``).
    """

    classes = [
        "0 - zero",
        "1 - one",
        "2 - two",
        "3 - three",
        "4 - four",
        "5 - five",
        "6 - six",
        "7 - seven",
        "8 - eight",
        "9 - nine",
    ]

    def __init__(
        self,
        root: str | os.PathLike[str],
        train: bool = True,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        download: bool = False,
        *,
        decode: str = "auto",
    ) -> None:
        self.root = os.path.expanduser(os.fspath(root))
        self.train = bool(train)
        self.transform = transform
        self.target_transform = target_transform
        self._decode = DecodeOptions(mode="L", decode=decode)
        self._assigned = False  # data/targets set by the user: they travel with the dataset
        name = type(self).__name__
        self.files = idx.locate(self.root, self._folder(), self.train, name, download)
        images, labels = self._load()
        if images.shape[0] != labels.shape[0]:
            raise DataError(
                f"{self.files.images} has {images.shape[0]} images but {self.files.labels} "
                f"has {labels.shape[0]} labels"
            )
        self._arrays: tuple[np.ndarray, np.ndarray] | None = (images, labels)

    @classmethod
    def _folder(cls) -> str:
        return cls.__name__

    @property
    def raw_folder(self) -> str:
        return os.path.dirname(self.files.images)

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    @property
    def spec(self) -> SampleSpec:  # type: ignore[override]
        return SampleSpec(None, None, self.transform, self.target_transform)

    def _load(self) -> tuple[np.ndarray, np.ndarray]:
        images = idx.read_idx(self.files.images, idx.IMAGES_MAGIC, f"{type(self).__name__} images")
        labels = idx.read_idx(self.files.labels, idx.LABELS_MAGIC, f"{type(self).__name__} labels")
        return images, np.asarray(labels, dtype=np.int64)

    def _get(self) -> tuple[np.ndarray, np.ndarray]:
        if self._arrays is None:
            self._arrays = self._load()
        return self._arrays

    @property
    def data(self) -> Any:
        import torch

        return torch.from_numpy(self._get()[0])

    @data.setter
    def data(self, value: Any) -> None:
        images = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
        if images.dtype != np.uint8 or images.ndim != 3:
            raise DataError(
                f"{type(self).__name__}.data must be uint8 images [N, H, W], got "
                f"{images.dtype} {list(images.shape)}"
            )
        self._arrays = (images, self._get()[1])
        self._assigned = True

    @property
    def targets(self) -> Any:
        import torch

        return torch.from_numpy(self._get()[1])

    @targets.setter
    def targets(self, value: Any) -> None:
        labels = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise DataError(
                f"{type(self).__name__}.targets must be integer labels [N], got "
                f"{labels.dtype} {list(labels.shape)}"
            )
        self._arrays = (self._get()[0], labels.astype(np.int64))
        self._assigned = True

    def _consistent(self) -> tuple[np.ndarray, np.ndarray]:
        images, labels = self._get()
        if images.shape[0] != labels.shape[0]:
            raise DataError(
                f"{self.describe()} has {images.shape[0]} images in data but {labels.shape[0]} "
                "labels in targets: assign both (ds.data, ds.targets = ...)"
            )
        return images, labels

    def _num_rows(self) -> int:
        return int(self._consistent()[1].shape[0])

    def _fetch(self, indices: np.ndarray) -> pa.Table:
        images, labels = self._consistent()
        block = images[indices][:, None]  # [B, 1, H, W], a fresh copy (fancy indexing)
        return uniform_rows(block, pa.array(labels[indices]), owned=True)

    def _batch(self, table: pa.Table, indices: np.ndarray) -> ImageBatch:
        pil = self._decode.pil(self.transform)
        return ImageBatch(table, self.spec, self._locator(indices), True, pil)

    def _check_cached_rows(self, table: pa.Table, path: str) -> None:
        check_data_rows(table, path)  # NOTE [ Dataset caches ] in cache.py

    def column(self, name: str) -> np.ndarray:
        if name == "target":
            return self._get()[1]
        raise NotFoundError(f"column {name!r} is not in {self.describe()}; available: ['target']")

    def describe(self) -> str:
        return f"{type(self).__name__} {'train' if self.train else 'test'} ({self.raw_folder})"

    def fingerprint(self) -> str:
        stats = _file_stats([self.files.images, self.files.labels])
        assigned = [np.ascontiguousarray(a) for a in self._get()] if self._assigned else []
        return _sha(
            [
                type(self).__name__,
                os.path.abspath(self.files.images),
                os.path.abspath(self.files.labels),
                self.train,
                self._assigned,
            ],
            stats,
            *assigned,
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if not self._assigned:
            state["_arrays"] = None  # reopened (memory-mapped) in the process that uses it
        return state

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MNIST:
        """``mnist:///data?train=false`` (``fashion-mnist://`` for FashionMNIST)."""
        path, query = _path_and_options(url)
        kwargs = {**_decode_kwargs(query), **options}
        return cls(path, **kwargs)

    def extra_repr(self) -> str:  # torchvision's VisionDataset shows the split this way
        return f"Split: {'Train' if self.train else 'Test'}"


class FashionMNIST(MNIST):
    """Zalando's Fashion-MNIST: the same IDX files and layout (``root/FashionMNIST/raw``)."""

    classes = [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ]
