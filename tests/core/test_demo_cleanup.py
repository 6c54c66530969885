"""The demos leave nothing behind in the temporary directory, and show honest progress.

Each demo runs as users run it (the real entry point, in a subprocess, at its smallest size) with
``TMPDIR`` pointed at a fresh empty directory, and ``HOME`` / ``XDG_CACHE_HOME`` inside the test's
own directory so that nothing is written to the real home. What a demo caches on purpose must
be in the cache directory; the temporary directory must be empty when it ends.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tensorfeed.demo import ClockedBar

DEMOS = {
    "ecommerce": (["demo", "--rows", "2000", "--epochs", "1"], "building the SQLite database"),
    "lake": (["demo", "lake", "--rows", "2000", "--epochs", "1"], "building the lake"),
    "kafka": (["demo", "kafka", "--messages", "1500", "--devices", "8"], "training"),
}


@pytest.mark.parametrize("name", list(DEMOS))
def test_demo_leaves_nothing_in_the_temporary_directory(tmp_path: Path, name: str) -> None:
    args, progress = DEMOS[name]
    # TMPDIR must stay short: multiprocessing binds AF_UNIX sockets in it (108 bytes at most),
    # and under pytest-xdist tmp_path is long enough to overflow that
    tmp = Path(tempfile.mkdtemp(prefix="d", dir=tempfile.gettempdir()))
    home, cache = tmp_path / "home", tmp_path / "cache"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TENSORFEED_CACHE", "TORCHINDUCTOR_CACHE_DIR")
    }
    env.update(TMPDIR=str(tmp), HOME=str(home), XDG_CACHE_HOME=str(cache))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "tensorfeed.cli", *args],
            capture_output=True,
            text=True,
            timeout=240,
            env=env,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert progress in proc.stderr
        assert sorted(p.name for p in tmp.iterdir()) == []
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if name != "kafka":  # what is meant to persist is in the cache directory
        assert any((cache / "tensorfeed").iterdir())
    assert not home.exists() or not any(home.iterdir())


def _remaining(bar: ClockedBar) -> str:
    """The ETA the bar shows now ('?' when it shows none)."""
    text = str(bar.bar)
    return text.split("<", 1)[1].split(",", 1)[0]


def test_bar_shows_no_eta_from_the_wait_for_the_first_batch() -> None:
    bar = ClockedBar(1000, file=io.StringIO(), unit="batch", mininterval=0)
    time.sleep(0.4)  # workers starting, an index being built ...
    assert _remaining(bar) == "?"
    bar.update()  # the first batch: its wait is not a rate (plain tqdm: 999 x 0.4 s = 06:40)
    assert _remaining(bar) == "?"
    time.sleep(0.005)
    bar.update()  # the second batch gives the rate: 998 batches at ~5 ms, seconds
    minutes, seconds = map(int, _remaining(bar).split(":")[-2:])
    assert minutes * 60 + seconds < 60, str(bar.bar)
    bar.close()


def test_bar_iterates_and_counts() -> None:
    bar = ClockedBar(3, file=io.StringIO())
    assert list(bar.iterate(iter("abc"))) == ["a", "b", "c"]
    assert bar.bar.n == 3


def test_lake_index_build_logs_progress(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import tensorfeed as tfd

    for year in (2023, 2024):
        (tmp_path / f"year={year}").mkdir()
        t = pa.table({"x": np.arange(1000), "y": np.arange(1000) % 2})
        pq.write_table(t, tmp_path / f"year={year}" / "part.parquet", row_group_size=250)
    with caplog.at_level(logging.INFO, logger="tensorfeed.lake"):
        ds = tfd.LakeDataset(str(tmp_path), filter=[("x", "<", 300)])
    assert len(ds) == 600
    lines = [r.getMessage() for r in caplog.records if r.name == "tensorfeed.lake"]
    assert any("2/2 files, 8 row groups" in m and "files/s" in m for m in lines), lines
    assert any(m.startswith("filtering") and "row groups/s" in m for m in lines), lines
