"""Weighted, balanced and hard-example samplers: deterministic, checkpointable, DDP-aware."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorfeed as tfd

from .conftest import ids, roundtrip


def test_weighted_sampler_follows_the_weights_and_never_draws_zero_weight():
    s = tfd.WeightedSampler([0.0, 1.0, 3.0], num_samples=20_000, seed=1)
    counts = np.bincount(np.array(list(s)), minlength=3)
    assert counts[0] == 0
    assert counts[2] / counts[1] == pytest.approx(3.0, rel=0.08)


def test_weighted_without_replacement_is_a_weighted_permutation():
    s = tfd.WeightedSampler([1, 0, 5, 2, 1], replacement=False, num_samples=4)
    drawn = list(s)
    assert sorted(drawn) == [0, 2, 3, 4]
    with pytest.raises(tfd.ConfigError, match="positive"):
        tfd.WeightedSampler([1, 0, 0], replacement=False, num_samples=2)


def test_same_seed_and_epoch_same_draw_new_epoch_new_draw():
    a = tfd.WeightedSampler(np.arange(1, 50), seed=7)
    b = tfd.WeightedSampler(np.arange(1, 50), seed=7)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    assert list(tfd.WeightedSampler(np.arange(1, 50), seed=8)) != first


def test_samplers_do_not_touch_the_global_rngs():
    torch.manual_seed(0)
    np.random.seed(0)
    before = (torch.rand(1).item(), np.random.random())
    torch.manual_seed(0)
    np.random.seed(0)
    list(tfd.WeightedSampler([1, 2, 3]))
    list(tfd.BalancedSampler([0, 1, 1]))
    list(tfd.HardExampleSampler(5))
    assert (torch.rand(1).item(), np.random.random()) == before


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ([1.0, float("nan"), 2.0], r"weights\[1\] is nan"),
        ([1.0, 2.0, -0.5], r"weights\[2\] is -0.5.*>= 0"),
        ([0, 0, 0], "all 3 weights are zero"),
        ([1.0, float("inf")], r"weights\[1\] is inf"),
    ],
)
def test_bad_weights_are_named(weights, match):
    with pytest.raises(tfd.ConfigError, match=match):
        tfd.WeightedSampler(weights)


def test_balanced_over_and_under_give_equal_classes():
    labels = np.array([0] * 90 + [1] * 10 + [2] * 20)
    over = tfd.BalancedSampler(labels, mode="over")
    assert over.class_counts() == {0: 90, 1: 90, 2: 90} and len(over) == 270
    drawn = labels[np.array(list(over))]
    assert np.bincount(drawn).tolist() == [90, 90, 90]
    # oversampling repeats whole shuffled passes: every minority row comes up 9 times
    assert set(np.bincount(np.array(list(over)))[90:100]) == {9}
    under = tfd.BalancedSampler(labels, mode="under")
    assert under.class_counts() == {0: 10, 1: 10, 2: 10}
    assert len(set(under)) == 30  # no row twice


def test_balanced_reads_only_the_label_column_of_a_dataset(ds):
    calls = []
    real = ds.column

    def spy(name):
        calls.append(name)
        return real(name)

    ds.column = spy  # type: ignore[method-assign]
    s = tfd.BalancedSampler("y", dataset=ds, mode="under")
    assert calls == ["y"]
    counts = s.class_counts()
    assert counts[0] == counts[1] == int(ds.column("y").sum())


def test_balanced_unknown_column_and_bad_arguments(ds):
    with pytest.raises(tfd.NotFoundError, match="'label'"):
        tfd.BalancedSampler("label", dataset=ds)
    with pytest.raises(tfd.ConfigError, match="pass the dataset"):
        tfd.BalancedSampler("y")
    with pytest.raises(tfd.ConfigError, match="mode"):
        tfd.BalancedSampler([0, 1], mode="sideways")
    with pytest.raises(tfd.ConfigError, match="class 'z'"):
        tfd.BalancedSampler(["a", "b"], ratios={"z": 1})


@settings(max_examples=40, deadline=None, database=None)
@given(
    counts=st.lists(st.integers(1, 40), min_size=2, max_size=5),
    ratios=st.lists(st.integers(1, 5), min_size=5, max_size=5),
    mode=st.sampled_from(["over", "under"]),
    seed=st.integers(0, 2**31),
)
def test_balanced_sampling_converges_to_the_requested_ratio(counts, ratios, mode, seed):
    labels = np.repeat(np.arange(len(counts)), counts)
    want = {c: ratios[c] for c in range(len(counts))}
    s = tfd.BalancedSampler(labels, mode=mode, seed=seed, ratios=want)
    drawn = np.bincount(labels[np.array(list(s), dtype=np.int64)], minlength=len(counts))
    total = drawn.sum()
    assert total == len(s)
    shares = np.array([want[c] for c in range(len(counts))], dtype=float)
    expected = total * shares / shares.sum()
    assert np.all(np.abs(drawn - expected) < 1.0 + 1e-9)  # exact up to rounding
    if mode == "under":
        assert np.all(drawn <= counts)  # nothing repeated
    else:
        assert np.any(drawn >= counts)  # the scarcest class relative to its ratio is whole


def test_hard_examples_come_up_more_often():
    s = tfd.HardExampleSampler(10, seed=0, num_samples=20_000, uniform=0.1)
    assert np.allclose(s.probabilities(), 0.1)  # nothing known yet: uniform
    s.update(torch.arange(10), torch.tensor([0.0] * 9 + [9.0]))
    p = s.probabilities()
    assert p[9] == pytest.approx(0.9 + 0.01) and p[0] == pytest.approx(0.01)
    counts = np.bincount(np.array(list(s)), minlength=10)
    assert counts[9] > 0.85 * 20_000 and counts[:9].min() > 0  # the floor keeps every example
    s.update([9], [0.0])  # smoothing: moving average 0.5 * 9 + 0.5 * 0
    assert s.losses[9] == pytest.approx(4.5)
    with pytest.raises(tfd.ConfigError, match="index 3"):
        s.update([3], [float("nan")])


def test_hard_example_state_carries_the_loss_table_and_resumes_mid_epoch():
    s = tfd.HardExampleSampler(50, seed=4)
    s.update(np.arange(50), np.linspace(0, 2, 50))
    it = iter(s)
    head = [next(it) for _ in range(20)]
    state = roundtrip(s.state_dict())
    s.update(np.arange(50), np.ones(50))  # a later update must not change this epoch's draw
    tail = list(it)
    fresh = tfd.HardExampleSampler(50, seed=4)
    fresh.load_state_dict(state)
    assert list(fresh) == tail
    assert len(head) + len(tail) == 50
    assert isinstance(state["losses"], str)  # base64 float32, ~5.3 bytes per example
    with pytest.raises(tfd.StateError, match="num_items"):
        tfd.HardExampleSampler(49, seed=4).load_state_dict(state)


def test_state_from_another_sampler_configuration_is_refused():
    a = tfd.WeightedSampler([1, 2, 3])
    with pytest.raises(tfd.StateError, match="weights"):
        tfd.WeightedSampler([1, 2, 4]).load_state_dict(a.state_dict())
    with pytest.raises(tfd.StateError, match="sampler"):
        tfd.BalancedSampler([0, 1, 1]).load_state_dict(a.state_dict())


def _rank_shares(make, world):
    return [list(make(rank=r, world_size=world)) for r in range(world)]


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_draw_disjoint_equal_shares_of_one_draw(world):
    def make(**kw):
        return tfd.WeightedSampler(np.arange(1, 41), replacement=False, seed=2, **kw)

    shares = _rank_shares(make, world)
    assert len({len(s) for s in shares}) == 1
    flat = [i for s in shares for i in s]
    pad = len(flat) - 40
    assert set(flat) == set(range(40)) and 0 <= pad < world  # "pad" repeats < world indices
    drop = [list(make(ddp="drop", rank=r, world_size=world)) for r in range(world)]
    flat = [i for s in drop for i in s]
    assert len(flat) == len(set(flat)) == 40 - 40 % world

    bal = [
        list(tfd.BalancedSampler([0] * 30 + [1] * 7, seed=1, rank=r, world_size=world))
        for r in range(world)
    ]
    one = list(tfd.BalancedSampler([0] * 30 + [1] * 7, seed=1))
    padded = one + one[: -len(one) % world]
    assert bal == [padded[r::world] for r in range(world)]  # positions of the same draw


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("kind", ["weighted", "balanced", "hard"])
def test_loader_resume_mid_epoch_equals_uninterrupted(ds, kind, workers):
    def make():
        if kind == "weighted":
            return tfd.WeightedSampler(np.linspace(0.1, 1, len(ds)), seed=3)
        if kind == "balanced":
            return tfd.BalancedSampler("y", dataset=ds, seed=3)
        s = tfd.HardExampleSampler(len(ds), seed=3)
        s.update(np.arange(len(ds)), np.linspace(0, 1, len(ds)))
        return s

    def loader(sampler):
        return tfd.DataLoader(ds, batch_size=16, sampler=sampler, num_workers=workers, seed=5)

    full = ids(loader(make()))
    interrupted = loader(make())
    it = iter(interrupted)
    head = [next(it)["id"].tolist() for _ in range(3)]
    state = roundtrip(interrupted.state_dict())
    del it
    resumed = loader(make())
    resumed.load_state_dict(state)
    assert head + ids(resumed) == full
    # and the following epoch is the same as the uninterrupted run's next epoch
    again = loader(make())
    ids(again)
    assert ids(resumed) == ids(again)


def _train_with_hard_examples(ds, loader, sampler, epochs, stop_after=None):
    """Feed each batch's 'loss' (here: a function of the id) back to the sampler."""
    seen = []
    for _ in range(epochs):
        for k, batch in enumerate(loader):
            rows = (batch["id"] - 11) // 7  # dataset index of each row
            sampler.update(rows, batch["x"].double())
            seen.append(batch["id"].tolist())
            if stop_after is not None and len(seen) == stop_after:
                return seen, k
    return seen, None


@pytest.mark.parametrize("workers", [0, 2])
def test_hard_example_sampler_in_a_training_loop_resumes_exactly(ds, workers):
    """With workers the loader's snapshot predates the last loss updates, so the loop's own
    table (loop_state_dict) goes into the checkpoint too; with 0 workers it is not needed."""

    def setup():
        s = tfd.HardExampleSampler(len(ds), seed=9)
        return s, tfd.DataLoader(ds, batch_size=16, sampler=s, seed=1, num_workers=workers)

    s, dl = setup()
    full, _ = _train_with_hard_examples(ds, dl, s, epochs=3)

    s1, dl1 = setup()
    head, _ = _train_with_hard_examples(ds, dl1, s1, epochs=3, stop_after=11)
    state = roundtrip({"loader": dl1.state_dict(), "losses": s1.loop_state_dict()})
    s2, dl2 = setup()
    dl2.load_state_dict(state["loader"])
    if workers:
        s2.load_loop_state_dict(state["losses"])
    tail, _ = _train_with_hard_examples(ds, dl2, s2, epochs=2)  # rest of epoch 1, then epoch 2
    assert head + tail == full
