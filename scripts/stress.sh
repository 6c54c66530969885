#!/usr/bin/env bash
# Run the conformance, Kafka and SQL tests RUNS times in a row (default 10) while two busy-loop
# processes load both cores, and report each run's result and the longest test. A run that hangs
# is ended by pytest-timeout (thread method: every thread's stack is printed) or, at the latest,
# after RUN_LIMIT seconds by timeout(1) with SIGABRT (faulthandler prints the stacks again).
# Use the environment the tests use: run `bash scripts/test.sh --co -q` once first (it installs),
# or activate the virtualenv it installed into. Logs go to ${STRESS_DIR:-a new temp dir}.
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-10}
limit=${RUN_LIMIT:-1800}
dir=${STRESS_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/tfd-stress-XXXXXX")}
mkdir -p "$dir"
busy() { while :; do :; done; }
busy & b1=$!
busy & b2=$!
trap 'kill $b1 $b2 2>/dev/null' EXIT
failures=0
for i in $(seq 1 "$runs"); do
  start=$(date +%s)
  timeout -s ABRT "$limit" python -X faulthandler -m pytest -q -p no:cacheprovider \
    --durations=1 tests/conformance tests/kafka tests/sql >"$dir/run-$i.log" 2>&1
  rc=$?
  took=$(( $(date +%s) - start ))
  summary=$(grep -E '^[0-9]+ (passed|failed)|^=+ .*(passed|failed).* =+$' "$dir/run-$i.log" | tail -1)
  slowest=$(grep -A1 -E 'slowest 1 durations' "$dir/run-$i.log" | tail -1)
  [[ $rc -eq 0 ]] || failures=$((failures + 1))
  echo "run $i/$runs: exit $rc in ${took}s; ${summary:-no summary}; longest: ${slowest:-?}"
done
echo "$runs runs, $failures failed; logs in $dir"
[[ $failures -eq 0 ]]
