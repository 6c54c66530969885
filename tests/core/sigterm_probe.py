"""Run by test_suite_hygiene.py as a session of its own, then sent SIGTERM (not collected in the
suite: its name does not start with test_)."""

import os
import time

from tests.conftest import MARKER, running_postgres


def test_wait_with_a_server_running():
    with running_postgres():
        print(f"ready {os.environ[MARKER]}", flush=True)
        time.sleep(120)
