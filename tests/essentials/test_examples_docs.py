"""The essentials examples run, and every code block of docs/essentials.md is taken from one."""

from __future__ import annotations

import re
import runpy
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("essentials_*.py"))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(example, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # examples may write files (tune.png)
    runpy.run_path(str(example), run_name="__main__")
    assert capsys.readouterr().out.strip()


def test_docs_blocks_are_example_excerpts():
    docs = (REPO / "docs" / "essentials.md").read_text()
    blocks = [textwrap.dedent(b).strip() for b in re.findall(r"```python\n(.*?)```", docs, re.S)]
    sources = {p.name: p.read_text() for p in EXAMPLES}
    assert len(blocks) >= 6
    for block in blocks:
        assert any(block in text for text in sources.values()), f"not in examples/:\n{block}"


def test_benchmark_runs_at_a_tiny_size():
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "loader.py"),
            "--rows",
            "5000",
            "--torch-rows",
            "2000",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "x ceiling" in proc.stdout and "target tfd" in proc.stdout
