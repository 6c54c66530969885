"""Every ``tensorfeed`` command fails in one line: the real entry point, in a subprocess.

Each failing command must exit 2 with exactly one line on stderr that names what is wrong (a
flag as ``--flag``), no traceback and no password. Nothing here leaves the loopback interface.
"""

from __future__ import annotations

import importlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tensorfeed.cli import DEMOS, _as_flags, _one_line, _scrub, build_parser, redact

SECRET = "s3cretpw"
PG = f"postgresql://u:{SECRET}@127.0.0.1:1/db"  # port 1: nothing listens, refused at once
S3_SECRET = "S3cretKeyValue"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TENSORFEED_CACHE", "TENSORFEED_DEBUG", "TORCHINDUCTOR_CACHE_DIR")
        and not k.startswith("AWS_")
    }
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    env.update(TMPDIR=str(tmp), HOME=str(tmp_path / "home"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    env.update(extra)
    return env


def cli(
    tmp_path: Path, *args: str, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tensorfeed.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(tmp_path, **env),
        check=False,
    )


def one_line_error(proc: subprocess.CompletedProcess, *secrets: str) -> str:
    """The single stderr line of a failed command (asserting everything the CLI promises)."""
    err = proc.stderr
    assert proc.returncode == 2, (proc.returncode, err[-3000:])
    assert "Traceback" not in err + proc.stdout
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for secret in (SECRET, *secrets):
        assert secret not in err + proc.stdout
    return lines[0]


@pytest.fixture
def shop(tmp_path: Path) -> str:
    path = tmp_path / "shop.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE orders (order_id INTEGER PRIMARY KEY, amount REAL)")
    conn.executemany("INSERT INTO orders VALUES (?, ?)", [(i, i * 1.5) for i in range(50)])
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


# --------------------------------------------------------------------------- unreachable servers


def test_demo_with_unreachable_postgres(tmp_path: Path) -> None:
    line = one_line_error(cli(tmp_path, "demo", "--url", PG, "--rows", "1000"))
    assert line.startswith("tensorfeed: error: ")
    assert "127.0.0.1" in line and "***" in line


def test_inspect_unreachable_postgres(tmp_path: Path) -> None:
    line = one_line_error(cli(tmp_path, "inspect", PG))
    assert "ConnectionFailedError" in line and "127.0.0.1" in line


def test_demo_lake_with_unreachable_s3(tmp_path: Path) -> None:
    proc = cli(
        tmp_path,
        "demo",
        "lake",
        "--rows",
        "1000",
        "--uri",
        "s3://tfd-nowhere/lake",
        "--storage-option",
        "endpoint_url=http://127.0.0.1:1",
        "--storage-option",
        "key=AKIDTESTKEY",
        "--storage-option",
        f"secret={S3_SECRET}",
        "--storage-option",
        "region=us-east-1",
        "--storage-option",
        "retries=1",
        "--storage-option",
        "max_attempts=1",
        "--storage-option",
        "connect_timeout=2",
        timeout=60,
    )
    line = one_line_error(proc, S3_SECRET)
    assert "s3://tfd-nowhere/lake" in line and "127.0.0.1:1" in line


# --------------------------------------------------------------------------- missing files


def test_inspect_missing_file(tmp_path: Path) -> None:
    line = one_line_error(cli(tmp_path, "inspect", str(tmp_path / "nope.parquet")))
    assert "NotFoundError" in line and "nope.parquet" in line


def test_inspect_missing_folder(tmp_path: Path) -> None:
    line = one_line_error(cli(tmp_path, "inspect", str(tmp_path / "no" / "such" / "lake")))
    assert "NotFoundError" in line and "lake" in line


def test_inspect_missing_sqlite_file(tmp_path: Path) -> None:
    line = one_line_error(cli(tmp_path, "inspect", f"sqlite:///{tmp_path}/missing.db"))
    assert "missing.db" in line


def test_kafka_checkpoint_in_a_missing_folder(tmp_path: Path) -> None:
    ckpt = tmp_path / "no-such-dir" / "ckpt.pt"
    line = one_line_error(cli(tmp_path, "demo", "kafka", "--checkpoint", str(ckpt)))
    assert "--checkpoint" in line and "does not exist" in line


# --------------------------------------------------------------------------- bad flags


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["demo", "--rows", "10"], "--rows"),  # the demo's own check
        (["demo", "--rows", "lots"], "--rows"),  # argparse's
        (["demo", "lake", "--storage-option", "connect_timeout"], "--storage-option"),
        (["demo", "lake", "--storage-option", "retries=many"], "--storage-option"),
        (["demo", "kafka", "--batch-size", "0"], "--batch-size"),
        (["inspect", "sqlite:///x.db", "--rows", "-1"], "--rows"),
        (["demo", "--no-such-flag"], "--no-such-flag"),
    ],
)
def test_bad_flag_value_names_the_flag(tmp_path: Path, args: list[str], flag: str) -> None:
    line = one_line_error(cli(tmp_path, *args))
    assert flag in line, line


def test_library_keyword_arguments_are_named_as_flags(tmp_path: Path, shop: str) -> None:
    line = one_line_error(cli(tmp_path, "bench", shop, "--table", "orders"))
    assert "--key" in line and "key=" not in line  # SQLDataset needs key=
    line = one_line_error(
        cli(
            tmp_path, "bench", shop, "--table", "orders", "--key", "order_id", "--num-workers", "-1"
        )
    )
    assert "--num-workers must be" in line and "num_workers" not in line
    line = one_line_error(cli(tmp_path, "bench", shop, "--table", "orders", "--query", "SELECT 1"))
    assert "--table" in line and "--query" in line


def test_tune_plot_in_a_missing_folder(tmp_path: Path, shop: str) -> None:
    plot = tmp_path / "nowhere" / "tune.png"
    line = one_line_error(cli(tmp_path, "tune", shop, "--table", "orders", "--plot", str(plot)))
    assert "--plot" in line


def test_unknown_demo(tmp_path: Path) -> None:
    line = one_line_error(cli(tmp_path, "demo", "nope"))
    assert "'nope'" in line and all(name in line for name in DEMOS)


def test_debug_switch_shows_the_traceback(tmp_path: Path) -> None:
    proc = cli(tmp_path, "inspect", PG, TENSORFEED_DEBUG="1")
    assert proc.returncode != 0 and "Traceback" in proc.stderr
    assert SECRET not in proc.stderr  # the library's own message never has it either


# --------------------------------------------------------------------------- help


def test_demo_help_lists_the_demos(tmp_path: Path) -> None:
    proc = cli(tmp_path, "demo", "--help")
    assert proc.returncode == 0, proc.stderr
    for name, module in DEMOS.items():
        first = (importlib.import_module(module).__doc__ or "").strip().splitlines()[0]
        assert f"  {name}" in proc.stdout and first in proc.stdout, proc.stdout


@pytest.mark.parametrize(
    ("name", "flag"),
    [("ecommerce", "--url"), ("lake", "--storage-option"), ("kafka", "--bootstrap")],
)
def test_demo_name_help_lists_its_flags(tmp_path: Path, name: str, flag: str) -> None:
    proc = cli(tmp_path, "demo", name, "--help")
    assert proc.returncode == 0 and flag in proc.stdout and f"tensorfeed demo {name}" in proc.stdout


def test_top_level_help_mentions_every_command() -> None:
    text = build_parser().format_help()
    assert all(c in text for c in ("demo", "inspect", "bench", "tune"))


# --------------------------------------------------------------------------- the pieces


def test_scrub_removes_command_line_secrets() -> None:
    argv = ["demo", "--url", PG, "--storage-option", f"secret={S3_SECRET}"]
    text = f"failed for {PG} with {S3_SECRET} and http://x:other@host/"
    out = _scrub(text, argv)
    assert SECRET not in out and S3_SECRET not in out and "other" not in out


def test_flags_replace_keyword_arguments() -> None:
    flags = build_parser().parse_args(["bench", "x"]).flags
    out = _as_flags("give exactly one of table= (a table name) or query= (a SELECT)", flags)
    assert out == "give exactly one of --table (a table name) or --query (a SELECT)"
    assert _as_flags("batch_size must be a positive int, got 0", flags).startswith("--batch-size")
    assert _as_flags("shuffle=True does not apply", flags) == "--shuffle does not apply"
    assert _as_flags("column 'key' is missing", flags) == "column 'key' is missing"


def test_one_line_of_an_error_from_a_worker() -> None:
    exc = ValueError(
        "Caught ConnectionFailedError in DataLoader worker process 0.\n"
        "Original Traceback (most recent call last):\n  File ...\n"
        "tensorfeed.errors.ConnectionFailedError: cannot connect to db"
    )
    assert _one_line(exc) == "cannot connect to db"


def test_redact_shows_sql_urls_as_the_sql_sources_do() -> None:
    from tensorfeed.sources.sql import display_url

    for url in (PG, "postgresql://u:@h/db", "sqlite:///x.db"):
        assert redact(url) == display_url(url)
    assert redact("s3://k:secret@bucket/x") == "s3://k:***@bucket/x"
