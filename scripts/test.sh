#!/usr/bin/env bash
# The one test command behind `make test`: formatting, vet, every test under the race
# detector (clusters over real libp2p and a four-process CLI cluster among them), then the
# simulator's seed sweeps without it (scripts/sweep.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
GO="${GO:-go}"

files=$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')
out=$(gofmt -l $files)
if [ -n "$out" ]; then
  echo "gofmt would change:"
  echo "$out"
  exit 1
fi

"$GO" vet ./...
"$GO" test -race -count=1 ./...
"$(dirname "$0")/sweep.sh"
