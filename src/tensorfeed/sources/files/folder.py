"""Files as datasets: class folders of images, annotation tables, and the MNIST IDX files.

``tfd.ImageFolder`` / ``tfd.DatasetFolder`` follow torchvision's semantics (``classes``,
``class_to_idx``, ``samples``, ``targets``, ``find_classes``, ``make_dataset``, same order, same
errors), so code written for torchvision runs unchanged. Samples are ``(image, target)``; images
are decoded with Pillow to ``uint8 [C, H, W]`` tensors by default (``loader=pil_loader`` gives PIL
images, any other ``loader`` is called per file as in torchvision).

What differs is under the hood: the per-file metadata lives in one Arrow string array and one
numpy array (no per-sample Python objects for workers to copy on read; ``samples``/``targets``
are built on first use), a batch is fetched and decoded in one ``__getitems__`` call, and the
decoded rows (see NOTE [ Image rows ] in ``_files_images``) can be kept by ``ds.cache(...)`` so
later epochs read no image file at all.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import numpy as np
import pyarrow as pa

from ...columns import SampleSpec
from ...dataset import MapDataset
from ...errors import ConfigError, DataError, NotFoundError
from . import idx
from .images import (
    PILLOW_MAX_IMAGE_PIXELS,
    DecodeOptions,
    FolderNotFoundError,
    ImageBatch,
    RowBuilder,
    SkipLog,
    SkippedFile,
    decode_file,
    loader_name,
    pil_loader,
    split_unreadable,
    tensor_loader,
    uniform_rows,
    warn_skipped,
)
from .scan import (
    IMG_EXTENSIONS,
    check_extensions,
    check_relative_paths,
    crop_boxes,
    find_classes,
    has_file_allowed_extension,
    inside_root,
    is_image_file,
    make_dataset,
    read_annotations,
)

__all__ = [
    "IMG_EXTENSIONS",
    "MNIST",
    "AnnotationsDataset",
    "DatasetFolder",
    "FashionMNIST",
    "FolderNotFoundError",
    "ImageFolder",
    "SkippedFile",
    "find_classes",
    "has_file_allowed_extension",
    "is_image_file",
    "make_dataset",
    "pil_loader",
    "tensor_loader",
]


class _DefaultExtensions:
    """ImageFolder's default: IMG_EXTENSIONS, or None when is_valid_file is given."""

    def __repr__(self) -> str:
        return "IMG_EXTENSIONS (None with is_valid_file)"


_UNSET: Any = _DefaultExtensions()


def _sha(parts: Sequence[Any], *buffers: Any) -> str:
    h = hashlib.sha256(json.dumps(list(parts), default=str).encode())
    for b in buffers:
        if b is not None:
            h.update(memoryview(b).cast("B"))
    return h.hexdigest()[:16]


def _file_stats(paths: list[str]) -> np.ndarray:
    """``[n, 2]`` int64 (size, mtime_ns) of each path; (-1, -1) where it is gone."""
    out = np.full((len(paths), 2), -1, dtype=np.int64)
    for i, p in enumerate(paths):
        try:
            st = os.stat(p)
        except OSError:
            continue
        out[i, 0], out[i, 1] = st.st_size, st.st_mtime_ns
    return out


def _string_buffers(arr: pa.Array) -> list[Any]:
    return [b for b in arr.buffers()[1:] if b is not None]


# --------------------------------------------------------------------------- shared base


class _ImageFiles(MapDataset):
    """What the folder and annotation datasets share: one path per row (an Arrow string array),
    an optional target per row (numpy), optional crop boxes, decoding and skip bookkeeping."""

    _paths: pa.Array
    _target_values: np.ndarray | None
    _crops: np.ndarray | None = None
    loader: Callable[[str], Any] | None
    transform: Callable[[Any], Any] | None
    target_transform: Callable[[Any], Any] | None

    def _init_decoding(
        self,
        loader: Callable[[str], Any] | None,
        transform: Callable[[Any], Any] | None,
        target_transform: Callable[[Any], Any] | None,
        mode: str | None,
        max_image_pixels: int | None,
        on_error: str,
    ) -> None:
        self.loader = loader
        self.transform = transform
        self.target_transform = target_transform
        self._decode = DecodeOptions(mode, max_image_pixels, on_error)
        self._skips = SkipLog() if on_error == "skip" else None
        self._fingerprint: str | None = None
        self._samples_list: list[tuple[str, Any]] | None = None
        self._targets_list: list[Any] | None = None

    # -- torchvision-style attributes -------------------------------------------------------
    @property
    def spec(self) -> SampleSpec:  # type: ignore[override]
        # built per access so ``ds.transform = ...`` after construction works as in torchvision
        return SampleSpec(None, None, self.transform, self.target_transform)

    @property
    def on_error(self) -> str:
        return self._decode.on_error

    def _set_rows(self, paths: Sequence[str], targets: Sequence[Any] | np.ndarray | None) -> None:
        self._paths = pa.array(list(paths), type=pa.large_string())
        self._target_values = None if targets is None else np.asarray(targets)
        if self._target_values is not None and len(self._target_values) != len(self._paths):
            raise ConfigError(f"{len(self._target_values)} targets for {len(self._paths)} files")
        self._samples_list = self._targets_list = None
        self._fingerprint = None

    @property
    def samples(self) -> list[tuple[str, Any]]:
        """``[(path, target), ...]`` as in torchvision (built on first use in each process)."""
        if self._samples_list is None:
            targets = self.targets if self._target_values is not None else [None] * len(self)
            self._samples_list = list(zip(self._paths.to_pylist(), targets))
        return self._samples_list

    @samples.setter
    def samples(self, value: Sequence[tuple[str, Any]]) -> None:
        if self._crops is not None:
            raise ConfigError(
                "samples cannot be reassigned when rows have crop boxes; build a new "
                "AnnotationsDataset from the filtered annotations instead"
            )
        value = list(value)
        targets = [t for _, t in value]
        no_targets = self._target_values is None and all(t is None for t in targets)
        self._set_rows(
            [os.fspath(p) for p, _ in value], None if no_targets else np.asarray(targets)
        )

    @property
    def targets(self) -> list[Any]:
        """The target of each sample, in order (built on first use in each process)."""
        if self._target_values is None:
            raise AttributeError(f"{self.describe()} has no targets (no label column)")
        if self._targets_list is None:
            self._targets_list = self._target_values.tolist()
        return self._targets_list

    @targets.setter
    def targets(self, value: Sequence[Any]) -> None:
        self._set_rows(self._paths.to_pylist(), np.asarray(list(value)))

    @property
    def paths(self) -> list[str]:
        return self._paths.to_pylist()

    # -- the MapDataset contract ------------------------------------------------------------
    def _num_rows(self) -> int:
        return len(self._paths)

    def _where(self, index: int) -> str:
        return ""

    def _stat_path(self, path: str) -> str:
        """The file a row's path names (for ``stat``; no checks)."""
        return path

    def _full_path(self, index: int, path: str) -> str:
        """The file to open for row ``index`` (annotation datasets check it stays in root)."""
        return self._stat_path(path)

    def _fetch(self, indices: np.ndarray) -> pa.Table:
        paths = self._paths.take(pa.array(indices)).to_pylist()
        rows = RowBuilder()
        for i, path in zip(indices.tolist(), paths):
            crop = None if self._crops is None else tuple(self._crops[i].tolist())
            decode_file(
                rows, self._full_path(i, path), self.loader, self._decode, crop, self._where(i)
            )
        targets = None
        if self._target_values is not None:
            targets = pa.array(self._target_values[indices])
        return rows.table(targets)

    def _batch(self, table: pa.Table, indices: np.ndarray) -> ImageBatch:
        table, indices, dropped = split_unreadable(table, indices)
        if dropped:
            if self._skips is None:
                raise DataError(
                    dropped[0][1]
                    + " (it was kept as unreadable by a cache built with on_error='skip')"
                )
            for index, message in dropped:
                self._skips.record(index, self._paths[index].as_py(), message)
            warn_skipped(dropped)
        return ImageBatch(table, self.spec, self._locator(indices), self._target_values is not None)

    def __getitem__(self, index: int) -> Any:
        batch = self.__getitems__([index])
        if len(batch) == 0:
            raise DataError(
                f"sample {index} ({self._paths[int(index)].as_py()}) is unreadable and "
                "on_error='skip' leaves it out; batched access (a DataLoader) skips it, "
                "a single index cannot"
            )
        return batch[0]

    def column(self, name: str) -> np.ndarray:
        if name == "target" and self._target_values is not None:
            return self._target_values.copy()
        if name == "path":
            return np.asarray(self._paths.to_pylist(), dtype=object)
        available = ["path"] + (["target"] if self._target_values is not None else [])
        raise NotFoundError(f"column {name!r} is not in {self.describe()}; available: {available}")

    # -- skipped files ----------------------------------------------------------------------
    @property
    def skipped(self) -> list[SkippedFile]:
        """The files left out so far under ``on_error="skip"`` (by any process, any worker),
        one entry per file: ``(index, path, reason)``, sorted by index."""
        return [] if self._skips is None else self._skips.entries()

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    # -- identity ---------------------------------------------------------------------------
    def _fingerprint_header(self) -> list[Any]:
        return [
            type(self).__name__,
            self.describe(),
            loader_name(self.loader),
            self._decode.mode,
            self._decode.max_image_pixels,
        ]

    def fingerprint(self) -> str:
        """Paths, sizes and modification times of every file, targets, crops and decoding
        options: a cache built from this dataset is reused only while all of them are unchanged.
        Computed once per dataset object (one ``stat`` per file)."""
        if self._fingerprint is None:
            stats = _file_stats([self._stat_path(p) for p in self._paths.to_pylist()])
            self._fingerprint = _sha(
                [*self._fingerprint_header(), len(self)],
                *_string_buffers(self._paths),
                stats,
                None if self._target_values is None else np.ascontiguousarray(self._target_values),
                None if self._crops is None else np.ascontiguousarray(self._crops),
            )
        return self._fingerprint

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_samples_list"] = state["_targets_list"] = None
        return state


def _decode_kwargs(options: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key == "max_image_pixels":
            out[key] = None if value.lower() == "none" else int(value)
        elif key == "mode":
            out[key] = None if value.lower() == "none" else value
        elif key in ("allow_empty", "train"):
            out[key] = value.lower() in ("1", "true", "yes")
        else:
            out[key] = value
    return out


def _path_and_options(url: str) -> tuple[str, dict[str, str]]:
    """``scheme:///abs/path?k=v`` or a plain path -> (path, options)."""
    parts = urlsplit(url)
    if "://" not in url:
        return url, {}
    path = (
        unquote(parts.netloc + parts.path)
        if parts.netloc not in ("", "localhost")
        else unquote(parts.path)
    )
    return path, dict(parse_qsl(parts.query))


# --------------------------------------------------------------------------- folders


class DatasetFolder(_ImageFiles):
    """torchvision's ``DatasetFolder``: ``root/<class>/**/<file>``, classes sorted by name.

    ``loader(path)`` reads one file (``None``: the built-in Pillow decoder, ``uint8 [C, H, W]``).
    Exactly one of ``extensions`` / ``is_valid_file`` picks the files. Keyword-only extras:
    ``mode`` (Pillow mode of the built-in decoder, default ``"RGB"``; ``None`` keeps each file's),
    ``max_image_pixels`` (decompression-bomb limit, default Pillow's), ``on_error`` (``"raise"``
    or ``"skip"``: an unreadable file is left out of its batch and listed in :attr:`skipped`).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        loader: Callable[[str], Any] | None,
        extensions: tuple[str, ...] | str | None = None,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        is_valid_file: Callable[[str], bool] | None = None,
        allow_empty: bool = False,
        *,
        mode: str | None = "RGB",
        max_image_pixels: int | None = PILLOW_MAX_IMAGE_PIXELS,
        on_error: str = "raise",
    ) -> None:
        self.root = os.path.expanduser(root) if isinstance(root, str) else root
        self._init_decoding(loader, transform, target_transform, mode, max_image_pixels, on_error)
        classes, class_to_idx = self.find_classes(self.root)
        samples = self.make_dataset(
            self.root,
            class_to_idx=class_to_idx,
            extensions=extensions,
            is_valid_file=is_valid_file,
            allow_empty=allow_empty,
        )
        self.extensions = extensions
        self.classes = classes
        self.class_to_idx = class_to_idx
        self._set_rows(
            [p for p, _ in samples], np.fromiter((t for _, t in samples), np.int64, len(samples))
        )

    @staticmethod
    def make_dataset(
        directory: str | os.PathLike[str],
        class_to_idx: dict[str, int],
        extensions: tuple[str, ...] | str | None = None,
        is_valid_file: Callable[[str], bool] | None = None,
        allow_empty: bool = False,
    ) -> list[tuple[str, int]]:
        """torchvision's ``DatasetFolder.make_dataset`` (override it to change the scan)."""
        if class_to_idx is None:
            raise ConfigError("The class_to_idx parameter cannot be None.")
        return make_dataset(directory, class_to_idx, extensions, is_valid_file, allow_empty)

    def find_classes(self, directory: str | os.PathLike[str]) -> tuple[list[str], dict[str, int]]:
        """torchvision's ``DatasetFolder.find_classes`` (override it to change the classes)."""
        return find_classes(directory)

    def describe(self) -> str:
        return f"{type(self).__name__} {os.fspath(self.root)}"

    def _fingerprint_header(self) -> list[Any]:
        return [*super()._fingerprint_header(), os.path.abspath(self.root), self.classes]

    @classmethod
    def from_url(cls, url: str, **options: Any) -> DatasetFolder:
        """``imagefolder:///data/train?mode=L&on_error=skip`` (or a plain directory path)."""
        path, query = _path_and_options(url)
        kwargs = {**_decode_kwargs(query), **options}
        if cls is DatasetFolder:
            kwargs.setdefault("loader", None)
            kwargs.setdefault("extensions", IMG_EXTENSIONS)
        return cls(path, **kwargs)


class ImageFolder(DatasetFolder):
    """torchvision's ``ImageFolder``: ``root/<class>/<image>``, samples ``(image, class_index)``.

    Images are ``uint8 [C, H, W]`` tensors (``mode="RGB"``: C = 3) unless ``loader`` says
    otherwise (``loader=tfd.sources.files.pil_loader`` gives PIL images, as torchvision does).
    Batches from ``tfd.DataLoader`` are ``(uint8 [B, C, H, W], int64 [B])`` when the images
    share a shape. See :class:`DatasetFolder` for ``mode``, ``max_image_pixels``, ``on_error``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        loader: Callable[[str], Any] | None = None,
        is_valid_file: Callable[[str], bool] | None = None,
        allow_empty: bool = False,
        *,
        extensions: tuple[str, ...] | str | None = _UNSET,
        on_error: str = "raise",
        mode: str | None = "RGB",
        max_image_pixels: int | None = PILLOW_MAX_IMAGE_PIXELS,
    ) -> None:
        if extensions is _UNSET:
            # torchvision: the image extensions, unless is_valid_file does the choosing
            extensions = IMG_EXTENSIONS if is_valid_file is None else None
        super().__init__(
            root,
            loader,
            extensions,
            transform=transform,
            target_transform=target_transform,
            is_valid_file=is_valid_file,
            allow_empty=allow_empty,
            mode=mode,
            max_image_pixels=max_image_pixels,
            on_error=on_error,
        )

    @property
    def imgs(self) -> list[tuple[str, Any]]:
        return self.samples

    @imgs.setter
    def imgs(self, value: Sequence[tuple[str, Any]]) -> None:
        self.samples = value


# --------------------------------------------------------------------------- annotations


class AnnotationsDataset(_ImageFiles):
    """One example per row of a CSV / Parquet file (or an Arrow table / DataFrame).

    ``path_column`` holds each image's path relative to ``root``; a path that escapes ``root``
    (absolute, ``..``, or a symlink resolving outside) is refused, naming the row. The optional
    ``label_column`` gives the target (strings become class indices over the sorted
    ``classes``; numbers are used as they are); samples are then ``(image, target)``, else just
    the image. ``crop_columns`` names (left, top, right, bottom) pixel columns: the box is cut
    out on load. With the built-in decoder (``loader=None``) every path must end with one of
    ``extensions`` (``None``: no check). Other options as in :class:`DatasetFolder`.
    """

    def __init__(
        self,
        csv_or_parquet: Any,
        root: str | os.PathLike[str],
        path_column: str,
        label_column: str | None = None,
        crop_columns: Sequence[str] | None = None,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        *,
        loader: Callable[[str], Any] | None = None,
        classes: Sequence[str] | None = None,
        extensions: tuple[str, ...] | None = IMG_EXTENSIONS,
        mode: str | None = "RGB",
        max_image_pixels: int | None = PILLOW_MAX_IMAGE_PIXELS,
        on_error: str = "raise",
    ) -> None:
        self.root = os.path.expanduser(os.fspath(root))
        if not os.path.isdir(self.root):
            raise FolderNotFoundError(f"annotations root {self.root} is not a directory")
        self._real_root = os.path.realpath(self.root)
        self.path_column, self.label_column = path_column, label_column
        self.crop_columns = list(crop_columns) if crop_columns is not None else None
        self._init_decoding(loader, transform, target_transform, mode, max_image_pixels, on_error)
        wanted = [
            path_column,
            *([label_column] if label_column else []),
            *(self.crop_columns or []),
        ]
        table, self.source_name = read_annotations(csv_or_parquet, wanted, path_column)
        paths = check_relative_paths(table.column(path_column).to_pylist(), self.source_name)
        if extensions is not None and loader is None:
            check_extensions(paths, tuple(extensions), self.source_name)
        self.classes: list[Any] | None = None
        self.class_to_idx: dict[Any, int] | None = None
        targets = None
        if label_column is not None:
            targets = self._labels(table.column(label_column), classes)
        self._set_rows(paths, targets)
        if self.crop_columns is not None:
            self._crops = crop_boxes(table, self.crop_columns, self.source_name)

    def _labels(self, col: pa.ChunkedArray, classes: Sequence[str] | None) -> np.ndarray:
        name = self.label_column
        if col.null_count:
            first = int(np.flatnonzero(np.asarray(col.is_null()))[0])
            raise DataError(f"row {first} of {self.source_name}: label column {name!r} is NULL")
        if (
            pa.types.is_string(col.type)
            or pa.types.is_large_string(col.type)
            or pa.types.is_dictionary(col.type)
        ):
            values = (
                col.cast(pa.string()).to_pylist()
                if pa.types.is_dictionary(col.type)
                else col.to_pylist()
            )
            self.classes = list(classes) if classes is not None else sorted(set(values))
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
            unknown = [(i, v) for i, v in enumerate(values) if v not in self.class_to_idx]
            if unknown:
                i, v = unknown[0]
                raise DataError(
                    f"row {i} of {self.source_name}: label {v!r} is not among classes {self.classes}"
                )
            return np.fromiter((self.class_to_idx[v] for v in values), np.int64, len(values))
        if pa.types.is_integer(col.type) or pa.types.is_boolean(col.type):
            return col.to_numpy().astype(np.int64)
        if pa.types.is_floating(col.type):
            return col.to_numpy().astype(np.float64)
        raise DataError(
            f"label column {name!r} of {self.source_name} is {col.type}: use strings or numbers"
        )

    def _stat_path(self, path: str) -> str:
        return os.path.join(self.root, path)

    def _full_path(self, index: int, path: str) -> str:
        full = os.path.join(self.root, path)
        if not inside_root(full, self._real_root):
            raise DataError(
                f"row {index} of {self.source_name}: path {path!r} resolves to "
                f"{os.path.realpath(full)}, outside root {self.root} (a symlink pointing out?)"
            )
        return full

    def _where(self, index: int) -> str:
        return f" (row {index} of {self.source_name})"

    def describe(self) -> str:
        return f"AnnotationsDataset {self.source_name} (root {self.root})"

    def _fingerprint_header(self) -> list[Any]:
        return [*super()._fingerprint_header(), self._real_root, self.classes]

    @classmethod
    def from_url(cls, url: str, **options: Any) -> AnnotationsDataset:
        """``annotations:///data/labels.csv?root=/data/images&path_column=file&label_column=y``."""
        path, query = _path_and_options(url)
        kwargs = {**_decode_kwargs(query), **options}
        return cls(path, **kwargs)


# --------------------------------------------------------------------------- MNIST


class MNIST(MapDataset):
    """The MNIST digits from the standard IDX files (gzipped or not) under ``root``.

    Files are looked for in ``root/MNIST/raw`` (torchvision's layout), ``root/MNIST`` and
    ``root``. Samples are ``(uint8 tensor [1, 28, 28], int)`` (or ``transform``'s output).
    ``download=True`` never downloads: when the files are missing the error says which files to
    put where. ``data`` / ``targets`` are tensors over one array (memory-mapped when the file is
    not compressed).
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
    ) -> None:
        self.root = os.path.expanduser(os.fspath(root))
        self.train = bool(train)
        self.transform = transform
        self.target_transform = target_transform
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

    @property
    def targets(self) -> Any:
        import torch

        return torch.from_numpy(self._get()[1])

    def _num_rows(self) -> int:
        return int(self._get()[1].shape[0])

    def _fetch(self, indices: np.ndarray) -> pa.Table:
        images, labels = self._get()
        block = images[indices][:, None]  # [B, 1, H, W], a fresh copy (fancy indexing)
        return uniform_rows(block, pa.array(labels[indices]), owned=True)

    def _batch(self, table: pa.Table, indices: np.ndarray) -> ImageBatch:
        return ImageBatch(table, self.spec, self._locator(indices), True)

    def column(self, name: str) -> np.ndarray:
        if name == "target":
            return self._get()[1]
        raise NotFoundError(f"column {name!r} is not in {self.describe()}; available: ['target']")

    def describe(self) -> str:
        return f"{type(self).__name__} {'train' if self.train else 'test'} ({self.raw_folder})"

    def fingerprint(self) -> str:
        stats = _file_stats([self.files.images, self.files.labels])
        return _sha(
            [
                type(self).__name__,
                os.path.abspath(self.files.images),
                os.path.abspath(self.files.labels),
                self.train,
            ],
            stats,
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
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
