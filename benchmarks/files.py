"""Images/s of one epoch over a folder of small images, side by side in one run.

Two comparisons, each side by side in one run (0 and N workers):

1. Float tensors, the tutorial's work: a hand-written per-file Pillow Dataset whose
   ``__getitem__`` returns ``ToTensor()(image)`` (torch's DataLoader), against
   ``tfd.ImageFolder(root, transform=to_tensor)`` (the torchvision-compatible PIL path: the
   transform gets each PIL image) and the fast path (``tfd.ImageFolder(root)``: uint8 batches,
   converted to float once per batch). Every configuration yields the same float
   ``[B, 3, 64, 64]`` batches in [0, 1].
2. uint8 batches: a per-file Dataset returning uint8 tensors against ``tfd.ImageFolder`` and the
   same dataset after ``cache("memory")`` and ``cache(path)``.

    python benchmarks/files.py                  # 20,000 64x64 PNG/JPEG images, 10 classes
    python benchmarks/files.py --images 500     # a quick smoke run

Targets: the PIL path within 10% of the hand-written ToTensor Dataset (ratio >= 0.90), the fast
path at least 1.5x it, and a cached epoch at least 20x the hand-written per-file epoch.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

import tensorfeed as tfd

TARGET = 20.0
COMPAT_TARGET, FAST_TARGET = 0.90, 1.5


def to_tensor(img: Any) -> torch.Tensor:
    """torchvision's ``ToTensor`` for RGB PIL images: ``HWC`` uint8 -> ``CHW`` float in [0, 1]."""
    arr = np.array(img, dtype=np.uint8, copy=True)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous().float().div_(255)


def generate(root: Path, n: int, classes: int = 10, size: int = 64) -> None:
    """``n`` images in ``classes`` folders, alternately PNG and JPEG, smooth content + noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    for c in range(classes):
        (root / f"class{c:02d}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        c = i % classes
        base = np.stack(
            [(xx * (c + 1) + i) % 256, (yy * 3 + 2 * i) % 256, (xx + yy + c * 20) % 256]
        )
        px = (base.transpose(1, 2, 0) + rng.integers(0, 24, (size, size, 3))).astype(np.uint8)
        ext = "png" if i % 2 else "jpg"
        Image.fromarray(px).save(root / f"class{c:02d}" / f"{i:06d}.{ext}", quality=90)


class PerFileDataset(torch.utils.data.Dataset):
    """The hand-written baseline: one Pillow open + decode per __getitem__, per-sample collate."""

    def __init__(self, root: Path) -> None:
        classes = sorted(d.name for d in os.scandir(root) if d.is_dir())
        self.samples = [
            (os.path.join(root, c, f), i)
            for i, c in enumerate(classes)
            for f in sorted(os.listdir(os.path.join(root, c)))
        ]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, target = self.samples[i]
        with Image.open(path) as img:
            pixels = np.array(img.convert("RGB"))  # a writable copy, as torch wants
        return torch.from_numpy(pixels).permute(2, 0, 1).contiguous(), target


class PerFileToTensor(PerFileDataset):
    """The tutorial's Dataset: Pillow open + convert, then ToTensor, per __getitem__."""

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:  # type: ignore[override]
        path, target = self.samples[i]
        with Image.open(path) as img:
            return to_tensor(img.convert("RGB")), target


def epoch(loader: Any, to_float: bool = False) -> tuple[float, int]:
    """Wall seconds and images of one full pass (worker start-up included); ``to_float``: turn
    a uint8 batch into float in [0, 1] as the training loop would (the fast path's last step)."""
    t0 = time.perf_counter()
    n = 0
    for images, targets in loader:
        if to_float:
            images = images.float().div_(255)
        assert images.dim() == 4 and targets.dtype == torch.int64
        n += int(targets.shape[0])
    return time.perf_counter() - t0, n


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run(n: int, batch_size: int, workers: int, keep: Path | None) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="tfd-bench-files-"))
    root = tmp / "images"
    try:
        _, gen_s = timed(lambda: generate(root, n))
        size_mb = sum(p.stat().st_size for p in root.rglob("*.*")) / 2**20
        print(
            f"{n} images ({size_mb:.1f} MiB of PNG/JPEG) generated in {gen_s:.1f}s; "
            f"batch_size={batch_size}; torch threads={torch.get_num_threads()}, "
            f"cpus={os.cpu_count()}",
            file=sys.stderr,
        )
        rows: list[tuple[str, float, str]] = []

        def add(name: str, loader: Any, note: str = "", to_float: bool = False) -> float:
            secs, got = epoch(loader, to_float)
            assert got == n, f"{name}: {got} images, expected {n}"
            rows.append((name, n / secs, note))
            print(f"  {name}: {n / secs:,.0f} images/s", file=sys.stderr)
            return n / secs

        compat = compare_float_paths(root, batch_size, workers, n, add)
        rows.clear()

        base = PerFileDataset(root)
        for w in (0, workers):
            add(
                f"hand-written per-file Dataset, torch DataLoader, {w} workers",
                torch.utils.data.DataLoader(
                    base, batch_size=batch_size, shuffle=True, num_workers=w
                ),
            )
        ds = tfd.ImageFolder(root)
        for w in (0, workers):
            add(
                f"tfd.ImageFolder, tfd.DataLoader, {w} workers",
                tfd.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=w),
            )

        mem, build_mem = timed(lambda: ds.cache("memory"))
        cache_dir = keep or (tmp / "cache")
        shutil.rmtree(cache_dir, ignore_errors=True)
        disk, build_disk = timed(lambda: ds.cache(cache_dir))
        reopened, reopen_s = timed(lambda: tfd.ImageFolder(root).cache(cache_dir))
        for name, cached, note in (
            ("cache('memory')", mem, f"built in {build_mem:.1f}s"),
            ("cache(path)", disk, f"built in {build_disk:.1f}s"),
            ("cache(path), a later run", reopened, f"scan + reopen {reopen_s * 1000:.0f} ms"),
        ):
            for w in (0, workers):
                add(
                    f"{name}, tfd.DataLoader, {w} workers",
                    tfd.DataLoader(cached, batch_size=batch_size, shuffle=True, num_workers=w),
                    note if w == 0 else "",
                )
        return report(rows, workers) | compat
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def compare_float_paths(
    root: Path, batch_size: int, workers: int, n: int, add: Callable[..., float]
) -> int:
    """Comparison 1 of the module docstring, each pair alternated twice (A B A B), medians."""
    tutorial = PerFileToTensor(root)
    pil_path = tfd.ImageFolder(root, transform=to_tensor)
    fast = tfd.ImageFolder(root)
    out = 0
    print("\nfloat batches [B, 3, 64, 64] in [0, 1]", file=sys.stderr)
    for w in (0, workers):
        rates: dict[str, list[float]] = {"tutorial": [], "pil": [], "fast": []}
        for _ in range(2):
            rates["tutorial"].append(
                add(
                    f"hand-written ToTensor Dataset, torch DataLoader, {w} workers",
                    torch.utils.data.DataLoader(
                        tutorial, batch_size=batch_size, shuffle=True, num_workers=w
                    ),
                )
            )
            rates["pil"].append(
                add(
                    f"tfd.ImageFolder(transform=to_tensor), PIL path, {w} workers",
                    tfd.DataLoader(pil_path, batch_size=batch_size, shuffle=True, num_workers=w),
                )
            )
            rates["fast"].append(
                add(
                    f"tfd.ImageFolder fast path, float per batch, {w} workers",
                    tfd.DataLoader(fast, batch_size=batch_size, shuffle=True, num_workers=w),
                    to_float=True,
                )
            )
        base = float(np.median(rates["tutorial"]))
        pil, quick = float(np.median(rates["pil"])) / base, float(np.median(rates["fast"])) / base
        ok = pil >= COMPAT_TARGET and quick >= FAST_TARGET
        print(
            f"{w} workers: hand-written {base:,.0f} images/s; PIL path {pil:.2f}x (target >= "
            f"{COMPAT_TARGET:.2f}), fast path {quick:.2f}x (target >= {FAST_TARGET:.1f}) -> "
            f"{'MET' if ok else 'NOT MET'}"
        )
        out |= 0 if ok else 1
    return out


def report(rows: list[tuple[str, float, str]], workers: int) -> int:
    base0 = rows[0][1]
    basew = rows[1][1]
    width = max(len(r[0]) for r in rows)
    print(
        f"\n{'configuration':<{width}}  {'images/s':>10}  {'x per-file(0)':>13}  "
        f"{f'x per-file({workers})':>13}  note"
    )
    for name, rate, note in rows:
        print(
            f"{name:<{width}}  {rate:>10,.0f}  {rate / base0:>12.1f}x  {rate / basew:>12.1f}x  {note}"
        )
    cached = [r for r in rows if r[0].startswith("cache")]
    best = max(cached, key=lambda r: r[1])
    ok = best[1] >= TARGET * base0
    print(
        f"\ntarget: a cached epoch >= {TARGET:.0f}x the hand-written per-file epoch "
        f"(0 workers): best {best[1] / base0:.1f}x ({best[0]}) -> {'MET' if ok else 'NOT MET'}"
    )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=20_000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--keep-cache", type=Path, default=None, help="cache folder to keep")
    args = p.parse_args(argv)
    return run(args.images, args.batch_size, args.workers, args.keep_cache)


if __name__ == "__main__":
    sys.exit(main())
