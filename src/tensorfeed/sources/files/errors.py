"""The file sources' errors, each also an instance of the built-in class torchvision code catches
in the same place, so ``except OSError:`` / ``except RuntimeError:`` written for torchvision still
works with tensorfeed's datasets (docs/files.md lists them)."""

from __future__ import annotations

import os

from ...errors import DataError, NotFoundError


class FolderNotFoundError(NotFoundError, FileNotFoundError):
    """A root, class folder or data file is missing. Also a ``FileNotFoundError``, which is what
    torchvision raises in the same places, so code written for it keeps catching it."""


class DatasetNotFoundError(FolderNotFoundError, RuntimeError):
    """MNIST's files are missing: also the ``RuntimeError`` torchvision's MNIST raises."""


class ImageReadError(DataError, OSError):
    """An image file cannot be read or decoded (corrupt, truncated, not an image, too many
    pixels, deleted). Also an ``OSError``, as Pillow's own errors for those cases are
    (``UnidentifiedImageError``, a truncated file), so ``except OSError:`` still catches it."""


def shown(path: str | bytes | os.PathLike[str]) -> str:
    """A path as it can be printed: a name that is not valid UTF-8 (held with surrogate escapes,
    as ``os.listdir`` returns it) shows its bytes as ``\\xe9`` instead of failing to encode."""
    text = os.fsdecode(path)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
