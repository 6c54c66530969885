"""benchmarks/checkpoint_cost.py runs at its smoke size, for every source, and reports a ratio.

The benchmark is run once per module, in a subprocess; its timings are not asserted (this machine
is shared), only that it measured something: every source is in the table with a ratio, every
epoch delivered every row (the benchmark exits non-zero otherwise) and the checkpoint's size did
not grow with the rows delivered.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# the subprocess's own timeout (300 s) fires before the suite's, with the benchmark's output
pytestmark = [pytest.mark.slow, pytest.mark.timeout(360)]

RATIO = r"\|\s+\d+\.\d{3}\s+\|"  # a table cell such as "| 0.987 |"


@pytest.fixture(scope="module")
def smoke_run() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "benchmarks/checkpoint_cost.py", "--smoke"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def table_row(out: str, source: str) -> str:
    rows = [line for line in out.splitlines() if line.startswith(f"| {source}")]
    assert len(rows) == 1, f"no single table row for {source!r} in:\n{out}"
    return rows[0]


def test_sql_and_lake_are_measured(smoke_run: subprocess.CompletedProcess[str]) -> None:
    assert smoke_run.returncode == 0, smoke_run.stderr[-3000:]
    out = smoke_run.stdout
    assert "ratio" in out and "rows/s plain" in out
    for source in ("SQL: SQLDataset", "Lake: LakeDataset", "Lake: LakeStream"):
        assert re.search(RATIO, table_row(out, source)), table_row(out, source)
        summary = (
            rf"^{re.escape(source)}.*: ratio \d+\.\d{{3}} .* every epoch delivered [\d,]+ rows"
        )
        assert re.search(summary, out, re.M), out
    assert "GROWS" not in out, out


def test_kafka_is_measured(smoke_run: subprocess.CompletedProcess[str]) -> None:
    if importlib.util.find_spec("confluent_kafka") is None:
        assert "Kafka: skipped" in smoke_run.stdout
        pytest.skip("confluent-kafka is in tensorfeed[kafka]")
    assert smoke_run.returncode == 0, smoke_run.stderr[-3000:]
    row = table_row(smoke_run.stdout, "Kafka: KafkaStream")
    assert re.search(RATIO, row), row
