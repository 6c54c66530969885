#!/usr/bin/env bash
# Install (torch first, pinned, so pip never resolves a CUDA build) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q torch==2.13.0
python -m pip install -q ".[all,test]"
python -m pytest -q -p no:cacheprovider "$@"
