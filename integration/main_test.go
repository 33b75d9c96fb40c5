package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/novamind/phiproxy/internal/pgcluster"
	"github.com/novamind/phiproxy/proxy"
)

// upstreamServerName is a name in the test server's certificate other than
// the address the proxy dials, so verify-full exercises server_name.
const upstreamServerName = "db.internal"

var (
	// cluster is the one PostgreSQL server of this test binary (TestMain).
	cluster *pgcluster.Cluster
	// The proxy's certificate, signed by its own CA.
	proxyCAFile, proxyCertFile, proxyKeyFile string
)

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, pgcluster.Options{
		ServerName: upstreamServerName,
		// Keep few WAL segments: the leak check reads every file of the
		// data directory, and the migration tests write a lot.
		Settings: []string{"min_wal_size = 32MB", "max_wal_size = 128MB",
			// Two-phase commit and logical replication, for the attacks on
			// the catalog epoch (attack9_test.go).
			"max_prepared_transactions = 10", "wal_level = logical"},
	})
	if err != nil {
		// Never skip: these tests are the proof that the proxy works.
		fmt.Fprintf(os.Stderr, "integration: cannot start PostgreSQL: %v\n", err)
		return 1
	}
	cluster = c
	defer func() {
		if err := c.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "integration:", err)
		}
	}()

	dir, err := os.MkdirTemp("", "phiproxy-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	ca, err := pgcluster.NewCA("phiproxy integration CA", 24*time.Hour)
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	proxyCAFile = filepath.Join(dir, "proxy-ca.crt")
	proxyCertFile = filepath.Join(dir, "proxy.crt")
	proxyKeyFile = filepath.Join(dir, "proxy.key")
	if err := ca.WriteServerFiles(proxyCAFile, proxyCertFile, proxyKeyFile, []string{"localhost", "127.0.0.1"}, 24*time.Hour); err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	code := m.Run()
	if err := leakCheck(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return code
}

// testProxy is a running proxy in front of cluster.
type testProxy struct {
	srv  *proxy.Server
	host string
	port int
	logs *syncBuffer
}

// baseConfig is the proxy configuration of most tests: TLS 1.3 to clients,
// verify-full to the cluster through upstreamServerName.
func baseConfig() proxy.Config {
	return proxy.Config{
		Listen: proxy.ListenConfig{
			Address: "127.0.0.1:0",
			TLS: proxy.ListenTLSConfig{
				CertFile:   proxyCertFile,
				KeyFile:    proxyKeyFile,
				MinVersion: "1.3",
			},
		},
		Upstream: proxy.UpstreamConfig{
			Address: cluster.Addr(),
			TLS: proxy.UpstreamTLSConfig{
				Mode:       "verify-full",
				CAFile:     cluster.CAFile(),
				ServerName: upstreamServerName,
			},
			ConnectTimeout: 5 * time.Second,
		},
		Metrics: proxy.MetricsConfig{Address: "127.0.0.1:0"},
	}
}

// startProxy starts a proxy with baseConfig changed by mutate, and stops it
// when the test ends. Its log is kept and shown if the test fails.
func startProxy(t *testing.T, mutate ...func(*proxy.Config)) *testProxy {
	t.Helper()
	cfg := baseConfig()
	for _, f := range mutate {
		f(&cfg)
	}
	logs := &syncBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	srv, err := proxy.New(cfg, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	return runProxy(t, srv, logs)
}

// runProxy starts srv, whose log goes to logs, and stops it when the test
// ends.
func runProxy(t *testing.T, srv *proxy.Server, logs *syncBuffer) *testProxy {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	if err := srv.Start(ctx); err != nil {
		cancel()
		t.Fatalf("proxy Start: %v", err)
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		if err := srv.Shutdown(sctx); err != nil {
			t.Logf("proxy Shutdown: %v", err)
		}
		_ = srv.Close()
		cancel()
		if t.Failed() {
			t.Logf("proxy log:\n%s", logs.String())
		}
	})
	host, portStr, err := net.SplitHostPort(srv.Addr().String())
	if err != nil {
		t.Fatalf("proxy address %v: %v", srv.Addr(), err)
	}
	port, _ := strconv.Atoi(portStr)
	return &testProxy{srv: srv, host: host, port: port, logs: logs}
}

// dsn is a connection string through the proxy with verify-full against the
// proxy's CA ("localhost" is in the proxy's certificate).
func (p *testProxy) dsn(r pgcluster.Role, db string) string {
	return pgcluster.DSN("localhost", p.port, r, db, "verify-full", proxyCAFile)
}

// directDSN is a connection string straight to PostgreSQL.
func directDSN(r pgcluster.Role, db string) string {
	return cluster.DSN(r, db, "verify-full")
}

// connect opens a pgx connection that is closed when the test ends.
func connect(t *testing.T, dsn string, opts ...func(*pgx.ConnConfig)) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatalf("parse config: %v", err)
	}
	for _, o := range opts {
		o(cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect to port %d as %s: %v", cfg.Port, cfg.User, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// superuser is a direct connection for setup and checks.
func superuser(t *testing.T) *pgx.Conn {
	return connect(t, cluster.SuperuserDSN(pgcluster.AppDatabase))
}

// both runs fn over a direct connection and over one through p, as
// ScramUser to the app database, and fails if the results differ.
func both[T any](t *testing.T, p *testProxy, fn func(t *testing.T, conn *pgx.Conn) T, opts ...func(*pgx.ConnConfig)) T {
	t.Helper()
	direct := fn(t, connect(t, directDSN(pgcluster.ScramUser, pgcluster.AppDatabase), opts...))
	proxied := fn(t, connect(t, p.dsn(pgcluster.ScramUser, pgcluster.AppDatabase), opts...))
	if diff := cmp.Diff(direct, proxied, cmpOpts); diff != "" {
		t.Fatalf("direct and proxied results differ (-direct +proxy):\n%s", diff)
	}
	return proxied
}

// cmpOpts compares the values pgx decodes (pgtype.Numeric holds a *big.Int).
var cmpOpts = cmp.Comparer(func(x, y *big.Int) bool {
	if x == nil || y == nil {
		return x == y
	}
	return x.Cmp(y) == 0
})

// rowsResult is a comparable outcome of one query.
type rowsResult struct {
	Fields []string
	Rows   [][]any
	Tag    string
	Err    string // SQLSTATE and message, "" on success
}

func queryAll(ctx context.Context, conn *pgx.Conn, sql string, args ...any) rowsResult {
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		return rowsResult{Err: errString(err)}
	}
	var res rowsResult
	for _, fd := range rows.FieldDescriptions() {
		res.Fields = append(res.Fields, fmt.Sprintf("%s:%d:%d", fd.Name, fd.DataTypeOID, fd.Format))
	}
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return rowsResult{Err: errString(err)}
		}
		res.Rows = append(res.Rows, vals)
	}
	if err := rows.Err(); err != nil {
		res.Err = errString(err)
	}
	res.Tag = rows.CommandTag().String()
	return res
}

// errString renders a server error as SQLSTATE and message, comparable
// across connections.
func errString(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Severity + " " + pgErr.Code + " " + pgErr.Message
	}
	return "client: " + err.Error()
}

// rawSession opens an authenticated connection and hands back its socket
// and a pgproto3 frontend, for messages pgx does not send.
func rawSession(t *testing.T, dsn string) *pgconn.HijackedConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	pc, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	hc, err := pc.Hijack()
	if err != nil {
		t.Fatalf("hijack: %v", err)
	}
	t.Cleanup(func() { hc.Conn.Close() })
	return hc
}

// exchange sends msgs, flushes and returns every backend message up to and
// including ReadyForQuery, each rendered as JSON.
func exchange(t *testing.T, hc *pgconn.HijackedConn, msgs ...pgproto3.FrontendMessage) []string {
	t.Helper()
	return exchangeN(t, hc, 1, msgs...)
}

// exchangeN is exchange for msgs holding n cycles (Syncs or Queries): it
// reads up to the n-th ReadyForQuery.
func exchangeN(t *testing.T, hc *pgconn.HijackedConn, n int, msgs ...pgproto3.FrontendMessage) []string {
	t.Helper()
	for _, m := range msgs {
		hc.Frontend.Send(m)
	}
	if err := hc.Frontend.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	_ = hc.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var out []string
	for n > 0 {
		msg, err := hc.Frontend.Receive()
		if err != nil {
			t.Fatalf("receive after %d messages: %v", len(out), err)
		}
		b, err := json.Marshal(msg)
		if err != nil {
			t.Fatalf("marshal %T: %v", msg, err)
		}
		out = append(out, string(b))
		if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
			n--
		}
	}
	return out
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
