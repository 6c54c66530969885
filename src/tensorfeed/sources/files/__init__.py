"""Files as datasets: class folders of images, annotation tables, and the MNIST IDX files.

``tfd.ImageFolder`` / ``tfd.DatasetFolder`` follow torchvision's semantics (``classes``,
``class_to_idx``, ``samples``, ``targets``, ``find_classes``, ``make_dataset``, same order, same
errors), so code written for torchvision runs unchanged. Samples are ``(image, target)``; with a
``transform`` the image is the PIL image torchvision would give it, without one a ``uint8
[C, H, W]`` tensor (NOTE [ The PIL path and the fast path ] in ``decode.py``); any other
``loader`` is called per file as in torchvision.

What differs is under the hood: the per-file metadata lives in one Arrow binary array (the file
names' bytes: any name the OS can hold) and one numpy array (no per-sample Python objects for
workers to copy on read; ``samples``/``targets`` are built on first use), a batch is fetched
and decoded in one ``__getitems__`` call, and the
decoded rows (see NOTE [ Image rows ] in ``images.py``) can be kept by ``ds.cache(...)`` so
later epochs read no image file at all.

How it fits together: ``errors`` (the errors, also the built-in classes torchvision code
catches), ``scan`` (finding files, annotation tables, paths and crop boxes), ``images`` (image
rows and batches, skipped files), ``decode`` (one file with Pillow, the built-in loaders, the
PIL path or the fast path), ``idx`` (the MNIST IDX format), ``base`` (what the datasets share),
then the datasets: ``folder``
(:class:`DatasetFolder`, :class:`ImageFolder`), ``annotations`` (:class:`AnnotationsDataset`)
and ``mnist`` (:class:`MNIST`, :class:`FashionMNIST`).
"""

from .annotations import AnnotationsDataset
from .decode import default_loader, pil_loader, tensor_loader
from .errors import DatasetNotFoundError, FolderNotFoundError, ImageReadError
from .folder import DatasetFolder, ImageFolder
from .images import SkippedFile
from .mnist import MNIST, FashionMNIST
from .scan import (
    IMG_EXTENSIONS,
    find_classes,
    has_file_allowed_extension,
    is_image_file,
    make_dataset,
)

__all__ = [
    "IMG_EXTENSIONS",
    "MNIST",
    "AnnotationsDataset",
    "DatasetFolder",
    "DatasetNotFoundError",
    "FashionMNIST",
    "FolderNotFoundError",
    "ImageFolder",
    "ImageReadError",
    "SkippedFile",
    "default_loader",
    "find_classes",
    "has_file_allowed_extension",
    "is_image_file",
    "make_dataset",
    "pil_loader",
    "tensor_loader",
]
