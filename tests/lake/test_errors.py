"""Bad input: each error has its class and a message that names the culprit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

import tensorfeed as tfd
from tensorfeed.errors import ConfigError, DataError, NotFoundError

from .conftest import ROW_GROUP, lake_tables, write_local


def _corrupt_row_group(path: Path, rg: int) -> None:
    """Overwrite the middle of row group ``rg``'s first column chunk, keeping the footer."""
    meta = pq.read_metadata(path)
    col = meta.row_group(rg).column(0)
    start = col.dictionary_page_offset or col.data_page_offset
    data = bytearray(path.read_bytes())
    for i in range(start + 4, start + col.total_compressed_size - 2):
        data[i] = 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("stream", [False, True])
def test_corrupt_row_group_names_file_and_row_group(local_lake: Path, stream: bool) -> None:
    victim = local_lake / "year=2021/region=EU/part-0.parquet"
    _corrupt_row_group(victim, 2)
    if stream:
        with pytest.raises(DataError, match=r"row group 2 of .*year=2021/region=EU") as err:
            list(tfd.DataLoader(tfd.LakeStream(str(local_lake)), batch_size=50))
    else:
        ds = tfd.LakeDataset(str(local_lake))  # the index is built from footers: it works
        first = 2 * 60  # third file in path order
        ds[first + ROW_GROUP * 2 - 1]  # row group 1 of the damaged file still reads
        with pytest.raises(DataError, match=r"row group 2 of .*year=2021/region=EU") as err:
            ds[first + ROW_GROUP * 2]
    assert "corrupt" in str(err.value)


def test_truncated_file_names_the_file(local_lake: Path) -> None:
    victim = local_lake / "year=2020/region=US/part-0.parquet"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.raises(DataError, match=r"year=2020/region=US/part-0.parquet") as err:
        tfd.LakeDataset(str(local_lake))
    assert "truncated" in str(err.value)


def test_schema_conflict_names_both_files_and_the_column(tmp_path: Path) -> None:
    root = tmp_path / "s"
    root.mkdir()
    pq.write_table(pa.table({"id": [1, 2], "age": [30, 40]}), root / "a.parquet")
    pq.write_table(pa.table({"id": [3], "age": ["forty"]}), root / "b.parquet")
    with pytest.raises(DataError) as err:
        tfd.LakeDataset(str(root))
    msg = str(err.value)
    assert "'age'" in msg and "a.parquet" in msg and "b.parquet" in msg
    pq.write_table(pa.table({"id": [3]}), root / "b.parquet")  # a missing column
    with pytest.raises(DataError, match=r"'age' is in .*a.parquet but not in .*b.parquet"):
        tfd.LakeStream(str(root))
    # selecting the common columns is the way out
    assert len(tfd.LakeDataset(str(root), columns=["id"])) == 3


def test_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="nowhere"):
        tfd.LakeDataset(str(tmp_path / "nowhere"))
    with pytest.raises(NotFoundError, match=r"no file matches the pattern .*\*\.parquet"):
        tfd.LakeDataset(str(tmp_path / "*.parquet"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotFoundError, match="holds no parquet files"):
        tfd.LakeStream(str(tmp_path / "empty"))


def test_filter_and_columns_on_unknown_columns(local_lake: Path) -> None:
    with pytest.raises(NotFoundError, match="'agee'") as err:
        tfd.LakeDataset(str(local_lake), filter=[("agee", ">", 3)])
    assert "available columns" in str(err.value) and "age" in str(err.value)
    with pytest.raises(NotFoundError, match="'regoin'"):
        tfd.LakeStream(str(local_lake), filter=pads.field("regoin") == "EU")
    with pytest.raises(NotFoundError, match="'nope'"):
        tfd.LakeDataset(str(local_lake), columns=["id", "nope"])
    with pytest.raises(NotFoundError, match="'wrong'"):
        tfd.LakeDataset(str(local_lake), features=["age", "wrong"], target="label")
    with pytest.raises(ConfigError, match="filter"):
        tfd.LakeDataset(str(local_lake), filter="age > 3")


@pytest.mark.parametrize("stream", [False, True])
def test_null_in_a_feature_names_file_and_row(tmp_path: Path, stream: bool) -> None:
    tables = lake_tables()
    rel = "year=2021/region=US/part-0.parquet"
    t = tables[rel]
    ages = t.column("age").to_pylist()
    ages[37] = None
    tables[rel] = t.set_column(t.schema.get_field_index("age"), "age", pa.array(ages, pa.int64()))
    root = write_local(tmp_path / "lake", tables)
    cls = tfd.LakeStream if stream else tfd.LakeDataset
    ds = cls(str(root), features=["age", "x"], target="label")
    with pytest.raises(DataError) as err:
        list(tfd.DataLoader(ds, batch_size=32))
    msg = str(err.value)
    assert "'age'" in msg and "row 37 of" in msg and rel in msg


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="format"):
        tfd.LakeDataset("/tmp", format="orc")
    with pytest.raises(ConfigError, match="storage option"):
        tfd.LakeDataset("s3://bucket/x", storage_options={"secret_key_typo": "x"})
    with pytest.raises(ConfigError, match="local disk"):
        tfd.LakeDataset("/tmp", storage_options={"key": "a"})
    with pytest.raises(ConfigError, match="scheme"):
        tfd.LakeDataset("gs://bucket/x")


def test_no_secret_in_any_message(tmp_path: Path) -> None:
    secret = "s3cr3t-value-should-never-show"
    with pytest.raises(ConfigError) as err:
        tfd.LakeDataset(f"s3://AKIA:{secret}@bucket/x", storage_options={"bogus": 1})
    assert secret not in str(err.value)
    assert np.all([secret not in a for a in err.value.args])
