"""``AnnotationsDataset``: images listed in an annotation table (CSV, Parquet, JSON lines or a
DataFrame) with their labels and optional crop boxes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ...errors import DataError
from .base import _decode_kwargs, _ImageFiles, _path_and_options
from .decode import PILLOW
from .errors import FolderNotFoundError
from .scan import (
    IMG_EXTENSIONS,
    check_extensions,
    check_relative_paths,
    crop_boxes,
    inside_root,
    read_annotations,
)


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
        max_image_pixels: int | str | None = PILLOW,
        on_error: str = "raise",
        decode: str = "auto",
    ) -> None:
        self.root = os.path.expanduser(os.fspath(root))
        if not os.path.isdir(self.root):
            raise FolderNotFoundError(f"annotations root {self.root} is not a directory")
        self._real_root = os.path.realpath(self.root)
        self.path_column, self.label_column = path_column, label_column
        self.crop_columns = list(crop_columns) if crop_columns is not None else None
        self._init_decoding(
            loader, transform, target_transform, mode, max_image_pixels, on_error, decode
        )
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
