# projector: `make help` lists the targets.

SHELL := /bin/bash
GO ?= go
SQLC_VERSION := v1.31.1
BIN := $(CURDIR)/.bin
SQLC := $(BIN)/sqlc-$(SQLC_VERSION)
# Short fuzz runs in `make test`; `make fuzz FUZZTIME=10m` for long ones.
FUZZTIME ?= 10s
# The demo's and the bench's server; empty: their default, the local one.
DATABASE_URL ?=

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

.PHONY: demo
demo: ## run the whole pipeline locally: in-process Kafka, generated events, local PostgreSQL
	$(GO) run ./cmd/projector-demo $(if $(DATABASE_URL),--database-url '$(DATABASE_URL)')

.PHONY: build
build: ## build bin/projector
	$(GO) build -o bin/projector ./cmd/projector

.PHONY: test
test: check ## vet, format and generated-code checks, then every test under the race detector, then short fuzz runs
	$(GO) test -race -count=1 -timeout 20m ./...
	$(MAKE) fuzz FUZZTIME=$(FUZZTIME)

# The fault-injection suite (projector/faults, build tag "faults") runs the
# built binary as worker processes and injects faults for a few minutes;
# `make test` leaves it out, CI runs both. -v shows each scenario's REPORT
# line (the workers' logs go to files, kept on failure).
.PHONY: test-faults
test-faults: ## fault injection: SIGKILL storm, zombie, PostgreSQL and broker outages, hostile input, retention (a few minutes)
	$(GO) test -race -count=1 -timeout 15m -tags faults -v ./projector/faults/

.PHONY: check
check: $(SQLC) ## go vet, gofmt and a staleness check of the sqlc-generated code
	$(GO) vet ./...
	$(GO) vet -tags faults ./projector/faults/
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(SQLC) diff

.PHONY: fuzz
fuzz: ## run each fuzz target for FUZZTIME (default 10s)
	$(GO) test ./projector/model -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME)
	$(GO) test ./projector/model -run '^$$' -fuzz '^FuzzCombine$$' -fuzztime $(FUZZTIME)
	$(GO) test ./projector/model -run '^$$' -fuzz '^FuzzCombineSteps$$' -fuzztime $(FUZZTIME)

BENCH_DATABASE_URL ?= $(DATABASE_URL)
BENCH_EVENTS ?= 1000000
BENCH_REPEAT ?= 3

.PHONY: bench
bench: build ## Go benchmarks (decode, batch building, merge, COPY stream, apply), then projector end to end against COPY (BENCH_REPEAT times; again with the examples of projections in SQL loaded), and steady-state latency
	$(GO) test ./projector/model -run '^$$' -bench . -benchmem
	$(GO) test ./store -run '^$$' -bench CopyStream -benchmem
	$(GO) test ./store -run '^$$' -bench Apply -benchmem -benchtime 20x
	$(GO) run ./cmd/projector-bench --projector bin/projector $(if $(BENCH_DATABASE_URL),--database-url '$(BENCH_DATABASE_URL)') --events $(BENCH_EVENTS) --repeat $(BENCH_REPEAT)
	$(GO) run ./cmd/projector-bench --projector bin/projector $(if $(BENCH_DATABASE_URL),--database-url '$(BENCH_DATABASE_URL)') --events $(BENCH_EVENTS) --repeat $(BENCH_REPEAT) --projections-dir projector/sqlprojections/examples
	$(GO) run ./cmd/projector-bench --projector bin/projector $(if $(BENCH_DATABASE_URL),--database-url '$(BENCH_DATABASE_URL)') --rate 5000 --duration 20s

BENCH_HISTORY ?= 20000000
BENCH_WARM ?= 2000000

.PHONY: bench-scale
bench-scale: build ## throughput as history grows: 1M new events with random ids on an empty database, then on one storing BENCH_HISTORY (20M) events (16 GB, 15 minutes), each timed mid-checkpoint-cycle after BENCH_WARM (2M) untimed events (0: right after the CHECKPOINT, the worst start), after pruning the oldest fraction BENCH_PRUNE of the history if set; run it against servers with different settings via BENCH_DATABASE_URL
	$(GO) run ./cmd/projector-bench --projector bin/projector $(if $(BENCH_DATABASE_URL),--database-url '$(BENCH_DATABASE_URL)') --events 1000000 --ids uuid --history $(BENCH_HISTORY) --warm $(BENCH_WARM) $(if $(BENCH_PRUNE),--prune $(BENCH_PRUNE))

.PHONY: generate
generate: $(SQLC) ## regenerate the sqlc code from store/internal/dbsqlc/*.sql
	$(SQLC) generate

$(SQLC):
	@mkdir -p $(BIN)
	GOBIN=$(BIN) $(GO) install github.com/sqlc-dev/sqlc/cmd/sqlc@$(SQLC_VERSION)
	mv $(BIN)/sqlc $(SQLC)
