# phiproxy: see README.md.
GO       ?= go
BIN      ?= bin/phiproxy
FUZZTIME ?= 10s
# Stamped into the binary; `phiproxy version` prints them.
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
COMMIT   ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -X main.buildVersion=$(VERSION) -X main.buildCommit=$(COMMIT)
# make demo PORT=7432 METRICS_PORT=9188 (0: any free port). Unset, the
# demo takes 6432 and 9187, or free ports when those are taken.
PORT         ?=
METRICS_PORT ?=

.PHONY: all build test unit lint fuzz demo bench bench-migrate differential postgres clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/phiproxy

# Unit and integration tests. The integration tests start their own
# PostgreSQL from the server binaries on this machine.
test: postgres
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...

# Unit tests only (no PostgreSQL needed).
unit:
	$(GO) test -count=1 $$($(GO) list ./... | grep -v -e /integration -e /internal/pgcluster)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

fuzz:
	FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

# exec: the demo itself receives Ctrl-C, SIGTERM and SIGHUP and removes its
# database on each.
demo: build postgres
	exec $(BIN) demo $(if $(PORT),--listen 127.0.0.1:$(PORT)) $(if $(METRICS_PORT),--metrics 127.0.0.1:$(METRICS_PORT))

# BENCHFLAGS go to scripts/bench (-workload pgbench|idle|phi|copy, -duration 30s, -rounds 2,
# -idle 1000, -cpuprofile FILE, ...); scripts/bench.sh installs pgbouncer when root.
bench: postgres
	scripts/bench.sh $(BENCHFLAGS)

# phiproxy migrate encrypt on 1 M plaintext rows (6 PHI columns, 2 indexed);
# MIGRATEFLAGS: -rows N, -batch N, -writers N (an application writing
# through the proxy meanwhile), -baseline 10s.
bench-migrate: postgres
	$(GO) run ./scripts/migratebench $(MIGRATEFLAGS)

# A differential campaign (integration/differential, issue 14): N generated
# statements through phiproxy against plaintext PostgreSQL, and SELF_N for
# the plaintext-vs-plaintext self-check, for each seed of SEED (a list).
# Prints each report and keeps it in .differential/seed-<seed>.txt.
SEED   ?= 1
N      ?= 20000
SELF_N ?= $(N)
differential: postgres
	@mkdir -p .differential; rc=0; for s in $(SEED); do \
	  $(GO) test -count=1 -timeout 0 -v -run 'TestSelfCheck|TestProxy' ./integration/differential \
	    -args -seed=$$s -statements=$(N) -self-statements=$(SELF_N) -report=$(CURDIR)/.differential/seed-$$s.txt \
	    || rc=1; \
	done; exit $$rc

# Ensure PostgreSQL server binaries and psql exist (installs them as root).
postgres:
	@scripts/ensure-postgres.sh

clean:
	rm -rf bin .demo .bench .differential
