"""Read a lake on S3 (or any S3-compatible store) with the options you already use for s3fs.

Run: python examples/lake_s3.py
With ``LAKE_S3_ENDPOINT`` unset, this example starts a throw-away local S3 server (moto, from
``tensorfeed[test]``) on 127.0.0.1 and uploads a tiny lake to it, so it runs anywhere.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import tensorfeed as tfd


def local_s3() -> tuple[str, object]:
    """Start moto's S3 server on 127.0.0.1 and upload s3://hospital/patients/ (example only)."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="AKIAEXAMPLE",
        aws_secret_access_key="example-secret",
        region_name="eu-west-1",
    )
    s3.create_bucket(
        Bucket="hospital", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    rng = np.random.default_rng(0)
    for year in (2023, 2024):
        for region in ("EU", "US"):
            t = pa.table(
                {
                    "age": rng.integers(18, 95, 1000),
                    "bmi": rng.normal(27, 5, 1000),
                    "readmitted": rng.integers(0, 2, 1000),
                }
            )
            buf = io.BytesIO()
            pq.write_table(t, buf, row_group_size=250)
            s3.put_object(
                Bucket="hospital",
                Key=f"patients/year={year}/region={region}/part-0.parquet",
                Body=buf.getvalue(),
            )
    return endpoint, server


def main(endpoint: str) -> None:
    # --8<-- [start:s3]
    storage_options = {
        "key": "AKIAEXAMPLE",  # or leave key/secret out: the AWS_* environment
        "secret": "example-secret",  # variables and ~/.aws credentials are used
        "endpoint_url": endpoint,  # only for S3-compatible stores (MinIO, Ceph, moto)
        "client_kwargs": {"region_name": "eu-west-1"},
        "retries": 5,
        "retry_deadline": 60,  # transient 5xx/throttling: bounded retries
    }
    ds = tfd.LakeDataset(
        "s3://hospital/patients/",
        storage_options=storage_options,
        filter=[("year", "=", 2024)],  # year=2023 objects are never requested
        features=["age", "bmi"],
        target="readmitted",
    )
    x, y = ds[0]
    stream = tfd.LakeStream(
        "s3://hospital/patients/year=2024/*/*.parquet",
        storage_options=storage_options,
        shuffle_buffer=1000,
    )
    rows = sum(len(b["age"]) for b in tfd.DataLoader(stream, batch_size=256, num_workers=2))
    # --8<-- [end:s3]
    print(len(ds), x, y, ds.files, rows)
    # the same lake through tfd.open (dispatch by URL scheme)
    same = tfd.open("s3://hospital/patients/", storage_options=storage_options)
    assert len(same) == 4000


if __name__ == "__main__":
    endpoint = os.environ.get("LAKE_S3_ENDPOINT")
    server = None
    if endpoint is None:
        endpoint, server = local_s3()
    try:
        main(endpoint)
    finally:
        if server is not None:
            server.stop()  # type: ignore[attr-defined]
