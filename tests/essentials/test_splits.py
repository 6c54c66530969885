"""tfd.split / tfd.random_split: exact partitions, stable, independent of row order."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorfeed as tfd
from tensorfeed.splitting import Subset, stable_hash
from tests.resume_helpers import assert_resumes_exactly_once, read

from .conftest import make_data


def _fractions(raw: list[int]) -> dict[str, float]:
    total = sum(raw)
    fr = [r / total for r in raw]
    fr[-1] = 1.0 - sum(fr[:-1])
    return {f"part{i}": f for i, f in enumerate(fr)}


fractions_st = st.lists(st.integers(0, 10), min_size=1, max_size=4).filter(lambda r: sum(r) > 0)


@settings(max_examples=40, deadline=None, database=None)
@given(n=st.integers(0, 300), raw=fractions_st, seed=st.integers(0, 2**40))
def test_split_partitions_exactly_and_is_stable(n, raw, seed):
    ds = tfd.MemoryDataset(make_data(n) if n else {"id": np.zeros(0, dtype=np.int64)})
    fr = _fractions(raw)
    parts = tfd.split(ds, fr, seed=seed)
    assert list(parts) == list(fr)
    idx = np.concatenate([p.indices for p in parts.values()])
    assert sorted(idx.tolist()) == list(range(n))  # every row exactly once
    again = tfd.split(ds, fr, seed=seed)
    assert all(np.array_equal(parts[k].indices, again[k].indices) for k in fr)


@settings(max_examples=30, deadline=None, database=None)
@given(n=st.integers(1, 200), raw=fractions_st, seed=st.integers(0, 1000), perm_seed=st.integers())
def test_split_by_key_does_not_depend_on_row_order(n, raw, seed, perm_seed):
    data = make_data(n)
    perm = np.random.default_rng(abs(perm_seed)).permutation(n)
    shuffled = {k: v[perm] for k, v in data.items()}
    fr = _fractions(raw)
    a = tfd.split(tfd.MemoryDataset(data), fr, seed=seed, key="id")
    b = tfd.split(tfd.MemoryDataset(shuffled), fr, seed=seed, key="id")
    for name in fr:
        assert set(a[name].column("id").tolist()) == set(b[name].column("id").tolist())


@settings(max_examples=30, deadline=None, database=None)
@given(n=st.integers(1, 300), raw=fractions_st, seed=st.integers(0, 1000))
def test_stratified_split_keeps_class_proportions(n, raw, seed):
    ds = tfd.MemoryDataset(make_data(n, seed=seed))
    fr = _fractions(raw)
    parts = tfd.split(ds, fr, seed=seed, stratify="y", key="id")
    labels = ds.column("y")
    for name, f in fr.items():
        got = parts[name].column("y")
        for c in (0, 1):
            n_c = int((labels == c).sum())
            assert abs(int((got == c).sum()) - f * n_c) <= 1.0 + 1e-9


@settings(max_examples=30, deadline=None, database=None)
@given(n=st.integers(1, 300), raw=fractions_st, seed=st.integers(0, 1000), strat=st.booleans())
def test_group_split_never_leaks_a_group(n, raw, seed, strat):
    ds = tfd.MemoryDataset(make_data(n, seed=seed))
    parts = tfd.split(ds, _fractions(raw), seed=seed, group="user", stratify="y" if strat else None)
    owner: dict[int, str] = {}
    for name, part in parts.items():
        for g in set(part.column("user").tolist()):
            assert owner.setdefault(g, name) == name
    assert sum(len(p) for p in parts.values()) == n


def test_split_sizes_follow_the_fractions_and_subsets_behave(ds):
    big = tfd.MemoryDataset(make_data(5000))
    parts = tfd.split(big, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0)
    assert abs(len(parts["train"]) - 4000) < 150 and abs(len(parts["val"]) - 500) < 80
    train = parts["train"]
    assert isinstance(train, Subset) and train.spec == big.spec
    row = train[3]
    assert row["id"] == big[int(train.indices[3])]["id"]
    batch = next(iter(tfd.DataLoader(train, batch_size=32)))
    assert batch["id"].tolist() == big.column("id")[train.indices[:32]].tolist()
    assert train.fingerprint() != parts["val"].fingerprint() != big.fingerprint()
    nested = tfd.split(train, {"a": 0.5, "b": 0.5}, key="id")  # a subset splits again
    assert len(nested["a"]) + len(nested["b"]) == len(train)


def test_the_seed_changes_the_assignment(ds):
    a = tfd.split(ds, {"t": 0.5, "v": 0.5}, seed=0)["t"].indices
    b = tfd.split(ds, {"t": 0.5, "v": 0.5}, seed=1)["t"].indices
    assert not np.array_equal(a, b)


def test_hash_is_stable_across_types_and_runs():
    # pinned values: a change here would move rows between splits for every existing user
    assert (
        stable_hash(np.array([0, 1, 2**40]), seed=0).tolist()
        == stable_hash(np.array([0, 1, 2**40], dtype=np.int64), seed=0).tolist()
    )
    strs = stable_hash(np.array(["a", "b", "a"], dtype=object), seed=3)
    assert strs[0] == strs[2] != strs[1]
    arrow = pa.array(["a", "b", "a"]).to_numpy(zero_copy_only=False)
    assert stable_hash(arrow, seed=3).tolist() == strs.tolist()
    assert int(stable_hash(np.array([42]), 0)[0]) == int(stable_hash(np.array([42]), 0)[0])


def test_string_keys_and_dataset_key_attribute(ds):
    data = make_data(50)
    data["name"] = np.array([f"row-{i}" for i in range(50)], dtype=object)
    mem = tfd.MemoryDataset(data)
    by_name = tfd.split(mem, {"a": 0.5, "b": 0.5}, key="name")
    mem.key = "name"  # a dataset's own key (SQLDataset has one) is the default
    by_attr = tfd.split(mem, {"a": 0.5, "b": 0.5})
    assert np.array_equal(by_name["a"].indices, by_attr["a"].indices)


@pytest.mark.parametrize(
    ("fractions", "match"),
    [
        ({"train": 0.8, "val": 0.1}, "sum to 1"),
        ({"train": 0.8, "val": 0.3, "test": -0.1}, "'test' is -0.1"),
        ({"train": 1.0000001}, None),  # within the 1e-6 tolerance: fine
        ({}, "non-empty"),
        ([0.5, 0.5], "dict"),
        ({"a": float("nan"), "b": 1.0}, "'a' is nan"),
    ],
)
def test_bad_fractions(ds, fractions, match):
    if match is None:
        assert len(tfd.split(ds, fractions)["train"]) == len(ds)
        return
    with pytest.raises(tfd.ConfigError, match=match):
        tfd.split(ds, fractions)


@pytest.mark.parametrize("arg", ["stratify", "group", "key"])
def test_missing_columns_are_named(ds, arg):
    with pytest.raises(tfd.NotFoundError, match="'nope'"):
        tfd.split(ds, {"a": 0.5, "b": 0.5}, **{arg: "nope"})


def test_random_split_mirrors_torch(ds):
    g = torch.Generator().manual_seed(42)
    ours = tfd.random_split(ds, [0.7, 0.2, 0.1], generator=g)
    theirs = torch.utils.data.random_split(
        range(len(ds)), [0.7, 0.2, 0.1], generator=torch.Generator().manual_seed(42)
    )
    assert [list(o.indices) for o in ours] == [list(t.indices) for t in theirs]
    counts = tfd.random_split(ds, [100, 20])
    assert [len(c) for c in counts] == [100, 20]
    assert [list(c.indices) for c in counts] == [
        list(c.indices) for c in tfd.random_split(ds, [100, 20])
    ]
    plain = tfd.random_split(list(range(10)), [5, 5])  # any torch-style dataset
    assert isinstance(plain[0], torch.utils.data.Subset)
    with pytest.raises(tfd.ConfigError, match="lengths"):
        tfd.random_split(ds, [100, 30])
    with pytest.raises(tfd.ConfigError, match=r"lengths\[1\] is -0.2"):
        tfd.random_split(ds, [1.2, -0.2])


def test_stream_splits_partition_the_stream_and_match_the_map_split(data):
    stream = tfd.MemoryStream(data, chunk_rows=16)
    fr = {"train": 0.7, "val": 0.3}
    parts = tfd.split(stream, fr, seed=5, key="id")
    got = {
        name: sorted(
            i for b in tfd.DataLoader(p, batch_size=10, num_workers=w) for i in b["id"].tolist()
        )
        for (name, p), w in zip(parts.items(), (2, 0))
    }
    want = tfd.split(tfd.MemoryDataset(data), fr, seed=5, key="id")
    for name in fr:
        assert got[name] == sorted(want[name].column("id").tolist())
    with pytest.raises(tfd.ConfigError, match="stratify"):
        tfd.split(stream, fr, stratify="y")
    with pytest.raises(tfd.ConfigError, match="key="):
        tfd.split(stream, fr)
    bad = tfd.split(stream, fr, key="nope")["train"]
    with pytest.raises(tfd.NotFoundError, match="'nope'"):
        list(tfd.DataLoader(bad, batch_size=4))


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_split_resumes_mid_epoch(data, workers):
    def loader():
        stream = tfd.MemoryStream(data, chunk_rows=8, shuffle_buffer=20, seed=3)
        part = tfd.split(stream, {"train": 0.6, "val": 0.4}, key="id")["train"]
        return tfd.DataLoader(part, batch_size=6, num_workers=workers)

    full = [b["id"].tolist() for b in loader()]
    first = loader()
    it = iter(first)
    head = [next(it)["id"].tolist() for _ in range(4)]
    state = first.state_dict()
    del it
    second = loader()
    second.load_state_dict(state)
    assert head + [b["id"].tolist() for b in second] == full


@pytest.mark.parametrize("buffer", [0, 20])
def test_a_split_of_a_replayed_stream_resumes_on_any_topology(data, buffer):
    """NOTE [ Checkpoints of filtered streams ]: a count of kept rows regroups by replaying the
    old shards up to their last kept row; chained hops, with and without a shuffle buffer."""

    def loader(workers):
        stream = tfd.MemoryStream(data, chunk_rows=8, shuffle_buffer=buffer, seed=3)
        part = tfd.split(stream, {"a": 0.5, "b": 0.5}, key="id")
        return tfd.DataLoader(part["a"], batch_size=4, num_workers=workers)

    want = sorted(i for b in loader(0) for i in b["id"].tolist())
    assert 0 < len(want) < len(data["id"])
    assert_resumes_exactly_once(
        loader, want, [(2, 0, 3), (0, 3, 1), (3, 2, 2)], cuts=(0, 1, 4, "last")
    )
    _, state = read(loader, 2, "id", take=2)
    moved = loader(0)
    moved.load_state_dict(state)
    position = moved.state_dict()["fetcher_state"]["dataset_iter_state"]["position"]
    assert set(position) == {"inner", "kept", "carry"} and position["kept"] == 0


def test_a_split_position_that_is_not_a_count_is_refused(data):
    def loader(workers):
        part = tfd.split(tfd.MemoryStream(data, chunk_rows=8), {"a": 0.5, "b": 0.5}, key="id")
        return tfd.DataLoader(part["a"], batch_size=4, num_workers=workers)

    for bad in (-1, {"inner": 0}, {"inner": 0, "kept": -2}, 10_000):
        _, state = read(loader, 2, "id", take=2)
        state["_snapshot"]["_worker_snapshots"]["worker_1"]["fetcher_state"]["dataset_iter_state"][
            "position"
        ] = bad
        with pytest.raises(tfd.StateError, match="position"):
            loader(0).load_state_dict(state)


def test_a_balanced_stream_resumes_on_any_topology_with_its_class_counts(data):
    """NOTE [ Checkpoints of filtered streams ]: the old shards are replayed (their draws are
    seeded by shard), nothing is delivered twice, the new shards start from the class counts
    seen so far, and the resumed epoch stays balanced."""
    ids = np.arange(2000)
    labels = (ids % 10 == 0).astype(np.int64)  # 10% positives

    def loader(workers):
        stream = tfd.MemoryStream({"id": ids, "y": labels}, chunk_rows=64)
        balanced = tfd.balance_stream(stream, label="y", seed=1)
        return tfd.DataLoader(balanced, batch_size=16, num_workers=workers)

    whole, _ = read(loader, 2, "id")
    head, state = read(loader, 2, "id", take=10)
    tail, _ = read(loader, 2, "id", state)
    assert head + tail == whole  # the same topology: the same draws
    for b, c in [(0, 3), (3, 1)]:
        head, state = read(loader, 2, "id", take=10)
        mid, state = read(loader, b, "id", state, take=5)
        rest, _ = read(loader, c, "id", state)
        got = head + mid + rest
        assert len(got) == len(set(got)), f"{len(got) - len(set(got))} rows twice"
        positives = sum(1 for i in got if i % 10 == 0) / len(got)
        assert 0.35 < positives < 0.65, positives


def test_a_balanced_checkpoint_of_an_earlier_version_is_refused(data):
    def loader(workers):
        stream = tfd.balance_stream(tfd.MemoryStream(data, chunk_rows=8), label="y", seed=1)
        return tfd.DataLoader(stream, batch_size=4, num_workers=workers)

    _, state = read(loader, 2, "id", take=2)
    state["_snapshot"]["_worker_snapshots"]["worker_1"]["fetcher_state"]["dataset_iter_state"][
        "position"
    ] = 8  # an earlier tensorfeed counted kept rows
    for workers in (2, 0):  # the same topology (at the first batch), and another (at load)
        resumed = loader(workers)
        with pytest.raises(tfd.StateError, match="earlier tensorfeed"):
            resumed.load_state_dict(state)
            list(resumed)
