package main

// A check that a middlebox is measured as configured: TLS on both legs.

import (
	"context"
	"crypto/tls"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// describeLegs connects to dsn and returns the TLS version and cipher of
// the client's leg (what this client negotiated) and of the server's leg
// (what PostgreSQL reports in pg_stat_ssl for the backend serving the
// session). It fails unless both legs use TLS.
func describeLegs(ctx context.Context, dsn string) (string, error) {
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return "", err
	}
	defer c.Close(ctx)
	tc, ok := c.PgConn().Conn().(*tls.Conn)
	if !ok {
		return "", fmt.Errorf("client leg is not TLS")
	}
	st := tc.ConnectionState()
	var ssl bool
	var version, cipher string
	if err := c.QueryRow(ctx, "SELECT ssl, coalesce(version, ''), coalesce(cipher, '') FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl, &version, &cipher); err != nil {
		return "", fmt.Errorf("pg_stat_ssl: %w", err)
	}
	if !ssl {
		return "", fmt.Errorf("server leg is not TLS")
	}
	return fmt.Sprintf("client leg %s %s, server leg %s %s", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite), version, cipher), nil
}
