"""Train from a SQL query: a map-style SQLDataset over a join, and a SQLStream.

Run: python examples/sql_quickstart.py   (builds a small SQLite shop in a temporary folder)
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

import numpy as np
import torch

import tensorfeed as tfd


def make_shop(path: Path, n_orders: int = 5000) -> None:
    """users(user_id, age), orders(order_id, user_id, amount, quantity, returned)."""
    rng = np.random.default_rng(0)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (user_id INTEGER PRIMARY KEY, age INTEGER)")
        db.execute(
            "CREATE TABLE orders (order_id INTEGER PRIMARY KEY, user_id INTEGER, "
            "amount REAL, quantity INTEGER, returned INTEGER)"
        )
        db.executemany(
            "INSERT INTO users VALUES (?, ?)", [(u, int(rng.integers(18, 80))) for u in range(500)]
        )
        amount = rng.gamma(2.0, 30.0, n_orders)
        returned = (rng.random(n_orders) < 0.1 + 0.3 * (amount > 90)).astype(int)
        db.executemany(
            "INSERT INTO orders VALUES (?, ?, ?, ?, ?)",
            [
                (i, int(rng.integers(0, 500)), float(a), int(rng.integers(1, 5)), int(r))
                for i, (a, r) in enumerate(zip(amount, returned))
            ],
        )


def main(tmp: Path) -> None:
    make_shop(tmp / "shop.db")
    url = f"sqlite:///{tmp / 'shop.db'}"
    # --8<-- [start:map]
    ds = tfd.SQLDataset(
        url,
        query="""SELECT o.order_id, o.amount, o.quantity, u.age, o.returned
                 FROM orders o JOIN users u ON u.user_id = o.user_id""",
        key="order_id",  # unique in the result: ds[i] is the row with the i-th smallest key
        features=["amount", "quantity", "age"],
        target="returned",
    )
    print(len(ds), ds[0])  # 5000 (tensor([amount, quantity, age]), returned)

    model = torch.nn.Sequential(torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 1))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    loader = tfd.DataLoader(ds, batch_size=256, shuffle=True, num_workers=2, seed=0)
    for epoch in range(2):
        for x, y in loader:  # x: float32 [256, 3], y: int64 [256]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                model(x).squeeze(1), y.float()
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"epoch {epoch}: loss {loss.item():.3f}, {loader.stats.rows_per_s:,.0f} rows/s")
    # --8<-- [end:map]

    # --8<-- [start:rows]
    orders = tfd.SQLDataset(url, table="orders", key="order_id")
    print(orders[0])  # {'order_id': 0, 'user_id': ..., 'amount': ..., ...}
    print(orders[-1]["order_id"], len(orders))  # negative indices work like a list
    batch = orders.__getitems__([10, 3, 7])  # one query, rows in the order asked
    print([row["order_id"] for row in batch])  # [10, 3, 7]
    # --8<-- [end:rows]

    # --8<-- [start:stream]
    stream = tfd.SQLStream(
        url, table="orders", key="order_id", columns=["order_id", "amount"], shuffle_buffer=1000
    )
    loader = tfd.DataLoader(stream, batch_size=512, num_workers=2)
    seen = [i for batch in loader for i in batch["order_id"].tolist()]
    assert sorted(seen) == list(range(5000))  # every row exactly once, split across workers
    # --8<-- [end:stream]
    print(f"streamed {len(seen)} rows")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        main(Path(tmp))
