"""Files as datasets: class folders of images, annotation tables, and the MNIST IDX files."""

from .folder import MNIST, AnnotationsDataset, DatasetFolder, FashionMNIST, ImageFolder
from .images import FolderNotFoundError, SkippedFile, pil_loader, tensor_loader
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
