"""Fixtures of the file-source tests (helpers live in files_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .files_helpers import write_tree


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """3 classes x 4 PNG images (ids 0..11, in torchvision's sample order)."""
    root = tmp_path / "tree"
    write_tree(root, {"cat": 4, "dog": 4, "emu": 4})
    return root
