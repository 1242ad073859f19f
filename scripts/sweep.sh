#!/usr/bin/env bash
# The simulator's seed sweeps (TestSafetyAndLiveness*): SWEEP_SEEDS seeds per backup
# strategy (default 500) and the fixed sweeps of primary strategies, seven replicas,
# three crashes a seed, a deep pipeline, the new rule strategies and swarm runs. Only the
# test names, results and per-sweep seed rates are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
GO="${GO:-go}"
SWEEP_SEEDS="${SWEEP_SEEDS:-500}"

"$GO" test -count=1 -timeout 20m -run 'TestSafetyAndLiveness' ./test/sim/ \
  -sweep-seeds="$SWEEP_SEEDS" -v 2>&1 |
  grep -E '^(=== RUN|--- |ok|FAIL|PASS)|seeds/s|failed'
exit "${PIPESTATUS[0]}"
