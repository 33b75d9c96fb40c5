#!/usr/bin/env bash
# bench.sh: pgbench directly, through PgBouncer (session mode) and through
# phiproxy, TLS on both legs of both, interleaved, with each middlebox's CPU
# per transaction and a connection-per-transaction (-C) row; the memory of
# idle TLS sessions in each; and the PHI workload (an encrypted patients
# table through phiproxy against a plaintext one used directly); see
# scripts/bench/main.go.
# Installs Debian's pgbouncer first when root and it is missing (the
# pgbench and idle workloads compare with it); without it its column and
# row are skipped. Arguments go to the Go
# program (-workload pgbench|idle|phi|all, -duration 15s, -rounds 1,
# -idle 1000, -cpuprofile FILE, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ " $* " != *" -workload phi "* && " $* " != *" -workload=phi "* ]] && ! command -v pgbouncer >/dev/null && [[ ! -x /usr/sbin/pgbouncer ]]; then
	if [[ $(id -u) -eq 0 ]]; then
		echo "installing pgbouncer (apt-get) as the reference middlebox" >&2
		export DEBIAN_FRONTEND=noninteractive
		if apt-get update -qq && apt-get install -y -qq pgbouncer >/dev/null; then
			# The package may start its own service on 6432; we run our own.
			service pgbouncer stop >/dev/null 2>&1 || true
		else
			echo "could not install pgbouncer; its column will be skipped" >&2
		fi
	else
		echo "pgbouncer not installed (sudo apt-get install -y pgbouncer); its column will be skipped" >&2
	fi
fi
exec go run ./scripts/bench "$@"
