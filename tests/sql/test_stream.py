"""SQLStream on SQLite and PostgreSQL: sharding, order, resume, bounded chunks, consistency."""

from __future__ import annotations

import json
import pickle
import re
import threading
import uuid

import pytest
import torch

import tensorfeed as tfd
from tests.resume_helpers import assert_resumes_exactly_once, read

N_ROWS = 2000  # rows of the `items` fixture (conftest.py)


def _ids(loader) -> list[int]:
    return [i for b in loader for i in b["id"].tolist()]


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_every_row_exactly_once(items, workers):
    db, table = items
    st = tfd.SQLStream(db.url, table=table, key="id", chunk_rows=300)
    loader = tfd.DataLoader(st, batch_size=128, num_workers=workers)
    for _ in range(2):
        assert sorted(_ids(loader)) == list(range(N_ROWS))
    plain = torch.utils.data.DataLoader(
        st, batch_size=128, num_workers=workers, collate_fn=tfd.collate
    )
    assert sorted(_ids(plain)) == list(range(N_ROWS))


def test_order_within_a_shard_is_by_key_and_chunks_are_bounded(items):
    db, table = items
    st = tfd.SQLStream(db.url, table=table, key="id", chunk_rows=300)
    sizes = [len(b) for b in st.iter_batches()]
    assert max(sizes) <= 300 and sum(sizes) == N_ROWS
    assert [r["id"] for r in st] == list(range(N_ROWS))


def test_shards_split_by_key_across_ranks_and_workers(items):
    db, table = items
    st = tfd.SQLStream(db.url, table=table, key="id")
    got = []
    for shard in range(3):
        world = tfd.World(rank=shard, world_size=3)
        rows = [r for t in st._iter_tables(world, 0, 0) for r in t.column("id").to_pylist()]
        assert rows == sorted(rows) and all(r % 3 == shard for r in rows)
        got += rows
    assert sorted(got) == list(range(N_ROWS))


def test_text_keys_shard_by_stable_hash(db):
    name = f"stream_words_{db.kind}"
    db.execute(f'DROP TABLE IF EXISTS "{name}"')
    db.execute(f'CREATE TABLE "{name}" (w TEXT PRIMARY KEY, n INTEGER)')
    db.executemany(
        f'INSERT INTO "{name}" VALUES ({db.ph}, {db.ph})', [(f"w{i}", i) for i in range(500)]
    )
    st = tfd.SQLStream(db.url, table=name, key="w")
    loader = tfd.DataLoader(st, batch_size=64, num_workers=2)
    words = [w for b in loader for w in b["w"]]
    assert sorted(words) == sorted(f"w{i}" for i in range(500))


def test_shuffle_buffer_is_seeded_and_complete(items):
    db, table = items
    st = tfd.SQLStream(db.url, table=table, key="id", shuffle_buffer=500, seed=4, chunk_rows=200)
    a = [r["id"] for r in st]
    b = [r["id"] for r in st]
    assert a == b and a != list(range(N_ROWS)) and sorted(a) == list(range(N_ROWS))


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_pushes_the_skip_down(items, workers):
    db, table = items
    make = lambda: tfd.DataLoader(
        tfd.SQLStream(db.url, table=table, key="id", chunk_rows=100),
        batch_size=64,
        num_workers=workers,
    )
    full = [b["id"].tolist() for b in make()]
    loader = make()
    it = iter(loader)
    head = [next(it)["id"].tolist() for _ in range(7)]
    state = json.loads(json.dumps(loader.state_dict()))
    del it
    resumed = make()
    resumed.load_state_dict(state)
    assert head + [b["id"].tolist() for b in resumed] == full


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_after_delivered_rows_were_deleted_skips_nothing(items, workers):
    """A keyset position: with on_change="continue", deleting delivered rows before the resume
    shifts nothing (by OFFSET the resumed epoch would skip as many undelivered rows as were
    deleted) and the change is counted; by default the change is named."""
    db, table = items

    def make(**kw):
        st = tfd.SQLStream(db.url, table=table, key="id", columns=["v"], chunk_rows=100)
        return tfd.DataLoader(st, batch_size=64, num_workers=workers, **kw)

    loader = make()
    it = iter(loader)
    head = [i for _ in range(5) for i in next(it)["id"].tolist()]  # the key stays in batches
    state = json.loads(json.dumps(loader.state_dict()))
    del it
    gone = head[:20]
    db.execute(f'DELETE FROM "{table}" WHERE id IN ({", ".join(map(str, gone))})')
    with pytest.raises(tfd.SourceChangedError, match=r"2000 rows then, 1980 now.*'continue'"):
        make().load_state_dict(state)
    resumed = make(on_change="continue")
    resumed.load_state_dict(state)
    rest = _ids(resumed)
    assert resumed.stats.source_changes == {
        "rows_then": N_ROWS,
        "rows_now": N_ROWS - 20,
        "buckets_changed": 20,
    }
    assert sorted(head + rest) == list(range(N_ROWS)) and len(set(head + rest)) == N_ROWS
    assert sorted(_ids(resumed)) == sorted(set(range(N_ROWS)) - set(gone))  # the next epoch


def test_a_keyless_stream_over_changed_rows_is_refused(items):
    db, table = items
    st = tfd.SQLStream(db.url, table=table, chunk_rows=300)
    _, state = read(lambda w: tfd.DataLoader(st, batch_size=64, num_workers=w), 0, "v", take=2)
    db.execute(f'DELETE FROM "{table}" WHERE id = 7')
    with pytest.raises(tfd.SourceChangedError, match=r"bucket 0 \(2000 then, 1999 now\)"):
        tfd.DataLoader(st, batch_size=64).load_state_dict(state)


@pytest.mark.parametrize("hop", [(2, 0, 3), (0, 4, 1), (3, 2, 2)])
def test_a_checkpoint_resumes_exactly_once_on_another_worker_count(items, hop):
    """Key buckets are the fixed splits (NOTE [ Resuming a SQL stream by key ] in keyset.py)."""
    db, table = items

    def make(workers):
        st = tfd.SQLStream(db.url, table=table, key="id", chunk_rows=300)
        return tfd.DataLoader(st, batch_size=64, num_workers=workers)

    assert_resumes_exactly_once(make, range(N_ROWS), [hop], cuts=(0, 4, "last"))


def test_a_split_of_the_stream_resumes_on_another_worker_count(items):
    """A split keeps the inner stream's keyset positions, so it regroups as the stream does."""
    db, table = items

    def part(workers):
        st = tfd.SQLStream(db.url, table=table, key="id", chunk_rows=300)
        train = tfd.split(st, {"train": 0.7, "val": 0.3}, seed=2, key="id")["train"]
        return tfd.DataLoader(train, batch_size=64, num_workers=workers)

    want = sorted(i for b in part(0) for i in b["id"].tolist())
    assert 1200 < len(want) < 1600
    assert_resumes_exactly_once(part, want, [(2, 0, 3)], cuts=(3,))


def test_text_keys_resume_exactly_once_on_another_worker_count(db):
    """String keys are ordered by the database's collation: a regrouped position keeps every key
    a bucket must exceed instead of comparing them in Python."""
    name = f"stream_names_{db.kind}"
    db.execute(f'DROP TABLE IF EXISTS "{name}"')
    db.execute(f'CREATE TABLE "{name}" (w TEXT PRIMARY KEY, n INTEGER)')
    words = [f"{c}{i}" for i in range(150) for c in ("a", "B", "_z", "é")]
    db.executemany(f'INSERT INTO "{name}" VALUES ({db.ph}, {db.ph})', [(w, 0) for w in words])

    def make(workers):
        st = tfd.SQLStream(db.url, table=name, key="w", chunk_rows=50)
        return tfd.DataLoader(st, batch_size=32, num_workers=workers)

    assert_resumes_exactly_once(make, words, [(2, 3, 0), (3, 1, 2)], cuts=(2,), key="w")


def test_a_keyless_stream_resumes_on_its_own_topology_only(items):
    db, table = items
    st = tfd.SQLStream(db.url, table=table, chunk_rows=300)
    _, state = read(lambda w: tfd.DataLoader(st, batch_size=64, num_workers=w), 0, "v", take=2)
    with pytest.raises(tfd.StateError, match="same numbers of DataLoader workers and DDP"):
        tfd.DataLoader(st, batch_size=64, num_workers=2).load_state_dict(state)


def _shuffled(db, table, workers):
    st = tfd.SQLStream(db.url, table=table, key="id", shuffle_buffer=150, seed=3, chunk_rows=300)
    return tfd.DataLoader(st, batch_size=64, num_workers=workers)


@pytest.mark.parametrize("hop", [(2, 0, 3), (0, 3, 1)])
def test_a_shuffled_stream_resumes_exactly_once_on_another_worker_count(items, hop):
    """NOTE [ Shuffling a SQL stream by bucket ]: the key buckets are the buffer's splits."""
    db, table = items
    make = lambda w: _shuffled(db, table, w)
    whole, _ = read(make, 0, "id")
    assert sorted(whole) == list(range(N_ROWS)) and whole != sorted(whole)
    assert_resumes_exactly_once(make, range(N_ROWS), [hop], cuts=(0, 5, "last"))


def test_a_shuffled_stream_with_empty_buckets_and_a_text_key_moves(db):
    """Keys that fill a few buckets only (int keys, multiples of 48 of 240), and text keys."""
    name = f"sparse_{uuid.uuid4().hex[:8]}"
    db.execute(f'CREATE TABLE "{name}" (id BIGINT PRIMARY KEY, w TEXT)')
    db.executemany(
        f'INSERT INTO "{name}" VALUES ({db.ph}, {db.ph})', [(i * 48, f"w{i}") for i in range(300)]
    )
    for key in ("id", "w"):

        def make(workers, key=key):
            st = tfd.SQLStream(db.url, table=name, key=key, shuffle_buffer=40, chunk_rows=64)
            return tfd.DataLoader(st, batch_size=16, num_workers=workers)

        want = [i * 48 for i in range(300)] if key == "id" else [f"w{i}" for i in range(300)]
        assert_resumes_exactly_once(make, want, [(2, 0, 3)], cuts=(0, 4), key=key)


def test_a_shuffled_checkpoint_over_changed_rows_names_the_buckets(items):
    """Its positions mean rows of each bucket's permuted order: other rows are refused, on the
    same topology (where the buffer replays) and on another."""
    db, table = items
    _, state = read(lambda w: _shuffled(db, table, w), 2, "id", take=3)
    db.execute(f'DELETE FROM "{table}" WHERE id IN (5, 245)')  # both in bucket 5
    for workers in (2, 0):
        with pytest.raises(tfd.SourceChangedError, match=r"bucket 5 \(\d+ then, \d+ now\)"):
            _shuffled(db, table, workers).load_state_dict(state)
    bad = json.loads(json.dumps(state))
    bad["tensorfeed"]["source"] = {"epoch": 0, "rows": [[1, -3]]}
    with pytest.raises(tfd.StateError, match="rows per key bucket"):
        _shuffled(db, table, 2).load_state_dict(bad)


def _set_positions(obj, position) -> None:
    """Overwrite every stream position inside a state dict."""
    if isinstance(obj, dict):
        if "position" in obj and "source" in obj:
            obj["position"] = position
        for v in obj.values():
            _set_positions(v, position)


@pytest.mark.parametrize(
    ("position", "message"),
    [
        ({"rows": -32, "after": 5}, "must be {'rows': int >= 0"),
        ({"rows": 3}, "must be {'rows': int >= 0"),
        ({"rows": 3, "after": [1]}, "not an int, float or str"),
        (-32, "must be a row count >= 0"),
        ("10", "must be a row count >= 0"),
        ({"rows": 0, "after": None, "from": [[[], [1]]]}, "has a 'from' that is not"),
        ({"rows": 0, "after": None, "from": [[[3], [240]]]}, "buckets < 240"),
    ],
)
def test_a_bad_stream_position_is_a_state_error(items, position, message):
    db, table = items
    st = tfd.SQLStream(db.url, table=table, key="id", chunk_rows=100)
    loader = tfd.DataLoader(st, batch_size=64)
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    del it
    _set_positions(state, position)
    resumed = tfd.DataLoader(tfd.SQLStream(db.url, table=table, key="id"), batch_size=64)
    resumed.load_state_dict(state)
    with pytest.raises(tfd.StateError, match=re.escape(message)):
        next(iter(resumed))


def test_supervised_stream(items):
    db, table = items
    st = tfd.SQLStream(db.url, table=table, key="id", features=["v"], target="label")
    X, Y = next(iter(tfd.DataLoader(st, batch_size=10)))
    assert X.shape == (10, 1) and X[3, 0].item() == 1.5 and Y.tolist()[:3] == [0, 1, 0]


def test_query_with_params_stream(items):
    db, table = items
    q = f'SELECT id, v FROM "{table}" WHERE label = :lab AND id < :hi'
    st = tfd.SQLStream(db.url, query=q, key="id", params={"lab": 0, "hi": 1000}, chunk_rows=64)
    sizes = [len(b) for b in st.iter_batches()]
    assert max(sizes) <= 64
    assert [r["id"] for r in st] == list(range(0, 1000, 2))
    loader = tfd.DataLoader(st, batch_size=50, num_workers=2)
    assert sorted(_ids(loader)) == list(range(0, 1000, 2))


def test_no_key_single_shard_only(items):
    db, table = items
    st = tfd.SQLStream(db.url, query=f'SELECT id FROM "{table}" ORDER BY id')
    assert [r["id"] for r in st] == list(range(N_ROWS))
    with pytest.raises(tfd.ConfigError, match="key="):  # what a worker of two would see
        next(st._iter_tables(tfd.World(worker=0, num_workers=2), 0, 0))


def test_no_connection_until_iterated(tmp_path, pg_db):
    missing = tmp_path / "not-yet.db"
    st = tfd.SQLStream(f"sqlite:///{missing}", table="t", key="id")
    pickle.loads(pickle.dumps(st))  # constructing and pickling touch nothing
    assert not missing.exists()
    with pytest.raises(tfd.NotFoundError, match=r"not-yet\.db"):
        next(iter(st))
    table = pg_db.make_items(10)
    app = f"tfd_stream_{table}"
    url = pg_db.url + ("&" if "?" in pg_db.url else "?") + f"application_name={app}"
    count = f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}'"
    st = pickle.loads(pickle.dumps(tfd.SQLStream(url, table=table, key="id")))
    assert pg_db.execute(count)[0][0] == 0
    it = iter(st)
    next(it)
    assert pg_db.execute(count)[0][0] == 1
    list(it)
    assert pg_db.execute(count)[0][0] == 1  # kept, idle, for the next epoch
    assert sum(1 for _ in st) == 10
    assert pg_db.execute(count)[0][0] == 1  # and reused by it
    st.close()
    assert pg_db.settled(count, 0) == 0


def test_spawn_workers(items):
    db, table = items
    st = tfd.SQLStream(db.url, table=table, key="id")
    loader = tfd.DataLoader(st, batch_size=200, num_workers=2, multiprocessing_context="spawn")
    assert sorted(_ids(loader)) == list(range(N_ROWS))


@pytest.mark.parametrize("workers", [0, 2])
def test_concurrent_writer_does_not_change_the_epoch(items, workers):
    db, table = items
    st = tfd.SQLStream(db.url, table=table, key="id", columns=["id", "v"], chunk_rows=100)
    loader = tfd.DataLoader(st, batch_size=50, num_workers=workers)
    seen: dict[int, float] = {}
    done = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        conn = db.connect()
        ph = db.ph
        try:
            for j in range(100):
                conn.execute(
                    f'INSERT INTO "{table}" VALUES ({ph}, {ph}, {ph}, {ph})',
                    (N_ROWS + j, 1.0, 0, "n"),
                )
                conn.execute(f'DELETE FROM "{table}" WHERE id = {ph}', (N_ROWS - 1 - j,))
                conn.execute(f'UPDATE "{table}" SET v = -1 WHERE id = {ph}', (j,))
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn.close()
            done.set()

    writer = threading.Thread(target=write, daemon=True)
    for i, batch in enumerate(loader):
        if i == 2:  # every worker's shard statement has started (batches alternate workers)
            writer.start()
            done.wait(30)
        for k, v in zip(batch["id"].tolist(), batch["v"].tolist()):
            assert k not in seen
            seen[k] = v
    writer.join()
    assert not errors
    # each shard is one statement, one snapshot: the epoch is the table as it was
    assert sorted(seen) == list(range(N_ROWS))
    assert all(seen[k] == k / 2 for k in range(100))
    # the next epoch reads the table as it is now
    assert sorted(_ids(loader)) == [*range(N_ROWS - 100), *range(N_ROWS, N_ROWS + 100)]


@pytest.mark.parametrize("workers", [0, 2])
def test_every_shard_reads_the_epochs_snapshot(pg_db, workers):
    """NOTE [ One snapshot for a SQL stream's epoch ]: the loader exports the snapshot when the
    epoch starts; shards that start their statement after a writer committed still read the
    table as it was then. The snapshot's transaction holds no lock on the table."""
    table = pg_db.make_items()
    st = tfd.SQLStream(pg_db.url, table=table, key="id", columns=["id", "v"], chunk_rows=100)
    loader = tfd.DataLoader(st, batch_size=50, num_workers=workers)
    it = iter(loader)  # the epoch starts: its snapshot is pinned here, before any shard reads
    pg_db.execute(f'UPDATE "{table}" SET v = -1')
    pg_db.execute(f'DELETE FROM "{table}" WHERE id < 10')
    pg_db.execute(
        f"INSERT INTO \"{table}\" SELECT g, -1, 0, 'n' FROM generate_series({N_ROWS}, {N_ROWS + 9}) g"
    )
    seen = {k: v for b in it for k, v in zip(b["id"].tolist(), b["v"].tolist())}
    assert sorted(seen) == list(range(N_ROWS)) and all(v == k / 2 for k, v in seen.items())
    nxt = {k: v for b in loader for k, v in zip(b["id"].tolist(), b["v"].tolist())}
    assert sorted(nxt) == list(range(10, N_ROWS + 10)) and set(nxt.values()) == {-1.0}
    held = pg_db.execute(
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
        "WHERE c.relname = %s AND l.pid <> pg_backend_pid()",
        (table,),
    )
    assert held[0][0] == 0  # the epoch's pin is held (the loader lives), and locks nothing
    pg_db.execute("SET lock_timeout = '5s'")
    pg_db.execute(f'DROP TABLE "{table}"')
    pg_db.execute("SET lock_timeout = 0")
    st.close()


def test_abandoned_iteration_releases_its_statement(items):
    """Stopping after one batch (a break, an exception in the training loop) must not leave a
    statement, a read-ahead thread or a half-read COPY behind."""
    import gc

    db, table = items
    st = tfd.SQLStream(db.url, table=table, key="id", chunk_rows=100)
    threads = threading.active_count()
    for _ in range(3):
        it = iter(tfd.DataLoader(st, batch_size=10))
        next(it)
        del it
        gc.collect()
    assert threading.active_count() <= threads  # other tests' threads may end meanwhile
    assert sorted(r["id"] for r in st) == list(range(N_ROWS))  # a clean connection afterwards
    if db.kind == "postgres":
        busy = db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid()"
            " AND query LIKE 'COPY%%'"
        )
        assert busy[0][0] == 0
