"""The cost of checkpointing: rows/s of an epoch with and without ``loader.state_dict()``.

For each source, in one run, the same ``tfd.DataLoader`` (batches of 1024, ``num_workers=0`` unless
``--workers``) reads whole epochs, alternately without checkpoints (A) and with one every
``--every`` batches (B), A B A B ...; each sample is as many whole epochs as take
``--min-seconds`` (an epoch of 300,000 in-memory rows lasts a tenth of a second, too short to time
alone on a shared machine). The ratio is the median over the A B pairs of rows/s with / without
checkpoints: the two samples of a pair are neighbours in time, so a burst of load elsewhere hits
one pair, not the result (their spread is printed too). A checkpoint is
``json.dumps(loader.state_dict())``, timed inside the epoch (a checkpoint is of no use until it is
serialised). An untimed warm-up epoch comes first (SQLDataset reads its rows into memory in it,
LakeDataset fills its cache), then one that sizes the samples.

* **SQL**: ``tfd.SQLDataset`` over a SQLite table of 300,000 rows x 5 columns, ``shuffle=True``;
* **Lake**: a local folder of 6 Parquet files, 300,000 rows x 5 columns: ``tfd.LakeDataset``
  with ``shuffle=True``, and ``tfd.LakeStream`` streamed;
* **Kafka**: ``tfd.KafkaStream(end="now")`` over 200,000 small JSON messages on 4 partitions of
  librdkafka's mock cluster (skipped when confluent-kafka is not installed).

Reported per source: rows/s without and with checkpoints, their ratio, the time one checkpoint
takes, and the size of the serialised state at the first checkpoint, at the last one and after the
last epoch (it must not grow with the rows delivered; at the default sizes a Kafka epoch has 196
batches, so one checkpoint each). Every epoch must deliver every row: the benchmark fails
otherwise, and it fails if no checkpoint was taken.

    python benchmarks/checkpoint_cost.py                 # the sizes above, under ~3 minutes
    python benchmarks/checkpoint_cost.py --rows 50000 --messages 20000 --every 10
    python benchmarks/checkpoint_cost.py --smoke         # tiny sizes, one repeat (tests)

Target: with checkpoints, at least 0.95x the rows/s without them.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import sqlite3
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

import tensorfeed as tfd

TARGET = 0.95
TOPIC = "t"
COLUMNS = ["a", "b", "c", "d"]  # a, b, c: float; d: int (plus the key, order_id)


# --------------------------------------------------------------------------- the sources


def build_sqlite(path: Path, rows: int) -> str:
    rng = np.random.default_rng(0)
    con = sqlite3.connect(path)
    con.execute(
        "CREATE TABLE orders (order_id INTEGER PRIMARY KEY, a REAL, b REAL, c REAL, d INTEGER)"
    )
    con.executemany(
        "INSERT INTO orders VALUES (?, ?, ?, ?, ?)",
        zip(
            range(1, rows + 1),
            rng.standard_normal(rows).tolist(),
            rng.standard_normal(rows).tolist(),
            rng.random(rows).tolist(),
            rng.integers(0, 1000, rows).tolist(),
        ),
    )
    con.commit()
    con.close()
    return f"sqlite:///{path}"


def build_lake(root: Path, rows: int, files: int) -> str:
    root.mkdir(parents=True)
    rng = np.random.default_rng(1)
    per = -(-rows // files)
    for i, start in enumerate(range(0, rows, per)):
        n = min(per, rows - start)
        cols: dict[str, Any] = {c: rng.standard_normal(n) for c in COLUMNS[:3]}
        cols["d"] = rng.integers(0, 1000, n)
        cols["row"] = np.arange(start, start + n, dtype=np.int64)
        pq.write_table(pa.table(cols), root / f"part-{i:04d}.parquet")
    return str(root)


def kafka_values(n: int) -> list[bytes]:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((n, 3)).round(4).tolist()
    d = rng.integers(0, 1000, n).tolist()
    return [json.dumps({"a": r[0], "b": r[1], "c": r[2], "d": k}).encode() for r, k in zip(x, d)]


# --------------------------------------------------------------------------- measuring


@dataclass
class Sample:
    """One timed sample: ``len(epoch_rows)`` whole epochs of one mode, back to back."""

    epoch_rows: list[int]  # rows each epoch delivered
    seconds: float
    checkpoint_seconds: float = 0.0  # of ``seconds``, inside json.dumps(loader.state_dict())
    sizes: list[int] = field(default_factory=list)  # bytes of each serialised checkpoint

    @property
    def rows_per_s(self) -> float:
        return sum(self.epoch_rows) / self.seconds


def rows_of(batch: Any) -> int:
    if isinstance(batch, dict):
        return len(next(iter(batch.values())))
    if isinstance(batch, list | tuple):
        return len(batch[0])
    return len(batch)


def timed_epochs(loader: Any, every: int, epochs: int = 1) -> Sample:
    """``epochs`` whole epochs; with ``every`` > 0, a checkpoint after every ``every`` batches of
    each (the count restarts with each epoch, as a training loop's would)."""
    gc.collect()
    sizes: list[int] = []
    epoch_rows: list[int] = []
    in_checkpoints = 0.0
    t0 = time.perf_counter()
    for _ in range(epochs):
        rows = 0
        for i, batch in enumerate(loader, start=1):
            rows += rows_of(batch)
            if every and i % every == 0:
                c0 = time.perf_counter()
                blob = json.dumps(loader.state_dict())
                in_checkpoints += time.perf_counter() - c0
                sizes.append(len(blob))
        epoch_rows.append(rows)
    return Sample(epoch_rows, time.perf_counter() - t0, in_checkpoints, sizes)


@dataclass
class Result:
    name: str
    expected_rows: int  # per epoch
    epochs_per_sample: int
    plain: list[Sample]
    checkpointed: list[Sample]
    end_size: int  # bytes of the state taken after the last epoch's last batch (untimed)

    @property
    def pair_ratios(self) -> list[float]:
        """rows/s with checkpoints / rows/s without, of each A B pair (neighbours in time)."""
        return [b.rows_per_s / a.rows_per_s for a, b in zip(self.plain, self.checkpointed)]

    @property
    def ratio(self) -> float:
        return statistics.median(self.pair_ratios)

    @property
    def checkpoints(self) -> int:
        return sum(len(s.sizes) for s in self.checkpointed)

    @property
    def checkpoints_per_epoch(self) -> int:
        return len(self.checkpointed[0].sizes) // self.epochs_per_sample

    @property
    def sizes(self) -> list[int]:
        return [n for s in self.checkpointed for n in s.sizes]

    @property
    def ms_per_checkpoint(self) -> float:
        return 1e3 * sum(s.checkpoint_seconds for s in self.checkpointed) / self.checkpoints

    @property
    def share_in_checkpoints(self) -> float:
        """Of the checkpointed samples' time, the share inside the checkpoints themselves."""
        c = self.checkpointed
        return sum(s.checkpoint_seconds for s in c) / sum(s.seconds for s in c)


def median_rate(samples: list[Sample]) -> float:
    return statistics.median(s.rows_per_s for s in samples)


def side_by_side(
    name: str, loader: Any, expected_rows: int, every: int, repeats: int, min_seconds: float
) -> Result:
    """A warm-up epoch and a calibration epoch (untimed results), then A B A B ...: samples
    without (A) and with (B) checkpoints, each of as many whole epochs as take ``min_seconds``."""

    def check(what: str, samples: list[Sample]) -> None:
        for s in samples:
            for rows in s.epoch_rows:
                if rows != expected_rows:
                    raise SystemExit(
                        f"{name}: an epoch {what} delivered {rows:,} rows, not {expected_rows:,}"
                    )

    check("of the warm-up", [timed_epochs(loader, 0)])
    calibration = timed_epochs(loader, 0)
    check("of the calibration", [calibration])
    epochs = max(1, math.ceil(min_seconds / calibration.seconds))
    plain: list[Sample] = []
    checkpointed: list[Sample] = []
    for _ in range(repeats):
        plain.append(timed_epochs(loader, 0, epochs))
        checkpointed.append(timed_epochs(loader, every, epochs))
    end_size = len(json.dumps(loader.state_dict()))
    check("without checkpoints", plain)
    check("with checkpoints", checkpointed)
    r = Result(name, expected_rows, epochs, plain, checkpointed, end_size)
    if r.checkpoints_per_epoch == 0:
        raise SystemExit(
            f"{name}: no checkpoint was taken (an epoch has fewer than --every={every} "
            "batches): this would measure nothing"
        )
    print(
        f"  {name:<28} {median_rate(plain):>12,.0f} rows/s plain, "
        f"{median_rate(checkpointed):>12,.0f} with checkpoints (ratio {r.ratio:.3f}; "
        f"{repeats} pairs of {epochs} epoch(s))",
        file=sys.stderr,
    )
    return r


# --------------------------------------------------------------------------- the run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=300_000, help="rows of the SQL table and lake")
    ap.add_argument("--files", type=int, default=6, help="Parquet files of the lake")
    ap.add_argument("--messages", type=int, default=200_000, help="Kafka messages")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--every", type=int, default=100, help="batches between checkpoints")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader num_workers")
    ap.add_argument("--repeats", type=int, default=11, help="A B pairs per source; median counts")
    ap.add_argument(
        "--min-seconds",
        type=float,
        default=0.5,
        help="a sample is as many whole epochs as take this long (short epochs are noisy)",
    )
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat (for tests)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.rows, args.files, args.messages = 6_000, 3, 4_000
        args.batch_size, args.every, args.repeats, args.min_seconds = 256, 4, 1, 0.0
    warnings.filterwarnings("ignore", message=".*set_vital.*")
    torch.set_num_threads(1)
    bs, w = args.batch_size, args.workers
    results: list[Result] = []

    def measure(name: str, loader: Any, rows: int) -> None:
        results.append(side_by_side(name, loader, rows, args.every, args.repeats, args.min_seconds))

    with tempfile.TemporaryDirectory(prefix="tensorfeed-bench-ckpt-") as tmp:
        t = time.perf_counter()
        url = build_sqlite(Path(tmp) / "orders.db", args.rows)
        lake = build_lake(Path(tmp) / "lake", args.rows, args.files)
        print(
            f"SQLite table and Parquet lake ({args.files} files): {args.rows:,} rows each, "
            f"built in {time.perf_counter() - t:.1f}s",
            file=sys.stderr,
        )
        ds = tfd.SQLDataset(url, table="orders", key="order_id")
        measure(
            "SQL: SQLDataset shuffled",
            tfd.DataLoader(ds, batch_size=bs, shuffle=True, num_workers=w),
            args.rows,
        )
        ds.close()
        measure(
            "Lake: LakeDataset shuffled",
            tfd.DataLoader(tfd.LakeDataset(lake), batch_size=bs, shuffle=True, num_workers=w),
            args.rows,
        )
        gc.collect()  # the LakeDataset's cache goes with its loader
        measure(
            "Lake: LakeStream",
            tfd.DataLoader(tfd.LakeStream(lake), batch_size=bs, num_workers=w),
            args.rows,
        )

    if importlib.util.find_spec("confluent_kafka") is None:
        print("Kafka: skipped (confluent-kafka is not installed: pip install tensorfeed[kafka])")
    else:
        from tensorfeed.sources._kafka_mock import MockCluster

        mc = MockCluster(partitions=4)
        try:
            mc.create_topic(TOPIC, 4)
            t = time.perf_counter()
            mc.produce(TOPIC, kafka_values(args.messages))  # round robin over the partitions
            print(
                f"Kafka mock cluster: {args.messages:,} JSON messages on 4 partitions, produced "
                f"in {time.perf_counter() - t:.1f}s",
                file=sys.stderr,
            )
            measure(
                "Kafka: KafkaStream",
                tfd.DataLoader(
                    tfd.KafkaStream(mc.bootstrap, TOPIC, end="now"), batch_size=bs, num_workers=w
                ),
                args.messages,
            )
        finally:
            mc.close()

    print()
    print(
        f"checkpoint = json.dumps(loader.state_dict()) every {args.every} batches of {bs}, "
        f"num_workers={w}; {args.repeats} A B pairs per source (A: without, B: with "
        f"checkpoints), each sample >= {args.min_seconds:g} s of whole epochs"
    )
    head = (
        f"| {'source':<26} | {'rows/epoch':>10} | {'ckpts/epoch':>11} | {'rows/s plain':>12} | "
        f"{'rows/s ckpt':>12} | {'ratio':>5} | {'pairs min-max':>13} | {'ms/ckpt':>7} | "
        f"{'state first':>11} | {'state last':>10} | {'state end':>9} | {'target':>7} |"
    )
    print(head)
    print("|" + "|".join("-" * len(c) for c in head[1:-1].split("|")) + "|")
    for r in results:
        pairs = f"{min(r.pair_ratios):.2f}-{max(r.pair_ratios):.2f}"
        print(
            f"| {r.name:<26} | {r.expected_rows:>10,} | {r.checkpoints_per_epoch:>11} | "
            f"{median_rate(r.plain):>12,.0f} | {median_rate(r.checkpointed):>12,.0f} | "
            f"{r.ratio:>5.3f} | {pairs:>13} | {r.ms_per_checkpoint:>7.2f} | "
            f"{r.sizes[0]:>11,} | {r.sizes[-1]:>10,} | {r.end_size:>9,} | "
            f"{'met' if r.ratio >= TARGET else 'NOT met':>7} |"
        )
    print(
        "  rows/s: median of the samples; ratio: median over the A B pairs of rows/s with / "
        "without\n  checkpoints (min-max: the spread of the pairs); state: bytes of "
        "json.dumps(state_dict()) at the\n  first and the last checkpoint of the run, and "
        "after the last epoch's last batch"
    )
    print()
    for r in results:
        sizes = r.sizes
        grows = max(sizes[-1], r.end_size) > sizes[0] + 64
        print(
            f"{r.name}: ratio {r.ratio:.3f} (target >= {TARGET}): "
            f"{'met' if r.ratio >= TARGET else 'NOT met'}; {r.share_in_checkpoints:.2%} of the "
            f"checkpointed time inside checkpoints; every epoch delivered {r.expected_rows:,} "
            f"rows; state {'GROWS' if grows else 'flat'} over {r.checkpoints} checkpoints "
            f"({sizes[0]:,} -> {sizes[-1]:,} -> {r.end_size:,} bytes)"
        )
        lost = 1 - r.ratio
        if r.ratio < TARGET and r.share_in_checkpoints < lost / 2:
            print(
                f"  the checkpoints themselves take {r.share_in_checkpoints:.2%} of that time, "
                f"not the {lost:.1%} it lost: the rest is this machine's noise or a slowdown "
                "after the checkpoints; rerun with more --repeats to tell which"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
