"""A real two-rank torchrun (gloo, CPU): every row once across ranks x workers, even batches."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tensorfeed as tfd

SCRIPT = Path(__file__).with_name("ddp_essentials_script.py")
N = 103


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp")
    torchrun = shutil.which("torchrun")
    cmd = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    # c10d rendezvous on a free loopback port (--master_port=0 with the static backend hangs)
    cmd += [
        "--nproc_per_node=2",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=127.0.0.1:0",
        str(SCRIPT),
        str(out),
        "2",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def flat(batches: list[list[int]]) -> list[int]:
    return [i for b in batches for i in b]


def test_map_drop_delivers_each_row_at_most_once_with_equal_batches(ranks):
    r0, r1 = (r["map_drop"] for r in ranks)
    assert len(r0) == len(r1)  # same number of batches on every rank: nobody hangs
    rows = flat(r0) + flat(r1)
    assert len(rows) == len(set(rows)) == N - 1  # one row dropped, and counted
    assert ranks[0]["map_drop_uneven"] == 1


def test_map_pad_delivers_every_row_and_counts_the_repeats(ranks):
    r0, r1 = (r["map_pad"] for r in ranks)
    assert len(r0) == len(r1)
    rows = flat(r0) + flat(r1)
    assert set(rows) == set(range(N))
    assert len(rows) - N == ranks[0]["map_pad_uneven"] == 1


def test_samplers_give_each_rank_a_disjoint_equal_share(ranks):
    w0, w1 = (flat(r["weighted"]) for r in ranks)
    assert len(w0) == len(w1) and not set(w0) & set(w1)
    assert len(set(w0 + w1)) == N - 1
    b0, b1 = (r["balanced"] for r in ranks)
    assert len(b0) == len(b1)
    counts = ranks[0]["balanced_counts"]
    assert counts["0"] == counts["1"] and len(flat(b0) + flat(b1)) >= sum(counts.values())


def test_stream_split_under_ddp_matches_the_map_split(ranks):
    r0, r1 = (r["stream_split"] for r in ranks)
    assert len(r0) == len(r1)
    # "pad": a rank that ran out repeats its last batch, counted in stats.ddp_padded
    real = [r["stream_split"][: len(r["stream_split"]) - r["stream_split_padded"]] for r in ranks]
    got = sorted(flat(real[0]) + flat(real[1]))
    want = tfd.split(
        tfd.MemoryDataset({"id": list(range(N))}), {"train": 0.7, "val": 0.3}, key="id"
    )["train"]
    assert got == sorted(want.column("id").tolist())


def test_hard_example_losses_are_shared_across_ranks(ranks):
    assert ranks[0]["hard_probs"] == ranks[1]["hard_probs"]
