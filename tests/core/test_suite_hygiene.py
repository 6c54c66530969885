"""The suite's own promises (see NOTE [ What the suite leaves behind ] in tests/conftest.py):
processes it starts are found however they were detached, and its PostgreSQL leaves no files."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import MARKER, OWNER, reap_abandoned, running_postgres, started_processes


def test_the_session_runs_in_a_temporary_directory_of_its_own():
    assert os.path.basename(tempfile.gettempdir()).startswith("tfd-suite-")
    assert os.environ.get(MARKER)


def test_a_detached_process_started_by_a_test_is_found_by_pid_and_command_line():
    marker = os.environ[MARKER]
    # start_new_session + a short-lived middle process: the survivor is not our child any more
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)  # tfd-survivor-probe"],
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10  # until the child has exec'd: its command line is ours
        found = dict(started_processes(marker))
        while "tfd-survivor-probe" not in found.get(proc.pid, "") and time.monotonic() < deadline:
            time.sleep(0.05)
            found = dict(started_processes(marker))
        assert proc.pid in found and "tfd-survivor-probe" in found[proc.pid]
    finally:
        proc.kill()
        proc.wait()
    assert proc.pid not in dict(started_processes(marker))


def test_a_forked_child_is_found_too():
    pid = os.fork()
    if pid == 0:  # the child: no exec, so only its parent chain says who started it
        time.sleep(60)
        os._exit(0)
    try:
        assert pid in dict(started_processes(os.environ[MARKER]))
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


@pytest.mark.skipif(bool(os.environ.get("TENSORFEED_PG_URL")), reason="an external server")
def test_postgres_server_is_stopped_and_its_directory_removed():
    def pg_dirs() -> set[Path]:
        return {p for p in Path(tempfile.gettempdir()).iterdir() if p.name.startswith("tfd-pg-")}

    before = pg_dirs()  # the session's own server (pg_url) may be running too
    with running_postgres() as url:
        assert url.startswith("postgresql://")
        dirs = pg_dirs() - before
        assert len(dirs) == 1
        servers = [
            pid
            for pid, cmd in started_processes(os.environ[MARKER])
            if "postgres" in cmd and any(str(d) in cmd for d in dirs)
        ]
        assert servers, "the PostgreSQL server should be visible while it runs"
    for d in dirs:
        assert not d.exists(), f"{d} was left behind"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        alive = {pid for pid, _ in started_processes(os.environ[MARKER])}
        if not alive & set(servers):
            break
        time.sleep(0.2)
    assert not alive & set(servers), "the PostgreSQL server outlived its fixture"


STUCK = """
import signal, threading, time

def test_stuck_where_no_signal_can_reach():
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})  # as a thread blocked in C
    threading.Thread(target=time.sleep, args=(100,), name="some-helper", daemon=True).start()
    time.sleep(120)
"""


def test_a_stuck_test_fails_with_its_name_and_every_threads_stack(tmp_path):
    """The suite's own settings (pyproject.toml): a test the 'signal' method could never stop
    ends within seconds, naming the test and dumping every thread's stack."""
    (tmp_path / "test_stuck.py").write_text(STUCK)
    proc = subprocess.run(
        [
            sys.executable,
            "-X",
            "faulthandler",
            "-m",
            "pytest",
            "-c",
            str(Path(__file__).resolve().parents[2] / "pyproject.toml"),
            "--rootdir",
            str(tmp_path),
            "-p",
            "no:cacheprovider",
            "--timeout",
            "3",
            str(tmp_path / "test_stuck.py"),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=tmp_path,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Timeout" in out and "test_stuck_where_no_signal_can_reach" in out
    assert "time.sleep(120)" in out  # the stuck frame
    assert "Stack of MainThread" in out and "Stack of some-helper" in out, out[-2000:]


def _probe(owner: int) -> subprocess.Popen:
    env = {**os.environ, MARKER: "an-earlier-session", OWNER: str(owner)}
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)  # tfd-abandoned-probe"],
        env=env,
        start_new_session=True,
    )


def test_what_a_killed_session_left_is_reaped_and_a_live_one_is_not():
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_owner = int(gone.stdout)  # a pid that has exited (a killed session's pytest)
    abandoned, alive = _probe(dead_owner), _probe(os.getpid())
    try:
        time.sleep(0.5)  # both have exec'd
        reaped = dict(reap_abandoned())
        assert abandoned.pid in reaped and alive.pid not in reaped
        assert abandoned.wait(10) == -9 and alive.poll() is None
    finally:
        for p in (abandoned, alive):
            p.kill()
            p.wait()


@pytest.mark.slow
def test_a_session_ended_by_sigterm_stops_its_servers():
    import signal

    pytest.importorskip("pgserver", reason="pgserver is in tensorfeed[test]")
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-s",
            "-p",
            "no:cacheprovider",
            "tests/core/sigterm_probe.py",
        ],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    marker = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("ready "):
                marker = line.split()[1]
                break
        assert marker, "the probe session did not start its server"
        assert started_processes(marker)  # its PostgreSQL runs
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert started_processes(marker) == []
