package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/novamind/phiproxy/internal/pgcluster"
	"github.com/novamind/phiproxy/proxy"
)

// certFiles issues a certificate from ca for hosts (the first is the CN)
// and writes it and its key; it returns their paths.
func certFiles(t *testing.T, ca *pgcluster.CA, hosts ...string) (certFile, keyFile string) {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue(hosts, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
	writeFileT(t, certFile, string(certPEM))
	writeFileT(t, keyFile, string(keyPEM))
	return certFile, keyFile
}

// TestClientCertIdentity: with listen.tls.client_cert_roles a verified
// client certificate is the login: a mapped certificate logs in as its role
// without a password (the proxy presents its own client certificate, which
// PostgreSQL trusts for that role through pg_hba cert and pg_ident); an
// unmapped certificate, or a mapped one asking for another role, is
// refused with 28000; a certificate from another CA does not get past TLS.
func TestClientCertIdentity(t *testing.T) {
	authRoles(t)
	ctx := context.Background()
	clientCA, err := pgcluster.NewCA("phiproxy test client CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	clientCAFile := writeTemp(t, "client-ca.crt", clientCA.CertPEM)
	app1Cert, app1Key := certFiles(t, clientCA, "app1")
	batchCert, batchKey := certFiles(t, clientCA, "batch7", "batch.internal")
	otherCert, otherKey := certFiles(t, clientCA, "other")
	rogueCA, _ := pgcluster.NewCA("rogue CA", time.Hour)
	rogueCert, rogueKey := certFiles(t, rogueCA, "app1")
	// The proxy's own client certificate, from the CA PostgreSQL trusts.
	proxyCert, proxyKey := certFiles(t, cluster.CA(), proxyClientCN)

	p, _ := startProxyReg(t, func(c *proxy.Config) {
		c.Listen.TLS.ClientCAFile = clientCAFile
		c.Listen.TLS.ClientCertRoles = map[string]string{
			"CN:app1":            certRole.Name,
			"DNS:batch.internal": certRole.Name,
		}
		c.Upstream.TLS.CertFile, c.Upstream.TLS.KeyFile = proxyCert, proxyKey
	})
	dsn := func(r pgcluster.Role, cert, key string) string {
		return p.dsn(r, pgcluster.AppDatabase) + fmt.Sprintf(" sslcert=%s sslkey=%s", cert, key)
	}

	t.Run("mapped CN logs in as its role", func(t *testing.T) {
		conn := connect(t, dsn(certRole, app1Cert, app1Key))
		var user, clientDN string
		if err := conn.QueryRow(ctx, "SELECT current_user, client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&user, &clientDN); err != nil {
			t.Fatal(err)
		}
		if user != certRole.Name || clientDN != "/CN="+proxyClientCN {
			t.Fatalf("server sees user %q with client certificate %q; want %q with the proxy's", user, clientDN, certRole.Name)
		}
	})
	t.Run("mapped DNS name, psql", func(t *testing.T) {
		res := runPsql(t, dsn(certRole, batchCert, batchKey), "-Atc", "SELECT current_user")
		if res.Exit != 0 || strings.TrimSpace(res.Stdout) != certRole.Name {
			t.Fatalf("psql: exit %d, stdout %q, stderr %q", res.Exit, res.Stdout, res.Stderr)
		}
	})
	t.Run("unmapped certificate", func(t *testing.T) {
		want := fmt.Sprintf("FATAL 28000 certificate authentication failed for user %q", certRole.Name)
		if got := tryConnect(t, dsn(certRole, otherCert, otherKey)); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	})
	t.Run("mapped certificate, another role", func(t *testing.T) {
		want := fmt.Sprintf("FATAL 28000 certificate authentication failed for user %q", pgcluster.ScramUser.Name)
		if got := tryConnect(t, dsn(pgcluster.ScramUser, app1Cert, app1Key)); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	})
	t.Run("certificate of another CA", func(t *testing.T) {
		if got := tryConnect(t, dsn(certRole, rogueCert, rogueKey)); !strings.HasPrefix(got, "client: ") {
			t.Fatalf("got %q, want a TLS failure", got)
		}
	})
	t.Run("no certificate", func(t *testing.T) {
		if got := tryConnect(t, p.dsn(certRole, pgcluster.AppDatabase)); !strings.HasPrefix(got, "client: ") {
			t.Fatalf("got %q, want a TLS failure", got)
		}
	})
	if logs := p.logs.String(); !strings.Contains(logs, `"client_cert":"CN=other"`) {
		t.Errorf("the refusal is not logged with the certificate's subject:\n%s", logs)
	}
}

// TestProxyCertOnlyForCertLogins: the proxy's client certificate is not
// presented for password logins, so a client that merely names a role
// PostgreSQL trusts the proxy's certificate for gets the server's refusal.
func TestProxyCertOnlyForCertLogins(t *testing.T) {
	authRoles(t)
	proxyCert, proxyKey := certFiles(t, cluster.CA(), proxyClientCN)
	p, _ := startProxyReg(t, func(c *proxy.Config) {
		c.Upstream.TLS.CertFile, c.Upstream.TLS.KeyFile = proxyCert, proxyKey
	})
	got := tryConnect(t, p.dsn(certRole, pgcluster.AppDatabase))
	if !strings.HasPrefix(got, "FATAL 28000 ") {
		t.Fatalf("a password login as %s got %q, want the server's 28000", certRole.Name, got)
	}
	// And the proxy is otherwise unchanged.
	if got := tryConnect(t, p.dsn(pgcluster.ScramUser, pgcluster.AppDatabase)); got != "" {
		t.Fatal(got)
	}
}
