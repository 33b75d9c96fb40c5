package integration

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/novamind/phiproxy/internal/pgcluster"
	"github.com/novamind/phiproxy/proxy"
)

// verifierMode configures upstream.scram: verifier with the superuser as
// auth_user and the default auth_query.
func verifierMode(t *testing.T) func(*proxy.Config) {
	pw := writeTemp(t, "auth-password", []byte(pgcluster.Superuser.Password+"\n"))
	return func(c *proxy.Config) {
		c.Upstream.SCRAM = proxy.SCRAMVerifier
		c.Upstream.AuthUser = pgcluster.Superuser.Name
		c.Upstream.AuthPasswordFile = pw
	}
}

// TestVerifierModeChannelBinding: with upstream.scram: verifier, psql and
// pgx log in with channel_binding=require (bound to the proxy's own
// certificate, verified with verify-full), as their own role, over TLS to
// the server.
func TestVerifierModeChannelBinding(t *testing.T) {
	authRoles(t)
	p, reg := startProxyReg(t, verifierMode(t))
	ctx := context.Background()

	t.Run("pgx channel_binding=require", func(t *testing.T) {
		conn := connect(t, p.dsn(pgcluster.ScramUser, pgcluster.AppDatabase)+" channel_binding=require")
		var user string
		var ssl bool
		if err := conn.QueryRow(ctx, "SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&user, &ssl); err != nil {
			t.Fatal(err)
		}
		if user != pgcluster.ScramUser.Name || !ssl {
			t.Fatalf("server sees %q ssl=%v", user, ssl)
		}
	})
	t.Run("psql channel_binding=require", func(t *testing.T) {
		res := runPsql(t, p.dsn(pgcluster.ScramUser, pgcluster.AppDatabase)+" channel_binding=require", "-Atc", "SELECT current_user")
		if res.Exit != 0 || strings.TrimSpace(res.Stdout) != pgcluster.ScramUser.Name {
			t.Fatalf("psql: exit %d, stdout %q, stderr %q", res.Exit, res.Stdout, res.Stderr)
		}
	})
	t.Run("sslmode=require also binds", func(t *testing.T) {
		dsn := pgcluster.DSN("127.0.0.1", p.port, pgcluster.ScramUser, pgcluster.AppDatabase, "require", "") + " channel_binding=require"
		if e := tryConnect(t, dsn); e != "" {
			t.Fatal(e)
		}
	})
	t.Run("lib/pq style, no channel binding (n)", func(t *testing.T) {
		if e := tryConnect(t, p.dsn(pgcluster.ScramUser, pgcluster.AppDatabase)+" channel_binding=disable"); e != "" {
			t.Fatal(e)
		}
	})
	t.Run("other methods", func(t *testing.T) {
		for _, r := range []pgcluster.Role{pgcluster.MD5User, pgcluster.TrustUser, pgcluster.Superuser} {
			if e := tryConnect(t, p.dsn(r, pgcluster.AppDatabase)); e != "" {
				t.Errorf("%s (%s): %s", r.Name, r.Method, e)
			}
		}
	})
	if n := metricValue(t, reg, "phiproxy_scram_secret_lookups_total", "found"); n < 4 {
		t.Errorf("%v secrets found, want at least 4", n)
	}
}

// TestVerifierModeRefusals: a wrong password, a role that does not exist,
// a role with an MD5 hash or no password under scram-sha-256 get exactly
// PostgreSQL's error, after an exchange that shows the salt PostgreSQL
// would show; a role whose pg_hba line says "password" is refused, since
// the mode never relays a cleartext password.
func TestVerifierModeRefusals(t *testing.T) {
	authRoles(t)
	p, reg := startProxyReg(t, verifierMode(t))

	wrong := pgcluster.ScramUser
	wrong.Password = "wrong-" + wrong.Password
	for _, r := range []pgcluster.Role{wrong, ghostRole, md5InScramRole, noPasswordRole} {
		t.Run(r.Name, func(t *testing.T) {
			direct := tryConnect(t, directDSN(r, "postgres"))
			proxied := tryConnect(t, p.dsn(r, "postgres")+" channel_binding=require")
			want := fmt.Sprintf("FATAL 28P01 password authentication failed for user %q", r.Name)
			if direct != want || proxied != want {
				t.Fatalf("direct %q, proxy %q; want both %q", direct, proxied, want)
			}
		})
	}
	t.Run("the client sees the server's salt, mock or real", func(t *testing.T) {
		for _, r := range []pgcluster.Role{pgcluster.ScramUser, ghostRole, md5InScramRole} {
			direct := scramSaltSeen(t, cluster.Addr(), nil, r)
			proxied := scramSaltSeen(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port)), proxyTLSConfig(t), r)
			if direct == "" || direct != proxied {
				t.Errorf("%s: salt and iterations directly %q, through the proxy %q", r.Name, direct, proxied)
			}
		}
	})
	t.Run("cleartext password method refused", func(t *testing.T) {
		got := tryConnect(t, p.dsn(pgcluster.PasswordUser, pgcluster.AppDatabase))
		if !strings.Contains(got, "28000") || !strings.Contains(got, "cleartext password") {
			t.Fatalf("got %q, want 28000 about the cleartext password", got)
		}
	})
	if n := metricValue(t, reg, "phiproxy_scram_secret_lookups_total", "not_scram"); n < 2 {
		t.Errorf("not_scram lookups %v, want at least 2", n)
	}
	if n := metricValue(t, reg, "phiproxy_scram_secret_lookups_total", "not_found"); n < 1 {
		t.Errorf("not_found lookups %v, want at least 1", n)
	}
	logs := p.logs.String()
	if !strings.Contains(logs, "no SCRAM-SHA-256 secret") {
		t.Errorf("the proxy log does not say why the md5 role failed:\n%s", logs)
	}
	for _, secret := range []string{wrong.Password, md5InScramRole.Password, pgcluster.ScramUser.Password, "SCRAM-SHA-256$"} {
		if strings.Contains(logs, secret) {
			t.Errorf("proxy log contains %q", secret)
		}
	}
}

// TestVerifierModeChannelBindingStopsAMITM: a man in the middle that ends
// the client's TLS with its own certificate (accepted by sslmode=require)
// cannot relay the client's SCRAM to the proxy: the proof is bound to the
// man in the middle's certificate, and the proxy refuses it as PostgreSQL
// would.
func TestVerifierModeChannelBindingStopsAMITM(t *testing.T) {
	p, _ := startProxyReg(t, verifierMode(t))
	mitm := startMITM(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port)))
	dsn := pgcluster.DSN("127.0.0.1", mitm, pgcluster.ScramUser, pgcluster.AppDatabase, "require", "")
	for _, cb := range []string{"require", "prefer"} {
		got := tryConnect(t, dsn+" channel_binding="+cb)
		if got != "FATAL 28000 SCRAM channel binding check failed" {
			t.Errorf("channel_binding=%s through a MITM: %q, want FATAL 28000 SCRAM channel binding check failed", cb, got)
		}
	}
	// Without channel binding the relay works: what the binding buys.
	if got := tryConnect(t, dsn+" channel_binding=disable"); got != "" {
		t.Errorf("channel_binding=disable through the relay: %s", got)
	}
}

// TestVerifierModeAuthUser: the auth_user need not be a superuser (a
// SECURITY DEFINER function reads pg_authid); its one connection is reused
// for every lookup and replaced when it dies; a lookup that hangs is cut
// at auth_query_timeout; an auth_query the server refuses fails the login
// with 08001, not with a password error.
func TestVerifierModeAuthUser(t *testing.T) {
	authRoles(t)
	ctx := context.Background()
	pw := writeTemp(t, "auth-password", []byte(authUserRole.Password))
	function := func(c *proxy.Config) {
		c.Upstream.SCRAM = proxy.SCRAMVerifier
		c.Upstream.AuthUser = authUserRole.Name
		c.Upstream.AuthPasswordFile = pw
		c.Upstream.AuthQuery = lookupQuery
	}
	authConns := func(t *testing.T) []int {
		t.Helper()
		rows, err := superuser(t).Query(ctx, "SELECT pid FROM pg_stat_activity WHERE usename = $1 AND application_name = 'phiproxy auth_query'", authUserRole.Name)
		if err != nil {
			t.Fatal(err)
		}
		pids, err := pgx.CollectRows(rows, pgx.RowTo[int])
		if err != nil {
			t.Fatal(err)
		}
		return pids
	}

	t.Run("one connection, reused and replaced", func(t *testing.T) {
		p, reg := startProxyReg(t, function)
		for range 5 {
			if e := tryConnect(t, p.dsn(pgcluster.ScramUser, pgcluster.AppDatabase)+" channel_binding=require"); e != "" {
				t.Fatal(e)
			}
		}
		pids := authConns(t)
		if len(pids) != 1 {
			t.Fatalf("%d auth_user connections after 5 logins, want 1", len(pids))
		}
		if _, err := superuser(t).Exec(ctx, "SELECT pg_terminate_backend($1)", pids[0]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		if e := tryConnect(t, p.dsn(pgcluster.ScramUser, pgcluster.AppDatabase)+" channel_binding=require"); e != "" {
			t.Fatalf("login after the auth_user connection was killed: %s", e)
		}
		if now := authConns(t); len(now) != 1 || now[0] == pids[0] {
			t.Fatalf("auth_user connections %v after reconnecting (before: %v)", now, pids)
		}
		if n := metricValue(t, reg, "phiproxy_scram_secret_lookups_total", "error"); n != 0 {
			t.Errorf("%v lookup errors, want 0 (a dead connection is retried once)", n)
		}
	})

	t.Run("lookup bounded in time", func(t *testing.T) {
		p, _ := startProxyReg(t, function, func(c *proxy.Config) {
			c.Upstream.AuthQuery = "SELECT rolname, rolpassword FROM phiproxy_auth.lookup($1), pg_sleep(5)"
			c.Upstream.AuthQueryTimeout = 300 * time.Millisecond
		})
		start := time.Now()
		got := tryConnect(t, p.dsn(pgcluster.ScramUser, pgcluster.AppDatabase))
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("login failed after %v, want about the 300ms auth_query_timeout", took)
		}
		if got != "FATAL 08001 phiproxy: could not look up the role's authentication secret" {
			t.Fatalf("got %q", got)
		}
	})

	t.Run("auth_query refused by the server", func(t *testing.T) {
		p, _ := startProxyReg(t, function, func(c *proxy.Config) {
			c.Upstream.AuthQuery = "" // the default reads pg_authid: superusers only
		})
		got := tryConnect(t, p.dsn(pgcluster.ScramUser, pgcluster.AppDatabase))
		if !strings.HasPrefix(got, "FATAL 08001 ") {
			t.Fatalf("got %q, want 08001", got)
		}
		if !strings.Contains(p.logs.String(), "permission denied") {
			t.Errorf("the proxy log does not name the cause:\n%s", p.logs.String())
		}
	})
}

// TestVerifierModeAuthFile: secrets from a file (PgBouncer's format);
// ReloadAuth rereads it.
func TestVerifierModeAuthFile(t *testing.T) {
	authRoles(t)
	ctx := context.Background()
	var secret string
	if err := superuser(t).QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", pgcluster.ScramUser.Name).Scan(&secret); err != nil {
		t.Fatal(err)
	}
	file := writeTemp(t, "userlist.txt", []byte("; no secret for scram_user yet\n"))
	p, _ := startProxyReg(t, func(c *proxy.Config) {
		c.Upstream.SCRAM = proxy.SCRAMVerifier
		c.Upstream.AuthFile = file
	})
	dsn := p.dsn(pgcluster.ScramUser, pgcluster.AppDatabase) + " channel_binding=require"
	want := fmt.Sprintf("FATAL 28P01 password authentication failed for user %q", pgcluster.ScramUser.Name)
	if got := tryConnect(t, dsn); got != want {
		t.Fatalf("role missing from the file: %q, want %q", got, want)
	}
	writeFileT(t, file, fmt.Sprintf("%q %q\n", pgcluster.ScramUser.Name, secret))
	if err := p.srv.ReloadAuth(); err != nil {
		t.Fatal(err)
	}
	if got := tryConnect(t, dsn); got != "" {
		t.Fatalf("after reload: %s", got)
	}
	writeFileT(t, file, "garbage\n")
	if err := p.srv.ReloadAuth(); err == nil {
		t.Fatal("a malformed auth_file reloaded without error")
	}
	if got := tryConnect(t, dsn); got != "" {
		t.Fatalf("a failed reload dropped the previous secrets: %s", got)
	}
}
