#!/usr/bin/env bash
# Install what the tests and the benchmark smoke runs import, then run the whole test suite.
# torch first and pinned (the CPU wheel), so pip never resolves a CUDA build; everything else is
# pinned by constraints.txt (scripts/lock.sh), so the install does not depend on what PyPI
# released today nor on what was installed by hand before.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q torch==2.13.0
python -m pip install -q -c constraints.txt ".[all,test,bench]"
# -X faulthandler: a crash (SIGSEGV, SIGABRT) prints every thread's Python stack.
# -n 2 (pytest-xdist): two test processes. Most of the suite's time is spent waiting on servers,
# torchrun jobs and subprocesses, so two of them keep this 2-core machine busy (17 -> ~9 min);
# pass -n 0 to run in one process.
python -X faulthandler -m pytest -q -p no:cacheprovider -n 2 "$@"
