"""The columns -> tensors core: dtype rules, NULL policy, padding, the fast collate path."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
import torch

import tensorfeed as tfd
from tensorfeed.columns import ColumnBatch, RowLocator, SampleSpec, arrow_column_to_tensors


def test_dtype_rules_from_arrow():
    table = pa.table(
        {
            "i8": pa.array([1, 2], pa.int8()),
            "u32": pa.array([1, 2], pa.uint32()),
            "f64": pa.array([1.5, 2.5], pa.float64()),
            "b": pa.array([True, False]),
            "ts": pa.array(
                [dt.datetime(1970, 1, 1, 0, 0, 1), dt.datetime(2024, 1, 1)], pa.timestamp("us")
            ),
            "d": pa.array([dt.date(1970, 1, 2), dt.date(1970, 1, 3)]),
            "s": pa.array(["a", "b"]),
            "bin": pa.array([b"x", b"y"]),
        }
    )
    batch = ColumnBatch(table, SampleSpec(), RowLocator("t"))
    out = tfd.collate(batch)
    assert out["i8"].dtype == torch.int64 and out["u32"].dtype == torch.int64
    assert out["f64"].dtype == torch.float32
    assert out["b"].dtype == torch.bool
    assert out["ts"].dtype == torch.int64 and out["ts"][0].item() == 1_000_000_000  # ns
    assert out["d"].tolist() == [1, 2]
    assert out["s"] == ["a", "b"] and out["bin"] == [b"x", b"y"]


def test_float_dtype_is_configurable():
    out = tfd.Collate(float_dtype=torch.float64)(
        ColumnBatch(pa.table({"x": [0.1, 0.2]}), SampleSpec(), RowLocator("t"))
    )
    assert out["x"].dtype == torch.float64 and out["x"][0].item() == 0.1


def test_list_columns_are_padded_with_lengths():
    table = pa.table({"tokens": pa.array([[1, 2, 3], [4], []])})
    out = tfd.collate(ColumnBatch(table, SampleSpec(), RowLocator("t")))
    assert out["tokens"].tolist() == [[1, 2, 3], [4, 0, 0], [0, 0, 0]]
    assert out["tokens_lengths"].tolist() == [3, 1, 0]


def test_null_in_tensor_column_names_column_and_key():
    table = pa.table({"order_id": [10, 11, 12], "amount": [1.0, None, 3.0]})
    batch = ColumnBatch(table, SampleSpec(), RowLocator("orders", key="order_id"))
    with pytest.raises(tfd.DataError, match=r"'amount'.*order_id=11"):
        tfd.collate(batch)


def test_features_target_stack_and_name_bad_rows():
    table = pa.table({"id": [1, 2], "a": [1, 2], "b": [0.5, 1.5], "y": [0, 1]})
    spec = SampleSpec(features=("a", "b"), target="y")
    x, y = tfd.collate(ColumnBatch(table, spec, RowLocator("t", key="id")))
    assert x.dtype == torch.float32 and x.tolist() == [[1.0, 0.5], [2.0, 1.5]]
    assert y.tolist() == [0, 1]
    bad = pa.table({"id": [1, 2], "a": ["1", "x"], "b": [0.5, 1.5], "y": [0, 1]})
    with pytest.raises(tfd.DataError, match=r"feature column 'a'.*not numeric"):
        tfd.collate(ColumnBatch(bad, spec, RowLocator("t", key="id")))
    nulls = pa.table({"id": [1, 2], "a": [1, None], "b": [0.5, 1.5], "y": [0, 1]})
    with pytest.raises(tfd.DataError, match=r"feature column 'a' is NULL.*id=2"):
        tfd.collate(ColumnBatch(nulls, spec, RowLocator("t", key="id")))


def test_columnbatch_is_a_sequence_of_samples_for_default_collate():
    table = pa.table({"a": [1, 2, 3], "b": [0.1, 0.2, 0.3]})
    batch = ColumnBatch(table, SampleSpec(), RowLocator("t"))
    assert len(batch) == 3 and batch[-1] == {"a": 3, "b": 0.3}
    default = torch.utils.data.default_collate(batch)
    fast = tfd.collate(batch)
    assert torch.equal(default["a"], fast["a"])
    assert torch.allclose(default["b"].float(), fast["b"])


def test_collate_of_plain_samples_pads_and_types():
    samples = [
        {"x": np.array([1.0, 2.0]), "n": 1, "s": "a", "ok": True},
        {"x": np.array([3.0]), "n": 2, "s": "b", "ok": False},
    ]
    out = tfd.collate(samples)
    assert out["x"].tolist() == [[1.0, 2.0], [3.0, 0.0]] and out["x_lengths"].tolist() == [2, 1]
    assert (
        out["n"].dtype == torch.int64 and out["ok"].dtype == torch.bool and out["s"] == ["a", "b"]
    )
    with pytest.raises(tfd.DataError, match="'n' is None"):
        tfd.collate([{"n": 1}, {"n": None}])


def test_pad_collate_pad_value_and_max_length():
    padded, lengths = tfd.pad_collate([[1, 2, 3, 4], [5]], pad_value=-1, max_length=3)
    assert padded.tolist() == [[1, 2, 3], [5, -1, -1]] and lengths.tolist() == [3, 1]
    with pytest.raises(tfd.ConfigError):
        tfd.pad_collate([[1]], max_length=-1)


def test_arrow_dictionary_and_fixed_size_lists():
    d = pa.array(["a", "b", "a"]).dictionary_encode()
    assert arrow_column_to_tensors(d, "c")["c"] == ["a", "b", "a"]
    fsl = pa.FixedSizeListArray.from_arrays(pa.array([1.0, 2.0, 3.0, 4.0]), 2)
    out = arrow_column_to_tensors(fsl, "v")
    assert out["v"].tolist() == [[1.0, 2.0], [3.0, 4.0]] and "v_lengths" not in out


def test_batch_transform_runs_on_whole_columns():
    collate = tfd.Collate(batch_transform=lambda b: {**b, "a2": b["a"] * 2})
    out = collate(ColumnBatch(pa.table({"a": [1, 2]}), SampleSpec(), RowLocator("t")))
    assert out["a2"].tolist() == [2, 4]
