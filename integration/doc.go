// Package integration holds phiproxy's end-to-end tests: a real PostgreSQL
// started by internal/pgcluster (one per test binary, in TestMain), the proxy
// in front of it, and real clients (pgx, lib/pq through database/sql, psql)
// whose results are compared with the same operations sent directly to
// PostgreSQL. The tests fail, never skip, when PostgreSQL cannot start.
package integration
