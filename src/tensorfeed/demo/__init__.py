"""Embedded demos for ``tensorfeed demo [NAME]``: each module defines ``add_arguments(parser)`` and
``run(args) -> int``. ``ecommerce`` (the default) trains from a three-way SQL join."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Where demos keep the data they build: ``$TENSORFEED_CACHE`` or ``~/.cache/tensorfeed``."""
    root = os.environ.get("TENSORFEED_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "tensorfeed",
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
