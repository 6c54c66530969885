"""``DatasetFolder`` and ``ImageFolder``: torchvision's class folders, ``root/<class>/**/<file>``.

Same ``classes``, ``class_to_idx``, ``samples``, ``targets``, ``find_classes`` and ``make_dataset``
as torchvision (the scan is in ``scan.py``); decoding and the rows are ``base._ImageFiles``'.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ...errors import ConfigError
from .base import _decode_kwargs, _ImageFiles, _path_and_options
from .decode import PILLOW
from .scan import IMG_EXTENSIONS, find_classes, make_dataset


class _DefaultExtensions:
    """ImageFolder's default: IMG_EXTENSIONS, or None when is_valid_file is given."""

    def __repr__(self) -> str:
        return "IMG_EXTENSIONS (None with is_valid_file)"


_UNSET: Any = _DefaultExtensions()


class DatasetFolder(_ImageFiles):
    """torchvision's ``DatasetFolder``: ``root/<class>/**/<file>``, classes sorted by name.

    ``loader(path)`` reads one file (``None``: the built-in Pillow decoder, ``default_loader``, which
    is then ``ds.loader``). Exactly one of ``extensions`` / ``is_valid_file`` picks the files.
    Keyword-only extras: ``decode`` (``"auto"``: PIL images when there is a ``transform``, as in
    torchvision, else ``uint8 [C, H, W]`` tensors stacked straight into batches; ``"pil"``;
    ``"tensor"``: NOTE [ The PIL path and the fast path ] in ``decode.py``), ``mode`` (Pillow mode
    of the built-in decoder, default ``"RGB"``; ``None`` keeps each file's), ``max_image_pixels``
    (decompression-bomb limit, default Pillow's own ``Image.MAX_IMAGE_PIXELS``), ``on_error``
    (``"raise"`` or ``"skip"``: an unreadable file is left out of its batch and listed in
    :attr:`skipped`).
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
        max_image_pixels: int | str | None = PILLOW,
        on_error: str = "raise",
        decode: str = "auto",
    ) -> None:
        self.root = os.path.expanduser(root) if isinstance(root, str) else root
        self._init_decoding(
            loader, transform, target_transform, mode, max_image_pixels, on_error, decode
        )
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

    With a ``transform`` each image reaches it as a PIL image, as in torchvision (``ToTensor()``,
    ``Resize(256)`` ... work unchanged); without one images are ``uint8 [C, H, W]`` tensors
    (``mode="RGB"``: C = 3) and batches from ``tfd.DataLoader`` are ``(uint8 [B, C, H, W],
    int64 [B])`` when the images share a shape. See :class:`DatasetFolder` for ``decode``,
    ``mode``, ``max_image_pixels`` and ``on_error``.
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
        max_image_pixels: int | str | None = PILLOW,
        decode: str = "auto",
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
            decode=decode,
        )

    @property
    def imgs(self) -> list[tuple[str, Any]]:
        return self.samples

    @imgs.setter
    def imgs(self, value: Sequence[tuple[str, Any]]) -> None:
        self.samples = value
