"""Two real DDP ranks (torchrun, gloo, CPU): streams keep ranks in step, pad or drop, counted."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("ddp_stream_script.py")


def run_ranks(tmp_path: Path, policy: str, workers: int, rows: int = 104) -> list[dict]:
    torchrun = shutil.which("torchrun")
    cmd = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    cmd += [
        "--standalone",
        "--nproc_per_node=2",
        str(SCRIPT),
        str(tmp_path),
        policy,
        str(workers),
        str(rows),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.parametrize("workers", [0, 2])
def test_drop_stops_every_rank_together(tmp_path, workers):
    r0, r1 = run_ranks(tmp_path, "drop", workers)
    assert len(r0["ids"]) == len(r1["ids"])
    flat = [i for r in (r0, r1) for b in r["ids"] for i in b]
    assert len(flat) == len(set(flat))  # nothing twice
    dropped = r0["stats"]["ddp_dropped"] + r1["stats"]["ddp_dropped"]
    assert dropped >= 1 and len(flat) + 8 * dropped == 104  # the rest is counted, not lost silently


def test_pad_delivers_every_row_and_counts_repeats(tmp_path):
    r0, r1 = run_ranks(tmp_path, "pad", 0)
    assert len(r0["ids"]) == len(r1["ids"])
    flat = [i for r in (r0, r1) for b in r["ids"] for i in b]
    assert set(flat) == set(range(104))
    padded = r0["stats"]["ddp_padded"] + r1["stats"]["ddp_padded"]
    assert padded >= 1 and len(flat) == 104 + 8 * padded


def test_pad_with_an_empty_rank_fails_on_every_rank_instead_of_hanging(tmp_path):
    r0, r1 = run_ranks(tmp_path, "pad", 0, rows=8)  # rank 1 gets no chunk at all
    assert "no data" in r0["error"] and "no data" in r1["error"]
