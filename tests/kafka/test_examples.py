"""The docs cannot rot: every code block of docs/kafka.md is an excerpt of an example, every
example runs, and the capstone ``tensorfeed demo kafka`` trains, stops and resumes end to end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ..docs_excerpts import assert_docs_blocks_are_excerpts

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("kafka_*.py"))
FINAL = re.compile(r"messages/s [\d,]+ \| data wait [\d.]+% \| holdout AUC ([\d.]+|nan)")


def test_every_docs_code_block_is_an_example_excerpt() -> None:
    assert_docs_blocks_are_excerpts("kafka.md", EXAMPLES)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(example: Path, cluster) -> None:
    env = {**os.environ, "TENSORFEED_KAFKA": cluster.bootstrap}  # the session's mock cluster
    proc = subprocess.run(
        [sys.executable, str(example)],
        cwd=example.parent,
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip()


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from tensorfeed.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, "demo", "kafka", *args],
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.mark.slow
def test_demo_embedded_cluster(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt.pt"
    proc = _demo("--messages", "3000", "--devices", "20", "--checkpoint", str(ckpt))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "librdkafka's mock cluster" in out.splitlines()[0]
    assert "Checkpoint after" in out and "Resumed from the checkpoint at offsets p0=" in out
    assert "consumer lag 0" in out and "from 3,000 messages" in out
    assert FINAL.search(out.strip().splitlines()[-1]), out
    assert "training" in proc.stderr  # the progress bar
    assert ckpt.exists()


@pytest.mark.slow
def test_demo_against_a_broker(cluster) -> None:
    proc = _demo("--bootstrap", cluster.bootstrap, "--messages", "2000", "--num-workers", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Kafka broker at {cluster.bootstrap}" in proc.stdout
    assert FINAL.search(proc.stdout.strip().splitlines()[-1]), proc.stdout
