"""What the file datasets share: ``_ImageFiles`` (one path per row in an Arrow string array, an
optional target per row in numpy, optional crop boxes, decoding and skip bookkeeping), file
fingerprints, and the options of their ``tfd.open()`` URLs.
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
from . import changes
from .decode import (
    DecodeOptions,
    apply_pillow_settings,
    decode_file,
    default_loader,
    loader_name,
    pillow_settings,
    presents_pil,
)
from .errors import shown
from .images import (
    ImageBatch,
    RowBuilder,
    SkipLog,
    SkippedFile,
    check_data_rows,
    refuse_objects,
    split_unreadable,
    warn_skipped,
)


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


class _SampleList(list):  # type: ignore[type-arg]
    """``ds.samples``: a plain list, as in torchvision, that tells its dataset when it changes,
    so what the dataset serves is always what the list holds."""

    __slots__ = ("changed",)

    def __init__(self, items: Any = ()) -> None:
        super().__init__(items)
        self.changed = False


def _marks_change(name: str) -> Any:
    method = getattr(list, name)

    def changing(self: _SampleList, *args: Any, **kwargs: Any) -> Any:
        self.changed = True
        return method(self, *args, **kwargs)

    changing.__name__ = name
    return changing


for _name in (
    "__setitem__", "__delitem__", "__iadd__", "__imul__", "append", "extend", "insert", "pop",
    "remove", "clear", "sort", "reverse",
):  # fmt: skip
    setattr(_SampleList, _name, _marks_change(_name))


class _ImageFiles(MapDataset):
    """What the folder and annotation datasets share: one path per row (an Arrow binary array of
    the file names' bytes, so any name the OS can hold works), an optional target per row
    (numpy), optional crop boxes, decoding and skip bookkeeping.

    ``samples`` is torchvision's list of ``(path, target)`` and the truth: change it (assign,
    append, delete, filter) and the dataset serves the new list. ``targets`` is a list of its
    own, as in torchvision: assigning it changes ``ds.targets``, not the labels served."""

    _path_array: pa.Array
    _label_array: np.ndarray | None
    _crops: np.ndarray | None = None
    loader: Callable[[str], Any]
    transform: Callable[[Any], Any] | None
    target_transform: Callable[[Any], Any] | None

    def _init_decoding(
        self,
        loader: Callable[[str], Any] | None,
        transform: Callable[[Any], Any] | None,
        target_transform: Callable[[Any], Any] | None,
        mode: str | None,
        max_image_pixels: Any,
        on_error: str,
        decode: str,
    ) -> None:
        self.loader = default_loader if loader is None else loader
        self.transform = transform
        self.target_transform = target_transform
        self._decode = DecodeOptions(mode, max_image_pixels, on_error, decode)
        self._skips = SkipLog() if on_error == "skip" else None
        self._fingerprint: str | None = None
        self._samples_list: _SampleList | None = None
        self._targets_list: list[Any] | None = None

    # -- torchvision-style attributes -------------------------------------------------------
    @property
    def spec(self) -> SampleSpec:  # type: ignore[override]
        # built per access so ``ds.transform = ...`` after construction works as in torchvision
        return SampleSpec(None, None, self.transform, self.target_transform)

    @property
    def on_error(self) -> str:
        return self._decode.on_error

    @property
    def decode(self) -> str:
        """``"auto"``, ``"pil"`` or ``"tensor"``: NOTE [ The PIL path and the fast path ]."""
        return self._decode.decode

    def _set_rows(self, paths: Sequence[str], targets: Sequence[Any] | np.ndarray | None) -> None:
        self._set_arrays(paths, targets)
        self._samples_list = self._targets_list = None

    def _set_arrays(self, paths: Sequence[Any], targets: Sequence[Any] | np.ndarray | None) -> None:
        self._path_array = pa.array([os.fsencode(p) for p in paths], type=pa.large_binary())
        self._label_array = None if targets is None else np.asarray(targets)
        if self._label_array is not None and len(self._label_array) != len(self._path_array):
            raise ConfigError(f"{len(self._label_array)} targets for {len(self._path_array)} files")
        self._fingerprint = None
        self.__dict__.pop("_file_stats", None)
        self.__dict__.pop("_manifest", None)

    def _sync(self) -> None:
        """Serve what ``ds.samples`` holds now, if it was changed in place."""
        listed = self._samples_list
        if listed is None or not listed.changed:
            return
        if self._crops is not None:
            raise ConfigError(
                "samples cannot be changed when rows have crop boxes; build a new "
                "AnnotationsDataset from the filtered annotations instead"
            )
        rows = [tuple(s) for s in listed]
        if any(len(r) != 2 for r in rows):
            raise ConfigError("every entry of samples must be a (path, target) pair")
        labels = [t for _, t in rows]
        no_targets = self._label_array is None and all(t is None for t in labels)
        self._set_arrays([p for p, _ in rows], None if no_targets else labels)
        listed.changed = False

    @property
    def _paths(self) -> pa.Array:
        self._sync()
        return self._path_array

    @property
    def _target_values(self) -> np.ndarray | None:
        self._sync()
        return self._label_array

    def _path_at(self, index: int) -> str:
        return os.fsdecode(self._paths[int(index)].as_py())

    @property
    def samples(self) -> list[tuple[str, Any]]:
        """``[(path, target), ...]`` as in torchvision (built on first use in each process)."""
        if self._samples_list is None:
            labels = self._target_values
            targets = labels.tolist() if labels is not None else [None] * len(self)
            self._samples_list = _SampleList(zip(self.paths, targets))
        return self._samples_list

    @samples.setter
    def samples(self, value: Sequence[tuple[str, Any]]) -> None:
        listed = _SampleList(value)
        listed.changed = True
        self._samples_list = listed
        self._sync()

    @property
    def targets(self) -> list[Any]:
        """The target of each sample, as in torchvision a list of its own (built on first use)."""
        if self._targets_list is None:
            labels = self._target_values
            if labels is None:
                raise AttributeError(f"{self.describe()} has no targets (no label column)")
            self._targets_list = labels.tolist()
        return self._targets_list

    @targets.setter
    def targets(self, value: Sequence[Any]) -> None:
        self._targets_list = list(value)
        self.__dict__["_targets_assigned"] = True

    @property
    def paths(self) -> list[str]:
        return [os.fsdecode(b) for b in self._paths.to_pylist()]

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
        if "_pillow" in self.__dict__:
            self._take_parents_pillow()
        paths = self._paths.take(pa.array(indices)).to_pylist()
        rows = RowBuilder()
        pil = self._decode.pil(self.transform)
        for i, raw in zip(indices.tolist(), paths):
            crop = None if self._crops is None else tuple(self._crops[i].tolist())
            path = self._full_path(i, os.fsdecode(raw))
            decode_file(rows, path, self.loader, self._decode, pil, crop, self._where(i))
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
                self._skips.record(index, self._path_at(index), message)
            warn_skipped(dropped)
        pil = presents_pil(self.loader, self._decode, self.transform)
        return ImageBatch(
            table, self.spec, self._locator(indices), self._target_values is not None, pil
        )

    def __getitem__(self, index: int) -> Any:
        batch = self.__getitems__([index])
        if len(batch) == 0:
            raise DataError(
                f"sample {index} ({shown(self._path_at(index))}) is unreadable and "
                "on_error='skip' leaves it out; batched access (a DataLoader) skips it, "
                "a single index cannot"
            )
        return batch[0]

    def column(self, name: str) -> np.ndarray:
        if name == "target" and self._target_values is not None:
            return self._target_values.copy()
        if name == "path":
            return np.asarray(self.paths, dtype=object)
        available = ["path"] + (["target"] if self._target_values is not None else [])
        raise NotFoundError(f"column {name!r} is not in {self.describe()}; available: {available}")

    # -- file caches hold data only (NOTE [ Dataset caches ] in cache.py) ---------------------
    def _refuse_file_cache(self, table: pa.Table) -> None:
        refuse_objects(table, self.describe(), loader_name(self.loader))

    def _check_cached_rows(self, table: pa.Table, path: str) -> None:
        check_data_rows(table, path)

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
            stats = self._stats()
            self._fingerprint = _sha(
                [*self._fingerprint_header(), len(self)],
                *_string_buffers(self._paths),
                stats,
                None if self._target_values is None else np.ascontiguousarray(self._target_values),
                None if self._crops is None else np.ascontiguousarray(self._crops),
            )
        return self._fingerprint

    def key_index(self) -> np.ndarray:
        """The path of every row, in index order (the rows' keys)."""
        return np.asarray(self.paths, dtype=str)

    def _stats(self) -> np.ndarray:
        """(size, mtime_ns) of every file, taken once per dataset object."""
        if self.__dict__.get("_file_stats") is None:
            self.__dict__["_file_stats"] = _file_stats([self._stat_path(p) for p in self.paths])
        return self.__dict__["_file_stats"]

    # -- what a checkpoint remembers (loader_state.raise_if_changed; changes.py) -------------
    def _change_manifest(self) -> dict[str, Any]:
        if self.__dict__.get("_manifest") is None:
            self.__dict__["_manifest"] = changes.manifest(self.paths, self._stats())
        return self.__dict__["_manifest"]

    def _describe_change(self, old: Any) -> str | None:
        return changes.describe_change(old, self.paths, self._stats())

    def __getstate__(self) -> dict[str, Any]:
        self._sync()
        state = self.__dict__.copy()
        state["_samples_list"] = None  # rebuilt from the arrays where it is used
        if not state.get("_targets_assigned"):
            state["_targets_list"] = None
        state.pop("_manifest", None)
        state["_pillow"] = pillow_settings()  # NOTE [ The PIL path and the fast path ]
        return state

    def _take_parents_pillow(self) -> None:
        """A copy unpickled in a worker started by spawn takes Pillow's settings as the main
        process had them when it pickled the dataset (a forked worker inherits them), at its
        first decode: NOTE [ The PIL path and the fast path ] in decode.py."""
        apply_pillow_settings(self.__dict__.pop("_pillow", None))


def _decode_kwargs(options: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key == "max_image_pixels":
            low = value.lower()
            out[key] = None if low == "none" else low if low == "pillow" else int(value)
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
