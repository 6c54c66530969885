"""Finding the files: torchvision's class-folder scan, annotation tables, and path checks.

``find_classes`` and ``make_dataset`` follow torchvision's ``datasets/folder.py`` algorithm and
errors exactly (sorted ``os.scandir`` class folders; per class, ``sorted(os.walk(...,
followlinks=True))`` and sorted file names), so the same tree gives the same ``classes``,
``class_to_idx`` and ``samples`` in the same order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import pyarrow as pa

from ...errors import ConfigError, DataError, NotFoundError
from .errors import FolderNotFoundError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def has_file_allowed_extension(filename: str, extensions: str | tuple[str, ...]) -> bool:
    """Whether ``filename`` ends with one of ``extensions`` (case-insensitive)."""
    return filename.lower().endswith(
        extensions if isinstance(extensions, str) else tuple(extensions)
    )


def is_image_file(filename: str) -> bool:
    return has_file_allowed_extension(filename, IMG_EXTENSIONS)


def find_classes(directory: str | os.PathLike[str]) -> tuple[list[str], dict[str, int]]:
    """The class folders of ``directory``: sorted sub-folder names and their indices."""
    try:
        classes = sorted(entry.name for entry in os.scandir(directory) if entry.is_dir())
    except FileNotFoundError as exc:
        raise FolderNotFoundError(
            f"image folder root {os.fspath(directory)} does not exist"
        ) from exc
    except NotADirectoryError as exc:
        raise FolderNotFoundError(
            f"image folder root {os.fspath(directory)} is not a directory"
        ) from exc
    if not classes:
        raise FolderNotFoundError(f"Couldn't find any class folder in {os.fspath(directory)}.")
    return classes, {name: i for i, name in enumerate(classes)}


def make_dataset(
    directory: str | os.PathLike[str],
    class_to_idx: dict[str, int] | None = None,
    extensions: str | tuple[str, ...] | None = None,
    is_valid_file: Callable[[str], bool] | None = None,
    allow_empty: bool = False,
) -> list[tuple[str, int]]:
    """``(path, class_index)`` of every valid file under each class folder, in torchvision's order.

    Exactly one of ``extensions`` / ``is_valid_file`` must be given. A class folder without a
    valid file is an error unless ``allow_empty``.
    """
    directory = os.path.expanduser(directory)
    if class_to_idx is None:
        _, class_to_idx = find_classes(directory)
    elif not class_to_idx:
        raise ConfigError("'class_to_index' must have at least one entry to collect any samples.")
    if (extensions is None) == (is_valid_file is None):
        raise ConfigError(
            "Both extensions and is_valid_file cannot be None or not None at the same time"
        )
    if extensions is not None:
        exts = extensions

        def is_valid_file(x: str) -> bool:
            return has_file_allowed_extension(x, exts)

    valid = cast(Callable[[str], bool], is_valid_file)
    instances: list[tuple[str, int]] = []
    available: set[str] = set()
    for target_class in sorted(class_to_idx):
        class_index = class_to_idx[target_class]
        target_dir = os.path.join(directory, target_class)
        if not os.path.isdir(target_dir):
            continue
        for root, _, fnames in sorted(os.walk(target_dir, followlinks=True)):
            for fname in sorted(fnames):
                path = os.path.join(root, fname)
                if valid(path):
                    instances.append((path, class_index))
                    available.add(target_class)
    empty = set(class_to_idx) - available
    if empty and not allow_empty:
        msg = f"Found no valid file for the classes {', '.join(sorted(empty))}. "
        if extensions is not None:
            shown = extensions if isinstance(extensions, str) else ", ".join(extensions)
            msg += f"Supported extensions are: {shown}"
        raise FolderNotFoundError(msg)
    return instances


# --------------------------------------------------------------------------- annotations


def read_annotations(source: Any, columns: Sequence[str], path_column: str) -> tuple[pa.Table, str]:
    """The annotation rows (only ``columns``) and a name for messages."""
    if isinstance(source, pa.Table):
        table, name = source, "the annotations table"
    elif hasattr(source, "iloc") and hasattr(source, "columns"):
        table, name = (
            pa.Table.from_pandas(source, preserve_index=False),
            "the annotations DataFrame",
        )
    else:
        path = os.fspath(source)
        name = path
        if not os.path.isfile(path):
            raise FolderNotFoundError(f"annotations file {path} does not exist")
        lower = path.lower()
        if lower.endswith((".parquet", ".pq")):
            import pyarrow.parquet as pq

            try:
                schema_names = pq.read_schema(path).names
                _check_columns(columns, schema_names, name)
                table = pq.read_table(path, columns=list(dict.fromkeys(columns)))
            except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
                raise DataError(
                    f"annotations file {path} is not a readable Parquet file: {exc}"
                ) from exc
        elif lower.endswith((".csv", ".tsv", ".txt", ".csv.gz")):
            import pyarrow.csv as pacsv

            delimiter = "\t" if lower.endswith(".tsv") else ","
            try:
                table = pacsv.read_csv(
                    path,
                    parse_options=pacsv.ParseOptions(delimiter=delimiter),
                    convert_options=pacsv.ConvertOptions(column_types={path_column: pa.string()}),
                )
                table.column_names  # noqa: B018 - the header's names decode here
            except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
                raise DataError(f"annotations file {path} cannot be parsed as CSV: {exc}") from exc
        else:
            raise ConfigError(
                f"annotations file {path}: expected a .csv, .tsv or .parquet file "
                "(or pass an Arrow table / pandas DataFrame)"
            )
    _check_columns(columns, table.column_names, name)
    return table.select(list(dict.fromkeys(columns))).combine_chunks(), name


def _check_columns(columns: Sequence[str], available: Sequence[str], name: str) -> None:
    for col in columns:
        if col not in available:
            raise NotFoundError(
                f"column {col!r} is not in {name}; available columns: {sorted(available)}"
            )


def check_relative_paths(paths: list[Any], source: str) -> list[str]:
    """Refuse NULL, absolute and ``..``-escaping paths, naming the row; returns the paths."""
    out: list[str] = []
    for i, p in enumerate(paths):
        if p is None or p == "":
            raise DataError(f"row {i} of {source}: the path is empty (NULL)")
        if not isinstance(p, str):
            raise DataError(f"row {i} of {source}: the path {p!r} is not a string")
        if "\0" in p:
            raise DataError(
                f"row {i} of {source}: the path {p!r} holds a NUL byte, which no file name can"
            )
        if os.path.isabs(p) or p.startswith(("/", "\\")) or (len(p) > 1 and p[1] == ":"):
            raise DataError(
                f"row {i} of {source}: path {p!r} is absolute; annotation paths must be "
                "relative to root"
            )
        norm = os.path.normpath(p)
        if norm == os.pardir or norm.startswith(os.pardir + os.sep):
            raise DataError(f"row {i} of {source}: path {p!r} escapes root (it climbs out with ..)")
        out.append(p)
    return out


def check_extensions(paths: list[str], extensions: tuple[str, ...], source: str) -> None:
    """Refuse a path whose extension is not an image extension the decoder reads."""
    for i, p in enumerate(paths):
        if not has_file_allowed_extension(p, extensions):
            raise DataError(
                f"row {i} of {source}: {p!r} has an unknown extension; supported extensions are "
                f"{', '.join(extensions)} (pass extensions=... or a loader for other files)"
            )


def inside_root(full: str, real_root: str) -> bool:
    """Whether ``full`` resolves (symlinks followed) to a place inside ``real_root``."""
    real = os.path.realpath(full)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def crop_boxes(table: pa.Table, columns: Sequence[str], source: str) -> np.ndarray:
    """``[n, 4]`` int64 (left, top, right, bottom), checked for NULLs and empty boxes."""
    if len(columns) != 4:
        raise ConfigError(
            f"crop_columns must name 4 columns (left, top, right, bottom), got {list(columns)}"
        )
    cols = []
    for name in columns:
        arr = table.column(name)
        if arr.null_count:
            first = int(np.flatnonzero(np.asarray(arr.is_null()))[0])
            raise DataError(f"row {first} of {source}: crop column {name!r} is NULL")
        try:
            values = np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(
                f"crop column {name!r} of {source} is not numeric ({arr.type})"
            ) from exc
        cols.append(np.rint(values).astype(np.int64))
    boxes = np.stack(cols, axis=1) if cols else np.empty((0, 4), np.int64)
    bad = (
        (boxes[:, 0] < 0)
        | (boxes[:, 1] < 0)
        | (boxes[:, 2] <= boxes[:, 0])
        | (boxes[:, 3] <= boxes[:, 1])
    )
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"row {i} of {source}: crop box {tuple(boxes[i].tolist())} is empty or negative "
            "(expected 0 <= left < right and 0 <= top < bottom)"
        )
    return boxes
