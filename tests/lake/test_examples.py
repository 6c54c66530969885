"""The docs cannot rot: every code block of docs/lake.md is an excerpt of an example, every
example runs, and the capstone demo trains end to end (locally and on S3)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ..docs_excerpts import assert_docs_blocks_are_excerpts
from .conftest import s3_options

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("lake_*.py"))
FINAL = re.compile(
    r"lake demo: [\d,]+ rows/s, data-wait fraction [\d.]+, validation AUC [\d.]+ \(accuracy [\d.]+"
)


def test_every_docs_code_block_is_an_example_excerpt() -> None:
    assert_docs_blocks_are_excerpts("lake.md", EXAMPLES)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(example: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(example)],
        cwd=example.parent,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip()


def test_demo_command(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "tensorfeed.cli",
        "demo",
        "lake",
        "--rows",
        "4000",
        "--epochs",
        "1",
        "--uri",
        str(tmp_path / "lake"),
    ]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert first.returncode == 0, first.stderr[-3000:]
    assert FINAL.search(first.stdout.strip().splitlines()[-1]), first.stdout
    assert "lake built" in first.stderr and "epoch 1/1" in first.stderr  # progress bars
    assert (tmp_path / "lake" / "year=2024" / "region=APAC" / "part-0000.parquet").exists()


def test_demo_builds_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tensorfeed.demo import lake as demo

    argv = ["--rows", "2000", "--epochs", "1", "--uri", str(tmp_path / "lake")]
    assert demo.main(argv) == 0
    assert "lake built" in capsys.readouterr().err
    assert demo.main(argv) == 0
    out = capsys.readouterr()
    assert "lake cached" in out.err and FINAL.search(out.out)


def test_demo_on_s3(
    boto: Any, bucket: str, moto_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from tensorfeed.demo import lake as demo

    opts = s3_options(moto_endpoint)
    argv = [
        "--rows",
        "3000",
        "--epochs",
        "1",
        "--uri",
        f"s3://{bucket}/patients",
        "--storage-option",
        f"endpoint_url={moto_endpoint}",
        "--storage-option",
        "key=testing",
        "--storage-option",
        "secret=testing",
        "--storage-option",
        "region=us-east-1",
    ]
    assert demo.main(argv) == 0
    assert FINAL.search(capsys.readouterr().out)
    keys = {o["Key"] for o in boto.list_objects_v2(Bucket=bucket)["Contents"]}
    assert "patients/year=2019/region=EU/part-0000.parquet" in keys
    assert opts["key"] == "testing"
