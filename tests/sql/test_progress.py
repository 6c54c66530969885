"""Reading a result into memory tells the ``tensorfeed.sql`` logger how far it got and how fast."""

from __future__ import annotations

import logging
import re

import tensorfeed as tfd

N_ROWS = 2000  # rows of the `items` fixture (conftest.py)


def test_reading_into_memory_logs_rows_and_rate(items, caplog):
    db, table = items
    ds = tfd.SQLDataset(db.url, table=table, key="id", keep_in_memory=True)
    with caplog.at_level(logging.INFO, logger="tensorfeed.sql"):
        assert ds[5]["id"] == 5
    lines = [r.getMessage() for r in caplog.records if r.name == "tensorfeed.sql"]
    assert any(line.startswith(f"reading {N_ROWS:,} rows of table {table!r}") for line in lines)
    done = [line for line in lines if line.startswith("read ")]
    assert len(done) == 1, lines
    assert re.fullmatch(
        rf"read {N_ROWS:,} rows of table {table!r} of .+ into memory in \d+\.\d s "
        r"\([\d,]+ rows/s\)",
        done[0],
    ), done[0]
    assert ds.describe() in done[0]  # the display form of the URL: never a password


def test_a_query_read_into_memory_counts_every_row(items, caplog):
    db, table = items
    q = f'SELECT id, v FROM "{table}" WHERE id < :hi'
    ds = tfd.SQLDataset(db.url, query=q, params={"hi": 1500}, key="id", keep_in_memory=True)
    with caplog.at_level(logging.INFO, logger="tensorfeed.sql"):
        assert len(ds.__getitems__([0, 1499])) == 2
    assert any(r.getMessage().startswith("read 1,500 rows of query") for r in caplog.records)


def test_nothing_is_logged_without_reading_into_memory(items, caplog):
    db, table = items
    ds = tfd.SQLDataset(db.url, table=table, key="id", keep_in_memory=False)
    with caplog.at_level(logging.INFO, logger="tensorfeed.sql"):
        ds[5]
    assert not [r for r in caplog.records if r.name == "tensorfeed.sql"]
