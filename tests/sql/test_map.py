"""SQLDataset on SQLite and PostgreSQL: indexing, batches, workers, pickling, consistency."""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest
import torch

import tensorfeed as tfd

N_ROWS = 2000  # rows of the `items` fixture (conftest.py)


def _ids(loader) -> list[int]:
    out: list[int] = []
    for b in loader:
        out += (b["id"] if isinstance(b, dict) else b[1]).tolist()
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_every_key_once_per_epoch_tfd_loader(items, workers):
    db, table = items
    ds = tfd.SQLDataset(db.url, table=table, key="id")
    loader = tfd.DataLoader(ds, batch_size=128, shuffle=True, num_workers=workers, seed=3)
    for _ in range(2):  # two epochs, two different orders, each complete
        seen = _ids(loader)
        assert sorted(seen) == list(range(N_ROWS))
    assert ds._conn_holder["reader"] is None or workers == 0  # the parent never read


@pytest.mark.parametrize("workers", [0, 2])
def test_every_key_once_plain_torch_loader(items, workers):
    db, table = items
    ds = tfd.SQLDataset(db.url, table=table, key="id")
    fast = torch.utils.data.DataLoader(
        ds, batch_size=100, shuffle=True, num_workers=workers, collate_fn=tfd.collate
    )
    assert sorted(_ids(fast)) == list(range(N_ROWS))
    plain = torch.utils.data.DataLoader(ds, batch_size=100, shuffle=True, num_workers=workers)
    batches = list(plain)  # torch's own default_collate over our samples
    assert sorted(i for b in batches for i in b["id"].tolist()) == list(range(N_ROWS))
    assert batches[0]["s"][0].startswith("s")


def test_indexing_is_stable_and_list_like(items):
    db, table = items
    ds = tfd.SQLDataset(db.url, table=table, key="id")
    assert len(ds) == N_ROWS
    assert ds[0] == {"id": 0, "v": 0.0, "label": 0, "s": "s0"}
    assert ds[7] == ds[7] == ds[-(N_ROWS - 7)]
    assert ds[-1]["id"] == N_ROWS - 1
    for bad in (N_ROWS, -N_ROWS - 1):
        with pytest.raises(IndexError):
            ds[bad]
    with pytest.raises(IndexError):
        ds.__getitems__([0, N_ROWS])
    # a batch comes back in the order asked, duplicates included
    want = [1500, 3, 999, 3, -1]
    assert [r["id"] for r in ds.__getitems__(want)] == [1500, 3, 999, 3, N_ROWS - 1]
    copy = pickle.loads(pickle.dumps(ds))
    assert copy[1234] == ds[1234]
    assert isinstance(ds.key_index(), np.ndarray) and ds.key_index().dtype == np.int64


def test_supervised_samples_and_batches(items):
    db, table = items
    ds = tfd.SQLDataset(db.url, table=table, key="id", features=["v", "label"], target="label")
    x, y = ds[10]
    assert x.dtype == torch.float32 and x.tolist() == [5.0, 0.0] and y == 0
    X, Y = next(iter(tfd.DataLoader(ds, batch_size=32)))
    assert X.shape == (32, 2) and Y.dtype == torch.int64 and Y[:4].tolist() == [0, 1, 0, 1]


def test_columns_restrict_what_is_read(items):
    db, table = items
    ds = tfd.SQLDataset(db.url, table=table, key="id", columns=["s", "v"])
    assert ds[4] == {"s": "s4", "v": 2.0}


def test_query_with_join_and_params(items):
    db, table = items
    q = (
        f'SELECT a.id, a.v, b.s AS other FROM "{table}" a JOIN "{table}" b ON b.id = a.id + 1 '
        "WHERE a.label = :lab"
    )
    ds = tfd.SQLDataset(db.url, query=q, key="id", params={"lab": 1})
    assert len(ds) == N_ROWS // 2 - 1  # odd ids whose successor exists
    assert ds[0] == {"id": 1, "v": 0.5, "other": "s2"}
    assert [r["id"] for r in ds.__getitems__([2, 0])] == [5, 1]


def test_one_query_per_batch(items):
    db, table = items
    ds = tfd.SQLDataset(db.url, table=table, key="id", keep_in_memory=False)
    ds[0]
    reader = ds._conn_holder["reader"]
    statements: list[str] = []
    if db.kind == "sqlite":  # the engine's own record of what ran
        reader.conn.set_trace_callback(statements.append)
    before = reader.queries
    batch = ds.__getitems__(list(range(0, N_ROWS, 3)))
    assert len(batch) == len(range(0, N_ROWS, 3))
    assert reader.queries == before + 1
    loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, collate_fn=tfd.collate)
    n_batches = sum(1 for _ in loader)
    assert reader.queries == before + 1 + n_batches
    if db.kind == "sqlite":
        assert (
            len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1 + n_batches
        )


def test_no_connection_before_needed(items):
    db, table = items
    ds = tfd.SQLDataset(db.url, table=table, key="id", keep_in_memory=False)
    assert ds._conn_holder["reader"] is None  # the key index connection is not kept for reads
    copy = pickle.loads(pickle.dumps(ds))
    assert copy._conn_holder["reader"] is None
    copy[5]
    assert copy._conn_holder["reader"] is not None and ds._conn_holder["reader"] is None
    if db.kind == "postgres":
        # the only connection the constructor keeps is the one holding the snapshot
        app = f"tfd_conn_{table}"
        url = db.url + ("&" if "?" in db.url else "?") + f"application_name={app}"
        count = f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}'"
        ds2 = tfd.SQLDataset(url, table=table, key="id", keep_in_memory=False)
        assert db.execute(count)[0][0] == 1
        blob = pickle.dumps(ds2)
        copy2 = pickle.loads(blob)
        assert db.execute(count)[0][0] == 1
        copy2[0]
        assert db.execute(count)[0][0] == 2
        copy2.close()
        ds2.close()
        assert db.settled(count, 0) == 0


def test_pickles_into_spawn_workers(items):
    """A plain torch DataLoader with spawn: the dataset crosses as configuration (the pinned
    snapshot id, not a connection) and every worker reads the same snapshot."""
    db, table = items
    ds = tfd.SQLDataset(db.url, table=table, key="id")
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=250,
        shuffle=True,
        num_workers=2,
        multiprocessing_context="spawn",
        collate_fn=tfd.collate,
    )
    assert sorted(_ids(loader)) == list(range(N_ROWS))


@pytest.mark.parametrize("keep", [None, False])
@pytest.mark.parametrize("workers", [0, 2])
def test_concurrent_writer_does_not_change_the_epoch(items, workers, keep):
    db, table = items
    ds = tfd.SQLDataset(db.url, table=table, key="id", columns=["id", "v"], keep_in_memory=keep)
    before = {r["id"]: r["v"] for r in ds.__getitems__(range(len(ds)))}
    loader = tfd.DataLoader(ds, batch_size=100, shuffle=True, num_workers=workers, seed=1)
    seen: dict[int, float] = {}
    writer = _Writer(db, table, delete_pinned=db.kind == "postgres")
    for i, batch in enumerate(loader):
        if i == 1:
            writer.start()  # inserts, deletes and updates while the epoch runs
            writer.wait_some()
        for k, v in zip(batch["id"].tolist(), batch["v"].tolist()):
            assert k not in seen, f"row {k} delivered twice"
            seen[k] = v
    writer.join()
    assert writer.error is None
    assert writer.done > 0
    assert sorted(seen) == list(range(N_ROWS))  # exactly the pinned key set
    if db.kind == "postgres":  # every worker read the pinned snapshot: old values too
        assert seen == before
        ds.refresh()  # the next epoch sees the writer's changes
        assert len(ds) == N_ROWS - 100 + writer.inserted
        assert ds[0]["v"] == -1.0


class _Writer(threading.Thread):
    """Another client: inserts new rows, deletes rows and updates values, committing each."""

    def __init__(self, db, table: str, delete_pinned: bool) -> None:
        super().__init__(daemon=True)
        self.db, self.table, self.delete_pinned = db, table, delete_pinned
        self.error: BaseException | None = None
        self.done = 0
        self.inserted = 0
        self.some = threading.Event()

    def wait_some(self) -> None:
        self.some.wait(30)

    def run(self) -> None:
        conn = self.db.connect()
        ph, t = self.db.ph, self.table
        try:
            for j in range(100):
                new = N_ROWS + 10 + j
                conn.execute(
                    f'INSERT INTO "{t}" VALUES ({ph}, {ph}, {ph}, {ph})', (new, 1.0, 0, "n")
                )
                self.inserted += 1
                if self.delete_pinned:  # PostgreSQL: delete and update pinned rows too
                    conn.execute(f'DELETE FROM "{t}" WHERE id = {ph}', (N_ROWS - 1 - j,))
                    conn.execute(f'UPDATE "{t}" SET v = -1 WHERE id = {ph}', (j,))
                else:  # SQLite: the key set is pinned, values are not: touch only new rows
                    conn.execute(f'DELETE FROM "{t}" WHERE id = {ph}', (new - 5,))
                self.done += 1
                if j == 10:
                    if self.delete_pinned:  # reclaims what no snapshot can see: not ours
                        conn.execute(f'VACUUM "{t}"')
                    self.some.set()
        except BaseException as exc:  # surfaced by the test
            self.error = exc
        finally:
            self.some.set()
            conn.close()


def test_sqlite_deleted_pinned_row_is_a_named_error(sqlite_db):
    table = sqlite_db.make_items(50)
    ds = tfd.SQLDataset(sqlite_db.url, table=table, key="id")
    sqlite_db.execute(f'DELETE FROM "{table}" WHERE id = 17')
    with pytest.raises(tfd.DataError, match=r"id=17") as info:
        ds.__getitems__([16, 17])
    assert "refresh()" in str(info.value)
    ds.refresh()
    assert len(ds) == 49 and 17 not in ds.key_index()


def test_postgres_snapshot_gone_is_source_changed(pg_db):
    table = pg_db.make_items(20)
    ds = tfd.SQLDataset(pg_db.url, table=table, key="id")
    copy = pickle.loads(pickle.dumps(ds))  # a worker that has not read yet
    ds.close()  # the exporting transaction ends
    with pytest.raises(tfd.SourceChangedError, match="snapshot"):
        copy[0]


def test_text_keys(db):
    name = f"words_{db.kind}"
    db.execute(f'DROP TABLE IF EXISTS "{name}"')
    db.execute(f'CREATE TABLE "{name}" (w TEXT PRIMARY KEY, n INTEGER)')
    words = [f"w{i:03d}" for i in range(300)][::-1]
    db.executemany(
        f'INSERT INTO "{name}" VALUES ({db.ph}, {db.ph})', [(w, i) for i, w in enumerate(words)]
    )
    ds = tfd.SQLDataset(db.url, table=name, key="w")
    assert len(ds) == 300 and ds[0]["w"] == "w000" and ds[-1]["w"] == "w299"
    loader = tfd.DataLoader(ds, batch_size=64, shuffle=True, num_workers=0)
    assert sorted(w for b in loader for w in b["w"]) == sorted(words)
    assert list(ds.column("n")[:2]) == [299, 298]


def test_column_helper_matches_rows(items):
    db, table = items
    ds = tfd.SQLDataset(db.url, table=table, key="id")
    col = ds.column("v")
    assert col.shape == (N_ROWS,) and col[10] == 5.0
    assert ds.fingerprint() == tfd.SQLDataset(db.url, table=table, key="id").fingerprint()


def test_fork_workers_never_touch_the_parents_connections(pg_db):
    """Forked workers inherit the parent's open connections (its reader, the snapshot pin, a
    stream's idle connection); closing one there would end the parent's session. They must
    abandon them and open their own."""
    table = pg_db.make_items(300)
    ds = tfd.SQLDataset(pg_db.url, table=table, key="id", keep_in_memory=False)
    st = tfd.SQLStream(pg_db.url, table=table, key="id")
    ds[0]
    assert sum(1 for _ in st) == 300  # the parent now holds an idle stream connection too
    backend = "SELECT pg_backend_pid()"
    parent_reader = ds._conn_holder["reader"]
    for _ in range(2):
        loader = torch.utils.data.DataLoader(
            ds,
            batch_size=50,
            shuffle=True,
            num_workers=2,
            collate_fn=tfd.collate,
            multiprocessing_context="fork",
        )
        assert sorted(_ids(loader)) == list(range(300))
        stream = tfd.DataLoader(st, batch_size=50, num_workers=2, multiprocessing_context="fork")
        assert sorted(_ids(stream)) == list(range(300))
    # the parent's sessions are intact: same reader, still answering, in the same snapshot
    assert ds._conn_holder["reader"] is parent_reader
    assert parent_reader.backend.scalar(parent_reader.conn, backend) > 0
    assert ds[299]["id"] == 299 and sum(1 for _ in st) == 300
    fresh = pickle.loads(pickle.dumps(ds))  # the pin survived too: a new reader joins it
    assert fresh[5]["id"] == 5 and fresh._conn_holder["reader"] is not parent_reader


def test_from_url_reads_options_from_the_query_string(items):
    db, table = items
    sep = "&" if "?" in db.url else "?"
    ds = tfd.open(f"{db.url}{sep}table={table}&key=id&columns=id,s")
    assert isinstance(ds, tfd.SQLDataset) and len(ds) == N_ROWS and ds[3] == {"id": 3, "s": "s3"}
    assert "table=" not in ds.describe() and "key=" not in ds.db.url  # stripped before connecting
    if db.kind == "postgres":
        assert "host=" in ds.db.url  # a libpq parameter stays
    st = tfd.SQLStream.from_url(f"{db.url}{sep}table={table}&key=id&chunk_rows=500&seed=3")
    assert st.chunk_rows == 500 and st.seed == 3 and st.key == "id"
    assert max(len(b) for b in st.iter_batches()) == 500
    sup = tfd.SQLDataset.from_url(
        f"{db.url}{sep}table={table}&key=id",
        features=["v"],
        target="label",
        transform=lambda x: x * 2,
    )
    assert sup[3][0].tolist() == [3.0] and sup[3][1] == 1
    with pytest.raises(tfd.ConfigError, match="from_url"):
        tfd.SQLDataset(f"{db.url}{sep}table={table}", key="id")


def test_fetch_ahead_gives_the_same_batches_and_starts_the_next_query(items):
    db, table = items
    ds = tfd.SQLDataset(db.url, table=table, key="id", keep_in_memory=False)
    ahead = tfd.DataLoader(ds, batch_size=64, shuffle=True, seed=5)
    assert ahead.batch_sampler.prefetch_hint is not None  # wired with num_workers=0
    it = iter(ahead)
    first = next(it)
    job = ds._ahead["job"]
    assert job is not None  # the second batch is already being fetched
    rest = [first, *it]
    plain = tfd.DataLoader(ds, batch_size=64, shuffle=True, seed=5)
    plain.batch_sampler.prefetch_hint = None
    expected = list(plain)  # one epoch
    assert [b["id"].tolist() for b in rest] == [b["id"].tolist() for b in expected]
    assert [b["v"].tolist() for b in rest] == [b["v"].tolist() for b in expected]
    workers = tfd.DataLoader(ds, batch_size=64, num_workers=2)
    assert workers.batch_sampler.prefetch_hint is None  # never fetch ahead in the parent


# --------------------------------------------------------------------------- rows kept in memory


def _sessions(app: str) -> str:
    return f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}'"


@pytest.mark.parametrize("workers", [0, 2])
def test_small_results_are_kept_in_memory_and_give_the_same_batches(items, workers):
    """keep_in_memory=None (the default) reads a small result once and serves every later batch
    from RAM: same batches, same values as one query per batch, and no further statements."""
    db, table = items
    kept = tfd.SQLDataset(db.url, table=table, key="id")
    queried = tfd.SQLDataset(db.url, table=table, key="id", keep_in_memory=False)
    a = tfd.DataLoader(kept, batch_size=96, shuffle=True, seed=4, num_workers=workers)
    b = tfd.DataLoader(queried, batch_size=96, shuffle=True, seed=4, num_workers=workers)
    for _ in range(2):  # two epochs, the second with a new order
        got, want = list(a), list(b)
        assert [x["id"].tolist() for x in got] == [y["id"].tolist() for y in want]
        assert [x["v"].tolist() for x in got] == [y["v"].tolist() for y in want]
        assert [x["s"] for x in got] == [y["s"] for y in want]
    assert kept.in_memory and not queried.in_memory
    # loaded in this process (before the workers forked): its reader is closed again
    assert kept._conn_holder["reader"] is None
    assert kept[-1] == {"id": N_ROWS - 1, "v": (N_ROWS - 1) / 2, "label": 1, "s": f"s{N_ROWS - 1}"}
    assert kept.column("v")[10] == 5.0
    assert "_mem" not in pickle.loads(pickle.dumps(kept)).__dict__  # never pickled along


def test_forked_workers_share_the_kept_rows_and_open_no_connection(pg_db):
    table = pg_db.make_items(500)
    app = f"tfd_keep_{table}"
    url = pg_db.url + ("&" if "?" in pg_db.url else "?") + f"application_name={app}"
    ds = tfd.SQLDataset(url, table=table, key="id")
    assert pg_db.execute(_sessions(app))[0][0] == 1  # the snapshot pin
    loader = tfd.DataLoader(ds, batch_size=50, shuffle=True, num_workers=2, persistent_workers=True)
    it = iter(loader)
    ids = [next(it)["id"]]
    assert pg_db.execute(_sessions(app))[0][0] == 1  # workers read RAM, not the server
    ids += [b["id"] for b in it]
    assert sorted(torch.cat(ids).tolist()) == list(range(500))
    del it, loader
    ds.close()


def test_kept_rows_on_sqlite_are_a_copy_from_the_first_read_until_refresh(sqlite_db):
    table = sqlite_db.make_items(40)
    kept = tfd.SQLDataset(sqlite_db.url, table=table, key="id")
    queried = tfd.SQLDataset(sqlite_db.url, table=table, key="id", keep_in_memory=False)
    assert kept[3]["v"] == 1.5 and queried[3]["v"] == 1.5
    sqlite_db.execute(f'UPDATE "{table}" SET v = -1 WHERE id = 3')
    assert kept[3]["v"] == 1.5  # as read at the first batch
    assert queried[3]["v"] == -1.0  # read as it is now
    kept.refresh()
    assert not kept.in_memory and kept[3]["v"] == -1.0


def test_postgres_kept_rows_are_the_pinned_snapshot(pg_db):
    table = pg_db.make_items(40)
    ds = tfd.SQLDataset(pg_db.url, table=table, key="id")
    pg_db.execute(f'UPDATE "{table}" SET v = -1 WHERE id = 3')  # before the first read
    pg_db.execute(f'DELETE FROM "{table}" WHERE id = 4')
    assert ds[3]["v"] == 1.5 and ds[4]["id"] == 4 and len(ds) == 40  # the snapshot's rows
    assert ds.in_memory
    ds.close()


def test_big_results_are_not_kept_and_keep_in_memory_is_checked(items, monkeypatch):
    db, table = items
    from tensorfeed.sources.sql import dataset as sql

    monkeypatch.setattr(sql, "KEEP_IN_MEMORY_AUTO_BYTES", 1000)  # far less than 2,000 rows
    auto = tfd.SQLDataset(db.url, table=table, key="id")
    loader = tfd.DataLoader(auto, batch_size=500, shuffle=True, num_workers=2)
    assert sorted(_ids(loader)) == list(range(N_ROWS)) and not auto.in_memory
    # the parent sampled the size before forking, and closed that connection first
    assert auto._conn_holder["reader"] is None
    assert auto[5]["id"] == 5 and not auto.in_memory
    forced = tfd.SQLDataset(db.url, table=table, key="id", keep_in_memory=True)
    assert forced[5]["id"] == 5 and forced.in_memory  # True: whatever the size
    with pytest.raises(tfd.ConfigError, match="keep_in_memory"):
        tfd.SQLDataset(db.url, table=table, key="id", keep_in_memory="yes")
