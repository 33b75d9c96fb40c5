package proxy

import (
	"errors"
	"fmt"
	"net"
	"time"
)

// This file is the contract between cmd and proxy: the `listen`, `upstream`,
// `metrics` and `limits` sections of the YAML configuration (see
// config.example.yaml). cmd decodes them with yaml.v3 (KnownFields) and
// passes them to New, which applies defaults and validates.

// Defaults applied by (*Config).SetDefaults.
const (
	DefaultListenAddress = "127.0.0.1:6432"
	// DefaultMaxMessageBytes bounds one frontend message (header included).
	// 64 MiB leaves room for large bind parameters and COPY rows while
	// keeping a hostile client from making the proxy allocate gigabytes;
	// PostgreSQL's own ceiling is 1 GiB.
	DefaultMaxMessageBytes = 64 << 20
	// DefaultMaxServerMessageBytes bounds one backend message. PostgreSQL
	// can legitimately send a 1 GiB field, so the default follows it.
	DefaultMaxServerMessageBytes = 1 << 30
	DefaultConnectTimeout        = 10 * time.Second
	DefaultHandshakeTimeout      = 15 * time.Second
	DefaultDrainTimeout          = 30 * time.Second
	DefaultPlanCacheSize         = 10000
	// DefaultAuthQuery reads a role's SCRAM secret (upstream.scram:
	// verifier). pg_authid needs a superuser auth_user; see the README for
	// a SECURITY DEFINER function that does not.
	DefaultAuthQuery        = "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = $1"
	DefaultAuthDatabase     = "postgres"
	DefaultAuthQueryTimeout = 5 * time.Second
	DefaultSCRAMCacheSize   = 1000
	DefaultSCRAMCacheTTL    = time.Hour
)

// Config is everything New needs.
type Config struct {
	Listen   ListenConfig   `yaml:"listen"`
	Upstream UpstreamConfig `yaml:"upstream"`
	Metrics  MetricsConfig  `yaml:"metrics"`
	Limits   LimitsConfig   `yaml:"limits"`
}

// ListenConfig is the client-facing side.
type ListenConfig struct {
	Address string          `yaml:"address"`
	TLS     ListenTLSConfig `yaml:"tls"`
}

// ListenTLSConfig configures TLS termination for clients.
type ListenTLSConfig struct {
	CertFile       string `yaml:"cert_file"`
	KeyFile        string `yaml:"key_file"`
	MinVersion     string `yaml:"min_version"`     // "1.3" (default) or "1.2"
	ClientCAFile   string `yaml:"client_ca_file"`  // set to require client certificates
	AllowPlaintext bool   `yaml:"allow_plaintext"` // true only for local development
	// ClientCertRoles makes the verified client certificate the login
	// identity: each key names an identity of a certificate (CN:name,
	// DN:RFC 4514 subject, DNS:, URI:, email: or IP: subjectAltName), each
	// value the role it may log in as (clientcert.go). A certificate that
	// maps to no role, or not to the startup user, is refused (28000).
	// Needs client_ca_file and upstream.tls.cert_file.
	ClientCertRoles map[string]string `yaml:"client_cert_roles"`
}

// UpstreamConfig is the PostgreSQL side.
type UpstreamConfig struct {
	Address        string            `yaml:"address"`
	TLS            UpstreamTLSConfig `yaml:"tls"`
	ConnectTimeout time.Duration     `yaml:"connect_timeout"` // default 10s
	// SCRAM is how SCRAM-SHA-256 logins cross the proxy: "auto" (default)
	// runs the exchange with the server on the client's behalf, with the
	// client's password, when both legs use TLS; "verifier" runs it with
	// the role's SCRAM secret and the client's proof, never seeing a
	// password; "relay" always relays it (see scram.go).
	SCRAM string `yaml:"scram"`
	// SCRAMCache caches the keys derived from passwords in auto mode.
	SCRAMCache SCRAMCacheConfig `yaml:"scram_cache"`

	// Where the verifier mode reads SCRAM secrets: a login of its own
	// (AuthUser, like PgBouncer's auth_user and auth_query) or a file
	// (AuthFile). Exactly one, and only with SCRAM = "verifier".
	AuthUser string `yaml:"auth_user"`
	// AuthPasswordFile holds AuthUser's password (one line). Empty: the
	// auth user logs in without one (for example with tls.cert_file and
	// cert authentication).
	AuthPasswordFile string `yaml:"auth_password_file"`
	// AuthDatabase is the database AuthUser connects to. Default postgres.
	AuthDatabase string `yaml:"auth_database"`
	// AuthQuery returns (role name, rolpassword) for the role $1. Default
	// DefaultAuthQuery.
	AuthQuery string `yaml:"auth_query"`
	// AuthQueryTimeout bounds one lookup, connecting included. Default 5s.
	AuthQueryTimeout time.Duration `yaml:"auth_query_timeout"`
	// AuthFile lists secrets as PgBouncer's auth_file does: one
	// `"role" "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>"`
	// per line. Read at start and by ReloadAuth.
	AuthFile string `yaml:"auth_file"`
}

// Values of UpstreamConfig.SCRAM.
const (
	SCRAMAuto     = "auto"
	SCRAMRelay    = "relay"
	SCRAMVerifier = "verifier"
)

// SCRAMCacheConfig bounds the auto mode's cache of SCRAM keys.
type SCRAMCacheConfig struct {
	// Size is the number of (role, salt) entries kept, least recently
	// used evicted first. Default 1000; -1 turns the cache off.
	Size int `yaml:"size"`
	// TTL is how long an entry lives after the login that made it.
	// Default 1h.
	TTL time.Duration `yaml:"ttl"`
}

// UpstreamTLSConfig configures the proxy's TLS client to PostgreSQL.
type UpstreamTLSConfig struct {
	Mode       string `yaml:"mode"`        // disable | require | verify-ca | verify-full (default)
	CAFile     string `yaml:"ca_file"`     // PEM bundle; empty = system roots
	ServerName string `yaml:"server_name"` // default: the host of Address
	// CertFile and KeyFile are the proxy's own client certificate. It is
	// presented only on the upstream connections of sessions whose client
	// certificate maps to their role (listen.tls.client_cert_roles) and on
	// the auth_user's connection, never for password logins, so PostgreSQL
	// can trust it with `cert` authentication and a pg_ident map for
	// exactly those roles.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Upstream TLS modes, as libpq names them. There is no "prefer": the proxy
// never falls back to plaintext.
const (
	TLSModeDisable    = "disable"
	TLSModeRequire    = "require"
	TLSModeVerifyCA   = "verify-ca"
	TLSModeVerifyFull = "verify-full"
)

// MetricsConfig is the /metrics, /healthz, /readyz listener.
type MetricsConfig struct {
	// Address may be empty: no metrics listener (Handler still works).
	Address string `yaml:"address"`
}

// LimitsConfig bounds what one session may cost.
type LimitsConfig struct {
	// MaxMessageBytes bounds one frontend message; a larger one ends the
	// session with FATAL 08P01. Default 64 MiB.
	MaxMessageBytes int `yaml:"max_message_bytes"`
	// MaxServerMessageBytes bounds one backend message. Default 1 GiB.
	MaxServerMessageBytes int `yaml:"max_server_message_bytes"`
	// HandshakeTimeout bounds TLS termination, startup and authentication.
	// Default 15s.
	HandshakeTimeout time.Duration `yaml:"handshake_timeout"`
	// DrainTimeout is how long shutdown waits for sessions to end before
	// closing them. Default 30s. cmd uses it; Shutdown takes a context.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// PlanCacheSize bounds the rewrite plans kept per database catalog,
	// keyed by SQL text. Default 10000.
	PlanCacheSize int `yaml:"plan_cache_size"`
	// MaxProcs caps the CPUs the process runs Go code on at once
	// (GOMAXPROCS). 0, the default, adapts it (internal/procs): one,
	// doubled whenever those are kept busy, up to the CPUs available. A
	// relay with more processors than work makes more thread hand-offs per
	// round trip (README, "Performance"). cmd applies it.
	MaxProcs int `yaml:"max_procs"`
}

// SetDefaults fills the zero fields with their defaults.
func (c *Config) SetDefaults() {
	if c.Listen.Address == "" {
		c.Listen.Address = DefaultListenAddress
	}
	if c.Listen.TLS.MinVersion == "" {
		c.Listen.TLS.MinVersion = "1.3"
	}
	if c.Upstream.TLS.Mode == "" {
		c.Upstream.TLS.Mode = TLSModeVerifyFull
	}
	if c.Upstream.SCRAM == "" {
		c.Upstream.SCRAM = SCRAMAuto
	}
	if c.Upstream.ConnectTimeout == 0 {
		c.Upstream.ConnectTimeout = DefaultConnectTimeout
	}
	u := &c.Upstream
	if u.SCRAMCache.Size == 0 {
		u.SCRAMCache.Size = DefaultSCRAMCacheSize
	}
	if u.SCRAMCache.TTL == 0 {
		u.SCRAMCache.TTL = DefaultSCRAMCacheTTL
	}
	if u.SCRAM == SCRAMVerifier && u.AuthUser != "" {
		if u.AuthQuery == "" {
			u.AuthQuery = DefaultAuthQuery
		}
		if u.AuthDatabase == "" {
			u.AuthDatabase = DefaultAuthDatabase
		}
	}
	if u.AuthQueryTimeout == 0 {
		u.AuthQueryTimeout = DefaultAuthQueryTimeout
	}
	if c.Limits.MaxMessageBytes == 0 {
		c.Limits.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.Limits.MaxServerMessageBytes == 0 {
		c.Limits.MaxServerMessageBytes = DefaultMaxServerMessageBytes
	}
	if c.Limits.HandshakeTimeout == 0 {
		c.Limits.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.Limits.DrainTimeout == 0 {
		c.Limits.DrainTimeout = DefaultDrainTimeout
	}
	if c.Limits.PlanCacheSize == 0 {
		c.Limits.PlanCacheSize = DefaultPlanCacheSize
	}
}

// FieldError is one invalid setting; Field is its YAML path
// ("upstream.tls.mode"), so cmd can point at the line of the file.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Validate reports every structural problem of a defaulted config (it does
// not read files; New does), each as a *FieldError, joined.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}

	if _, _, err := net.SplitHostPort(c.Listen.Address); err != nil {
		bad("listen.address", "%q: %v", c.Listen.Address, err)
	}
	t := c.Listen.TLS
	switch t.MinVersion {
	case "1.2", "1.3":
	default:
		bad("listen.tls.min_version", "%q: want \"1.2\" or \"1.3\"", t.MinVersion)
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		bad("listen.tls", "cert_file and key_file must be set together")
	}
	if t.CertFile == "" && !t.AllowPlaintext {
		bad("listen.tls", "cert_file and key_file are required unless allow_plaintext is true")
	}
	if t.ClientCAFile != "" && t.CertFile == "" {
		bad("listen.tls.client_ca_file", "needs cert_file and key_file")
	}

	if c.Upstream.Address == "" {
		bad("upstream.address", "is required")
	} else if _, _, err := net.SplitHostPort(c.Upstream.Address); err != nil {
		bad("upstream.address", "%q: %v", c.Upstream.Address, err)
	}
	switch c.Upstream.TLS.Mode {
	case TLSModeDisable, TLSModeRequire, TLSModeVerifyCA, TLSModeVerifyFull:
	default:
		bad("upstream.tls.mode", "%q: want disable, require, verify-ca or verify-full", c.Upstream.TLS.Mode)
	}
	c.validateAuth(bad)
	if c.Upstream.ConnectTimeout < 0 {
		bad("upstream.connect_timeout", "must be positive")
	}

	if c.Metrics.Address != "" {
		if _, _, err := net.SplitHostPort(c.Metrics.Address); err != nil {
			bad("metrics.address", "%q: %v", c.Metrics.Address, err)
		}
	}

	l := c.Limits
	if l.MaxProcs < 0 {
		bad("limits.max_procs", "%d: want 0 (Go's default) or more", l.MaxProcs)
	}
	if l.PlanCacheSize < 1 {
		bad("limits.plan_cache_size", "%d: want at least 1", l.PlanCacheSize)
	}
	if l.MaxMessageBytes < 1<<10 || l.MaxMessageBytes > 1<<30 {
		bad("limits.max_message_bytes", "%d: want 1 KiB to 1 GiB", l.MaxMessageBytes)
	}
	if l.MaxServerMessageBytes < 1<<10 || l.MaxServerMessageBytes > 1<<30+5 {
		bad("limits.max_server_message_bytes", "%d: want 1 KiB to 1 GiB", l.MaxServerMessageBytes)
	}
	if l.HandshakeTimeout < 0 {
		bad("limits.handshake_timeout", "must be positive")
	}
	if l.DrainTimeout < 0 {
		bad("limits.drain_timeout", "must be positive")
	}
	return errors.Join(errs...)
}

// Files lists the files the config names, by YAML path, for `check`.
func (c *Config) Files() map[string]string {
	files := map[string]string{}
	add := func(key, path string) {
		if path != "" {
			files[key] = path
		}
	}
	add("listen.tls.cert_file", c.Listen.TLS.CertFile)
	add("listen.tls.key_file", c.Listen.TLS.KeyFile)
	add("listen.tls.client_ca_file", c.Listen.TLS.ClientCAFile)
	if c.Upstream.TLS.Mode != TLSModeDisable {
		add("upstream.tls.ca_file", c.Upstream.TLS.CAFile)
		add("upstream.tls.cert_file", c.Upstream.TLS.CertFile)
		add("upstream.tls.key_file", c.Upstream.TLS.KeyFile)
	}
	add("upstream.auth_password_file", c.Upstream.AuthPasswordFile)
	add("upstream.auth_file", c.Upstream.AuthFile)
	return files
}

// validateAuth checks the authentication settings: upstream.scram and its
// secret source, the key cache, the proxy's client certificate and the
// certificate-to-role map.
func (c *Config) validateAuth(bad func(field, format string, args ...any)) {
	u := c.Upstream
	switch u.SCRAM {
	case SCRAMAuto, SCRAMRelay:
		for _, f := range [][2]string{{"auth_user", u.AuthUser}, {"auth_file", u.AuthFile},
			{"auth_password_file", u.AuthPasswordFile}, {"auth_database", u.AuthDatabase}, {"auth_query", u.AuthQuery}} {
			if f[1] != "" {
				bad("upstream."+f[0], "is used only with upstream.scram: verifier")
			}
		}
	case SCRAMVerifier:
		switch {
		case u.AuthUser == "" && u.AuthFile == "":
			bad("upstream.scram", "verifier needs upstream.auth_user (with auth_query) or upstream.auth_file")
		case u.AuthUser != "" && u.AuthFile != "":
			bad("upstream.auth_file", "set auth_user or auth_file, not both")
		}
		if u.AuthUser == "" {
			for _, f := range [][2]string{{"auth_password_file", u.AuthPasswordFile},
				{"auth_database", u.AuthDatabase}, {"auth_query", u.AuthQuery}} {
				if f[1] != "" {
					bad("upstream."+f[0], "needs upstream.auth_user")
				}
			}
		}
	default:
		bad("upstream.scram", "%q: want auto, verifier or relay", u.SCRAM)
	}
	if u.AuthQueryTimeout < 0 {
		bad("upstream.auth_query_timeout", "must be positive")
	}
	if u.SCRAMCache.Size < -1 {
		bad("upstream.scram_cache.size", "%d: want a positive size, or -1 to turn the cache off", u.SCRAMCache.Size)
	}
	if u.SCRAMCache.TTL < 0 {
		bad("upstream.scram_cache.ttl", "must be positive")
	}

	ut := u.TLS
	if (ut.CertFile == "") != (ut.KeyFile == "") {
		bad("upstream.tls", "cert_file and key_file must be set together")
	}
	if ut.CertFile != "" && ut.Mode == TLSModeDisable {
		bad("upstream.tls.cert_file", "needs TLS to the upstream (mode is disable)")
	}

	lt := c.Listen.TLS
	if len(lt.ClientCertRoles) > 0 {
		if lt.ClientCAFile == "" {
			bad("listen.tls.client_cert_roles", "needs listen.tls.client_ca_file (only verified certificates are identities)")
		}
		if ut.CertFile == "" {
			bad("listen.tls.client_cert_roles", "needs upstream.tls.cert_file: the proxy's client certificate, which PostgreSQL trusts for the mapped roles")
		}
		if _, err := parseCertRoles(lt.ClientCertRoles); err != nil {
			bad("listen.tls.client_cert_roles", "%v", err)
		}
	}
}
