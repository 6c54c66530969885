"""Shared fixtures: real servers started by the suite itself (no fakes of our own).

Area-specific fixtures live next to their tests (``tests/<area>/conftest.py``).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterator

import pytest

warnings.filterwarnings("ignore", message=".*set_vital.*")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL: ``TENSORFEED_PG_URL`` if set, else a pgserver started for this session."""
    env = os.environ.get("TENSORFEED_PG_URL")
    if env:
        yield env
        return
    pgserver = pytest.importorskip("pgserver", reason="pgserver is in tensorfeed[test]")
    tmp = tempfile.mkdtemp(prefix="tfd-pg-")
    server = pgserver.get_server(tmp, cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
