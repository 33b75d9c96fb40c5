#!/usr/bin/env bash
# bench.sh: pgbench directly, through PgBouncer (session mode) and through
# phiproxy (TLS both sides), interleaved, and the PHI workload (an encrypted
# patients table through phiproxy against a plaintext one used directly);
# see scripts/bench/main.go.
# Installs Debian's pgbouncer first when root and it is missing; without it
# the PgBouncer column is skipped. Arguments go to the Go program
# (-workload pgbench|phi|all, -duration 15s, -rounds 1, -cpuprofile FILE, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ " $* " != *" -workload phi "* && " $* " != *" -workload=phi "* ]] && ! command -v pgbouncer >/dev/null && [[ ! -x /usr/sbin/pgbouncer ]]; then
	if [[ $(id -u) -eq 0 ]]; then
		echo "installing pgbouncer (apt-get) for the reference column" >&2
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
