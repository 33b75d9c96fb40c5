package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Where the verifier mode reads SCRAM secrets: a login of the proxy's own
// (querySecrets) or a file (fileSecrets).

// secretStore returns a role's rolpassword. It never sees a password, only
// what PostgreSQL stores.
type secretStore interface {
	// rolpassword returns the stored secret of role; found is false when
	// the role has no row. An error means the lookup itself failed.
	rolpassword(ctx context.Context, role string) (secret string, found bool, err error)
	close()
}

var (
	_ secretStore = (*querySecrets)(nil)
	_ secretStore = (*fileSecrets)(nil)
)

// querySecrets runs auth_query on one connection of its own, as auth_user,
// like PgBouncer's auth_user. One connection is enough: a lookup takes a
// round trip, and lookups queue for it (bounded by their context). It is
// opened at the first lookup and again after any failure or reload.
type querySecrets struct {
	log *slog.Logger
	// next holds the settings of a reload until the next lookup takes
	// them (so a reload never waits for a lookup).
	next atomic.Pointer[authConn]
	// sem is the connection's lock (a channel so waiting respects ctx).
	sem  chan struct{}
	cur  *authConn      // guarded by sem
	conn *pgconn.PgConn // guarded by sem; nil until connected, or after a failure
}

// authConn is how the auth_user connects and what it asks.
type authConn struct {
	cfg   *pgconn.Config
	query string
}

// use makes the next lookup connect with cfg and run query.
func (q *querySecrets) use(cfg *pgconn.Config, query string) {
	q.next.Store(&authConn{cfg: cfg, query: query})
}

// authConnConfig is the auth_user's connection: tlsCfg is the upstream TLS
// client (with the proxy's client certificate when one is configured), nil
// for mode disable. It reads auth_password_file.
func authConnConfig(u UpstreamConfig, tlsCfg *tls.Config) (*pgconn.Config, error) {
	host, port, err := net.SplitHostPort(u.Address)
	if err != nil {
		return nil, fmt.Errorf("upstream.address: %w", err)
	}
	portNum, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("upstream.address: port %q", port)
	}
	var password string
	if u.AuthPasswordFile != "" {
		b, err := os.ReadFile(u.AuthPasswordFile)
		if err != nil {
			return nil, fmt.Errorf("upstream.auth_password_file: %w", err)
		}
		password = strings.TrimRight(string(b), "\r\n")
		clear(b)
	}
	// ParseConfig is the only way to make a pgconn.Config; every setting
	// that matters is then set here, so PG* environment variables cannot
	// change where or how the proxy logs in.
	cfg, err := pgconn.ParseConfig("sslmode=disable")
	if err != nil {
		return nil, fmt.Errorf("auth_user connection: %w", err)
	}
	cfg.Host, cfg.Port = host, uint16(portNum)
	cfg.User, cfg.Password, cfg.Database = u.AuthUser, password, u.AuthDatabase
	cfg.TLSConfig = tlsCfg
	cfg.SSLNegotiation = "postgres"
	cfg.ChannelBinding = "prefer"
	cfg.RequireAuth = ""
	cfg.Fallbacks = nil
	cfg.ConnectTimeout = u.ConnectTimeout
	cfg.ValidateConnect = nil
	cfg.AfterConnect = nil
	cfg.RuntimeParams = map[string]string{"application_name": "phiproxy auth_query"}
	cfg.OnNotice = nil
	return cfg, nil
}

func (q *querySecrets) rolpassword(ctx context.Context, role string) (string, bool, error) {
	select {
	case q.sem <- struct{}{}:
	case <-ctx.Done():
		return "", false, fmt.Errorf("wait for the auth_user connection: %w", ctx.Err())
	}
	defer func() { <-q.sem }()
	if n := q.next.Swap(nil); n != nil {
		q.cur = n
		q.drop() // reconnect with the new settings
	}
	if q.cur == nil {
		return "", false, errors.New("auth_user not configured")
	}
	// A kept connection may have died while idle (server restart,
	// idle_session_timeout): one retry on a fresh one.
	for attempt := 0; ; attempt++ {
		fresh := false
		if q.conn == nil || q.conn.IsClosed() {
			conn, err := pgconn.ConnectConfig(ctx, q.cur.cfg)
			if err != nil {
				return "", false, fmt.Errorf("connect as auth_user: %w", err)
			}
			q.conn, fresh = conn, true
		}
		secret, found, err := q.run(ctx, role)
		if err == nil {
			return secret, found, nil
		}
		var pgErr *pgconn.PgError
		if errors.Is(err, errAuthQueryShape) ||
			errors.As(err, &pgErr) && pgErr.Severity != "FATAL" && pgErr.Severity != "PANIC" {
			// The server refused the query (no privilege on pg_authid, a
			// typo): the connection is fine, the configuration is not.
			return "", false, fmt.Errorf("auth_query: %w", err)
		}
		// The connection failed (I/O, timeout, the server ended it with
		// FATAL): drop it.
		q.drop()
		if fresh || attempt > 0 || ctx.Err() != nil {
			return "", false, fmt.Errorf("auth_query: %w", err)
		}
		q.log.Info("auth_user connection lost; reconnecting", "error", err)
	}
}

// run executes auth_query for role: no row is "not found"; one row of
// (name, rolpassword) gives the secret (NULL: found, empty).
func (q *querySecrets) run(ctx context.Context, role string) (string, bool, error) {
	res := q.conn.ExecParams(ctx, q.cur.query, [][]byte{[]byte(role)}, nil, nil, nil).Read()
	if res.Err != nil {
		return "", false, res.Err
	}
	switch {
	case len(res.Rows) == 0:
		return "", false, nil
	case len(res.Rows) > 1, len(res.Rows[0]) != 2:
		return "", false, errAuthQueryShape
	}
	return string(res.Rows[0][1]), true, nil
}

// errAuthQueryShape: auth_query's answer is not one row of two columns.
var errAuthQueryShape = errors.New("auth_query must return at most one row of two columns (role name, rolpassword)")

// drop closes the connection (sem held); the next lookup opens a new one.
func (q *querySecrets) drop() {
	if q.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	q.conn.Close(ctx)
	q.conn = nil
}

func (q *querySecrets) close() {
	q.sem <- struct{}{}
	defer func() { <-q.sem }()
	q.drop()
}

// fileSecrets reads secrets from a file in PgBouncer's auth_file format:
// one `"role" "secret"` per line, a double quote inside a name doubled;
// blank lines and lines starting with ';' or '#' are ignored.
type fileSecrets struct {
	mu   sync.RWMutex
	path string
	m    map[string]string
}

// readAuthFile reads and parses an auth_file.
func readAuthFile(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("upstream.auth_file: %w", err)
	}
	m, err := parseAuthFile(b)
	clear(b)
	if err != nil {
		return nil, fmt.Errorf("upstream.auth_file %s: %w", path, err)
	}
	return m, nil
}

func (f *fileSecrets) set(path string, m map[string]string) {
	f.mu.Lock()
	f.path, f.m = path, m
	f.mu.Unlock()
}

func (f *fileSecrets) currentPath() string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.path
}

func (f *fileSecrets) rolpassword(_ context.Context, role string) (string, bool, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s, ok := f.m[role]
	return s, ok, nil
}

func (f *fileSecrets) close() {}

// parseAuthFile parses auth_file contents. Errors name the line, never its
// contents.
func parseAuthFile(b []byte) (map[string]string, error) {
	m := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == ';' || line[0] == '#' {
			continue
		}
		role, rest, ok := readQuoted(line)
		if !ok {
			return nil, fmt.Errorf("line %d: want \"role\" \"secret\"", n)
		}
		secret, rest, ok := readQuoted(strings.TrimLeft(rest, " \t"))
		if !ok || strings.TrimSpace(rest) != "" || role == "" {
			return nil, fmt.Errorf("line %d: want \"role\" \"secret\"", n)
		}
		if _, dup := m[role]; dup {
			return nil, fmt.Errorf("line %d: a second line for one role", n)
		}
		m[role] = secret
	}
	return m, sc.Err()
}

// readQuoted reads a double-quoted string ("" is a quote) from the start
// of s.
func readQuoted(s string) (value, rest string, ok bool) {
	if !strings.HasPrefix(s, `"`) {
		return "", "", false
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		if s[i] != '"' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == '"' {
			b.WriteByte('"')
			i++
			continue
		}
		return b.String(), s[i+1:], true
	}
	return "", "", false
}
