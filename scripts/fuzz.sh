#!/usr/bin/env bash
# fuzz.sh: run every fuzz target of the module for a short time each.
# FUZZTIME (default 10s) sets the time per target.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-10s}
found=0
for pkg in $(go list ./...); do
	for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		found=1
		echo "== $pkg $target ($fuzztime)"
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"
	done
done
((found)) || echo "no fuzz targets found"
