"""SQL databases (PostgreSQL, SQLite) as a map-style dataset and as a sharded stream.

SQL databases (PostgreSQL, SQLite) as a map-style dataset and as a sharded stream.

``SQLDataset(url, table= | query=, key=)`` has ``len()`` and a stable ``ds[i]`` over any SELECT
(joins included) with a unique key column; a batch is one query. ``SQLStream`` streams the same
result in Arrow batches with bounded memory, split across DataLoader workers and DDP ranks.

How it fits together, from the bottom up: ``url`` (what a URL means), ``query`` (the table or
SELECT as SQL text), ``driver_errors`` (what a failure means), ``backend`` (the driver contract)
with ``postgres`` and ``sqlite`` implementing it, ``snapshot`` (connections per process and the
pinned snapshot: NOTE [ SQL snapshots and worker connections ]), ``config`` (what both datasets
share), then the datasets themselves: ``dataset`` (:class:`SQLDataset`) and ``stream``
(:class:`SQLStream`).
"""

from .dataset import KEEP_IN_MEMORY_AUTO_BYTES, SQLDataset
from .query import SqlSource
from .stream import SQLStream
from .url import Database, display_url, parse_url

__all__ = [
    "KEEP_IN_MEMORY_AUTO_BYTES",
    "Database",
    "SQLDataset",
    "SQLStream",
    "SqlSource",
    "display_url",
    "parse_url",
]
