"""The package type-checks (py.typed is a promise) and passes ruff, as the style guide asks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_mypy_is_clean():
    pytest.importorskip("mypy", reason="mypy is in tensorfeed[test]")
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", str(ROOT / "src" / "tensorfeed")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_ruff_is_clean():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is in tensorfeed[test]")
    proc = subprocess.run(
        [ruff, "check", "."], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_py_typed_ships_with_the_package():
    import tensorfeed

    assert (Path(tensorfeed.__file__).parent / "py.typed").exists()
