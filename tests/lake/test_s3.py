"""The lake on S3: a moto server on 127.0.0.1, reached through pyarrow's S3 code path.

Requests are counted, and faults injected, by a loopback proxy on the wire (``_faulty_proxy``):
nothing in the S3 client is patched.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tensorfeed as tfd
from tensorfeed.errors import ConnectionFailedError, NotFoundError, SourceChangedError
from tests.resume_helpers import assert_resumes_exactly_once

from .conftest import N_ROWS, ROWS_PER_FILE, ids_of, lake_tables, parquet_bytes, s3_options


def test_reads_s3_like_local(s3_lake: str, moto_endpoint: str) -> None:
    ds = tfd.LakeDataset(s3_lake + "/", storage_options=s3_options(moto_endpoint))
    assert len(ds) == N_ROWS
    assert ds.schema.field("year").type == pa.int32()
    assert sorted(ds.column("id").tolist()) == list(range(N_ROWS))
    assert all(f.startswith(s3_lake) for f in ds.files)
    assert "testing" not in repr(ds) and "testing" not in ds.describe()
    st = tfd.LakeStream(s3_lake, storage_options=s3_options(moto_endpoint), shuffle_buffer=20)
    assert sorted(ids_of(tfd.DataLoader(st, batch_size=25))) == list(range(N_ROWS))


def test_glob_and_from_url_on_s3(s3_lake: str, moto_endpoint: str) -> None:
    ds = tfd.LakeDataset(
        s3_lake + "/year=2021/*/*.parquet", storage_options=s3_options(moto_endpoint)
    )
    assert len(ds) == 2 * ROWS_PER_FILE and set(ds.column("year").tolist()) == {2021}
    ds = tfd.LakeDataset.from_url(
        s3_lake, storage_options=s3_options(moto_endpoint), columns=["id"]
    )
    assert ds.schema.names == ["id"]


def test_standard_aws_environment_variables(
    s3_lake: str, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    ds = tfd.LakeDataset(s3_lake)  # no storage_options at all
    assert len(ds) == N_ROWS


@pytest.mark.parametrize("workers", [0, 2])
def test_exactly_once_with_workers(s3_lake: str, moto_endpoint: str, workers: int) -> None:
    opts = s3_options(moto_endpoint)
    ds = tfd.LakeDataset(s3_lake, storage_options=opts)
    got = ids_of(
        tfd.DataLoader(ds, batch_size=17, sampler=ds.locality_sampler(seed=1), num_workers=workers)
    )
    assert sorted(got) == list(range(N_ROWS))
    st = tfd.LakeStream(s3_lake, storage_options=opts, shuffle_buffer=30, seed=2)
    got = ids_of(tfd.DataLoader(st, batch_size=17, num_workers=workers))
    assert sorted(got) == list(range(N_ROWS))


def _keys(paths: list[str], bucket: str) -> set[str]:
    return {
        p.split("?")[0][len(bucket) + 2 :]
        for p in paths
        if p.startswith(f"/{bucket}/") and p.split("?")[0].endswith(".parquet")
    }


def test_excluded_partitions_are_never_requested(s3_lake: str, fresh_proxy: Any) -> None:
    bucket = s3_lake[5:].split("/")[0]
    opts = s3_options(fresh_proxy.endpoint)
    ds = tfd.LakeDataset(
        s3_lake, storage_options=opts, filter=[("year", "=", 2022), ("region", "=", "US")]
    )
    assert sorted(ds.column("id").tolist()) == list(range(N_ROWS - ROWS_PER_FILE, N_ROWS))
    st = tfd.LakeStream(s3_lake, storage_options=opts, filter=[("year", "=", 2022)])
    assert len(ids_of(tfd.DataLoader(st, batch_size=50))) == 2 * ROWS_PER_FILE
    touched = _keys(fresh_proxy.paths("GET") + fresh_proxy.paths("HEAD"), bucket)
    assert touched == {
        "patients/year=2022/region=US/part-0.parquet",
        "patients/year=2022/region=EU/part-0.parquet",
    }
    assert fresh_proxy.paths("GET")  # it did talk to S3, through the proxy


def test_excluded_row_groups_are_never_downloaded(boto: Any, bucket: str, fresh_proxy: Any) -> None:
    n, rg = 8 * 4096, 4096
    rng = np.random.default_rng(0)
    t = pa.table({"id": np.arange(n, dtype=np.int64), "a": rng.random(n), "b": rng.random(n)})
    body = parquet_bytes(t, rg)
    boto.put_object(Bucket=bucket, Key="big/part.parquet", Body=body)
    meta = pq.ParquetFile(pa.BufferReader(body)).metadata
    extents = []
    for i in range(meta.num_row_groups):
        cols = [meta.row_group(i).column(j) for j in range(meta.row_group(i).num_columns)]
        lo = min(c.dictionary_page_offset or c.data_page_offset for c in cols)
        hi = max(
            (c.dictionary_page_offset or c.data_page_offset) + c.total_compressed_size for c in cols
        )
        extents.append((lo, hi))
    ds = tfd.LakeDataset(
        f"s3://{bucket}/big",
        filter=[("id", "<", 4096)],
        storage_options=s3_options(fresh_proxy.endpoint),
    )
    assert ds.column("id").tolist() == list(range(4096))
    ranges = fresh_proxy.ranges(f"/{bucket}/big/part.parquet")
    assert ranges, "no ranged GETs seen"
    tail = len(body) - 65536  # the footer read may take the last 64 KiB in one request
    for lo, hi in ranges:
        for i, (elo, ehi) in enumerate(extents[1:], start=1):
            overlap = min(hi, ehi) > max(lo, elo)
            assert not overlap or lo >= tail - 1, f"bytes of excluded row group {i} were read"


def test_transient_503s_are_retried_and_every_row_arrives_once(
    s3_lake: str, fresh_proxy: Any
) -> None:
    opts = s3_options(fresh_proxy.endpoint)
    st = tfd.LakeStream(s3_lake, storage_options=opts)
    fresh_proxy.fail_next = 4  # more than the SDK's own attempts: our retry layer is needed too
    got = ids_of(tfd.DataLoader(st, batch_size=40))
    assert fresh_proxy.failed == 4
    assert sorted(got) == list(range(N_ROWS))
    fresh_proxy.fail_next = 3
    ds = tfd.LakeDataset(s3_lake, storage_options=opts)
    assert sorted(ds.column("id").tolist()) == list(range(N_ROWS))


def test_too_many_failures_give_a_clear_error_in_bounded_time(
    s3_lake: str, fresh_proxy: Any
) -> None:
    opts = s3_options(
        fresh_proxy.endpoint,
        retries=2,
        retry_deadline=10,
        config_kwargs={"retries": {"max_attempts": 2}},
    )
    fresh_proxy.fail_always = True
    t0 = time.monotonic()
    with pytest.raises(ConnectionFailedError, match="gave up after 2 attempt") as err:
        tfd.LakeDataset(s3_lake, storage_options=opts)
    assert time.monotonic() - t0 < 20
    assert "patients" in str(err.value) and "testing" not in str(err.value)
    # mid-epoch: the row-group read gives up within its deadline and names the object
    fresh_proxy.fail_always = False
    st = tfd.LakeStream(s3_lake, storage_options=opts, read_ahead=0)
    it = iter(tfd.DataLoader(st, batch_size=10))
    next(it)
    fresh_proxy.fail_always = True
    t0 = time.monotonic()
    with pytest.raises(ConnectionFailedError, match=r"s3://.*part-0\.parquet"):
        list(it)
    assert time.monotonic() - t0 < 20


def test_replaced_object_mid_epoch(boto: Any, bucket: str, moto_endpoint: str) -> None:
    tables = lake_tables()
    for rel, t in list(tables.items())[:2]:
        boto.put_object(Bucket=bucket, Key=f"p/{rel}", Body=parquet_bytes(t))
    ds = tfd.LakeDataset(f"s3://{bucket}/p", storage_options=s3_options(moto_endpoint))
    assert ds[0]["id"] == 0
    rel, t = list(tables.items())[1]
    boto.put_object(Bucket=bucket, Key=f"p/{rel}", Body=parquet_bytes(t.slice(0, 30)))
    with pytest.raises(SourceChangedError, match=f"s3://{bucket}/p/{rel}"):
        ds[len(ds) - 1]


def test_missing_bucket_and_prefix(s3_lake: str, moto_endpoint: str) -> None:
    opts = s3_options(moto_endpoint)
    with pytest.raises(NotFoundError, match="no-such-bucket-xyz"):
        tfd.LakeDataset("s3://no-such-bucket-xyz/data", storage_options=opts)
    with pytest.raises(NotFoundError, match="does not exist") as err:
        tfd.LakeDataset(s3_lake + "/year=1999", storage_options=opts)
    assert "year=1999" in str(err.value)


def test_wrong_credentials_name_no_secret(s3_lake: str, moto_endpoint: str) -> None:
    import requests

    secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
    # switch moto's IAM authentication on for this test only (server-side configuration)
    requests.post(moto_endpoint + "/moto-api/reset-auth", data=b"0", timeout=10)
    try:
        with pytest.raises(ConnectionFailedError, match="access denied") as err:
            tfd.LakeDataset(
                s3_lake, storage_options=s3_options(moto_endpoint, key="AKIAWRONG", secret=secret)
            )
    finally:
        requests.post(moto_endpoint + "/moto-api/reset-auth", data=b"inf", timeout=10)
    assert secret not in str(err.value)
    assert "credentials" in str(err.value) and "patients" in str(err.value)


def test_stream_checkpoint_on_s3_resumes_on_another_worker_count(s3_lake, moto_endpoint):
    def make(workers: int) -> tfd.DataLoader:
        st = tfd.LakeStream(s3_lake, storage_options=s3_options(moto_endpoint))
        return tfd.DataLoader(st, batch_size=16, num_workers=workers)

    assert_resumes_exactly_once(make, range(N_ROWS), [(2, 1, 0)], cuts=(5,))
