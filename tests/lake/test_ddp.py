"""Two DDP ranks (torchrun, gloo, CPU) read disjoint rows that together cover the lake."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .conftest import N_ROWS


def test_two_ranks_disjoint_and_covering(local_lake: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    script = Path(__file__).with_name("ddp_lake_script.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(script),
            str(local_lake),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for kind in ("stream", "map"):
        ranks = [[int(x) for x in (out / f"{kind}-{r}.txt").read_text().split()] for r in (0, 1)]
        assert ranks[0] and ranks[1], kind
        assert not set(ranks[0]) & set(ranks[1]), f"{kind}: ranks overlap"
        assert sorted(ranks[0] + ranks[1]) == list(range(N_ROWS)), f"{kind}: not covering"
