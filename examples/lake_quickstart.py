"""Read a Hive-partitioned Parquet lake: map-style LakeDataset, the locality-aware shuffle, and
LakeStream.

Run: python examples/lake_quickstart.py   (writes a small lake to a temporary folder first)
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

import tensorfeed as tfd


def make_lake(root: Path, rows_per_file: int = 2000) -> None:
    """root/year=YYYY/region=R/part-0.parquet with patient_id, age, bmi, readmitted."""
    rng = np.random.default_rng(0)
    pid = 0
    for year in (2022, 2023, 2024):
        for region in ("EU", "US"):
            d = root / f"year={year}" / f"region={region}"
            d.mkdir(parents=True)
            age = rng.integers(18, 95, rows_per_file)
            table = pa.table(
                {
                    "patient_id": np.arange(pid, pid + rows_per_file),
                    "age": age,
                    "bmi": rng.normal(27, 5, rows_per_file),
                    "readmitted": (rng.random(rows_per_file) < age / 200).astype(np.int64),
                }
            )
            pq.write_table(table, d / "part-0.parquet", row_group_size=500)
            pid += rows_per_file


def main(root: Path) -> None:
    make_lake(root)
    # --8<-- [start:map]
    ds = tfd.LakeDataset(
        str(root),  # a file, a directory, a glob, a list of them; or s3://...
        columns=["patient_id", "age", "bmi", "year", "region"],  # only these are read
        filter=[("year", ">=", 2023), ("age", ">=", 40)],  # pushed down: partitions, row groups
    )
    print(len(ds), ds.schema.field("year").type)  # from metadata only; year is an int32 column
    print(ds[0])  # {'patient_id': ..., 'age': ..., 'bmi': ..., 'year': 2023, 'region': 'EU'}

    loader = tfd.DataLoader(ds, batch_size=256, sampler=ds.locality_sampler(seed=0, window=4))
    seen = 0
    for batch in loader:  # dict of tensors; 'region' stays a list of str
        seen += len(batch["age"])
    print(f"{seen:,} rows, {loader.stats.rows_per_s:,.0f} rows/s")
    # --8<-- [end:map]
    assert loader.stats.rows == len(ds)

    # --8<-- [start:expression]
    eu_high_bmi = tfd.LakeDataset(
        str(root), filter=(pads.field("region") == "EU") & (pads.field("bmi") > 30)
    )
    # --8<-- [end:expression]
    assert set(eu_high_bmi.column("region")) == {"EU"}

    # --8<-- [start:stream]
    stream = tfd.LakeStream(
        str(root), shuffle_buffer=10_000, seed=0, features=["age", "bmi"], target="readmitted"
    )
    loader = tfd.DataLoader(stream, batch_size=512, num_workers=2)
    for epoch in range(2):  # row groups are split across workers (and DDP ranks)
        positives, age_sum = 0, 0.0
        for x, y in loader:  # x: float32 [512, 2], y: int64 [512]
            positives += int(y.sum())
            age_sum += float(x[:, 0].sum())
        print(f"epoch {epoch}: {positives} readmissions, mean age {age_sum / 12000:.1f}")
    # --8<-- [end:stream]
    print(f"stream: {loader.stats.rows:,} rows in the last epoch")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        main(Path(tmp) / "patients")
