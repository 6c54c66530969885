"""Shared fixtures: real servers started by the suite itself (no fakes of our own).

Area-specific fixtures live next to their tests (``tests/<area>/conftest.py``).

NOTE [ What the suite leaves behind ]
The whole session runs with ``TMPDIR`` pointed at a fresh directory of its own (pytest's
``tmp_path`` included), and every process a test starts inherits a marker in its environment.
When the session ends, :func:`pytest_sessionfinish` fails the run if any marked process is still
alive (naming its pid and command line: a PostgreSQL server, a torchrun rank, a worker) or if
anything is left in that directory, then removes the directory. SIGTERM ends a session the same
way; a session killed outright (SIGKILL, SIGABRT) leaves its servers behind, and the next session
kills them at its start (:func:`reap_abandoned`: marked by a session whose owner pid is gone).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

warnings.filterwarnings("ignore", message=".*set_vital.*")

MARKER = "TENSORFEED_TEST_SESSION"
OWNER = "TENSORFEED_TEST_SESSION_OWNER"  # the pid of the pytest process that set MARKER
_SESSION: dict[str, str] = {}


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # pytest then tears fixtures down and checks


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput") or _SESSION:  # once per session
        return
    root = tempfile.mkdtemp(prefix="tfd-suite-")
    _SESSION.update(root=root, marker=uuid.uuid4().hex)
    os.environ["TMPDIR"] = root
    os.environ[MARKER] = _SESSION["marker"]
    os.environ[OWNER] = str(os.getpid())
    tempfile.tempdir = root
    # SIGTERM (a CI runner giving up, a user's kill) ends the session like Ctrl-C: servers
    # stopped, the check below run. What SIGKILL/SIGABRT leave, the next session reaps.
    signal.signal(signal.SIGTERM, _interrupt)
    for pid, cmd in reap_abandoned():
        sys.stderr.write(f"tests: killed process {pid} left by an earlier, killed session: {cmd}\n")
    # pgserver keeps its lock file in the user's runtime directory, which without
    # XDG_RUNTIME_DIR is $TMPDIR/runtime-<uid>: give it one that the session removes
    runtime = os.path.join(root, "runtime")
    os.mkdir(runtime, 0o700)
    os.environ["XDG_RUNTIME_DIR"] = runtime
    # torch makes its compile cache in $TMPDIR/torchinductor_<user> as soon as an optimizer is
    # built (torch._dynamo is imported): point it into the session's directory, removed below
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(root, "torchinductor"))
    # torchrun's agent makes $TMPDIR/torchelastic_* for its ranks' logs and keeps it, unless
    # given --log-dir (PET_LOG_DIR is that flag's environment form)
    os.environ.setdefault("PET_LOG_DIR", os.path.join(root, "torchelastic"))
    # multiprocessing removes its own temporary directory at exit, after this session ends:
    # remove the session's directory after it
    import multiprocessing.util as mp_util

    mp_util.Finalize(
        None, shutil.rmtree, args=(root,), kwargs={"ignore_errors": True}, exitpriority=-101
    )
    if config.option.basetemp is None:
        config.option.basetemp = os.path.join(root, "pytest")


def _processes() -> dict[int, tuple[int, bytes, str]]:
    """``{pid: (parent pid, environment, command line)}`` of the live processes we can read."""
    out = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            if fields[0] == b"Z":
                continue  # a zombie has ended; only its parent has not reaped it yet
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # ended meanwhile, or not ours to read
            continue
        out[int(entry)] = (int(fields[1]), env, cmd)
    return out


def started_processes(marker: str) -> list[tuple[int, str]]:
    """``(pid, command line)`` of every live process this session started: descendants of this
    process (forked workers), and processes that inherited ``MARKER=marker`` through an exec
    however far they were detached (a PostgreSQL server, torchrun ranks)."""
    procs = _processes()
    me = os.getpid()
    needle = f"{MARKER}={marker}".encode()

    def descends(pid: int) -> bool:
        seen = set()
        while pid in procs and pid not in seen:
            seen.add(pid)
            pid = procs[pid][0]
            if pid == me:
                return True
        return False

    return [
        (pid, cmd)
        for pid, (ppid, env, cmd) in sorted(procs.items())
        if pid != me
        and (needle in env.split(b"\0") or descends(pid))
        # multiprocessing's resource tracker (started by spawn workers) serves this process
        # until it exits, and then ends by itself: it reads EOF from the pipe we hold
        and not (ppid == me and "multiprocessing.resource_tracker" in cmd)
    ]


def reap_abandoned() -> list[tuple[int, str]]:
    """Kill what an earlier session left when it was killed before its own check ran (SIGKILL,
    or SIGABRT from a timeout): processes marked by another session whose owner process is gone.
    A process without an owner (a session from before owners were recorded) is left alone."""
    procs = _processes()
    mine = _SESSION.get("marker", "").encode()
    killed = []
    for pid, (_ppid, env, cmd) in sorted(procs.items()):
        items = dict(v.split(b"=", 1) for v in env.split(b"\0") if b"=" in v)
        marker, owner = items.get(MARKER.encode()), items.get(OWNER.encode())
        if marker is None or marker == mine or owner is None or not owner.isdigit():
            continue
        if int(owner) in procs or int(owner) == pid:
            continue  # that session is still running
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            killed.append((pid, cmd))
    return killed


def _leftovers(root: str) -> list[str]:
    # pymp-*: multiprocessing's own directories, each removed when the process that made it
    # exits (this one's after the session; a child's can outlive its test by a moment)
    return sorted(p.name for p in Path(root).iterdir() if not p.name.startswith("pymp-"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _SESSION or hasattr(session.config, "workerinput"):
        return
    root, marker = _SESSION["root"], _SESSION["marker"]
    deadline = time.monotonic() + 15  # a server asked to stop may take a moment to go
    survivors = started_processes(marker)
    while survivors and time.monotonic() < deadline:
        time.sleep(0.2)
        survivors = started_processes(marker)
    for ours in ("pytest", "runtime", "torchinductor", "torchelastic"):  # see pytest_configure
        shutil.rmtree(os.path.join(root, ours), ignore_errors=True)
    left = _leftovers(root) if os.path.isdir(root) else []
    problems = [
        f"process {pid} started by the test suite is still running: {cmd}" for pid, cmd in survivors
    ]
    problems += [f"the test suite left {name!r} in its temporary directory" for name in left]
    for name in left:
        path = os.path.join(root, name)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    if problems:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        for line in problems:
            if reporter is not None:
                reporter.write_line(f"ERROR: {line}", red=True)
        if session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


@contextmanager
def running_postgres() -> Iterator[str]:
    """A PostgreSQL server (pgserver) in a temporary data directory: stopped and the directory
    removed when the block ends."""
    pgserver = pytest.importorskip("pgserver", reason="pgserver is in tensorfeed[test]")
    tmp = tempfile.mkdtemp(prefix="tfd-pg-")
    try:
        server = pgserver.get_server(tmp, cleanup_mode="stop")
        try:
            yield server.get_uri()
        finally:
            postmaster = _postmaster_pid(tmp)
            server.cleanup()
            _wait_gone(postmaster, timeout=30)  # "stop" returns before the server has exited
    finally:
        _remove_tree(tmp)


def _postmaster_pid(data_dir: str) -> int | None:
    for path in Path(data_dir).rglob("postmaster.pid"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(path.read_text().split()[0])
    return None


def _wait_gone(pid: int | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while pid is not None and time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def _remove_tree(path: str, attempts: int = 20) -> None:
    """Remove ``path``; a server that just stopped may still be unlinking its own files."""
    for _ in range(attempts):
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.exists(path):
            return
        time.sleep(0.25)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL: ``TENSORFEED_PG_URL`` if set, else a pgserver started for this session."""
    env = os.environ.get("TENSORFEED_PG_URL")
    if env:
        yield env
        return
    with running_postgres() as url:
        yield url
