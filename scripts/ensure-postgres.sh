#!/usr/bin/env bash
# ensure-postgres.sh: make sure PostgreSQL server binaries (initdb, pg_ctl,
# postgres) and the psql client exist, as internal/pgcluster and the
# integration tests need them. As root, installs Debian's packages when
# missing; otherwise prints exactly what to install and fails.
set -euo pipefail

have_server() {
	if [[ -n "${PGCLUSTER_BINDIR:-}" && -x "$PGCLUSTER_BINDIR/initdb" ]]; then return 0; fi
	local d
	for d in /usr/lib/postgresql/*/bin; do
		[[ -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/postgres" ]] && return 0
	done
	command -v initdb >/dev/null && command -v pg_ctl >/dev/null && command -v postgres >/dev/null
}
have_client() { command -v psql >/dev/null; }

missing=()
have_server || missing+=(postgresql)
have_client || missing+=(postgresql-client)
if ((${#missing[@]} == 0)); then
	exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
	echo "PostgreSQL is missing (${missing[*]}). Install it with:" >&2
	echo "    sudo apt-get install -y ${missing[*]}" >&2
	exit 1
fi
echo "installing ${missing[*]} (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian's postgresql package creates and starts a default cluster on 5432;
# the tests start their own and need nothing from it.
if command -v pg_lsclusters >/dev/null; then
	pg_lsclusters -h 2>/dev/null | while read -r ver name _; do
		pg_ctlcluster "$ver" "$name" stop 2>/dev/null || true
	done
fi
have_server || { echo "apt-get install ${missing[*]} did not provide initdb/pg_ctl/postgres" >&2; exit 1; }
