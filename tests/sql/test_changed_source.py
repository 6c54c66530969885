"""A SQL dataset that changed between a checkpoint and its resume is a SourceChangedError naming
the key ranges that changed, on SQLite and PostgreSQL; the same rows resume as before."""

from __future__ import annotations

import json

import pytest

import tensorfeed as tfd


def _checkpoint(db, table, cut=3):
    loader = tfd.DataLoader(
        tfd.SQLDataset(db.url, table, key="id"), batch_size=64, shuffle=True, seed=1
    )
    it = iter(loader)
    for _ in range(cut):
        next(it)
    state = json.loads(json.dumps(loader.state_dict()))
    del it
    return state


def _resumed(db, table):
    return tfd.DataLoader(
        tfd.SQLDataset(db.url, table, key="id"), batch_size=64, shuffle=True, seed=1
    )


def test_delete_one_insert_one_names_both_key_ranges(items):
    db, table = items
    state = _checkpoint(db, table)
    db.execute(f'DELETE FROM "{table}" WHERE id = 250')
    db.execute(f"INSERT INTO \"{table}\" VALUES (5000, 1.0, 0, 's')")
    with pytest.raises(tfd.SourceChangedError) as err:
        _resumed(db, table).load_state_dict(state)
    msg = str(err.value)
    assert "2000 rows then, 2000 now" in msg
    assert "125 <= id < 250 (125 rows then, 125 now)" not in msg  # untouched ranges not named
    assert "250 <= id < 375 (125 rows then, 124 now)" in msg
    assert "id >= 1875 (125 rows then, 126 now)" in msg
    assert "start a new epoch" in msg


def test_unchanged_rows_resume_and_an_update_of_values_is_not_a_change(items):
    db, table = items
    state = _checkpoint(db, table)
    db.execute(f'UPDATE "{table}" SET v = -1 WHERE id = 7')  # same keys: same positions
    loader = _resumed(db, table)
    loader.load_state_dict(state)
    assert sum(len(b["id"]) for b in loader) == 2000 - 3 * 64


def test_an_update_of_a_key_is_a_change(items):
    db, table = items
    state = _checkpoint(db, table)
    db.execute(f'UPDATE "{table}" SET id = 4000 WHERE id = 10')
    with pytest.raises(tfd.SourceChangedError, match=r"id < 125 \(125 rows then, 124 now\)"):
        _resumed(db, table).load_state_dict(state)
