"""The demo, `inspect`, the examples and docs/sql.md run as users will run them."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tensorfeed as tfd
from tensorfeed.demo import ecommerce
from tensorfeed.inspect import inspect_url

from ..docs_excerpts import assert_docs_blocks_are_excerpts

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("sql_*.py"))
FINAL = re.compile(r"[\d,]+ rows/s, data wait \d+%, validation accuracy 0\.\d{3}")


def _args(**kw) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    ecommerce.add_arguments(parser)
    argv = [x for k, v in kw.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    return parser.parse_args(argv)


def test_demo_command_builds_caches_and_trains(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORFEED_CACHE", str(tmp_path))
    env = {**os.environ, "TENSORFEED_CACHE": str(tmp_path)}
    cmd = [sys.executable, "-m", "tensorfeed.cli", "demo", "--rows", "20000", "--epochs", "1"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert first.returncode == 0, first.stderr[-3000:]
    line = first.stdout.strip().splitlines()[-1]
    assert FINAL.search(line), first.stdout
    acc, base = map(float, re.findall(r"0\.\d{3}", line)[-2:])
    assert acc > base  # it learned something: better than always answering "not a gift"
    assert "built" in first.stderr and "epoch 1/1" in first.stderr  # progress bar on stderr
    assert list(tmp_path.glob("demo-ecommerce-20000-seed0-*.db"))
    again = ecommerce.build_sqlite(20000, 0)  # same rows + seed: the cached file
    assert again[1] is False


def test_demo_features_do_not_contain_the_label():
    tables = ecommerce.generate(2000, 0)
    orders = tables["orders"]
    assert "is_gift" not in orders.column_names
    assert not set(ecommerce.FEATURES) & {"shipping_address_id", "home_address_id", "is_gift"}


def test_demo_on_postgres(pg_db, capsys):
    assert ecommerce.run(_args(rows=5000, epochs=1, num_workers=0, url=pg_db.url)) == 0
    assert FINAL.search(capsys.readouterr().out.strip().splitlines()[-1])
    assert not ecommerce.build_postgres(pg_db.url, 5000, 0)  # kept for the same rows + seed
    assert {"tfd_demo_orders", "tfd_demo_users", "tfd_demo_addresses"} <= pg_db.tables()


def test_inspect_sqlite(items):
    db, table = items
    out = inspect_url(db.url, table=table, rows=3)
    assert "rows: 2,000" in out and "first 3 rows:" in out
    for col in ("id", "v", "label", "s"):
        assert re.search(rf"^\s+{col}\s+\w+", out, re.M), out
    assert "s2" in out
    assert table in inspect_url(db.url)  # without a table: the list of tables
    q = inspect_url(db.url, query=f'SELECT id, v FROM "{table}" WHERE id < 10', rows=2)
    assert "rows: 10" in q


def test_inspect_never_prints_the_password(pg_db):
    secret = "Inspect0rS3cret"
    url = pg_db.url.replace("postgres:@", f"postgres:{secret}@", 1)
    table = pg_db.make_items(20)
    out = inspect_url(url, table=table)
    assert "rows: 20" in out and "***" in out and secret not in out
    with pytest.raises(tfd.NotFoundError) as info:
        inspect_url(url, table="nope")
    assert secret not in str(info.value)
    cli = subprocess.run(
        [sys.executable, "-m", "tensorfeed.cli", "inspect", url, "--table", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 2 and "nope" in cli.stderr
    assert secret not in cli.stdout + cli.stderr


def test_every_docs_code_block_is_an_example_excerpt():
    assert_docs_blocks_are_excerpts("sql.md", EXAMPLES)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(example, pg_url):
    proc = subprocess.run(
        [sys.executable, str(example), pg_url],
        cwd=example.parent,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip()


def test_benchmark_smoke_run(pg_url):
    """The benchmark script stays runnable (tiny size; figures are not checked here)."""
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "sql.py"),
            "--rows",
            "3000",
            "--batch-size",
            "256",
            "--tutorial-batches",
            "2",
            "--repeat",
            "1",
        ],
        env={**os.environ, "TENSORFEED_PG_URL": pg_url},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # 1: a target not met at toy size
    assert "| postgres | SQLStream" in proc.stdout and "| sqlite | SQLDataset" in proc.stdout
    assert "PostgreSQL targets:" in proc.stdout
