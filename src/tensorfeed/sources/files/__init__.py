"""Files as datasets: class folders of images, annotation tables, and the MNIST IDX files.

``tfd.ImageFolder`` / ``tfd.DatasetFolder`` follow torchvision's semantics (``classes``,
``class_to_idx``, ``samples``, ``targets``, ``find_classes``, ``make_dataset``, same order, same
errors), so code written for torchvision runs unchanged. Samples are ``(image, target)``; images
are decoded with Pillow to ``uint8 [C, H, W]`` tensors by default (``loader=pil_loader`` gives PIL
images, any other ``loader`` is called per file as in torchvision).

What differs is under the hood: the per-file metadata lives in one Arrow string array and one
numpy array (no per-sample Python objects for workers to copy on read; ``samples``/``targets``
are built on first use), a batch is fetched and decoded in one ``__getitems__`` call, and the
decoded rows (see NOTE [ Image rows ] in ``images.py``) can be kept by ``ds.cache(...)`` so
later epochs read no image file at all.

How it fits together: ``scan`` (finding files, annotation tables, paths and crop boxes),
``images`` (decoding with Pillow, image rows and batches, skipped files), ``idx`` (the MNIST IDX
format), ``base`` (what the datasets share), then the datasets: ``folder``
(:class:`DatasetFolder`, :class:`ImageFolder`), ``annotations`` (:class:`AnnotationsDataset`)
and ``mnist`` (:class:`MNIST`, :class:`FashionMNIST`).
"""

from .annotations import AnnotationsDataset
from .folder import DatasetFolder, ImageFolder
from .images import FolderNotFoundError, SkippedFile, pil_loader, tensor_loader
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
