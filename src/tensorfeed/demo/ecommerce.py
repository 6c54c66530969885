"""Train a gift-order classifier straight from an e-commerce database (a three-way SQL join).

On first run this builds a seeded SQLite database (users with a home address, addresses, orders
with a shipping address; 1,000,000 orders by default) and caches it in ``--cache-dir`` (default
``$TENSORFEED_CACHE``, else ``~/.cache/tensorfeed``). ``--url postgresql://...`` builds the same
tables in PostgreSQL
(named ``tfd_demo_*``) instead. A small PyTorch model then learns whether an order was sent as a
gift (its shipping address is not the buyer's home address) from ``tfd.SQLDataset`` over a join of
orders, users and the buyer's home address, through ``tfd.DataLoader``.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import ConfigError
from . import ClockedBar, cache_dir

VERSION = 1
FEATURES = [
    "amount",
    "quantity",
    "month",
    "hour",
    "gift_wrap",
    "age",
    "tenure_days",
    "household_size",
    "urban",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=1_000_000, help="orders (default 1,000,000)")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs (default 2)")
    parser.add_argument(
        "--url", default=None, help="a postgresql:// URL to use instead of the embedded SQLite"
    )
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the model")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="where the SQLite database is cached "
        "(default: $TENSORFEED_CACHE, else ~/.cache/tensorfeed)",
    )


# --------------------------------------------------------------------------- the data


def generate(rows: int, seed: int) -> dict[str, pa.Table]:
    """Users, addresses and orders. An order is a gift with a probability that depends on its
    amount, size, season, gift wrap, the buyer and their household; a gift ships to another
    address. No feature is the label: the model has to learn the tendencies."""
    if rows < 100:
        raise ConfigError(f"rows must be at least 100, got {rows}")
    rng = np.random.default_rng(seed)
    n_users = max(50, rows // 10)
    n_recipients = max(50, n_users // 2)
    n_addr = n_users + n_recipients
    addresses = pa.table(
        {
            "address_id": np.arange(1, n_addr + 1, dtype=np.int64),
            "household_size": rng.integers(1, 7, n_addr),
            "urban": (rng.random(n_addr) < 0.6).astype(np.int64),
            "region": rng.integers(0, 10, n_addr),
        }
    )
    users = pa.table(
        {
            "user_id": np.arange(1, n_users + 1, dtype=np.int64),
            "home_address_id": np.arange(1, n_users + 1, dtype=np.int64),
            "age": rng.integers(18, 81, n_users),
            "tenure_days": rng.integers(0, 3650, n_users),
        }
    )
    user = rng.integers(1, n_users + 1, rows)
    age = users.column("age").to_numpy()[user - 1]
    household = addresses.column("household_size").to_numpy()[user - 1]
    month = rng.integers(1, 13, rows)
    amount = np.round(np.exp(rng.normal(3.4, 0.8, rows)), 2)
    quantity = np.minimum(1 + rng.poisson(0.8, rows), 9)
    logit = (
        -1.3
        + 1.6 * (month == 12)
        + 0.8 * (month == 11)
        + 0.7 * (np.log(amount) - 3.4)
        - 0.45 * (quantity - 1)
        + 0.035 * (age - 45)
        - 0.25 * (household - 3.5)
        + rng.normal(0, 0.5, rows)
    )
    gift = rng.random(rows) < 1 / (1 + np.exp(-logit))
    gift_wrap = np.where(gift, rng.random(rows) < 0.5, rng.random(rows) < 0.05)
    home = user  # home_address_id == user_id
    recipient = np.where(
        rng.random(rows) < 0.7,
        rng.integers(n_users + 1, n_addr + 1, rows),  # a recipient's address
        rng.integers(1, n_users + 1, rows),  # another user's home
    )
    recipient = np.where(recipient == home, n_users + 1, recipient)
    orders = pa.table(
        {
            "order_id": np.arange(1, rows + 1, dtype=np.int64),
            "user_id": user.astype(np.int64),
            "shipping_address_id": np.where(gift, recipient, home).astype(np.int64),
            "amount": amount,
            "quantity": quantity.astype(np.int64),
            "month": month.astype(np.int64),
            "hour": rng.integers(0, 24, rows),
            "gift_wrap": gift_wrap.astype(np.int64),
        }
    )
    return {"addresses": addresses, "users": users, "orders": orders}


_KEYS = {"addresses": "address_id", "users": "user_id", "orders": "order_id"}


def join_query(prefix: str, split: str) -> str:
    """The training query: orders x buyer x buyer's home address, label computed in SQL."""
    where = "o.order_id % 10 <> 0" if split == "train" else "o.order_id % 10 = 0"
    return f"""
        SELECT o.order_id, o.amount, o.quantity, o.month, o.hour, o.gift_wrap,
               u.age, u.tenure_days, h.household_size, h.urban,
               CASE WHEN o.shipping_address_id <> u.home_address_id THEN 1 ELSE 0 END AS is_gift
        FROM {prefix}orders o
        JOIN {prefix}users u ON u.user_id = o.user_id
        JOIN {prefix}addresses h ON h.address_id = u.home_address_id
        WHERE {where}
    """


def sqlite_path(rows: int, seed: int, cache: str | None = None) -> Path:
    return cache_dir(cache) / f"demo-ecommerce-{rows}-seed{seed}-v{VERSION}.db"


_CHUNK = 50_000  # rows per INSERT batch: the progress bar moves, memory stays flat


def _build_bar(tables: dict[str, pa.Table], where: str) -> ClockedBar:
    total = sum(t.num_rows for t in tables.values())
    return ClockedBar(
        total, desc=f"building {where}", unit="row", unit_scale=True, leave=False, smoothing=0.1
    )


def build_sqlite(rows: int, seed: int, cache: str | None = None) -> tuple[Path, bool]:
    """The cached SQLite file for (rows, seed), built on first use (in ``cache``, default
    :func:`cache_dir`). Returns (path, built_now)."""
    path = sqlite_path(rows, seed, cache)
    if path.exists():
        return path, False
    tables = generate(rows, seed)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    os.close(fd)
    bar = _build_bar(tables, "the SQLite database")
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN")
        for name, table in tables.items():
            cols = ", ".join(
                f"{c} INTEGER PRIMARY KEY" if c == _KEYS[name] else f"{c} {_sqlite_type(table, c)}"
                for c in table.column_names
            )
            conn.execute(f"CREATE TABLE {name} ({cols})")
            marks = ", ".join("?" * table.num_columns)
            for chunk in table.to_batches(_CHUNK):
                columns = [chunk.column(c).to_pylist() for c in table.column_names]
                conn.executemany(f"INSERT INTO {name} VALUES ({marks})", zip(*columns))
                bar.update(chunk.num_rows)
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode=WAL")  # readers never block a writer, nor it them
        conn.close()
        os.replace(tmp, path)
    finally:
        bar.close()
        if os.path.exists(tmp):
            os.remove(tmp)
    return path, True


def _sqlite_type(table: pa.Table, column: str) -> str:
    return "REAL" if pa.types.is_floating(table.schema.field(column).type) else "INTEGER"


def build_postgres(url: str, rows: int, seed: int, prefix: str = "tfd_demo_") -> bool:
    """Create ``tfd_demo_*`` tables in PostgreSQL (only those; kept if already built for (rows,
    seed)). Returns whether they were built now."""
    from ..sources.sql.driver_errors import _translate
    from ..sources.sql.snapshot import _backend
    from ..sources.sql.url import parse_url

    db, _ = parse_url(url)
    if db.backend != "postgresql":
        raise ConfigError(f"url must be a postgresql:// URL, got {db.safe}")
    be = _backend(db)
    conn = be.connect()  # a connection error names the server, never the password
    try:
        return _fill_postgres(conn, rows, seed, prefix)
    except Exception as exc:
        raise _translate(exc, db, None) from None
    finally:
        be.close(conn)


def _fill_postgres(conn: Any, rows: int, seed: int, prefix: str) -> bool:
    cur = conn.cursor()
    try:
        want = f"{rows}:{seed}:{VERSION}"
        cur.execute(f"CREATE TABLE IF NOT EXISTS {prefix}meta (built TEXT)")
        cur.execute(f"SELECT built FROM {prefix}meta")
        if [r[0] for r in cur.fetchall()] == [want]:
            return False
        tables = generate(rows, seed)
        bar = _build_bar(tables, "the PostgreSQL tables")
        try:
            for name, table in tables.items():
                cur.execute(f"DROP TABLE IF EXISTS {prefix}{name}")
                for i, chunk in enumerate(table.to_batches(_CHUNK * 4)):
                    mode = "create" if i == 0 else "append"
                    cur.adbc_ingest(f"{prefix}{name}", pa.Table.from_batches([chunk]), mode=mode)
                    bar.update(chunk.num_rows)
                cur.execute(f"ALTER TABLE {prefix}{name} ADD PRIMARY KEY ({_KEYS[name]})")
                cur.execute(f"ANALYZE {prefix}{name}")
        finally:
            bar.close()
        cur.execute(f"DELETE FROM {prefix}meta")
        cur.execute(f"INSERT INTO {prefix}meta VALUES ('{want}')")
        return True
    finally:
        cur.close()


# --------------------------------------------------------------------------- training


def run(args: argparse.Namespace) -> int:
    import torch

    # The model is tiny: intra-op threads only contend with the data workers for the cores
    # (on a busy 2-core machine a step went from 7 ms on one thread to 66 ms on two).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> int:
    import torch
    from torch import nn

    import tensorfeed as tfd

    t0 = time.perf_counter()
    if args.url:
        built = build_postgres(args.url, args.rows, args.seed)
        url, prefix = args.url, "tfd_demo_"
        where = parse_safe(args.url)
    else:
        path, built = build_sqlite(args.rows, args.seed, args.cache_dir)
        url, prefix, where = f"sqlite:///{path}", "", str(path)
    dt = time.perf_counter() - t0
    rate = f", {args.rows / max(dt, 1e-9):,.0f} orders/s" if built else ""
    print(
        f"{args.rows:,} orders {'built' if built else 'cached'} in {where} ({dt:.1f}s{rate})",
        file=sys.stderr,
    )

    make = lambda split: tfd.SQLDataset(  # noqa: E731
        url, query=join_query(prefix, split), key="order_id", features=FEATURES, target="is_gift"
    )
    train, val = make("train"), make("val")
    tfd.seed_everything(args.seed)
    model = nn.Sequential(
        nn.BatchNorm1d(len(FEATURES)),
        nn.Linear(len(FEATURES), 64),
        nn.ReLU(),
        nn.Linear(64, 64),
        nn.ReLU(),
        nn.Linear(64, 1),
    )
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.BCEWithLogitsLoss()
    loader = tfd.DataLoader(
        train,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.num_workers,
        seed=args.seed,
        drop_last=True,
    )
    rows = wait = wall = 0.0
    for epoch in range(args.epochs):
        model.train()
        bar = ClockedBar(len(loader), desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch")
        for x, y in bar.iterate(loader):
            loss = loss_fn(model(x).squeeze(1), y.float())
            opt.zero_grad()
            loss.backward()
            opt.step()
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        rows, wait, wall = (
            rows + loader.stats.rows,
            wait + loader.stats.wait_s,
            wall + loader.stats.wall_s,
        )
    acc, base = evaluate(model, val, args)
    print(
        f"{rows / max(wall, 1e-9):,.0f} rows/s, data wait {wait / max(wall, 1e-9):.0%}, "
        f"validation accuracy {acc:.3f} (always 'not a gift': {base:.3f})"
    )
    return 0


def parse_safe(url: str) -> str:
    from ..sources.sql import display_url

    return display_url(url)


def evaluate(model: Any, val: Any, args: argparse.Namespace) -> tuple[float, float]:
    import torch

    import tensorfeed as tfd

    model.eval()
    correct = positives = total = 0
    loader = tfd.DataLoader(val, batch_size=4096, num_workers=args.num_workers)
    with torch.no_grad():
        for x, y in loader:
            pred = model(x).squeeze(1) > 0
            correct += int((pred == y.bool()).sum())
            positives += int(y.sum())
            total += len(y)
    return correct / max(total, 1), 1 - positives / max(total, 1)
