"""A process that reads PostgreSQL ends cleanly even mid-epoch (NOTE [ Read-ahead threads and
interpreter exit ] in tensorfeed/sources/sql/postgres.py), and close() never frees a connection
that a fetch-ahead thread is using."""

from __future__ import annotations

import textwrap
import uuid

import numpy as np
import pytest

import tensorfeed as tfd
from tensorfeed.sources.sql import postgres as sql_source

from ..clean_exit import assert_script_exits_cleanly

SCRIPT = textwrap.dedent(
    """
    import sys
    import tensorfeed as tfd
    url, table = sys.argv[1], sys.argv[2]
    st = tfd.SQLStream(url, table=table, key="id")
    it = iter(tfd.DataLoader(st, batch_size=256))
    next(it)  # the read-ahead thread is now reading the COPY stream
    ds = tfd.SQLDataset(url, table=table, key="id", keep_in_memory=False)
    it2 = iter(tfd.DataLoader(ds, batch_size=256, shuffle=True, seed=0))
    next(it2), next(it2)  # a batch is being fetched ahead on a thread
    keep = [it, st, it2, ds]
    print("ok", flush=True)
    """
)


@pytest.fixture(scope="module")
def big_table(pg_url):
    psycopg = pytest.importorskip("psycopg")
    name = f"shutdown_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (id BIGINT PRIMARY KEY, v DOUBLE PRECISION, s TEXT)")
        conn.execute(
            f"INSERT INTO {name} SELECT g, g / 3.0, repeat('x', 40) "
            "FROM generate_series(0, 199999) g"
        )
    yield name
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE {name}")


def test_script_that_ends_mid_epoch_exits_cleanly(pg_url, big_table, tmp_path):
    script = tmp_path / "mid_epoch.py"
    script.write_text(SCRIPT)
    assert_script_exits_cleanly(script, pg_url, big_table, timeout=180)


def test_exit_hook_stops_a_running_read_ahead_thread(pg_url, big_table):
    it = iter(tfd.DataLoader(tfd.SQLStream(pg_url, table=big_table, key="id"), batch_size=64))
    next(it)
    running = [t for _stop, t in sql_source._PRODUCERS.values() if t.is_alive()]
    assert running
    sql_source._stop_producers_at_exit()
    assert not any(t.is_alive() for t in running)
    del it


def test_close_waits_for_the_fetch_ahead_statement(pg_url, big_table):
    ds = tfd.SQLDataset(pg_url, table=big_table, key="id", keep_in_memory=False)
    rng = np.random.default_rng(0)
    first, second = rng.choice(len(ds), 512, replace=False), rng.choice(len(ds), 512)
    ds.prefetch_hint(second)
    ds.__getitems__(first.tolist())  # starts fetching `second` on the fetch-ahead thread
    ds.close()  # must wait for it, not free the connection under it
    ahead = ds.__dict__["_ahead"]
    assert ahead["pool"] is None and ahead["job"] is None
    assert ds._conn_holder["reader"] is None
    with pytest.raises(tfd.SourceChangedError):  # closed: its snapshot is released
        ds.__getitems__(second.tolist())
