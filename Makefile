# phiproxy: see README.md.
GO       ?= go
BIN      ?= bin/phiproxy
FUZZTIME ?= 10s

.PHONY: all build test unit lint fuzz demo bench postgres clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/phiproxy

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

demo: build postgres
	$(BIN) demo

# BENCHFLAGS go to scripts/bench (-workload pgbench|idle|phi, -duration 30s, -rounds 2,
# -idle 1000, -cpuprofile FILE, ...); scripts/bench.sh installs pgbouncer when root.
bench: postgres
	scripts/bench.sh $(BENCHFLAGS)

# Ensure PostgreSQL server binaries and psql exist (installs them as root).
postgres:
	@scripts/ensure-postgres.sh

clean:
	rm -rf bin .demo .bench
