"""One check the shutdown tests share: a script, run in a new interpreter, ends by itself with
exit status 0, prints ``ok`` and no ``Fatal Python error`` (faulthandler's crash report)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def assert_script_exits_cleanly(script: Path, *args: str, timeout: float = 120) -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "faulthandler", str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"
    assert "Fatal Python error" not in proc.stderr
