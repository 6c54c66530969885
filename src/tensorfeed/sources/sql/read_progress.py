"""Progress of reading a SQL result into memory (``SQLDataset``'s kept rows): log lines on the
``tensorfeed.sql`` logger and a tqdm bar on a terminal."""

from __future__ import annotations

import logging
import time

# Library logging: silent unless the application configures the ``tensorfeed`` loggers.
log = logging.getLogger("tensorfeed.sql")
log.addHandler(logging.NullHandler())


class _MemoryReadProgress:
    """Progress of reading a whole result into memory: an INFO line on the ``tensorfeed.sql``
    logger at the start and the end (rows, seconds, rows/s), and a tqdm bar on stderr when the
    read has taken a couple of seconds and stderr is a terminal."""

    def __init__(self, total: int, what: str) -> None:
        self.total, self.what, self.rows, self.bar = total, what, 0, None

    def __enter__(self) -> _MemoryReadProgress:
        from tqdm import tqdm

        log.info("reading %s rows of %s into memory", f"{self.total:,}", self.what)
        self.start = time.perf_counter()
        self.bar = tqdm(
            total=self.total,
            desc="reading into memory",
            unit="rows",
            unit_scale=True,
            disable=None,  # only on a terminal
            delay=2.0,
            leave=False,
        )
        return self

    def update(self, rows: int) -> None:
        self.rows += rows
        if self.bar is not None:
            self.bar.update(rows)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
        if exc[0] is None:
            dt = time.perf_counter() - self.start
            log.info(
                "read %s rows of %s into memory in %.1f s (%s rows/s)",
                f"{self.rows:,}",
                self.what,
                dt,
                f"{self.rows / max(dt, 1e-9):,.0f}",
            )
