"""Image decoding for the file sources: files -> Arrow rows -> (image, target) samples.

NOTE [ Image rows ]
A file source's ``_fetch`` returns one Arrow row per file, already decoded, so the same rows can
be kept by a cache (``ds.cache(...)``) and turned into samples by the same ``_batch`` code:

==========  ==============  ==============================================================
column      type            meaning
==========  ==============  ==============================================================
``image``   large_binary    the decoded payload: C-contiguous pixels, or a pickle (kind 3)
``shape``   list<int32>     array shape (``[C, H, W]`` for tensors); ``[W, H]`` for PIL
``kind``    int8            0 torch tensor, 1 numpy array, 2 PIL image, 3 pickled object,
                            -1 the file could not be read (see ``error``)
``format``  string          numpy dtype string (kinds 0, 1) or PIL mode (kind 2)
``error``   string          why the file could not be read (kind -1), else null
``target``  int64/float64   the label (absent when a dataset has none)
==========  ==============  ==============================================================

A tensor row is ``[C, H, W]`` already, so a batch of equal-shape images becomes one
``uint8 [B, C, H, W]`` tensor with a single copy out of the Arrow buffer (:class:`ImageBatch`).
Unreadable files only reach a row (kind -1) under ``on_error="skip"``; ``_batch`` then leaves
them out of the batch and records them in the dataset's :class:`SkipLog`.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
import uuid
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from ..._deps import require
from ...columns import ColumnBatch, ConvertOptions, RowLocator, SampleSpec, arrow_column_to_tensors
from ...columns import collate_samples as _collate_samples
from ...errors import ConfigError, DataError

KIND_TENSOR, KIND_NUMPY, KIND_PIL, KIND_PICKLE, KIND_ERROR = 0, 1, 2, 3, -1

# PIL modes whose tobytes()/frombytes() round trip is exact (palette modes are pickled instead).
_PIL_RAW_MODES = frozenset(
    {
        "1",
        "L",
        "LA",
        "La",
        "RGB",
        "RGBA",
        "RGBa",
        "RGBX",
        "CMYK",
        "YCbCr",
        "LAB",
        "HSV",
        "I",
        "F",
        "I;16",
        "I;16B",
        "I;16L",
    }
)

_DEFAULT_OPTS = ConvertOptions()
_MODES = {1: "L", 3: "RGB", 4: "RGBA"}  # uint8 [C, H, W] rows as PIL images
OWNED = {b"tensorfeed.owned": b"1"}  # see _owned()


def _pil() -> Any:
    return require("PIL.Image", "images", "decoding images")


def chw_array(img: Any) -> np.ndarray:
    """A PIL image -> C-contiguous ``[C, H, W]`` numpy array."""
    arr = np.asarray(img)
    if arr.ndim == 2:
        return np.ascontiguousarray(arr[None])
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


# --------------------------------------------------------------------------- rows


class RowBuilder:
    """Collects decoded files, then builds the Arrow table of NOTE [ Image rows ]."""

    def __init__(self) -> None:
        self.payloads: list[bytes | memoryview] = []
        self.shapes: list[list[int]] = []
        self.kinds: list[int] = []
        self.formats: list[str | None] = []
        self.errors: list[str | None] = []

    def add_array(self, arr: np.ndarray, kind: int = KIND_TENSOR) -> None:
        arr = np.ascontiguousarray(arr)
        self.payloads.append(arr.data.cast("B") if arr.size else b"")
        self.shapes.append(list(arr.shape))
        self.kinds.append(kind)
        self.formats.append(arr.dtype.str)
        self.errors.append(None)

    def add_object(self, obj: Any) -> None:
        """A loader's output, whatever it is: tensor, numpy array, PIL image or anything else."""
        if isinstance(obj, torch.Tensor):
            self.add_array(obj.detach().cpu().contiguous().numpy(), KIND_TENSOR)
        elif isinstance(obj, np.ndarray) and obj.dtype != object:
            self.add_array(obj, KIND_NUMPY)
        elif _is_pil(obj) and obj.mode in _PIL_RAW_MODES:
            self.payloads.append(obj.tobytes())
            self.shapes.append(list(obj.size))
            self.kinds.append(KIND_PIL)
            self.formats.append(obj.mode)
            self.errors.append(None)
        else:
            self.payloads.append(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
            self.shapes.append([])
            self.kinds.append(KIND_PICKLE)
            self.formats.append("pickle")
            self.errors.append(None)

    def add_pil_pixels(self, arr: np.ndarray) -> None:
        """A PIL image's row from its pixels (``uint8 [H, W]``, ``[H, W, 3]`` or ``[H, W, 4]``):
        the same row ``add_object`` makes of the image, whose ``tobytes()`` is this layout."""
        mode = "L" if arr.ndim == 2 else {3: "RGB", 4: "RGBA"}[arr.shape[2]]
        self.payloads.append(np.ascontiguousarray(arr).tobytes())
        self.shapes.append([int(arr.shape[1]), int(arr.shape[0])])
        self.kinds.append(KIND_PIL)
        self.formats.append(mode)
        self.errors.append(None)

    def add_error(self, message: str) -> None:
        self.payloads.append(b"")
        self.shapes.append([])
        self.kinds.append(KIND_ERROR)
        self.formats.append(None)
        self.errors.append(message)

    def table(self, targets: pa.Array | None = None) -> pa.Table:
        sizes = np.fromiter(
            (len(p) if isinstance(p, bytes) else p.nbytes for p in self.payloads),
            dtype=np.int64,
            count=len(self.payloads),
        )
        offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        data = b"".join(self.payloads)
        image = pa.LargeBinaryArray.from_buffers(
            pa.large_binary(), len(sizes), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
        )
        cols: dict[str, pa.Array] = {
            "image": image,
            "shape": pa.array(self.shapes, type=pa.list_(pa.int32())),
            "kind": pa.array(np.asarray(self.kinds, dtype=np.int8)),
            "format": pa.array(self.formats, type=pa.string()),
            "error": pa.array(self.errors, type=pa.string()),
        }
        if targets is not None:
            cols["target"] = targets
        return pa.table(cols)


def uniform_rows(pixels: np.ndarray, targets: pa.Array | None, owned: bool = False) -> pa.Table:
    """Rows for a ``[B, *shape]`` block of same-shape tensors (MNIST): no per-row Python work.
    ``owned``: ``pixels`` is a fresh array nothing else uses (the batch may keep it as is)."""
    pixels = np.ascontiguousarray(pixels)
    n = pixels.shape[0]
    shape = list(pixels.shape[1:])
    per = int(np.prod(shape)) * pixels.dtype.itemsize
    offsets = np.arange(n + 1, dtype=np.int64) * per
    image = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(pixels)]
    )
    flat = pa.array(np.tile(np.asarray(shape, dtype=np.int32), n))
    shapes = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * len(shape)), flat)
    cols: dict[str, pa.Array] = {
        "image": image,
        "shape": shapes,
        "kind": pa.array(np.zeros(n, dtype=np.int8)),
        "format": pa.array([pixels.dtype.str]).take(pa.array(np.zeros(n, dtype=np.int64))),
        "error": pa.nulls(n, pa.string()),
    }
    if targets is not None:
        cols["target"] = targets
    return pa.table(cols, metadata=OWNED if owned else None)


def _is_pil(obj: Any) -> bool:
    mod = type(obj).__module__
    return mod.startswith("PIL.") and hasattr(obj, "tobytes") and hasattr(obj, "mode")


def _binary_parts(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets int64 [n+1], data uint8) views of a large_binary column."""
    if isinstance(col, pa.ChunkedArray):
        # combine_chunks copies even a single chunk; only concatenate when there are several
        arr = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    else:
        arr = col
    n = len(arr)
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64, count=n + 1, offset=arr.offset * 8)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.empty(0, np.uint8)
    return offsets, data


# --------------------------------------------------------------------------- batches


class ImageBatch(ColumnBatch):
    """A fetched batch of image rows. Indexing gives ``(image, target)`` samples (or just the
    image when the dataset has no target), so torch's ``default_collate`` works; ``tfd.collate``
    turns equal-shape tensor rows into one ``[B, C, H, W]`` tensor with a single copy."""

    __slots__ = ("_cells", "_pil", "_with_target")

    def __init__(
        self,
        table: pa.Table,
        spec: SampleSpec,
        locator: RowLocator,
        with_target: bool = True,
        pil: bool | None = None,
    ) -> None:
        super().__init__(table, spec, locator)
        self._with_target = with_target and "target" in table.column_names
        # the built-in decoder's rows as PIL images (True) or uint8 tensors (False), whichever
        # way they were stored (a cache may have been built on the other path); None: as stored
        # (a user's loader). NOTE [ The PIL path and the fast path ] in decode.py
        self._pil = pil
        self._cells: tuple[np.ndarray, np.ndarray, list[Any], list[Any], list[Any]] | None = None

    def _parts(self) -> tuple[np.ndarray, np.ndarray, list[Any], list[Any], list[Any]]:
        if self._cells is None:
            t = self.table
            offsets, data = _binary_parts(t.column("image"))
            self._cells = (
                offsets,
                data,
                t.column("shape").to_pylist(),
                t.column("kind").to_pylist(),
                t.column("format").to_pylist(),
            )
        return self._cells

    def image(self, i: int) -> Any:
        """The decoded image of row ``i``, before ``transform``."""
        offsets, data, shapes, kinds, formats = self._parts()
        raw = data[offsets[i] : offsets[i + 1]]
        kind, fmt, shape = kinds[i], formats[i], shapes[i]
        if kind == KIND_TENSOR:
            arr = raw.view(np.dtype(fmt)).reshape(shape)
            if self._pil and arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[0] in _MODES:
                mode = _MODES[arr.shape[0]]
                return _pil().fromarray(arr[0] if mode == "L" else arr.transpose(1, 2, 0), mode)
            return torch.from_numpy(arr.copy())
        if kind == KIND_NUMPY:
            return raw.view(np.dtype(fmt)).reshape(shape).copy()
        if kind == KIND_PIL:
            img = _pil().frombytes(fmt, (shape[0], shape[1]), raw.tobytes())
            if self._pil is False:  # a row stored on the PIL path, served on the fast path
                return torch.from_numpy(chw_array(img))
            return img
        if kind == KIND_PICKLE:
            return pickle.loads(raw.tobytes())
        raise DataError(
            f"{self.locator.describe(self.table, i)} holds no image"
        )  # pragma: no cover

    def _sample(self, i: int) -> Any:
        img = self.image(i)
        if self.spec.transform is not None:
            img = self.spec.transform(img)
        if not self._with_target:
            return img
        y = self.table.column("target")[i].as_py()
        if self.spec.target_transform is not None:
            y = self.spec.target_transform(y)
        return img, y

    def to_batch(self, opts: ConvertOptions = _DEFAULT_OPTS) -> Any:
        if self.spec.transform is None and self.spec.target_transform is None and not self._pil:
            images = self._stacked()
            if images is not None:
                if not self._with_target:
                    return images
                y = arrow_column_to_tensors(
                    self.table.column("target"),
                    "target",
                    opts,
                    lambda i: self.locator.describe(self.table, i),
                )["target"]
                return images, y
        if len(self) == 0:
            return _empty_batch(self._with_target)
        return _collate_samples(list(self), opts)

    def _stacked(self) -> torch.Tensor | None:
        """All rows as one tensor when they are same-shape, same-dtype tensor rows; else None."""
        t = self.table
        n = t.num_rows
        if n == 0:
            return None
        kinds = t.column("kind")
        if pc.min_max(kinds).as_py() != {"min": KIND_TENSOR, "max": KIND_TENSOR}:
            return None
        formats = pc.unique(t.column("format"))
        if len(formats) != 1:
            return None
        shapes = t.column("shape")
        lengths = pc.list_value_length(shapes)
        if pc.min_max(lengths).as_py()["min"] != pc.min_max(lengths).as_py()["max"]:
            return None
        ndim = int(lengths[0].as_py())
        flat = pc.list_flatten(shapes).to_numpy(zero_copy_only=False).reshape(n, ndim)
        if not (flat == flat[0]).all():
            return None
        offsets, data = _binary_parts(t.column("image"))
        block = data[offsets[0] : offsets[n]]
        arr = block.view(np.dtype(formats[0].as_py())).reshape((n, *flat[0].tolist()))
        if not (arr.flags.writeable and _owned(t)):
            arr = arr.copy()  # the buffer may be shared (a cache, a memory map): copy it out
        return torch.from_numpy(arr)


def _owned(table: pa.Table) -> bool:
    """Whether the fetch that built ``table`` marked its buffers as belonging to it alone."""
    meta = table.schema.metadata
    return bool(meta) and meta.get(b"tensorfeed.owned") == b"1"


def _empty_batch(with_target: bool) -> Any:
    images = torch.empty(0, dtype=torch.uint8)
    return (images, torch.empty(0, dtype=torch.int64)) if with_target else images


# --------------------------------------------------------------------------- skipped files


@dataclass(frozen=True)
class SkippedFile:
    """A file left out under ``on_error="skip"``: its dataset index, path and why."""

    index: int
    path: str
    reason: str


def _remove_if_owner(path: str, owner: int) -> None:
    if os.getpid() == owner:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


class SkipLog:
    """The files left out under ``on_error="skip"``, recorded by whichever process read them.

    Worker processes cannot return a count through the batches, so each skip is appended (one
    short line, ``O_APPEND``) to a small file named when the dataset is built; the dataset in the
    main process reads it back. The file is removed when the owning dataset goes away.
    """

    def __init__(self) -> None:
        self.path = os.path.join(
            tempfile.gettempdir(), f"tensorfeed-skipped-{os.getpid()}-{uuid.uuid4().hex}.tsv"
        )
        weakref.finalize(self, _remove_if_owner, self.path, os.getpid())

    def record(self, index: int, path: str, reason: str) -> None:
        line = "\t".join(_one_line(s) for s in (str(index), path, reason)) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode("utf-8", "surrogateescape"))
        finally:
            os.close(fd)

    def entries(self) -> list[SkippedFile]:
        try:
            with open(self.path, encoding="utf-8", errors="surrogateescape") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        seen: dict[int, SkippedFile] = {}
        for line in lines:
            parts = line.split("\t", 2)
            if len(parts) == 3 and parts[0].lstrip("-").isdigit():
                idx = int(parts[0])
                seen.setdefault(idx, SkippedFile(idx, parts[1], parts[2]))
        return [seen[k] for k in sorted(seen)]


def _one_line(s: str) -> str:
    return s.replace("\t", " ").replace("\n", " ").replace("\r", " ")


# --------------------------------------------------------------------------- file caches


def _holds_pickles(table: pa.Table) -> bool:
    kinds = table.column("kind")
    return bool(len(kinds)) and bool(pc.any(pc.equal(kinds, KIND_PICKLE)).as_py())


def refuse_objects(table: pa.Table, source: str, loader: str) -> None:
    """A file cache stores data only (NOTE [ Dataset caches ] in cache.py): refuse rows that
    hold a loader's Python objects, which only pickle could store."""
    if _holds_pickles(table):
        raise ConfigError(
            f"{source} cannot be cached in a file: its loader {loader} returns objects that are "
            "not tensors, numpy arrays or PIL images, and a cache file holds data only (never "
            "pickles). Return one of those from the loader, or cache in 'memory'"
        )


_ROW_TYPES = {
    "image": pa.large_binary(),
    "shape": pa.list_(pa.int32()),
    "kind": pa.int8(),
    "format": pa.string(),
    "error": pa.string(),
}


def check_data_rows(table: pa.Table, path: str) -> None:
    """A cache file's rows are image rows (NOTE [ Image rows ]) holding data only: a row of
    pickled objects was not written by tensorfeed (which never stores one in a file) and is
    refused, never unpickled; so is a file whose columns are not image rows."""
    try:
        got = {f.name: f.type for f in table.schema}
    except UnicodeDecodeError:
        got = {}
    target = got.pop("target", None)
    numeric = target is None or pa.types.is_integer(target) or pa.types.is_floating(target)
    if got != _ROW_TYPES or not numeric:
        raise DataError(
            f"cache file {path} does not hold image rows ({sorted(got)}): it is not this "
            "dataset's cache, or was changed; delete it (or ds.cache(..., rebuild=True))"
        )
    if _holds_pickles(table):
        raise DataError(
            f"cache file {path} holds pickled objects, which tensorfeed never writes to a cache "
            "file: it was tampered with, and is not read. Delete it (or ds.cache(..., "
            "rebuild=True))"
        )


# --------------------------------------------------------------------------- unreadable files


def split_unreadable(
    table: pa.Table, indices: np.ndarray
) -> tuple[pa.Table, np.ndarray, list[tuple[int, str]]]:
    """Rows that hold an image, their dataset indices, and ``(index, error)`` of the others."""
    err = table.column("error")
    if err.null_count == len(err):
        return table, indices, []
    bad = pc.is_valid(err).to_numpy(zero_copy_only=False)
    messages = err.filter(pa.array(bad)).to_pylist()
    dropped = list(zip(indices[bad].tolist(), messages))
    keep = ~bad
    return table.filter(pa.array(keep)), indices[keep], dropped


def warn_skipped(dropped: Sequence[tuple[int, str]]) -> None:
    for _, message in dropped:
        warnings.warn(f"skipped: {message}", RuntimeWarning, stacklevel=3)
