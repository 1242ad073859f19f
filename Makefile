SHELL := /bin/bash
# The one test command: formatting, vet, every test under the race detector (clusters
# over real libp2p and a four-process CLI cluster among them), then the full seed sweeps
# of the simulator without it (500 seeds per backup strategy, 300 per strategy as
# primary, 250 each for seven replicas and for three crashes a seed, 125 each with a
# deep pipeline).
GO ?= go
SWEEP_SEEDS ?= 500

.PHONY: test fmt-check vet unit sweep build

test: fmt-check vet unit sweep

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 ./...

sweep:
	$(GO) test -count=1 -timeout 20m -run 'TestSafetyAndLiveness' ./test/sim/ -sweep-seeds=$(SWEEP_SEEDS) -v 2>&1 | \
		grep -E '^(=== RUN|--- |ok|FAIL|PASS)|seeds/s|failed' ; exit $${PIPESTATUS[0]}

build:
	$(GO) build -o bin/pbft ./cmd/pbft
