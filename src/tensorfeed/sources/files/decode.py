"""Decoding one image file for the file sources: Pillow with the dataset's options and Pillow's own
settings, the built-in loaders, and which of the two paths a sample takes.

NOTE [ The PIL path and the fast path ]
torchvision hands each sample's PIL image to ``transform``; tensorfeed's fast path decodes
straight into ``uint8 [C, H, W]`` rows that a batch stacks with one copy. Which one a dataset
takes is decided per fetch (``ds.transform`` may be set after construction, as in torchvision):

==============================  ==========  ===========  ======================================
loader                          transform   ``decode=``  a sample's image (what transform gets)
==============================  ==========  ===========  ======================================
the default (``default_loader``)  none      ``"auto"``   ``uint8 [C, H, W]`` tensor: fast path
the default (``default_loader``)  given     ``"auto"``   PIL image in ``mode``: torchvision's
the default (``default_loader``)  any       ``"pil"``    PIL image
the default (``default_loader``)  any       ``"tensor"`` ``uint8 [C, H, W]`` tensor
``pil_loader``                  any         any          PIL image
``tensor_loader``               any         any          ``uint8 [C, H, W]`` tensor
your own loader                 any         any          what it returns: torchvision's
==============================  ==========  ===========  ======================================

MNIST follows the same rule with ``L`` images (tensors ``uint8 [1, 28, 28]``). Either way the
pixels are Pillow's: a PIL-only transform (``Resize(256)`` on a PIL image, ``ToTensor``) gives
exactly what it gives under torchvision.

Pillow's settings are honoured: by default the pixel limit is Pillow's ``Image.MAX_IMAGE_PIXELS``
at read time (``None`` there: no limit), and ``ImageFile.LOAD_TRUNCATED_IMAGES`` is Pillow's;
spawn workers take the values the main process had when it pickled the dataset
(:func:`pillow_settings`). ``max_image_pixels=<int or None>`` on a dataset overrides the limit
for that dataset only.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...errors import ConfigError
from . import fast_decode
from .errors import ImageReadError, shown
from .images import KIND_TENSOR, RowBuilder, _is_pil, _pil, chw_array

PILLOW = "pillow"  # max_image_pixels: Pillow's own Image.MAX_IMAGE_PIXELS, read when decoding
DECODES = ("auto", "pil", "tensor")
ON_ERROR = ("raise", "skip")


@dataclass(frozen=True)
class DecodeOptions:
    """How the built-in decoder reads a file (the per-dataset knobs, grouped)."""

    mode: str | None = "RGB"  # Pillow mode to convert to; None keeps each file's own mode
    max_image_pixels: int | str | None = PILLOW  # decompression-bomb limit
    on_error: str = "raise"  # "raise" or "skip"
    decode: str = "auto"  # see NOTE [ The PIL path and the fast path ]

    def __post_init__(self) -> None:
        if self.on_error not in ON_ERROR:
            raise ConfigError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}")
        if self.decode not in DECODES:
            raise ConfigError(f"decode must be 'auto', 'pil' or 'tensor', got {self.decode!r}")
        limit = self.max_image_pixels
        bad = isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        if limit != PILLOW and limit is not None and bad:
            raise ConfigError(
                f"max_image_pixels must be an int >= 1, None (no limit) or 'pillow' "
                f"(Pillow's Image.MAX_IMAGE_PIXELS), got {limit!r}"
            )

    def pil(self, transform: Any) -> bool:
        """Whether the built-in decoder hands out PIL images (see the NOTE)."""
        return self.decode == "pil" or (self.decode == "auto" and transform is not None)


class UnreadableFile(Exception):
    """Internal: a file that cannot become a sample (corrupt, truncated, too large, missing)."""


# --------------------------------------------------------------------------- Pillow's settings

_PILLOW_LOCK = threading.Lock()


def pillow_settings() -> dict[str, Any] | None:
    """Pillow's process-wide settings tensorfeed honours (None when Pillow is not imported)."""
    if "PIL.Image" not in sys.modules:
        return None
    Image, ImageFile = sys.modules["PIL.Image"], sys.modules.get("PIL.ImageFile")
    return {
        "MAX_IMAGE_PIXELS": Image.MAX_IMAGE_PIXELS,
        "LOAD_TRUNCATED_IMAGES": bool(getattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)),
    }


def apply_pillow_settings(settings: dict[str, Any] | None) -> None:
    """Give this process (a spawn worker) the settings its parent had (see the NOTE)."""
    if not settings:
        return
    Image = _pil()
    from PIL import ImageFile

    Image.MAX_IMAGE_PIXELS = settings["MAX_IMAGE_PIXELS"]
    ImageFile.LOAD_TRUNCATED_IMAGES = settings["LOAD_TRUNCATED_IMAGES"]


@contextlib.contextmanager
def _opening_with(Image: Any, limit: int | str | None) -> Iterator[None]:
    """Pillow's own bomb check at the dataset's limit, when it has one of its own (Pillow reads
    a module global: it is swapped under a lock for the ``open`` only)."""
    if limit == PILLOW or limit == Image.MAX_IMAGE_PIXELS:
        yield
        return
    with _PILLOW_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # ours is the check
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, limit
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


# --------------------------------------------------------------------------- one image


def open_image(
    path: str, opts: DecodeOptions, crop: tuple[int, int, int, int] | None = None
) -> Any:
    """Open, check and fully decode one image with Pillow; returns a loaded PIL image. The pixel
    limit is checked on the header, before any pixel is decoded."""
    Image = _pil()
    try:
        with open(path, "rb") as f:
            with _opening_with(Image, opts.max_image_pixels):
                img = Image.open(f)
            with img:
                return _decoded(img, opts, crop)
    except UnreadableFile:
        raise
    except FileNotFoundError as exc:
        raise UnreadableFile("no longer exists (deleted after the dataset was built?)") from exc
    except MemoryError:
        raise
    except Image.DecompressionBombError as exc:
        raise UnreadableFile(f"refused by Pillow as a decompression bomb ({exc})") from exc
    except Exception as exc:  # corrupt, truncated, not an image: Pillow raises many types
        raise UnreadableFile(f"cannot be decoded ({type(exc).__name__}: {exc})") from exc


def _decoded(img: Any, opts: DecodeOptions, crop: tuple[int, int, int, int] | None) -> Any:
    w, h = img.size
    limit = opts.max_image_pixels
    if isinstance(limit, int) and w * h > limit:
        raise UnreadableFile(
            f"{w}x{h} = {w * h} pixels is over max_image_pixels={limit} "
            "(a possible decompression bomb; raise max_image_pixels if it is genuine)"
        )
    if crop is not None:
        _check_crop(crop, w, h)
    img.load()
    out = img
    if opts.mode is not None and img.mode != opts.mode:
        out = img.convert(opts.mode)
    if crop is not None:
        out = out.crop(crop)
    if out is img:
        out = img.copy()  # detach from the file we are about to close
    return out


def _check_crop(box: tuple[int, int, int, int], w: int, h: int) -> None:
    left, top, right, bottom = box
    if not (0 <= left < right <= w and 0 <= top < bottom <= h):
        raise UnreadableFile(
            f"crop box (left={left}, top={top}, right={right}, bottom={bottom}) is not inside "
            f"the {w}x{h} image"
        )


def pil_loader(path: str | os.PathLike[str]) -> Any:
    """Open ``path`` as an RGB PIL image (torchvision's ``pil_loader``); as a dataset's
    ``loader`` every sample is a PIL image. A file it cannot read is an
    :class:`ImageReadError` (an ``OSError``, as Pillow's own errors are) naming it."""
    try:
        return open_image(os.fspath(path), DecodeOptions(mode="RGB"))
    except UnreadableFile as exc:
        raise ImageReadError(f"image file {shown(path)} {exc}") from exc.__cause__


def default_loader(path: str | os.PathLike[str]) -> Any:
    """torchvision's ``default_loader``: an RGB PIL image, and every file dataset's default
    ``loader`` (``ds.loader(path)`` in a subclass works as there). As the dataset's loader it
    is the built-in decoder: PIL images or the fast path, see the NOTE above."""
    return pil_loader(path)


def tensor_loader(path: str | os.PathLike[str]) -> torch.Tensor:
    """Open ``path`` as a ``uint8 [3, H, W]`` tensor (the fast path as a loader)."""
    return torch.from_numpy(chw_array(pil_loader(path)))


# --------------------------------------------------------------------------- a file into rows


def check_on_error(on_error: str) -> str:
    if on_error not in ON_ERROR:
        raise ConfigError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    return on_error


def loader_kind(loader: Callable[[str], Any] | None) -> str | None:
    """'default' / 'pil' / 'tensor' for the built-in decoders, None for a loader of the user's."""
    if loader is None or loader is default_loader:
        return "default"
    if loader is pil_loader:
        return "pil"
    if loader is tensor_loader:
        return "tensor"
    return None


def presents_pil(
    loader: Callable[[str], Any] | None, opts: DecodeOptions, transform: Any
) -> bool | None:
    """How a batch hands out the built-in decoder's rows: as PIL images (True), tensors (False),
    or as a user's loader stored them (None). See the NOTE above."""
    kind = loader_kind(loader)
    if kind is None:
        return None
    return kind == "pil" or (kind == "default" and opts.pil(transform))


def loader_name(loader: Callable[[str], Any] | None) -> str:
    if loader is None or loader is default_loader:
        return "default_loader"  # one name: both mean the built-in decoder (fingerprints agree)
    return f"{getattr(loader, '__module__', '?')}.{getattr(loader, '__qualname__', type(loader).__name__)}"


def decode_file(
    rows: RowBuilder,
    path: str,
    loader: Callable[[str], Any] | None,
    opts: DecodeOptions,
    pil: bool,
    crop: tuple[int, int, int, int] | None = None,
    where: str = "",
) -> None:
    """Decode one file into ``rows`` (a PIL row when ``pil``, else a tensor row, for the built-in
    decoder); an unreadable file raises :class:`ImageReadError` (or is kept as an error row under
    ``on_error="skip"``). A loader of the user's that raises re-raises its own exception, with a
    note naming the file, as torchvision would let it through. ``where`` names the row of an
    annotation file."""
    kind = loader_kind(loader)
    try:
        if kind is not None:
            as_pil = kind == "pil" or (kind == "default" and pil)
            arr = _fast_pixels(path, opts, crop)
            if arr is not None:  # NOTE [ Faster decoders, Pillow's pixels ]
                if as_pil:
                    rows.add_pil_pixels(arr)
                else:
                    rows.add_array(chw_array(arr), KIND_TENSOR)
                return
            img = open_image(path, opts, crop)
            if as_pil:
                rows.add_object(img)
            else:
                rows.add_array(chw_array(img), KIND_TENSOR)
            return
        assert loader is not None
        try:
            obj = loader(path)
        except MemoryError:
            raise
        except Exception as exc:
            if opts.on_error == "raise":
                note = f"tensorfeed: while {loader_name(loader)} read {shown(path)}{where}"
                if hasattr(exc, "add_note"):  # Python 3.11+
                    exc.add_note(note)
                raise
            raise UnreadableFile(
                f"could not be loaded by {loader_name(loader)} ({type(exc).__name__}: {exc})"
            ) from exc
        if crop is not None:
            obj = _crop_object(obj, crop)
        rows.add_object(obj)
    except UnreadableFile as exc:
        message = f"image file {shown(path)}{where} {exc}"
        if opts.on_error == "raise":
            raise ImageReadError(message + _skip_hint()) from exc.__cause__
        rows.add_error(message)


def _fast_pixels(
    path: str, opts: DecodeOptions, crop: tuple[int, int, int, int] | None
) -> np.ndarray | None:
    """The fast path's pixels from a faster decoder than Pillow, or None (Pillow decodes)."""
    limit = opts.max_image_pixels
    if limit == PILLOW:
        limit = _pil().MAX_IMAGE_PIXELS
    arr = fast_decode.decode(path, opts.mode, limit if isinstance(limit, int) else None)
    if arr is None or crop is None:
        return arr
    _check_crop(crop, arr.shape[1], arr.shape[0])
    left, top, right, bottom = crop
    return arr[top:bottom, left:right]


def _skip_hint() -> str:
    return " (pass on_error='skip' to leave unreadable files out)"


def _crop_object(obj: Any, box: tuple[int, int, int, int]) -> Any:
    left, top, right, bottom = box
    if _is_pil(obj):
        _check_crop(box, *obj.size)
        return obj.crop(box)
    if isinstance(obj, torch.Tensor | np.ndarray) and obj.ndim >= 2:
        # tensors are [..., H, W]; numpy arrays are [H, W, ...] (as PIL -> numpy gives them)
        if isinstance(obj, torch.Tensor):
            h, w = obj.shape[-2], obj.shape[-1]
            _check_crop(box, w, h)
            return obj[..., top:bottom, left:right]
        h, w = obj.shape[0], obj.shape[1]
        _check_crop(box, w, h)
        return obj[top:bottom, left:right]
    raise UnreadableFile(f"the loader returned a {type(obj).__name__}, which cannot be cropped")
