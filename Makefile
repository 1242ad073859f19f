SHELL := /bin/bash
# Entry points; the work is in scripts/ so that CI and a developer run the same thing.
#   make test    formatting, vet, race-enabled tests, then the seed sweeps (scripts/test.sh)
#   make sweep   the simulator's seed sweeps alone (SWEEP_SEEDS=2000 make sweep for longer)
#   make build   bin/pbft
GO ?= go
export GO SWEEP_SEEDS

.PHONY: test sweep build

test:
	scripts/test.sh

sweep:
	scripts/sweep.sh

build:
	$(GO) build -o bin/pbft ./cmd/pbft
