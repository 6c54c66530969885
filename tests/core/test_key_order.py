"""The key order of on_change="continue" (key_order.py): a row's place depends on its own key,
seed and epoch only, so a cut found over other rows means the same rows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from tensorfeed import key_order


def test_a_keys_hash_does_not_depend_on_the_other_keys():
    few = key_order.as_keys(pa.array(["ab", "b"]), "t")
    more = key_order.as_keys(pa.array(["ab", "b", "x" * 300, "é"]), "t")
    assert (key_order._hashes(few, 3, 1) == key_order._hashes(more, 3, 1)[:2]).all()
    ints = np.arange(10, dtype=np.int64)
    assert (key_order._hashes(ints[:4], 3, 1) == key_order._hashes(ints, 3, 1)[:4]).all()
    assert (key_order._hashes(few, 3, 1) != key_order._hashes(few, 3, 2)).all()  # per epoch


def test_the_order_of_the_common_keys_is_kept_when_keys_come_and_go():
    old = key_order.as_keys(pa.array([f"k{i}" for i in range(500)]), "t")
    new = key_order.as_keys(pa.array([f"k{i}" for i in range(100, 700)] + ["z" * 50]), "t")
    order_old = old[key_order.sequence(old, True, 5, 0)].tolist()
    order_new = new[key_order.sequence(new, True, 5, 0)].tolist()
    common = set(order_old) & set(order_new)
    assert [k for k in order_old if k in common] == [k for k in order_new if k in common]
