"""The cost of checkpointing: rows/s of an epoch with and without ``loader.state_dict()``.

For each source, in one run, the same ``tfd.DataLoader`` (batches of 1024, ``num_workers=0`` unless
``--workers``) reads whole epochs, alternately without checkpoints (A) and with one every
``--every`` batches (B), A B A B ...; the best epoch of each counts (this machine is shared: the
best epoch is the least disturbed one, for both alike). A checkpoint is
``json.dumps(loader.state_dict())``, timed inside the epoch (a checkpoint is of no use until it is
serialised). One untimed warm-up epoch comes first (SQLDataset reads its rows into memory in it,
LakeDataset fills its cache).

* **SQL**: ``tfd.SQLDataset`` over a SQLite table of 300,000 rows x 5 columns, ``shuffle=True``;
* **Lake**: a local folder of 6 Parquet files, 300,000 rows x 5 columns: ``tfd.LakeDataset``
  with ``shuffle=True``, and ``tfd.LakeStream`` streamed;
* **Kafka**: ``tfd.KafkaStream(end="now")`` over 200,000 small JSON messages on 4 partitions of
  librdkafka's mock cluster (skipped when confluent-kafka is not installed).

Reported per source: rows/s without and with checkpoints, their ratio, the time one checkpoint
takes, and the size of the serialised state at the first checkpoint, at the last one and at the
end of the epoch (it must not grow with the rows delivered). Every epoch must deliver every row:
the benchmark fails otherwise.

    python benchmarks/checkpoint_cost.py                 # the sizes above, under ~3 minutes
    python benchmarks/checkpoint_cost.py --rows 50000 --messages 20000 --repeats 2
    python benchmarks/checkpoint_cost.py --smoke         # tiny sizes, one repeat (tests)

Target: with checkpoints, at least 0.95x the rows/s without them.
"""

from __future__ import annotations

import argparse
import gc
import json
import sqlite3
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
class Epoch:
    rows: int
    seconds: float
    checkpoints: int = 0
    checkpoint_seconds: float = 0.0
    sizes: list[int] = field(default_factory=list)  # bytes of each serialised checkpoint

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds


def rows_of(batch: Any) -> int:
    if isinstance(batch, dict):
        return len(next(iter(batch.values())))
    if isinstance(batch, list | tuple):
        return len(batch[0])
    return len(batch)


def timed_epoch(loader: Any, every: int) -> Epoch:
    """One whole epoch; with ``every`` > 0, a checkpoint after every ``every`` batches."""
    gc.collect()
    sizes: list[int] = []
    in_checkpoints = 0.0
    rows = 0
    t0 = time.perf_counter()
    for i, batch in enumerate(loader, start=1):
        rows += rows_of(batch)
        if every and i % every == 0:
            c0 = time.perf_counter()
            blob = json.dumps(loader.state_dict())
            in_checkpoints += time.perf_counter() - c0
            sizes.append(len(blob))
    secs = time.perf_counter() - t0
    return Epoch(rows, secs, len(sizes), in_checkpoints, sizes)


@dataclass
class Result:
    name: str
    expected_rows: int
    plain: Epoch
    checkpointed: Epoch
    end_size: int  # bytes of the state taken after the last batch (untimed)

    @property
    def ratio(self) -> float:
        return self.checkpointed.rows_per_s / self.plain.rows_per_s

    @property
    def ms_per_checkpoint(self) -> float:
        c = self.checkpointed
        return 1e3 * c.checkpoint_seconds / c.checkpoints


def side_by_side(name: str, loader: Any, expected_rows: int, every: int, repeats: int) -> Result:
    """A warm-up epoch, then A B A B ...: without (A) and with (B) checkpoints; best of each."""
    warm = timed_epoch(loader, 0)
    if warm.rows != expected_rows:
        raise SystemExit(
            f"{name}: the warm-up epoch delivered {warm.rows:,} rows, not {expected_rows:,}"
        )
    plain: list[Epoch] = []
    checkpointed: list[Epoch] = []
    for _ in range(repeats):
        plain.append(timed_epoch(loader, 0))
        checkpointed.append(timed_epoch(loader, every))
    end_size = len(json.dumps(loader.state_dict()))
    for label, runs in (("without checkpoints", plain), ("with checkpoints", checkpointed)):
        wrong = [r.rows for r in runs if r.rows != expected_rows]
        if wrong:
            raise SystemExit(
                f"{name}: an epoch {label} delivered {wrong[0]:,} rows, not {expected_rows:,}"
            )
    if checkpointed[0].checkpoints == 0:
        raise SystemExit(
            f"{name}: no checkpoint was taken ({expected_rows:,} rows are fewer than "
            f"--every={every} batches): this would measure nothing"
        )
    best = lambda runs: max(runs, key=lambda r: r.rows_per_s)  # noqa: E731
    r = Result(name, expected_rows, best(plain), best(checkpointed), end_size)
    print(
        f"  {name:<32} {r.plain.rows_per_s:>12,.0f} rows/s plain, "
        f"{r.checkpointed.rows_per_s:>12,.0f} with checkpoints ({r.ratio:.3f}x)",
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
    ap.add_argument("--repeats", type=int, default=5, help="A B pairs per source; best counts")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat (for tests)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.rows, args.files, args.messages = 6_000, 3, 4_000
        args.batch_size, args.every, args.repeats = 256, 4, 1
    warnings.filterwarnings("ignore", message=".*set_vital.*")
    torch.set_num_threads(1)
    bs, w = args.batch_size, args.workers
    results: list[Result] = []

    with tempfile.TemporaryDirectory(prefix="tensorfeed-bench-ckpt-") as tmp:
        t = time.perf_counter()
        url = build_sqlite(Path(tmp) / "orders.db", args.rows)
        lake = build_lake(Path(tmp) / "lake", args.rows, args.files)
        print(
            f"SQLite table and Parquet lake ({args.files} files): {args.rows:,} rows each, "
            f"built in {time.perf_counter() - t:.1f}s; batches of {bs}, a checkpoint every "
            f"{args.every} batches, num_workers={w}, best of {args.repeats}",
            file=sys.stderr,
        )

        ds = tfd.SQLDataset(url, table="orders", key="order_id")
        loader = tfd.DataLoader(ds, batch_size=bs, shuffle=True, num_workers=w)
        results.append(
            side_by_side("SQL: SQLDataset shuffled", loader, args.rows, args.every, args.repeats)
        )
        ds.close()

        lake_ds = tfd.LakeDataset(lake)
        loader = tfd.DataLoader(lake_ds, batch_size=bs, shuffle=True, num_workers=w)
        results.append(
            side_by_side("Lake: LakeDataset shuffled", loader, args.rows, args.every, args.repeats)
        )
        loader = lake_ds = None  # free its cache
        loader = tfd.DataLoader(tfd.LakeStream(lake), batch_size=bs, num_workers=w)
        results.append(
            side_by_side("Lake: LakeStream", loader, args.rows, args.every, args.repeats)
        )
        loader = None

    kafka_skipped = False
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        kafka_skipped = True
        print("Kafka: skipped (confluent-kafka is not installed)")
    if not kafka_skipped:
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
            stream = tfd.KafkaStream(mc.bootstrap, TOPIC, end="now")
            loader = tfd.DataLoader(stream, batch_size=bs, num_workers=w)
            results.append(
                side_by_side("Kafka: KafkaStream", loader, args.messages, args.every, args.repeats)
            )
            loader = stream = None
        finally:
            mc.close()

    print()
    print(
        f"checkpoint = json.dumps(loader.state_dict()) every {args.every} batches of {bs}, "
        f"num_workers={w}, best of {args.repeats} epochs each, A/B alternated"
    )
    head = (
        f"| {'source':<28} | {'rows':>9} | {'ckpts':>5} | {'rows/s plain':>12} | "
        f"{'rows/s ckpt':>12} | {'ratio':>5} | {'ms/ckpt':>7} | {'state B first':>13} | "
        f"{'state B last':>12} | {'state B end':>11} | {'target':>7} |"
    )
    print(head)
    print("|" + "|".join("-" * len(c) for c in head[1:-1].split("|")) + "|")
    for r in results:
        c = r.checkpointed
        verdict = "met" if r.ratio >= TARGET else "NOT met"
        print(
            f"| {r.name:<28} | {r.expected_rows:>9,} | {c.checkpoints:>5} | "
            f"{r.plain.rows_per_s:>12,.0f} | {c.rows_per_s:>12,.0f} | {r.ratio:>5.3f} | "
            f"{r.ms_per_checkpoint:>7.2f} | {c.sizes[0]:>13,} | {c.sizes[-1]:>12,} | "
            f"{r.end_size:>11,} | {verdict:>7} |"
        )
    print(
        "  ratio = rows/s with checkpoints / rows/s without; state sizes in bytes of "
        "json.dumps(state_dict()): first and last checkpoint, and after the epoch's last batch"
    )
    print()
    for r in results:
        c = r.checkpointed
        share = c.checkpoint_seconds / c.seconds
        grows = max(c.sizes[-1], r.end_size) > c.sizes[0] + 64
        print(
            f"{r.name}: ratio {r.ratio:.3f} (target >= {TARGET}): "
            f"{'met' if r.ratio >= TARGET else 'NOT met'}; {share:.2%} of the checkpointed "
            f"epoch inside checkpoints; every epoch delivered {r.expected_rows:,} rows; state "
            f"{'GROWS' if grows else 'flat'} ({c.sizes[0]:,} -> {c.sizes[-1]:,} -> "
            f"{r.end_size:,} bytes)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
