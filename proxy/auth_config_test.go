package proxy

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestAuthConfig: the authentication settings' defaults and every
// structural error, by field.
func TestAuthConfig(t *testing.T) {
	base := func() Config {
		c := testConfig("127.0.0.1:5432")
		c.Listen.TLS = ListenTLSConfig{CertFile: "p.crt", KeyFile: "p.key"}
		c.Upstream.TLS.Mode = TLSModeVerifyFull
		return c
	}
	c := base()
	c.Upstream.SCRAM = SCRAMVerifier
	c.Upstream.AuthUser = "auth"
	c.SetDefaults()
	if c.Upstream.AuthQuery != DefaultAuthQuery || c.Upstream.AuthDatabase != "postgres" ||
		c.Upstream.AuthQueryTimeout != 5*time.Second || c.Upstream.SCRAMCache != (SCRAMCacheConfig{Size: 1000, TTL: time.Hour}) {
		t.Errorf("defaults: %+v", c.Upstream)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("valid verifier config: %v", err)
	}

	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		fields []string
	}{
		{"auto is fine", func(c *Config) {}, nil},
		{"unknown mode", func(c *Config) { c.Upstream.SCRAM = "md5" }, []string{"upstream.scram"}},
		{"verifier without a source", func(c *Config) { c.Upstream.SCRAM = SCRAMVerifier }, []string{"upstream.scram"}},
		{"verifier with both sources", func(c *Config) {
			c.Upstream.SCRAM, c.Upstream.AuthUser, c.Upstream.AuthFile = SCRAMVerifier, "a", "f"
		}, []string{"upstream.auth_file"}},
		{"auth file with query settings", func(c *Config) {
			c.Upstream.SCRAM, c.Upstream.AuthFile, c.Upstream.AuthQuery = SCRAMVerifier, "f", "SELECT"
		}, []string{"upstream.auth_query"}},
		{"auth settings outside verifier", func(c *Config) {
			c.Upstream.AuthUser, c.Upstream.AuthFile = "a", "f"
		}, []string{"upstream.auth_file", "upstream.auth_user"}},
		{"cache size", func(c *Config) { c.Upstream.SCRAMCache.Size = -2 }, []string{"upstream.scram_cache.size"}},
		{"cache off", func(c *Config) { c.Upstream.SCRAMCache.Size = -1 }, nil},
		{"negative ttl", func(c *Config) { c.Upstream.SCRAMCache.TTL = -time.Second }, []string{"upstream.scram_cache.ttl"}},
		{"client cert without key", func(c *Config) { c.Upstream.TLS.CertFile = "c.crt" }, []string{"upstream.tls"}},
		{"client cert without TLS", func(c *Config) {
			c.Upstream.TLS = UpstreamTLSConfig{Mode: TLSModeDisable, CertFile: "c", KeyFile: "k"}
		}, []string{"upstream.tls.cert_file"}},
		{"cert roles need a CA and a proxy certificate", func(c *Config) {
			c.Listen.TLS.ClientCertRoles = map[string]string{"CN:app": "app"}
		}, []string{"listen.tls.client_cert_roles", "listen.tls.client_cert_roles"}},
		{"cert roles well formed", func(c *Config) {
			c.Listen.TLS.ClientCAFile = "ca.crt"
			c.Upstream.TLS.CertFile, c.Upstream.TLS.KeyFile = "c", "k"
			c.Listen.TLS.ClientCertRoles = map[string]string{"CN=app": "app"}
		}, []string{"listen.tls.client_cert_roles"}},
		{"cert roles valid", func(c *Config) {
			c.Listen.TLS.ClientCAFile = "ca.crt"
			c.Upstream.TLS.CertFile, c.Upstream.TLS.KeyFile = "c", "k"
			c.Listen.TLS.ClientCertRoles = map[string]string{"CN:app": "app", "URI:spiffe://x/y": "y"}
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mutate(&c)
			c.SetDefaults()
			var got []string
			for _, e := range unjoinErrs(c.Validate()) {
				var fe *FieldError
				if !errors.As(e, &fe) {
					t.Fatalf("not a FieldError: %v", e)
				}
				got = append(got, fe.Field)
			}
			slices.Sort(got)
			if diff := cmp.Diff(tc.fields, got); diff != "" {
				t.Errorf("fields (-want +got):\n%s\n%v", diff, c.Validate())
			}
		})
	}
	files := base()
	files.Upstream.TLS.CertFile, files.Upstream.TLS.KeyFile, files.Upstream.AuthFile = "c", "k", "f"
	for _, k := range []string{"upstream.tls.cert_file", "upstream.tls.key_file", "upstream.auth_file"} {
		if _, ok := files.Files()[k]; !ok {
			t.Errorf("Files() lacks %s", k)
		}
	}
}

func unjoinErrs(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func TestAuthMetricsLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := newAuthMetrics(reg); err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}
