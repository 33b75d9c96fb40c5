package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/novamind/phiproxy/internal/pgcluster"
	"github.com/novamind/phiproxy/proxy"
)

// TestAuthReload: Reload (SIGHUP) carries the authentication state along:
// with a new listen certificate, channel binding follows it (the binding
// data is the certificate each handshake served); a rotated auth_user
// password is used from the next lookup; the key cache is emptied; a new
// client_cert_roles map applies to new sessions; changing upstream.scram
// needs a restart.
func TestAuthReload(t *testing.T) {
	authRoles(t)
	ctx := context.Background()
	su := superuser(t)
	dir := t.TempDir()

	// The verifier proxy, logging in as authUserRole with a password file
	// the test rotates, behind a certificate the test replaces.
	pwFile := filepath.Join(dir, "auth-password")
	writeFileT(t, pwFile, authUserRole.Password)
	listenCA, err := pgcluster.NewCA("reload listen CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caFile, certFile, keyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "proxy.crt"), filepath.Join(dir, "proxy.key")
	if err := listenCA.WriteServerFiles(caFile, certFile, keyFile, []string{"localhost"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig()
	cfg.Listen.TLS.CertFile, cfg.Listen.TLS.KeyFile = certFile, keyFile
	cfg.Upstream.SCRAM = proxy.SCRAMVerifier
	cfg.Upstream.AuthUser, cfg.Upstream.AuthPasswordFile, cfg.Upstream.AuthQuery = authUserRole.Name, pwFile, lookupQuery
	p, _ := startProxyReg(t, func(c *proxy.Config) { *c = cfg })
	dsn := pgcluster.DSN("localhost", p.port, pgcluster.ScramUser, pgcluster.AppDatabase, "verify-full", caFile) + " channel_binding=require"
	if got := tryConnect(t, dsn); got != "" {
		t.Fatal(got)
	}

	t.Run("new certificate, binding follows", func(t *testing.T) {
		// A new key and certificate from the same CA.
		if err := listenCA.WriteServerFiles(caFile, certFile, keyFile, []string{"localhost"}, time.Hour); err != nil {
			t.Fatal(err)
		}
		if err := p.srv.Reload(cfg, nil); err != nil {
			t.Fatal(err)
		}
		if got := tryConnect(t, dsn); got != "" {
			t.Fatalf("after a certificate reload: %s", got)
		}
	})
	t.Run("rotated auth_user password", func(t *testing.T) {
		t.Cleanup(func() {
			su.Exec(ctx, fmt.Sprintf("ALTER ROLE %s PASSWORD '%s'", authUserRole.Name, authUserRole.Password))
		})
		if _, err := su.Exec(ctx, fmt.Sprintf("ALTER ROLE %s PASSWORD 'rotated-secret'", authUserRole.Name)); err != nil {
			t.Fatal(err)
		}
		writeFileT(t, pwFile, "rotated-secret")
		if err := p.srv.Reload(cfg, nil); err != nil {
			t.Fatal(err)
		}
		if got := tryConnect(t, dsn); got != "" {
			t.Fatalf("after rotating the auth_user's password: %s", got)
		}
	})
	t.Run("scram mode needs a restart", func(t *testing.T) {
		auto := cfg
		auto.Upstream.SCRAM = proxy.SCRAMAuto
		auto.Upstream.AuthUser, auto.Upstream.AuthPasswordFile, auto.Upstream.AuthQuery = "", "", ""
		if err := p.srv.Reload(auto, nil); err == nil {
			t.Fatal("Reload switched upstream.scram")
		}
		if got := tryConnect(t, dsn); got != "" {
			t.Fatalf("after a refused reload: %s", got)
		}
	})

	t.Run("auto mode: the cache is emptied", func(t *testing.T) {
		ap, reg := startProxyReg(t)
		adsn := ap.dsn(pgcluster.ScramUser, pgcluster.AppDatabase)
		for range 2 {
			if got := tryConnect(t, adsn); got != "" {
				t.Fatal(got)
			}
		}
		hits := metricValue(t, reg, "phiproxy_scram_key_cache_lookups_total", "hit")
		if err := ap.srv.Reload(baseConfig(), nil); err != nil {
			t.Fatal(err)
		}
		if got := tryConnect(t, adsn); got != "" {
			t.Fatal(got)
		}
		if h := metricValue(t, reg, "phiproxy_scram_key_cache_lookups_total", "hit"); h != hits {
			t.Fatalf("a login after Reload hit the cache (%v hits, %v before)", h, hits)
		}
	})

	t.Run("client_cert_roles", func(t *testing.T) {
		clientCA, _ := pgcluster.NewCA("reload client CA", time.Hour)
		clientCAFile := writeTemp(t, "client-ca.crt", clientCA.CertPEM)
		app1Cert, app1Key := certFiles(t, clientCA, "app1")
		proxyCert, proxyKey := certFiles(t, cluster.CA(), proxyClientCN)
		ccfg := baseConfig()
		ccfg.Listen.TLS.ClientCAFile = clientCAFile
		ccfg.Listen.TLS.ClientCertRoles = map[string]string{"CN:someone-else": certRole.Name}
		ccfg.Upstream.TLS.CertFile, ccfg.Upstream.TLS.KeyFile = proxyCert, proxyKey
		cp, _ := startProxyReg(t, func(c *proxy.Config) { *c = ccfg })
		cdsn := cp.dsn(certRole, pgcluster.AppDatabase) + fmt.Sprintf(" sslcert=%s sslkey=%s", app1Cert, app1Key)
		want := fmt.Sprintf("FATAL 28000 certificate authentication failed for user %q", certRole.Name)
		if got := tryConnect(t, cdsn); got != want {
			t.Fatalf("before the reload: %q, want %q", got, want)
		}
		ccfg.Listen.TLS.ClientCertRoles = map[string]string{"CN:app1": certRole.Name}
		if err := cp.srv.Reload(ccfg, nil); err != nil {
			t.Fatal(err)
		}
		if got := tryConnect(t, cdsn); got != "" {
			t.Fatalf("after mapping CN:app1: %s", got)
		}
	})
}
