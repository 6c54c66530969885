"""Train a 30-day readmission-risk model straight from a Hive-partitioned Parquet lake.

On first run this builds (seeded) a lake of synthetic patient records, ``year=YYYY/region=R/``
partitions of Parquet files (6 years x 4 regions, 300,000 patients by default), in ``--cache-dir``
(default ``$TENSORFEED_CACHE``, else ``~/.cache/tensorfeed``), or writes it to ``--uri`` (a folder or
``s3://bucket/prefix``, with ``--storage-option key=value``, repeatable, as in s3fs: key, secret,
endpoint_url, region, connect_timeout, retries ...).
A small PyTorch model then learns readmission from ``tfd.LakeDataset`` (years up to 2023, two
regions by default, a filter pushed down to the partitions) with the locality-aware shuffle, and is
validated on 2024 through ``tfd.LakeStream``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import ConfigError

VERSION = 1
YEARS = tuple(range(2019, 2025))
REGIONS = ("EU", "US", "APAC", "LATAM")
FEATURES = [
    "age",
    "sex",
    "bmi",
    "systolic_bp",
    "glucose",
    "hba1c",
    "prior_admissions",
    "length_of_stay",
    "num_medications",
    "comorbidity_index",
]
TARGET = "readmitted"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=300_000, help="patients (default 300,000)")
    parser.add_argument(
        "--uri",
        default=None,
        help="where the lake lives: a folder or s3://bucket/prefix (default: a folder in the "
        "cache dir)",
    )
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="where the default lake is cached (default: $TENSORFEED_CACHE, else "
        "~/.cache/tensorfeed)",
    )
    parser.add_argument(
        "--storage-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an S3 storage option (repeatable): key, secret, token, endpoint_url, region, "
        "connect_timeout, read_timeout, max_attempts, retries, retry_deadline, anon ...",
    )
    parser.add_argument(
        "--regions", default="EU,US", help="regions to train on (a partition filter; default EU,US)"
    )
    parser.add_argument("--epochs", type=int, default=2, help="training epochs (default 2)")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument(
        "--window", type=int, default=8, help="row groups per locality-shuffle window (default 8)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the model")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the lake even if cached")


# --------------------------------------------------------------------------- the data


def generate(rows: int, seed: int) -> dict[tuple[int, str], pa.Table]:
    """Patients spread over (year, region). Readmission depends on age, prior admissions,
    comorbidities, glucose control, length of stay and a little on the region and year; no
    single feature gives it away."""
    rng = np.random.default_rng([seed, VERSION])
    year = rng.choice(np.array(YEARS), rows)
    region = rng.choice(len(REGIONS), rows, p=[0.3, 0.3, 0.25, 0.15])
    age = np.clip(rng.normal(58, 17, rows), 18, 99).round().astype(np.int64)
    sex = rng.integers(0, 2, rows).astype(np.int64)
    bmi = np.clip(rng.normal(27.5, 5.5, rows), 15, 60).round(1)
    systolic = np.clip(rng.normal(128 + 0.3 * (age - 58), 17, rows), 85, 220).round()
    hba1c = np.clip(rng.lognormal(np.log(5.9), 0.18, rows), 4.0, 14.0).round(1)
    glucose = np.clip(18 * hba1c + rng.normal(0, 20, rows), 60, 400).round()
    prior = rng.poisson(0.4 + 0.02 * np.maximum(age - 50, 0), rows).astype(np.int64)
    comorb = np.clip(rng.gamma(1.5 + age / 40, 0.8, rows), 0, 15).round(2)
    stay = (1 + rng.poisson(2 + 0.4 * comorb + 0.5 * prior, rows)).astype(np.int64)
    meds = rng.poisson(3 + 0.8 * comorb, rows).astype(np.int64)
    logit = (
        -3.1
        + 0.025 * (age - 58)
        + 0.55 * prior
        + 0.22 * comorb
        + 0.35 * (hba1c - 6)
        + 0.07 * (stay - 4)
        + 0.015 * (bmi - 27)
        + 0.04 * (meds - 5)
        + np.array([0.0, 0.15, -0.1, 0.2])[region]
        - 0.05 * (year - 2019)
    )
    readmitted = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    patient_id = rng.permutation(rows).astype(np.int64) + 1_000_000
    cols = {
        "patient_id": patient_id,
        "age": age,
        "sex": sex,
        "bmi": bmi,
        "systolic_bp": systolic,
        "glucose": glucose,
        "hba1c": hba1c,
        "prior_admissions": prior,
        "length_of_stay": stay,
        "num_medications": meds,
        "comorbidity_index": comorb,
        TARGET: readmitted,
    }
    table = pa.table(cols)
    out = {}
    for y in YEARS:
        for r, name in enumerate(REGIONS):
            mask = (year == y) & (region == r)
            out[(y, name)] = table.filter(pa.array(mask))
    return out


_INT_OPTIONS = ("max_attempts", "retries")
_FLOAT_OPTIONS = ("connect_timeout", "read_timeout", "request_timeout", "retry_deadline")
_BOOL_OPTIONS = ("anon", "anonymous", "use_ssl")


def storage_options(pairs: list[str]) -> dict[str, Any]:
    """``--storage-option KEY=VALUE`` flags as storage options, numbers and booleans typed."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--storage-option takes KEY=VALUE, got {key or pair!r}")
        try:
            if key in _INT_OPTIONS:
                out[key] = int(value)
            elif key in _FLOAT_OPTIONS:
                out[key] = float(value)
            elif key in _BOOL_OPTIONS:
                out[key] = {"true": True, "1": True, "false": False, "0": False}[value.lower()]
            else:
                out[key] = value
        except (ValueError, KeyError):
            kind = "an integer" if key in _INT_OPTIONS else "a number"
            kind = "true or false" if key in _BOOL_OPTIONS else kind
            raise ConfigError(f"--storage-option {key}= takes {kind}, got {value!r}") from None
    return out


def _marker(uri: str, rows: int, seed: int) -> str:
    return f"{uri.rstrip('/')}/_TENSORFEED_DEMO_v{VERSION}_rows{rows}_seed{seed}"


def ensure_lake(
    uri: str, rows: int, seed: int, storage_options: dict[str, Any], rebuild: bool = False
) -> bool:
    """Build the lake at ``uri`` unless it is already there. Returns True if it was built."""
    import pyarrow.parquet as pq
    from pyarrow import fs as pafs

    from ..sources.lake.fs import (
        display_uri,
        filesystem_for,
        parse_location,
        parse_storage_options,
        retrying,
    )
    from . import ClockedBar

    loc = parse_location(uri)
    s3 = parse_storage_options(storage_options)
    s3opt = s3 if loc.scheme == "s3" else None
    shown = display_uri(uri)
    fs = filesystem_for(loc.scheme, s3, loc.path.split("/", 1)[0])
    marker = parse_location(_marker(uri, rows, seed)).path

    def io(fn: Any, what: str) -> Any:  # S3 errors are retried and translated, local ones kept
        return retrying(fn, what, s3opt) if s3opt is not None else fn()

    if not rebuild:
        info = io(lambda: fs.get_file_info(marker), f"looking for the lake at {shown}")
        if info.type == pafs.FileType.File:
            return False
    out = _writer(loc.scheme, s3, fs)
    parts = generate(rows, seed)
    bar = ClockedBar(rows, desc="building the lake", unit="row", unit_scale=True, leave=False)
    try:
        for (y, r), t in parts.items():
            d = f"{loc.path}/year={y}/region={r}"
            if loc.scheme == "file":
                os.makedirs(d, exist_ok=True)

            def write(t: pa.Table = t, d: str = d) -> None:
                pq.write_table(
                    t,
                    f"{d}/part-0000.parquet",
                    filesystem=out,
                    row_group_size=16_384,
                    compression="snappy",
                )

            io(write, f"writing {loc.display(d)}/part-0000.parquet")
            bar.update(t.num_rows)
    finally:
        bar.close()

    def finish() -> None:
        with out.open_output_stream(marker) as f:
            f.write(b"built by tensorfeed demo lake\n")

    io(finish, f"writing {loc.display(marker)}")
    return True


def _writer(scheme: str, s3: Any, fs: Any) -> Any:
    """The filesystem that writes the lake: s3fs for S3 when installed (plain PutObject for small
    files, which every S3-compatible store accepts), else pyarrow's own."""
    if scheme != "s3":
        return fs
    try:
        import s3fs
        from pyarrow.fs import FSSpecHandler, PyFileSystem
    except ImportError:
        return fs
    client: dict[str, Any] = {}
    if s3.endpoint_override:
        client["endpoint_url"] = f"{s3.scheme or 'https'}://{s3.endpoint_override}"
    if s3.region:
        client["region_name"] = s3.region
    kw: dict[str, Any] = {"client_kwargs": client, "anon": s3.anonymous}
    if s3.access_key:
        kw.update(key=s3.access_key, secret=s3.secret_key, token=s3.session_token)
    return PyFileSystem(FSSpecHandler(s3fs.S3FileSystem(**kw)))


# --------------------------------------------------------------------------- training


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tied scores averaged)."""
    pos = labels == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def run(args: argparse.Namespace) -> int:
    import torch
    from torch import nn
    from tqdm import tqdm

    import tensorfeed as tfd

    from ..sources.lake.fs import display_uri
    from . import ClockedBar, cache_dir

    options = storage_options(args.storage_option)
    if args.rows < 1:
        raise ConfigError(f"rows must be >= 1, got {args.rows}")
    uri = args.uri or str(cache_dir(args.cache_dir) / f"lake-v{VERSION}-{args.rows}-{args.seed}")
    t0 = time.perf_counter()
    built = ensure_lake(uri, args.rows, args.seed, options, args.rebuild)
    dt = time.perf_counter() - t0
    speed = f", {args.rows / max(dt, 1e-9):,.0f} patients/s" if built else ""
    print(
        f"lake {'built' if built else 'cached'} at {display_uri(uri)} ({dt:.1f}s{speed})",
        file=sys.stderr,
    )

    regions = [r for r in args.regions.split(",") if r]
    train_filter = [("year", "<=", 2023), ("region", "in", regions)]
    so = options or None
    train = tfd.LakeDataset(
        uri, filter=train_filter, features=FEATURES, target=TARGET, storage_options=so
    )
    val = tfd.LakeStream(
        uri,
        filter=[("year", "=", 2024), ("region", "in", regions)],
        features=FEATURES,
        target=TARGET,
        storage_options=so,
    )
    print(
        f"train: {len(train):,} patients in {len(train.files)} files, "
        f"{train.num_row_groups} row groups; validation: year 2024",
        file=sys.stderr,
    )

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # a model this small trains fastest without intra-op threads
    model = nn.Sequential(
        nn.BatchNorm1d(len(FEATURES)), nn.Linear(len(FEATURES), 32), nn.ReLU(), nn.Linear(32, 1)
    )
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.BCEWithLogitsLoss()
    loader = tfd.DataLoader(
        train,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        sampler=train.locality_sampler(seed=args.seed, window=args.window),
        seed=args.seed,
    )
    rows = 0
    wall = wait = 0.0
    for epoch in range(args.epochs):
        loader.set_epoch(epoch)
        model.train()
        bar = ClockedBar(
            len(loader), desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch", leave=False
        )
        for x, y in bar.iterate(loader):
            opt.zero_grad()
            loss = loss_fn(model(x).squeeze(1), y.float())
            loss.backward()
            opt.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        rows += loader.stats.rows
        wall += loader.stats.wall_s
        wait += loader.stats.wait_s

    model.eval()
    scores, labels = [], []
    with torch.no_grad():
        for x, y in tqdm(
            tfd.DataLoader(val, batch_size=4096, num_workers=args.num_workers),
            desc="validation",
            unit="batch",
            file=sys.stderr,
            leave=False,
        ):
            scores.append(torch.sigmoid(model(x).squeeze(1)).numpy())
            labels.append(y.numpy())
    s, lab = np.concatenate(scores), np.concatenate(labels)
    auc = _auc(s, lab)
    acc = float(((s >= 0.5) == (lab == 1)).mean())
    rate = rows / wall if wall else 0.0
    print(
        f"lake demo: {rate:,.0f} rows/s, data-wait fraction {wait / wall if wall else 0:.3f}, "
        f"validation AUC {auc:.3f} (accuracy {acc:.3f}, {len(lab):,} patients of 2024)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tensorfeed demo lake", description=__doc__.strip().splitlines()[0]
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
