"""Embedded demos for ``tensorfeed demo [NAME]``: each module defines ``add_arguments(parser)`` and
``run(args) -> int``. ``ecommerce`` (the default) trains from a three-way SQL join.

Data a demo builds once and reuses (the e-commerce SQLite database, the lake) lives in
:func:`cache_dir`; anything temporary is removed before the demo returns, so nothing is left in
the temporary directory.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Where demos keep the data they build: ``override`` (a demo's ``--cache-dir``), else
    ``$TENSORFEED_CACHE``, else ``$XDG_CACHE_HOME/tensorfeed`` (default ``~/.cache/tensorfeed``)."""
    root = (
        override
        or os.environ.get("TENSORFEED_CACHE")
        or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
            "tensorfeed",
        )
    )
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def torch_cache_in_cache_dir(override: str | os.PathLike[str] | None = None) -> None:
    """Point torch's compile cache (``TORCHINDUCTOR_CACHE_DIR``, which torch creates on first use
    of an optimizer, by default in the temporary directory) into :func:`cache_dir`, unless the
    user chose a place for it. Called by the command line before a demo runs, so that a demo
    leaves nothing in the temporary directory."""
    if not os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir(override) / "torchinductor")


class ClockedBar:
    """A tqdm bar (on stderr) whose clock starts when the first item is done.

    The wait for the first batch (workers starting, an index being built) says nothing about the
    rate of the rest; tqdm would divide it into the first item and show an ETA of hours. Until the
    second update the bar shows no rate and no ETA (``?``)."""

    def __init__(self, total: int | None = None, **kwargs: Any) -> None:
        from tqdm import tqdm

        kwargs.setdefault("file", sys.stderr)
        self.bar = tqdm(total=total, **kwargs)
        self.started = False

    def update(self, n: int = 1) -> None:
        if self.started:
            self.bar.update(n)
            return
        self.started = True
        bar = self.bar
        bar.reset()  # n = 0, the clock starts now, the rate estimates are cleared
        bar.n = bar.last_print_n = bar.initial = n  # done, but not part of the rate
        bar.refresh()

    def iterate(self, iterable: Iterable[T]) -> Iterator[T]:
        """Yield the items of ``iterable``, counting each one once the caller is done with it."""
        try:
            for item in iterable:
                yield item
                self.update()
        finally:
            self.close()

    def set_postfix(self, **kwargs: Any) -> None:
        self.bar.set_postfix(**kwargs)

    def write(self, text: str) -> None:
        """Print ``text`` (on stdout) without breaking the bar."""
        self.bar.write(text)

    def close(self) -> None:
        self.bar.close()
