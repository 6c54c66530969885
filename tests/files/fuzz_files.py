"""Feed mutated file inputs through the file datasets under a memory cap (test_fuzz_inputs.py).

``python fuzz_files.py CORPUS ROUNDS SEED``: CORPUS holds the seeds (``seed.png``, ``seed.jpg``,
``seed.webp``, the MNIST IDX files plain and gzipped, ``labels.csv`` with its images, and an
ImageFolder cache ``cache/*.arrow``). Each round mutates every seed (bit flips, truncation,
inserted bytes, a 4-byte field overwritten with an extreme value), writes it where its dataset
reads it, and reads it. Every input must give samples or one of the errors a caller is promised
(``tfd.DataError`` and its torchvision-compatible subclasses; a NotFoundError for a CSV whose
header lost a column); anything else is a failure. The address space is capped at what the
process uses after its imports plus 1.5 GiB, so a memory blow-up is a MemoryError, reported
too. Prints a JSON report: cases run, failures (kind, error, the mutation).
"""

from __future__ import annotations

import json
import random
import resource
import shutil
import sys
import traceback
from pathlib import Path

import pyarrow as pa
import torch

import tensorfeed as tfd
from tensorfeed.cache import _sha256

EXTREMES = [0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 0x10000, 0, 1]


def mutate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    buf = bytearray(data)
    op = rng.choice(["flip", "truncate", "insert", "field", "field", "flip"])
    if op == "flip" and buf:
        at = [rng.randrange(len(buf)) for _ in range(rng.randint(1, 8))]
        for i in at:
            buf[i] ^= 1 << rng.randrange(8)
        return bytes(buf), f"flip bits at {at}"
    if op == "truncate":
        n = rng.randrange(len(buf) + 1)
        return bytes(buf[:n]), f"truncate to {n} of {len(buf)} bytes"
    if op == "insert":
        at, extra = rng.randrange(len(buf) + 1), bytes(rng.randrange(256) for _ in range(16))
        return bytes(buf[:at] + extra + buf[at:]), f"insert 16 bytes at {at}"
    at = rng.randrange(max(1, min(len(buf) - 4, 64)))  # headers live near the start
    value = rng.choice(EXTREMES)
    buf[at : at + 4] = value.to_bytes(4, "big")
    return bytes(buf), f"field at {at} = {value:#x}"


def cap_memory() -> None:
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    limit = vm + (3 << 29)  # 1.5 GiB above what the imports took
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def main(corpus: Path, rounds: int, seed: int) -> dict:
    rng = random.Random(seed)
    work = corpus / "work"
    cases, failures = 0, []

    def check(kind: str, how: str, run, allowed=(tfd.DataError,)) -> None:
        nonlocal cases
        cases += 1
        try:
            run()
        except allowed:
            pass
        except BaseException as exc:  # a crash of another kind, a MemoryError, a hang's interrupt
            failures.append(
                {
                    "kind": kind,
                    "mutation": how,
                    "error": f"{type(exc).__name__}: {exc}"[:300],
                    "where": traceback.format_exc().splitlines()[-3:],
                }
            )

    images = {ext: (corpus / f"seed.{ext}").read_bytes() for ext in ("png", "jpg", "webp")}
    idx = {p.name: p.read_bytes() for p in (corpus / "mnist").iterdir()}
    csv = (corpus / "labels.csv").read_bytes()
    cache_dir = corpus / "cache"
    arrow = next(p for p in cache_dir.iterdir() if p.suffix == ".arrow")
    arrow_bytes = arrow.read_bytes()

    def to_tensor(img):
        return torch.from_numpy(__import__("numpy").array(img, copy=True)).float()

    for _ in range(rounds):
        for ext, data in images.items():
            mutated, how = mutate(data, rng)
            root = work / "folder"
            shutil.rmtree(root, ignore_errors=True)
            (root / "c").mkdir(parents=True)
            (root / "c" / f"x.{ext}").write_bytes(mutated)
            check(ext, how, lambda r=root: tfd.ImageFolder(r)[0])
            check(
                ext + " (PIL path)", how, lambda r=root: tfd.ImageFolder(r, transform=to_tensor)[0]
            )
        for name, data in idx.items():
            mutated, how = mutate(data, rng)
            raw = work / "MNIST" / "raw"
            shutil.rmtree(work / "MNIST", ignore_errors=True)
            raw.mkdir(parents=True)
            for other, body in idx.items():
                (raw / other).write_bytes(mutated if other == name else body)

            def read_mnist() -> None:
                ds = tfd.MNIST(work)
                for _ in tfd.DataLoader(ds, batch_size=64):
                    pass

            check(f"idx {name}", how, read_mnist)
        mutated, how = mutate(csv, rng)
        (corpus / "annotations" / "labels.csv").write_bytes(mutated)
        check(
            "annotations csv",
            how,
            lambda: [
                s
                for s in tfd.AnnotationsDataset(
                    corpus / "annotations" / "labels.csv", corpus / "annotations", "path", "label"
                )
            ],
            allowed=(tfd.DataError, tfd.NotFoundError),
        )
        mutated, how = mutate(arrow_bytes, rng)
        arrow.write_bytes(mutated)
        (arrow.parent / (arrow.name + ".sha256")).write_text(_sha256(str(arrow)) + "\n")  # forged

        def read_cache() -> None:
            cached = tfd.ImageFolder(corpus / "cached-images").cache(cache_dir)
            for _ in tfd.DataLoader(cached, batch_size=4):
                pass

        check("cache file (checksum forged)", how, read_cache)
    return {"cases": cases, "failures": failures}


if __name__ == "__main__":
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    torch.set_num_threads(1)
    cap_memory()
    report = main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
    print(json.dumps(report))
