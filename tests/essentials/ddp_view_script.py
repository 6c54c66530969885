"""One rank of a job whose source changes while its ranks start (test_job_view.py).

``python ddp_view_script.py OUT KIND WHERE take``, under torchrun (gloo, CPU). Rank 0 builds its
loader and starts reading; once it has resolved its view of the source, and before it shares it,
it changes the source (adds rows or a file, produces messages, updates every row's value) and
touches ``OUT/written``; only then do the other ranks build their loaders. Every rank reads 3 batches, takes the job's checkpoint (rank 0
saves it as ``OUT/state.json``), then reads the rest of the epoch, and writes what it delivered to
``OUT/take-rank<r>.json``. ``... resume``: load ``OUT/state.json`` and read the rest, writing
``OUT/resume-rank<r>.json`` (or the error it raised); ``... continue``: the same with
``on_change="continue"`` (PostgreSQL), writing ``OUT/continue-rank<r>.json``.

KIND: ``postgres`` (SQLDataset, WHERE is the URL), ``sql-stream`` (SQLStream, the same), ``lake`` / ``lake-stream`` (WHERE is a folder
of Parquet files), ``kafka`` (KafkaStream with ``end="now"``, WHERE is ``bootstrap/topic``).
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch.distributed as dist

import tensorfeed as tfd
from tensorfeed import job_view

out, kind, where, mode = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
dist.init_process_group("gloo")
rank = dist.get_rank()
N, ADDED = 96, 16


def change() -> None:
    """What a writer does while the job starts (a failure ends the job instead of a wait)."""
    try:
        write()
    except BaseException as exc:
        (out / "written").write_text(f"the writer failed: {exc!r}")
        raise
    (out / "written").touch()


def write() -> None:
    if kind in ("postgres", "sql-stream"):
        import psycopg

        with psycopg.connect(where, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO view_rows SELECT g, -1.0 FROM generate_series(%s::int, %s::int) g",
                (N, N + ADDED - 1),
            )
            conn.execute("UPDATE view_rows SET x = -1.0")
    elif kind.startswith("lake"):
        ids = np.arange(N, N + ADDED)
        pq.write_table(pa.table({"id": ids, "x": ids * 0.5}), Path(where) / "aa-added.parquet")
    else:
        from confluent_kafka import Producer

        bootstrap, topic = where.rsplit("/", 1)
        p = Producer({"bootstrap.servers": bootstrap})
        for i in range(N, N + ADDED):
            p.produce(topic, json.dumps({"id": i, "x": -1.0}).encode(), partition=i % 4)
        p.flush(10)


def loader() -> tfd.DataLoader:
    if kind == "postgres":  # ordered by key, so mode "continue" can go on over the new rows
        on_change = "raise" if mode == "resume" else "continue"
        ds = tfd.SQLDataset(where, table="view_rows", key="id")
        return tfd.DataLoader(ds, batch_size=4, shuffle=True, on_change=on_change)
    if kind == "sql-stream":  # the resumed job goes on by key over the writer's rows
        stream = tfd.SQLStream(where, table="view_rows", key="id")
        return tfd.DataLoader(stream, batch_size=4, on_change="continue")
    if kind == "lake":
        return tfd.DataLoader(tfd.LakeDataset(where), batch_size=4, shuffle=True)
    if kind == "lake-stream":
        return tfd.DataLoader(tfd.LakeStream(where), batch_size=4, ddp="drop")
    bootstrap, topic = where.rsplit("/", 1)
    stream = tfd.KafkaStream(bootstrap, topic, end="now", timeout=10, decode="json")
    return tfd.DataLoader(stream, batch_size=4, ddp="drop")


def rows(batch) -> list[list[float]]:
    return [[int(i), float(x)] for i, x in zip(batch["id"].tolist(), batch["x"].tolist())]


def write_once_resolved() -> None:
    """Rank 0 changes the source right after it resolved its view and before it shares it:
    wrap ``job_view.share``, which the loader calls at exactly that moment (no timer to race)."""
    share = job_view.share
    written = []

    def share_after_writing(source):
        if not written:
            written.append(True)
            change()
        return share(source)

    job_view.share = share_after_writing


result: dict = {}
if mode == "take":
    if rank == 0:
        write_once_resolved()
    else:
        deadline = time.monotonic() + 60
        while not (out / "written").exists():
            assert time.monotonic() < deadline, "rank 0's writer never finished"
            time.sleep(0.05)
        failed = (out / "written").read_text()
        assert not failed, failed
    ld = loader()
    it = iter(ld)  # a stream resolves its epoch here
    head = [r for _ in range(3) for r in rows(next(it))]
    state = ld.state_dict()
    if rank == 0:
        (out / "state.json").write_text(json.dumps(state))
    result = {"head": head, "rest": [r for b in it for r in rows(b)]}
else:  # resume, continue
    ld = loader()
    try:
        ld.load_state_dict(json.loads((out / "state.json").read_text()))
        result = {"rest": [r for b in ld for r in rows(b)]}
        result["changes"] = ld.stats.source_changes
    except tfd.SourceChangedError as exc:
        result = {"error": str(exc)}
(out / f"{mode}-rank{rank}.json").write_text(json.dumps(result))
dist.barrier()
dist.destroy_process_group()
