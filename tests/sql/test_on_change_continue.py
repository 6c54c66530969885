"""``on_change="continue"``: an epoch resumed over changed rows delivers every key of today's
rows not delivered before the checkpoint, each once, never a deleted one, and counts what it
skipped (NOTE [ Continuing over changed data ] in key_order.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest

import tensorfeed as tfd

N_ROWS = 2000  # rows of the `items` fixture


def _loader(db, table, workers=0, shuffle=True, **kw):
    ds = tfd.SQLDataset(db.url, table, key="id")
    return tfd.DataLoader(
        ds, batch_size=64, shuffle=shuffle, seed=1, num_workers=workers, on_change="continue", **kw
    )


def _ids(loader) -> list[int]:
    return [i for b in loader for i in b["id"].tolist()]


def _head(db, table, batches=6, **kw):
    loader = _loader(db, table, **kw)
    it = iter(loader)
    head = [i for _ in range(batches) for i in next(it)["id"].tolist()]
    state = json.loads(json.dumps(loader.state_dict()))
    del it
    return head, state


@pytest.mark.parametrize(("shuffle", "workers"), [(True, 0), (True, 2), (False, 0)])
def test_an_epoch_continues_over_deleted_inserted_and_rekeyed_rows(items, shuffle, workers):
    db, table = items
    head, state = _head(db, table, shuffle=shuffle)
    untouched = sorted(set(range(N_ROWS)) - set(head))
    deleted = head[:10] + untouched[:10] + untouched[-10:]  # delivered and not
    db.execute(f'DELETE FROM "{table}" WHERE id IN ({", ".join(map(str, deleted))})')
    db.execute(f'UPDATE "{table}" SET id = id + 10000 WHERE id IN ({untouched[20]}, {head[20]})')
    for i in range(5000, 5030):
        db.execute(f"INSERT INTO \"{table}\" VALUES ({i}, 1.0, 0, 's')")
    resumed = _loader(db, table, workers=workers, shuffle=shuffle)
    resumed.load_state_dict(state)
    rest = _ids(resumed)
    now = set(range(N_ROWS)) - set(deleted) - {untouched[20], head[20]}
    now |= {untouched[20] + 10000, head[20] + 10000} | set(range(5000, 5030))
    assert len(rest) == len(set(rest)) and not set(rest) & set(head)  # never twice
    assert set(rest) <= now and not set(rest) & set(deleted)  # never a deleted row
    c = resumed.stats.source_changes
    assert c["rows_then"] == N_ROWS and c["rows_now"] == len(now)
    assert c["done_then"] == len(head)
    # every row of today is delivered this epoch, or lies on the done side of the cut
    assert len(rest) == len(now) - c["done_now"]
    if not shuffle:  # in key order the cut is a key: every key above it is in the rest
        assert set(rest) == {i for i in now if i > max(head)}
    assert sorted(_ids(resumed)) == sorted(now)  # the next epoch: all of today's rows


def test_unchanged_rows_resume_exactly_as_the_uninterrupted_epoch(items):
    db, table = items
    full = _ids(_loader(db, table))
    head, state = _head(db, table)
    resumed = _loader(db, table, workers=2)
    resumed.load_state_dict(state)
    assert head + _ids(resumed) == full and resumed.stats.source_changes is None


def test_the_default_still_names_the_change(items):
    db, table = items
    _, state = _head(db, table)
    db.execute(f'DELETE FROM "{table}" WHERE id = 7')
    loader = tfd.DataLoader(
        tfd.SQLDataset(db.url, table, key="id"), batch_size=64, shuffle=True, seed=1
    )
    with pytest.raises(tfd.SourceChangedError, match="2000 rows then, 1999 now"):
        loader.load_state_dict(state)


def test_only_a_keyed_map_style_source_with_the_loaders_sampler_continues(items):
    db, table = items
    ds = tfd.SQLDataset(db.url, table, key="id")
    with pytest.raises(tfd.ConfigError, match="on_change must be 'raise' or 'continue'"):
        tfd.DataLoader(ds, batch_size=8, on_change="skip")
    for bad in (
        dict(sampler=tfd.WeightedSampler(list(range(N_ROWS)), seed=0)),
        dict(batch_size=None),
    ):
        with pytest.raises(tfd.ConfigError, match="needs a map-style source with a key"):
            tfd.DataLoader(ds, **{"batch_size": 8, **bad}, on_change="continue")
    keyed = tfd.SQLStream(db.url, table=table, key="id")  # goes on by key (test_stream.py)
    tfd.DataLoader(keyed, batch_size=8, on_change="continue")
    for stream in (
        tfd.SQLStream(db.url, table=table),
        tfd.SQLStream(db.url, table=table, key="id", shuffle_buffer=10),
    ):
        with pytest.raises(tfd.ConfigError, match="a SQLStream needs key= and no shuffle buffer"):
            tfd.DataLoader(stream, batch_size=8, on_change="continue")
    memory = tfd.MemoryDataset({"id": list(range(10))})
    with pytest.raises(tfd.ConfigError, match="needs a map-style source with a key"):
        tfd.DataLoader(memory, batch_size=2, on_change="continue")


def test_another_table_is_refused_even_when_continuing(items, db):
    db_, table = items
    _, state = _head(db_, table)
    other = db.make_items()
    with pytest.raises(tfd.StateError, match="on_change='continue' resumes the same source only"):
        _loader(db, other).load_state_dict(state)
