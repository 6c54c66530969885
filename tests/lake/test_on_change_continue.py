"""``LakeDataset(key=...)`` with ``on_change="continue"``: an epoch resumed over a lake whose files
were added, removed and rewritten delivers every key of today's rows not delivered before the
checkpoint, each once, never a removed one (NOTE [ Continuing over changed data ] in
key_order.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tensorfeed as tfd

from .conftest import N_ROWS, ROWS_PER_FILE


def _loader(root: Path, workers: int = 0, shuffle: bool = True, **kw):
    ds = tfd.LakeDataset(str(root), key="id", **kw)
    return tfd.DataLoader(
        ds, batch_size=32, shuffle=shuffle, seed=3, num_workers=workers, on_change="continue"
    )


def _ids(loader) -> list[int]:
    return [i for b in loader for i in b["id"].tolist()]


def _head(root: Path, shuffle: bool, batches: int = 4):
    loader = _loader(root, shuffle=shuffle)
    it = iter(loader)
    head = [i for _ in range(batches) for i in next(it)["id"].tolist()]
    state = json.loads(json.dumps(loader.state_dict()))
    del it
    return head, state


def _file_rows(n: int, first: int) -> pa.Table:
    ids = np.arange(first, first + n, dtype=np.int64)
    return pa.table({"id": ids, "age": ids % 50, "x": ids * 0.5, "label": ids % 2})


@pytest.mark.parametrize(("shuffle", "workers"), [(True, 0), (True, 2), (False, 0)])
def test_an_epoch_continues_over_files_added_removed_and_rewritten(local_lake, shuffle, workers):
    head, state = _head(local_lake, shuffle)
    files = sorted(local_lake.rglob("*.parquet"))
    removed = pq.read_table(files[1]).column("id").to_pylist()
    files[1].unlink()
    rewritten = pq.read_table(files[2])
    dropped = rewritten.column("id").to_pylist()[::3]  # a third of its rows go, the rest stay
    kept = rewritten.filter(pa.compute.invert(pa.compute.is_in(rewritten["id"], pa.array(dropped))))
    pq.write_table(kept.set_column(2, "x", pa.array(np.full(len(kept), -1.0))), files[2])
    pq.write_table(_file_rows(40, 10**6), files[0].with_name("part-9.parquet"))  # a new file
    now = (set(range(N_ROWS)) - set(removed) - set(dropped)) | set(range(10**6, 10**6 + 40))

    resumed = _loader(local_lake, workers=workers, shuffle=shuffle)
    resumed.load_state_dict(state)
    batches = list(resumed)
    rest = [i for b in batches for i in b["id"].tolist()]
    assert len(rest) == len(set(rest)) and not set(rest) & set(head)  # never a key twice
    assert set(rest) <= now  # never a removed row
    c = resumed.stats.source_changes
    assert (c["rows_then"], c["rows_now"], c["done_then"]) == (N_ROWS, len(now), len(head))
    assert len(rest) == len(now) - c["done_now"]  # the rest of today's rows, all of them
    if not shuffle:  # in key order the cut is a key: every key above it is in the rest
        assert set(rest) == {i for i in now if i > max(head)}
    # the rewritten file is read as it is now
    xs = {i: x for b in batches for i, x in zip(b["id"].tolist(), b["x"].tolist())}
    assert all(xs[i] == -1.0 for i in set(kept.column("id").to_pylist()) & set(xs))
    assert sorted(_ids(resumed)) == sorted(now)  # the next epoch: every row of today


def test_an_unchanged_lake_resumes_exactly_as_the_uninterrupted_epoch(local_lake):
    full = _ids(_loader(local_lake))
    head, state = _head(local_lake, shuffle=True)
    resumed = _loader(local_lake, workers=2)
    resumed.load_state_dict(state)
    assert head + _ids(resumed) == full and resumed.stats.source_changes is None


def test_the_default_still_names_the_change(local_lake):
    _, state = _head(local_lake, shuffle=True)
    next(local_lake.rglob("*.parquet")).unlink()
    loader = tfd.DataLoader(tfd.LakeDataset(str(local_lake), key="id"), batch_size=32, seed=3)
    with pytest.raises(tfd.SourceChangedError, match=r"1 file\(s\) removed"):
        loader.load_state_dict(state)


def test_a_key_is_needed_unique_and_a_column(local_lake, tmp_path):
    with pytest.raises(tfd.ConfigError, match=r"has no key: pass LakeDataset\(\.\.\., key="):
        tfd.DataLoader(tfd.LakeDataset(str(local_lake)), batch_size=8, on_change="continue")
    with pytest.raises(tfd.NotFoundError, match="'patient' is not in the lake"):
        tfd.LakeDataset(str(local_lake), key="patient")
    twice = tmp_path / "twice"
    twice.mkdir()
    for name in ("a", "b"):
        pq.write_table(_file_rows(ROWS_PER_FILE, 0), twice / f"{name}.parquet")
    with pytest.raises(tfd.DataError, match=r"key 'id' of lake .* is not unique: 60 value"):
        tfd.DataLoader(tfd.LakeDataset(str(twice), key="id"), batch_size=8, on_change="continue")
    # the key is read even when columns= leaves it out; batches then carry it
    ds = tfd.LakeDataset(str(local_lake), columns=["x"], key="id")
    assert sorted(ds.key_index().tolist()) == list(range(N_ROWS))


def test_a_lake_stream_does_not_continue(local_lake):
    with pytest.raises(tfd.ConfigError, match="on_change='continue' needs"):
        tfd.DataLoader(tfd.LakeStream(str(local_lake)), batch_size=8, on_change="continue")
