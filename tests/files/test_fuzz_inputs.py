"""Fuzzed, not hoped (#13): mutated PNG/JPEG/WebP files, IDX files (plain and gzipped), annotation
CSVs and cache files go through the datasets in a child process under a memory cap and a time
limit (fuzz_files.py); each gives a sample or a promised error, never another exception, a hang
or a memory blow-up."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tensorfeed as tfd

from .files_helpers import Image, write_mnist

SCRIPT = Path(__file__).with_name("fuzz_files.py")
ROUNDS = 40  # x 12 inputs a round: ~500 cases in a few seconds


def _corpus(root: Path) -> Path:
    rng = np.random.default_rng(0)
    px = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    for ext, fmt in (("png", "PNG"), ("jpg", "JPEG"), ("webp", "WEBP")):
        buf = io.BytesIO()
        Image.fromarray(px).save(buf, fmt)
        (root / f"seed.{ext}").write_bytes(buf.getvalue())
    write_mnist(root / "mnist", n_train=6, n_test=3, gz=False)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):  # and gzipped ones
        import gzip

        data = (root / "mnist" / name).read_bytes()
        (root / "mnist" / name).unlink()
        (root / "mnist" / f"{name}.gz").write_bytes(gzip.compress(data))
    ann = root / "annotations"
    (ann / "imgs").mkdir(parents=True)
    lines = ["path,label"]
    for i in range(3):
        Image.fromarray(px).save(ann / "imgs" / f"{i}.png")
        lines.append(f"imgs/{i}.png,{'cat' if i % 2 else 'dog'}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    folder = root / "cached-images" / "c"
    folder.mkdir(parents=True)
    for i in range(4):
        Image.fromarray(px).save(folder / f"{i}.png")
    tfd.ImageFolder(root / "cached-images").cache(root / "cache")
    return root


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc: Linux")
def test_mutated_inputs_give_samples_or_promised_errors(tmp_path):
    corpus = _corpus(tmp_path)
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(corpus), str(ROUNDS), "7"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["cases"] == ROUNDS * 12
    assert report["failures"] == [], json.dumps(report["failures"][:5], indent=1)
