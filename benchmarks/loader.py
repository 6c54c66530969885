"""Loader throughput on in-memory data, side by side in one run (ratios, not absolute claims).

    python benchmarks/loader.py                # 1,000,000 rows x 12 float32 columns, batch 1024
    python benchmarks/loader.py --rows 20000   # a quick look

Rows/s of one shuffled epoch through:
  * torch per-row:    torch.utils.data.DataLoader over a Dataset whose __getitem__ returns one
                      row (a dict of 12 numpy scalars, or one 12-value tensor), default collate;
  * tfd.DataLoader:   over tfd.MemoryDataset of the same columns (num_workers=0 and 2);
  * ceiling:          index_select of random batches from one [rows, 12] tensor (no loader).
Targets: tfd >= 0.5x the ceiling and >= 10x torch per-row. With num_workers=2 the workers'
resident memory must not grow over the epoch (sampled with psutil: RSS and USS, the memory
private to each worker, which is what copy-on-read growth would show up in).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader as TorchLoader
from torch.utils.data import Dataset

import tensorfeed as tfd

warnings.filterwarnings("ignore", message=".*set_vital.*")


class RowDictDataset(Dataset):
    """The tutorial way: one row per __getitem__, a dict of numpy scalars."""

    def __init__(self, columns: dict[str, np.ndarray]) -> None:
        self.columns = columns
        self.n = len(next(iter(columns.values())))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {k: v[i] for k, v in self.columns.items()}


class RowTensorDataset(Dataset):
    """A faster per-row variant: one [12] tensor per row (a view of a [rows, 12] tensor)."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]


@dataclass
class Result:
    name: str
    rows: int
    seconds: float
    cpu_seconds: float  # this process only: a noise-robust cross-check on a busy machine
    note: str = ""
    memory: dict[str, float] = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def rows_per_cpu_s(self) -> float:
        return self.rows / self.cpu_seconds if self.cpu_seconds > 0 else 0.0


def _rows_in(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, dict):
        return int(next(iter(batch.values())).shape[0])
    return int(batch[0].shape[0])


def timed(
    name: str,
    batches: Iterable[Any],
    max_rows: int | None = None,
    note: str = "",
    on_batch: Callable[[int], None] | None = None,
) -> Result:
    gc.collect()
    rows = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for k, batch in enumerate(batches):
        rows += _rows_in(batch)
        if on_batch is not None:
            on_batch(k)
        if max_rows is not None and rows >= max_rows:
            break
    return Result(name, rows, time.perf_counter() - t0, time.process_time() - c0, note)


def ceiling(x: torch.Tensor, batch: int, seed: int) -> Iterable[torch.Tensor]:
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    for s in range(0, len(x), batch):
        yield x.index_select(0, perm[s : s + batch])


class WorkerMemory:
    """Samples the resident (RSS) and private (USS) memory of this process's children."""

    def __init__(self, every: int) -> None:
        import psutil

        self.psutil = psutil
        self.every = every
        self.samples: list[tuple[int, float, float]] = []  # (batch, rss MiB, uss MiB) summed

    def __call__(self, k: int) -> None:
        if k % self.every:
            return
        rss = uss = 0.0
        for child in self.psutil.Process().children(recursive=True):
            try:
                info = child.memory_full_info()
            except (self.psutil.NoSuchProcess, self.psutil.AccessDenied):
                continue
            rss += info.rss / 2**20
            uss += info.uss / 2**20
        self.samples.append((k, rss, uss))

    def summary(self) -> dict[str, float]:
        if not self.samples:
            return {}
        (_, rss0, uss0), (_, rss1, uss1) = self.samples[0], self.samples[-1]
        return {
            "rss_start": rss0,
            "rss_end": rss1,
            "uss_start": uss0,
            "uss_end": uss1,
            "uss_max": max(s[2] for s in self.samples),
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--cols", type=int, default=12)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument(
        "--torch-rows",
        type=int,
        default=200_000,
        help="rows timed on the per-row torch paths (steady state; the full epoch takes minutes)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--repeat",
        type=int,
        default=5,
        help="rounds of (ceiling, tfd 0 workers) run back to back; the ratio reported is the "
        "median of the per-round ratios (this machine is shared: single runs swing 2x)",
    )
    args = p.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    x = rng.random((args.rows, args.cols), dtype=np.float32)
    columns = {f"c{j}": np.ascontiguousarray(x[:, j]) for j in range(args.cols)}
    xt = torch.from_numpy(x)
    ds = tfd.MemoryDataset(columns)
    bs = args.batch
    print(
        f"{args.rows:,} rows x {args.cols} float32 columns, batch {bs}, shuffled, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        file=sys.stderr,
    )

    results: list[Result] = []
    # warm-up epoch (builds the dataset's tensor view), then rounds of ceiling and tfd back to
    # back: each round's ratio compares two runs made under the same machine load
    loader = tfd.DataLoader(ds, batch_size=bs, shuffle=True, seed=args.seed)
    timed("warm-up", loader)
    rounds: list[tuple[Result, Result]] = []
    for r in range(max(1, args.repeat)):
        c = timed("ceiling: index_select of random batches", ceiling(xt, bs, args.seed + r))
        t = timed("tfd.DataLoader(MemoryDataset), 0 workers", loader)
        rounds.append((c, t))
        print(
            f"round {r + 1}: ceiling {c.rows_per_s:,.0f} rows/s, tfd {t.rows_per_s:,.0f} rows/s, "
            f"{t.rows_per_s / c.rows_per_s:.2f}x",
            file=sys.stderr,
        )
    # the round with the median ratio stands for both rows of the table
    rounds.sort(key=lambda ct: ct[1].rows_per_s / ct[0].rows_per_s)
    c, t = rounds[len(rounds) // 2]
    results.append(c)
    results.append(t)
    ratios = [tr.rows_per_s / cr.rows_per_s for cr, tr in rounds]
    c.note = f"median of {len(rounds)} rounds"
    t.note = f"per-round ratios {min(ratios):.2f}..{max(ratios):.2f}x"

    # a fresh dataset, as a user would build it: each worker prepares its own view of the data
    try:
        mem: WorkerMemory | None = WorkerMemory(every=max(1, (args.rows // bs) // 20))
    except ImportError:  # psutil is in tensorfeed[bench]
        mem = None
        print("psutil is not installed: worker memory is not sampled", file=sys.stderr)
    loader2 = tfd.DataLoader(
        tfd.MemoryDataset(columns), batch_size=bs, shuffle=True, seed=args.seed, num_workers=2
    )
    r = timed(
        "tfd.DataLoader(MemoryDataset), 2 workers",
        loader2,
        on_batch=mem,
        note="wall includes worker start-up",
    )
    r.memory = mem.summary() if mem is not None else {}
    results.append(r)
    del loader2

    torch_rows = min(args.torch_rows, args.rows)
    note = f"first {torch_rows:,} rows of the epoch"
    results.append(
        timed(
            "torch DataLoader, per-row dict __getitem__",
            TorchLoader(RowDictDataset(columns), batch_size=bs, shuffle=True),
            max_rows=torch_rows,
            note=note,
        )
    )
    results.append(
        timed(
            "torch DataLoader, per-row tensor __getitem__",
            TorchLoader(RowTensorDataset(xt), batch_size=bs, shuffle=True),
            max_rows=torch_rows,
            note=note,
        )
    )
    results.append(
        timed(
            "torch DataLoader, per-row dict, 2 workers",
            TorchLoader(RowDictDataset(columns), batch_size=bs, shuffle=True, num_workers=2),
            max_rows=torch_rows,
            note=note,
        )
    )

    report(results)
    return 0


def report(results: list[Result]) -> None:
    by = {r.name: r for r in results}
    ceil = by["ceiling: index_select of random batches"].rows_per_s
    tfd0 = by["tfd.DataLoader(MemoryDataset), 0 workers"].rows_per_s
    torch_dict = by["torch DataLoader, per-row dict __getitem__"].rows_per_s
    print(
        f"\n{'path':<46} {'rows/s':>12} {'x ceiling':>9} {'x torch row':>11} "
        f"{'rows/cpu-s':>12}  note"
    )
    for r in results:
        print(
            f"{r.name:<46} {r.rows_per_s:>12,.0f} {r.rows_per_s / ceil:>9.3f} "
            f"{r.rows_per_s / torch_dict:>11.1f} {r.rows_per_cpu_s:>12,.0f}  {r.note}"
        )
    cpu = (
        by["tfd.DataLoader(MemoryDataset), 0 workers"].rows_per_cpu_s
        / by["ceiling: index_select of random batches"].rows_per_cpu_s
    )
    print(f"\n(rows per CPU-second of this process, same target: {cpu:.2f}x the ceiling)")
    print(
        f"target tfd >= 0.5x ceiling:   {tfd0 / ceil:.2f}x  "
        f"{'MET' if tfd0 >= 0.5 * ceil else 'NOT MET'}"
    )
    print(
        f"target tfd >= 10x torch row:  {tfd0 / torch_dict:.1f}x  "
        f"{'MET' if tfd0 >= 10 * torch_dict else 'NOT MET'}"
    )
    mem = by["tfd.DataLoader(MemoryDataset), 2 workers"].memory
    if mem:
        growth = mem["uss_end"] - mem["uss_start"]
        print(
            f"2 workers, summed over workers (MiB): RSS {mem['rss_start']:.0f} -> "
            f"{mem['rss_end']:.0f}, USS {mem['uss_start']:.0f} -> {mem['uss_end']:.0f} "
            f"(max {mem['uss_max']:.0f}); private growth over the epoch {growth:+.0f} MiB"
        )


if __name__ == "__main__":
    raise SystemExit(main())
