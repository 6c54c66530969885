"""One view of the source for the whole job (NOTE [ One view of the source for the job ] in
job_view.py): a writer changes the source after rank 0 has resolved it and before the other
ranks start; every rank still reads rank 0's view, each row once, and a resume names the
change or stays exact."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from .test_elastic_resume import node_commands, run_together

SCRIPT = Path(__file__).with_name("ddp_view_script.py")
N = 96


def _job(out: Path, kind: str, where: str, mode: str, nodes: int, procs: int) -> list[dict]:
    run_together(node_commands([str(SCRIPT), str(out), kind, where, mode], nodes, procs))
    return [json.loads((out / f"{mode}-rank{r}.json").read_text()) for r in range(nodes * procs)]


def _rows(results: list[dict], *parts: str) -> list[tuple[int, float]]:
    return sorted((int(i), float(x)) for r in results for p in parts for i, x in r[p])


ORIGINAL = [(i, i * 0.5) for i in range(N)]


def _view_rows(pg_url: str) -> None:
    psycopg = pytest.importorskip("psycopg")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS view_rows")
        conn.execute("CREATE TABLE view_rows (id BIGINT PRIMARY KEY, x DOUBLE PRECISION)")
        conn.execute(
            "INSERT INTO view_rows SELECT g, g * 0.5 FROM generate_series(0, %s) g", (N - 1,)
        )


@pytest.mark.slow
def test_postgres_two_nodes_read_rank_0s_snapshot_while_a_writer_inserts_and_updates(
    tmp_path, pg_url
):
    _view_rows(pg_url)
    taken = _job(tmp_path, "postgres", pg_url, "take", nodes=2, procs=2)
    # the 16 inserted rows and the updated values are in no rank's epoch
    assert _rows(taken, "head", "rest") == ORIGINAL
    for ranks in (2, 1):  # the resumed job sees the new rows: it names them, never mixes
        resumed = _job(tmp_path, "postgres", pg_url, "resume", nodes=1, procs=ranks)
        for r in resumed:
            assert "96 rows then, 112 now" in r["error"], r
    head = [i for r in taken for i, _ in r["head"]]
    for ranks in (2, 1):  # on_change="continue": today's rows not delivered yet, each once
        went_on = _job(tmp_path, "postgres", pg_url, "continue", nodes=1, procs=ranks)
        rest = [i for r in went_on for i, _ in r["rest"]]
        changes = went_on[0]["changes"]
        assert changes["rows_then"] == N and changes["rows_now"] == N + 16
        fresh = set(rest) - set(head)
        assert len(rest) - len(fresh) < ranks  # ddp="pad" repeats at most ranks - 1 rows
        skipped = changes["done_now"] - changes["done_then"]  # new rows on the done side
        assert len(fresh) == N + 16 - len(head) - skipped, (changes, ranks)


@pytest.mark.slow
def test_a_sql_stream_epoch_reads_rank_0s_snapshot_on_every_node(tmp_path, pg_url):
    """NOTE [ One snapshot for a SQL stream's epoch ]: the other ranks' shards start after the
    writer committed, and still read the epoch's snapshot; the resumed job goes on by key."""
    _view_rows(pg_url)
    taken = _job(tmp_path, "sql-stream", pg_url, "take", nodes=2, procs=2)
    assert _rows(taken, "head", "rest") == ORIGINAL
    resumed = _job(tmp_path, "sql-stream", pg_url, "resume", nodes=1, procs=2)
    head = [i for r in taken for i, _ in r["head"]]
    rest = [i for r in resumed for i, _ in r["rest"]]
    assert not set(head) & set(rest) and len(rest) == len(set(rest))
    assert set(head) | set(rest) >= set(range(N))  # every row of the epoch, once


def _lake(root: Path) -> None:
    root.mkdir()
    for f in range(4):  # 4 files x 3 row groups of 8: each of 4 ranks gets 3 (the added file
        # sorts first, so a rank that listed it on its own would read other row groups)
        ids = np.arange(f * 24, (f + 1) * 24)
        pq.write_table(
            pa.table({"id": ids, "x": ids * 0.5}), root / f"part-{f}.parquet", row_group_size=8
        )


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lake", "lake-stream"])
def test_lake_ranks_read_rank_0s_file_list_while_a_file_is_added(tmp_path, kind):
    root = tmp_path / "lake"
    _lake(root)
    taken = _job(tmp_path, kind, str(root), "take", nodes=2, procs=2)
    assert _rows(taken, "head", "rest") == ORIGINAL
    resumed = _job(tmp_path, kind, str(root), "resume", nodes=1, procs=2)
    if kind == "lake":  # the map-style dataset names the added file
        assert all("aa-added.parquet" in r["error"] for r in resumed), resumed
    else:  # the stream resumes the epoch it checkpointed: the same files
        assert sorted(_rows(taken, "head") + _rows(resumed, "rest")) == ORIGINAL


@pytest.mark.slow
def test_kafka_ranks_read_rank_0s_end_offsets_while_messages_arrive(tmp_path):
    pytest.importorskip("confluent_kafka")
    from tensorfeed.sources._kafka_mock import MockCluster

    mc = MockCluster(brokers=1)
    try:
        topic = f"view-{uuid.uuid4().hex[:6]}"
        mc.create_topic(topic, 4)
        mc.produce(
            topic,
            [json.dumps({"id": i, "x": i * 0.5}).encode() for i in range(N)],
            partition=[i % 4 for i in range(N)],
        )
        where = f"{mc.bootstrap}/{topic}"
        taken = _job(tmp_path, "kafka", where, "take", nodes=2, procs=2)
        assert _rows(taken, "head", "rest") == ORIGINAL
        resumed = _job(tmp_path, "kafka", where, "resume", nodes=1, procs=2)
        assert sorted(_rows(taken, "head") + _rows(resumed, "rest")) == ORIGINAL
    finally:
        mc.close()
