"""Restarting DataLoader workers after one dies, from the last batch handed out.

NOTE [ Worker restarts ]
torch ends an epoch with a RuntimeError when a worker process dies (SIGKILL, the OOM killer).
With ``tfd.DataLoader(max_worker_restarts=k)`` the loader instead takes its checkpoint (the
position of the last batch handed to the training loop: torchdata snapshots it with every batch),
shuts the other workers down, loads that checkpoint and starts new workers, at most ``k`` times
per epoch, logging each restart with the source. It is the same resume as after a preemption
(map-style: the sampler's position; streams: each worker's shard position), so no row is lost
or repeated. The default, 0, keeps torch's behaviour (raise), with the source named.

torch's SIGCHLD handler raises in the main thread wherever it happens to be, often the training
loop's own code, out of our reach (no restart, no source in the message). So the workers are
taken off that handler, and a death is found inside ``next()``: torch's own check of its workers
while it waits (every 5 s), or a result pipe that a dying worker left reset or truncated.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger("tensorfeed")


class RestartingIterator:
    """Batches of ``start()``; a dead worker restarts the epoch's iterator from the loader's
    checkpoint, at most ``limit`` times (see NOTE above)."""

    def __init__(self, loader: Any, start: Callable[[], Iterator[Any]], limit: int) -> None:
        self.loader, self.start, self.limit = loader, start, limit
        self.restarts = 0
        self.it = self._begin()

    def __iter__(self) -> RestartingIterator:
        return self

    def __next__(self) -> Any:
        while True:
            try:
                return next(self.it)
            except (RuntimeError, OSError, EOFError) as exc:
                if not self._a_worker_died(exc):
                    raise
                self._restart(exc)

    def _begin(self) -> Iterator[Any]:
        it = self.start()
        inner = self.loader._iterator
        if getattr(inner, "_worker_pids_set", False):
            import torch

            torch._C._remove_worker_pids(id(inner))  # see NOTE above
            inner._worker_pids_set = False
        return it

    def _a_worker_died(self, exc: BaseException) -> bool:
        if isinstance(exc, RuntimeError) and "DataLoader worker (pid" in str(exc):
            return True
        workers = getattr(self.loader._iterator, "_workers", None) or []
        deadline = time.monotonic() + 2.0  # a killed worker may not be reaped yet
        while time.monotonic() < deadline:
            if any(not w.is_alive() for w in workers):
                return True
            time.sleep(0.05)
        return False

    def _restart(self, exc: BaseException) -> None:
        loader = self.loader
        source = loader._source.describe() if hasattr(loader._source, "describe") else "a dataset"
        if self.restarts >= self.limit:
            hint = (
                "pass max_worker_restarts=k to restart the workers from the last batch handed out"
                if self.limit == 0
                else f"it had been restarted {self.restarts} time(s) this epoch already"
            )
            raise RuntimeError(
                f"a DataLoader worker reading {source} died: {exc} ({hint})"
            ) from None
        self.restarts += 1
        state = loader._rank_state()  # this rank's alone: other ranks' workers are alive
        shutdown = getattr(loader._iterator, "_shutdown_workers", None)
        if callable(shutdown):
            shutdown()
        loader._iterator = None
        loader._resume_rank(state)
        log.warning(
            "a DataLoader worker reading %s died (%s); restart %d of %d from the last batch handed "
            "out (epoch %d)",
            source,
            exc,
            self.restarts,
            self.limit,
            loader.epoch,
        )
        self.it = self._begin()
