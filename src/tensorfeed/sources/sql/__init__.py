"""SQL databases (PostgreSQL, SQLite): ``SQLDataset`` (map-style) and ``SQLStream`` (sharded)."""

from .dataset import (
    KEEP_IN_MEMORY_AUTO_BYTES,
    Database,
    SQLDataset,
    SqlSource,
    SQLStream,
    display_url,
    parse_url,
)

__all__ = [
    "KEEP_IN_MEMORY_AUTO_BYTES",
    "Database",
    "SQLDataset",
    "SQLStream",
    "SqlSource",
    "display_url",
    "parse_url",
]
