"""Fixtures of the lake tests: a moto S3 server on 127.0.0.1, a 503-injecting proxy in front of
it, and small Hive-partitioned lakes with known row ids.

The library talks to moto through its ordinary S3 code path (``pyarrow.fs.S3FileSystem`` with an
endpoint override); the test side writes objects with boto3 pointed at the same endpoint.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, os.path.dirname(__file__))

os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")  # no IMDS lookups from the AWS SDK

YEARS = (2020, 2021, 2022)
REGIONS = ("EU", "US")
ROWS_PER_FILE = 60
ROW_GROUP = 16
N_ROWS = len(YEARS) * len(REGIONS) * ROWS_PER_FILE


def lake_tables(rows_per_file: int = ROWS_PER_FILE, seed: int = 0) -> dict[str, pa.Table]:
    """``{relative path: table}`` of a lake with unique int64 ``id`` 0..N-1 over years x regions."""
    rng = np.random.default_rng(seed)
    out, start = {}, 0
    for y in YEARS:
        for r in REGIONS:
            ids = np.arange(start, start + rows_per_file, dtype=np.int64)
            start += rows_per_file
            out[f"year={y}/region={r}/part-0.parquet"] = pa.table(
                {
                    "id": ids,
                    "age": rng.integers(18, 90, rows_per_file).astype(np.int64),
                    "x": rng.normal(size=rows_per_file),
                    "label": (ids % 2).astype(np.int64),
                }
            )
    return out


def write_local(
    root: Path, tables: dict[str, pa.Table], fmt: str = "parquet", row_group: int = ROW_GROUP
) -> Path:
    for rel, t in tables.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_table(t, path, fmt, row_group)
    return root


def write_table(
    t: pa.Table, path: Path | io.BytesIO, fmt: str = "parquet", row_group: int = ROW_GROUP
) -> None:
    if fmt == "parquet":
        pq.write_table(t, path, row_group_size=row_group, compression="snappy")
    elif fmt == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(t, path)
    else:
        import json

        text = "\n".join(json.dumps(r) for r in t.to_pylist()) + "\n"
        if isinstance(path, io.BytesIO):
            path.write(text.encode())
        else:
            Path(path).write_text(text)


def parquet_bytes(t: pa.Table, row_group: int = ROW_GROUP) -> bytes:
    buf = io.BytesIO()
    write_table(t, buf, "parquet", row_group)
    return buf.getvalue()


@pytest.fixture
def local_lake(tmp_path: Path) -> Path:
    return write_local(tmp_path / "lake", lake_tables())


# --------------------------------------------------------------------------- S3


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    pytest.importorskip("moto", reason="moto[server] is in tensorfeed[test]")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def proxy(moto_endpoint: str) -> Iterator[Any]:
    from _faulty_proxy import FaultyProxy

    p = FaultyProxy(moto_endpoint).start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def fresh_proxy(proxy: Any) -> Iterator[Any]:
    proxy.reset()
    yield proxy
    proxy.reset()


@pytest.fixture(scope="session")
def boto(moto_endpoint: str) -> Any:
    boto3 = pytest.importorskip("boto3")
    return boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def s3_options(endpoint: str, **extra: Any) -> dict[str, Any]:
    return {
        "key": "testing",
        "secret": "testing",
        "endpoint_url": endpoint,
        "client_kwargs": {"region_name": "us-east-1"},
        **extra,
    }


def upload(
    boto: Any,
    bucket: str,
    prefix: str,
    tables: dict[str, pa.Table],
    fmt: str = "parquet",
    row_group: int = ROW_GROUP,
) -> None:
    for rel, t in tables.items():
        buf = io.BytesIO()
        write_table(t, buf, fmt, row_group)
        boto.put_object(Bucket=bucket, Key=f"{prefix}/{rel}", Body=buf.getvalue())


@pytest.fixture
def bucket(boto: Any) -> str:
    name = f"lake-{uuid.uuid4().hex[:10]}"
    boto.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def s3_lake(boto: Any) -> str:
    """A bucket holding the standard lake under ``patients/`` (uploaded once per module)."""
    name = f"lake-{uuid.uuid4().hex[:10]}"
    boto.create_bucket(Bucket=name)
    upload(boto, name, "patients", lake_tables())
    return f"s3://{name}/patients"


def ids_of(batches: Any) -> list[int]:
    out: list[int] = []
    for b in batches:
        if isinstance(b, dict):  # a collated batch of tensors, or one row
            out.extend(np.asarray(b["id"]).reshape(-1).tolist())
        else:  # a list (or ColumnBatch) of rows
            out.extend(int(r["id"]) for r in b)
    return out
