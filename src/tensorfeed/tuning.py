"""Choosing ``num_workers`` by measuring: :func:`tune` and ``DataLoader(num_workers="auto")``.

NOTE [ How tune searches ]
Each candidate worker count gets a fresh ``tfd.DataLoader`` (shuffled for map-style data). The
first batch is timed separately (worker start-up, connections); throughput is rows/s over the
next batches, up to ``max_batches`` or ``max_seconds``. The search measures 0 workers (the
baseline), then ``cores // 2``, and keeps adding workers (x1.5) while that is more than 5%
faster; it stops going up on an error or when less than 10% of the machine's memory is
available (psutil if installed, else ``/proc/meminfo``). If ``cores // 2`` is not 5% faster
than the baseline it tries halving instead. The recommendation is the fewest workers within 5%
of the fastest measurement, since every worker costs memory and start-up time.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ._deps import require
from .collate_fn import batch_size_of
from .errors import ConfigError
from .loader_base import BaseDataLoader

_GAIN = 1.05  # a change must be more than 5% faster to count
_LOW_MEMORY = 0.10  # stop adding workers below this share of available memory


@dataclass(frozen=True)
class TuneRow:
    """One measurement: throughput at ``num_workers``."""

    num_workers: int
    rows_per_s: float
    batches: int
    startup_s: float
    status: str = "ok"  # "ok", "memory pressure" or "error: ..."

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class TuneResult:
    """The recommendation (``int(result)`` is the worker count) and every measurement."""

    num_workers: int
    table: tuple[TuneRow, ...]
    batch_size: int

    def __int__(self) -> int:
        return self.num_workers

    def __index__(self) -> int:
        return self.num_workers

    def format(self) -> str:
        best = max((r.rows_per_s for r in self.table if r.ok), default=0.0)
        lines = [
            f"batch_size={self.batch_size}",
            f"{'workers':>7}  {'rows/s':>12}  {'vs best':>7}  {'startup s':>9}  status",
        ]
        for r in sorted(self.table, key=lambda r: r.num_workers):
            ratio = f"{r.rows_per_s / best:.2f}x" if best > 0 else "-"
            mark = "  <- recommended" if r.num_workers == self.num_workers else ""
            lines.append(
                f"{r.num_workers:>7}  {r.rows_per_s:>12,.0f}  {ratio:>7}  {r.startup_s:>9.2f}  "
                f"{r.status}{mark}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()

    def as_dict(self) -> dict[str, Any]:
        return {
            "num_workers": self.num_workers,
            "batch_size": self.batch_size,
            "table": [asdict(r) for r in self.table],
        }

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """Save rows/s against worker count as a PNG (needs ``tensorfeed[plot]``)."""
        require("matplotlib", "plot", "tune's plot")
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        rows = sorted((r for r in self.table if r.ok), key=lambda r: r.num_workers)
        fig = Figure(figsize=(5.5, 3.4), dpi=100)
        FigureCanvasAgg(fig)  # a private canvas: no pyplot, no global backend switch
        ax = fig.add_subplot()
        ax.plot([r.num_workers for r in rows], [r.rows_per_s for r in rows], marker="o")
        chosen = [r for r in rows if r.num_workers == self.num_workers]
        if chosen:
            ax.plot(
                [chosen[0].num_workers], [chosen[0].rows_per_s], marker="*", markersize=14,
                linestyle="none", label=f"recommended: {self.num_workers}",
            )  # fmt: skip
            ax.legend(loc="best")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("num_workers")
        ax.set_ylabel("rows/s")
        ax.set_title(f"tensorfeed tune (batch_size={self.batch_size})")
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        out = Path(path)
        fig.savefig(out, format="png")
        return out


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def available_memory_fraction() -> float | None:
    """Share of the machine's memory still available (None when it cannot be read)."""
    try:
        import psutil

        vm = psutil.virtual_memory()
        return float(vm.available) / float(vm.total)
    except ImportError:
        pass
    try:
        fields = {}
        with open("/proc/meminfo") as f:
            for line in f:
                name, _, rest = line.partition(":")
                fields[name] = float(rest.split()[0])
        return fields["MemAvailable"] / fields["MemTotal"]
    except (OSError, KeyError, ValueError, IndexError, ZeroDivisionError):
        return None


def _memory_low() -> bool:
    avail = available_memory_fraction()
    return avail is not None and avail < _LOW_MEMORY


def _is_stream(dataset: Any) -> bool:
    from torch.utils.data import IterableDataset

    return isinstance(dataset, IterableDataset)


def measure(
    dataset: Any,
    batch_size: int,
    num_workers: int,
    max_batches: int = 50,
    max_seconds: float = 5.0,
    **loader_kwargs: Any,
) -> TuneRow:
    """Throughput of ``tfd.DataLoader(dataset, batch_size, num_workers=...)`` (one measurement)."""
    kwargs = dict(loader_kwargs)
    if not _is_stream(dataset):
        kwargs.setdefault("shuffle", True)
    t0 = time.perf_counter()
    loader = BaseDataLoader(dataset, batch_size=batch_size, num_workers=num_workers, **kwargs)
    it = iter(loader)
    status = "ok"
    try:
        first = next(it, None)
        startup = time.perf_counter() - t0
        if first is None:
            return TuneRow(num_workers, 0.0, 0, startup, "error: the dataset is empty")
        rows, batches = 0, 0
        t1 = time.perf_counter()
        while batches < max_batches and time.perf_counter() - t1 < max_seconds:
            batch = next(it, None)
            if batch is None:
                break
            rows += batch_size_of(batch)
            batches += 1
            if batches % 8 == 0 and _memory_low():
                status = "memory pressure"
                break
        elapsed = time.perf_counter() - t1
        if batches == 0:  # a one-batch dataset: all we have is the first batch
            rate = batch_size_of(first) / startup if startup > 0 else 0.0
            return TuneRow(num_workers, rate, 1, startup, status)
        return TuneRow(num_workers, rows / elapsed, batches, startup, status)
    finally:
        del it  # shuts the workers down now rather than at garbage collection


def _up(w: int) -> int:
    return w + max(1, w // 2)


def tune(
    dataset: Any,
    batch_size: int,
    candidates: Sequence[int] | None = None,
    max_batches: int = 50,
    max_seconds: float = 5.0,
    plot: str | os.PathLike[str] | None = None,
    verbose: bool = True,
    **loader_kwargs: Any,
) -> TuneResult:
    """Measure throughput through ``tfd.DataLoader`` at several worker counts and recommend one.

    ``candidates`` fixes the worker counts to measure; by default the search of NOTE [ How tune
    searches ] runs. Each measurement is bounded by ``max_batches`` batches and ``max_seconds``
    seconds (after the first batch). ``verbose`` prints the table; ``plot`` saves a PNG of it
    (needs ``tensorfeed[plot]``). Extra keyword arguments go to every ``DataLoader``.
    Returns a :class:`TuneResult`: ``.num_workers`` (also ``int(result)``) and ``.table``.
    """
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if max_batches < 1 or max_seconds <= 0:
        raise ConfigError("max_batches must be >= 1 and max_seconds > 0")
    if candidates is not None:
        bad = [c for c in candidates if not isinstance(c, int) or c < 0]
        if bad or not candidates:
            raise ConfigError(f"candidates must be non-negative worker counts, got {candidates!r}")
    rows: dict[int, TuneRow] = {}

    def run(w: int) -> TuneRow:
        if w in rows:
            return rows[w]
        if w > 0 and _memory_low():
            row = TuneRow(w, 0.0, 0, 0.0, "memory pressure")
        else:
            try:
                row = measure(dataset, batch_size, w, max_batches, max_seconds, **loader_kwargs)
            except Exception as exc:
                if w == 0:
                    raise  # the dataset itself fails: that is the error to show
                row = TuneRow(w, 0.0, 0, 0.0, f"error: {type(exc).__name__}: {exc}"[:160])
        rows[w] = row
        if verbose:
            print(
                f"tune: {w} workers -> {row.rows_per_s:,.0f} rows/s ({row.status})",
                file=sys.stderr,
            )
        return row

    if candidates is not None:
        for w in dict.fromkeys(candidates):
            if not run(w).ok and w > 0 and rows[w].status == "memory pressure":
                break
    else:
        _search(run)
    result = _recommend(rows, int(batch_size))
    if verbose:
        print(result.format())
    if plot is not None:
        result.plot(plot)
    return result


def _search(run: Any) -> None:
    limit = 2 * _cpu_count()
    best = run(0)
    start = max(1, _cpu_count() // 2)
    current = run(start)
    if current.ok and current.rows_per_s > best.rows_per_s * _GAIN:
        w = start
        while True:
            nxt = _up(w)
            if nxt > limit:
                break
            row = run(nxt)
            if not row.ok or row.rows_per_s <= current.rows_per_s * _GAIN:
                break
            w, current = nxt, row
    else:
        w = start // 2
        top = max(best.rows_per_s, current.rows_per_s if current.ok else 0.0)
        while w >= 1:
            row = run(w)
            if not row.ok or row.rows_per_s <= top * _GAIN:
                break
            top, w = row.rows_per_s, w // 2


def _recommend(rows: dict[int, TuneRow], batch_size: int) -> TuneResult:
    ok = [r for r in rows.values() if r.ok]
    table = tuple(sorted(rows.values(), key=lambda r: r.num_workers))
    if not ok:
        return TuneResult(0, table, batch_size)
    best = max(r.rows_per_s for r in ok)
    chosen = min(r.num_workers for r in ok if r.rows_per_s * _GAIN >= best)
    return TuneResult(chosen, table, batch_size)


# --------------------------------------------------------------------------- num_workers="auto"

_AUTO_CACHE: dict[str, int] = {}
_CACHE_FILE = "num_workers.json"


def cache_dir() -> Path:
    """``$TENSORFEED_CACHE``, else ``~/.cache/tensorfeed``."""
    env = os.environ.get("TENSORFEED_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "tensorfeed"


def _identity(dataset: Any) -> str | None:
    fp = getattr(dataset, "fingerprint", None)
    if callable(fp):
        return str(fp())
    describe = getattr(dataset, "describe", None)
    if callable(describe):
        return f"{type(dataset).__name__}:{describe()}"
    return None  # no stable identity: measure every time rather than risk a wrong cache hit


def _read_disk() -> dict[str, int]:
    try:
        data = json.loads((cache_dir() / _CACHE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, int)} if isinstance(data, dict) else {}


def _write_disk(key: str, value: int) -> None:
    with contextlib.suppress(OSError):
        folder = cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        data = _read_disk()
        data[key] = value
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".num_workers.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, folder / _CACHE_FILE)


def auto_num_workers(dataset: Any, batch_size: int) -> int:
    """The worker count for ``DataLoader(num_workers="auto")``: a short :func:`tune` (about a
    second per candidate), cached per dataset fingerprint, batch size and CPU count in this
    process and on disk (``num_workers.json`` under :func:`cache_dir`)."""
    ident = _identity(dataset)
    key = None if ident is None else f"{ident}|batch_size={int(batch_size)}|cpus={_cpu_count()}"
    if key is not None:
        if key in _AUTO_CACHE:
            return _AUTO_CACHE[key]
        on_disk = _read_disk().get(key)
        if on_disk is not None:
            _AUTO_CACHE[key] = on_disk
            return on_disk
    chosen = tune(dataset, batch_size, max_batches=20, max_seconds=1.0, verbose=False).num_workers
    if key is not None:
        _AUTO_CACHE[key] = chosen
        _write_disk(key, chosen)
    return chosen
