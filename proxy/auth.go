package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// authState is what the server keeps for logins across sessions: the
// verifier mode's secret store, the auto mode's key cache, the
// channel-binding data of the proxy's own certificate, the client
// certificate map and the TLS client that presents the proxy's certificate
// upstream. Built by New; its fields do not change after, except inside
// the cache and the store (which lock).
type authState struct {
	log *slog.Logger
	// keyCache: auto mode only; nil otherwise or when turned off.
	keyCache *scramKeyCache
	// secrets: verifier mode only.
	secrets       secretStore
	lookupTimeout time.Duration
	// cbData is the tls-server-end-point hash of the proxy's certificate
	// for SCRAM-SHA-256-PLUS with clients (verifier mode); nil: -PLUS is
	// not offered.
	cbData []byte
	// certRoles: nil unless listen.tls.client_cert_roles.
	certRoles *certRoleMap
	// certTLS is the upstream TLS client with the proxy's own client
	// certificate (upstream.tls.cert_file); nil when none is configured.
	certTLS *tls.Config
	metrics *authMetrics

	stopJanitor chan struct{}
	janitorWG   sync.WaitGroup
	closeOnce   sync.Once
}

func newAuthState(cfg Config, log *slog.Logger, clientTLS, upstreamTLS *tls.Config, reg prometheus.Registerer) (_ *authState, err error) {
	a := &authState{log: log, lookupTimeout: cfg.Upstream.AuthQueryTimeout, stopJanitor: make(chan struct{})}
	if a.metrics, err = newAuthMetrics(reg); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	u := cfg.Upstream
	if u.TLS.CertFile != "" && upstreamTLS != nil {
		cert, err := tls.LoadX509KeyPair(u.TLS.CertFile, u.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load upstream client certificate: %w", err)
		}
		a.certTLS = upstreamTLS.Clone()
		a.certTLS.Certificates = []tls.Certificate{cert}
	}
	if len(cfg.Listen.TLS.ClientCertRoles) > 0 {
		if a.certRoles, err = parseCertRoles(cfg.Listen.TLS.ClientCertRoles); err != nil {
			return nil, fmt.Errorf("listen.tls.client_cert_roles: %w", err)
		}
	}
	switch u.SCRAM {
	case SCRAMAuto:
		a.keyCache = newSCRAMKeyCache(u.SCRAMCache.Size, u.SCRAMCache.TTL)
		if a.keyCache != nil {
			a.keyCache.onGet = a.metrics.cacheGet
			a.janitorWG.Add(1)
			go a.janitor(u.SCRAMCache.TTL)
		}
	case SCRAMVerifier:
		if clientTLS != nil {
			a.cbData = ownCertificateHash(clientTLS, log)
		}
		if u.AuthFile != "" {
			if a.secrets, err = newFileSecrets(u.AuthFile); err != nil {
				return nil, err
			}
		} else {
			// The auth_user's connection presents the proxy's client
			// certificate when there is one: it may log in with cert.
			tlsCfg := upstreamTLS
			if a.certTLS != nil {
				tlsCfg = a.certTLS
			}
			if a.secrets, err = newQuerySecrets(u, tlsCfg, log); err != nil {
				return nil, err
			}
		}
	}
	return a, nil
}

// ownCertificateHash is the channel-binding data of the proxy's leaf
// certificate, or nil (logged) when it has none.
func ownCertificateHash(cfg *tls.Config, log *slog.Logger) []byte {
	if len(cfg.Certificates) == 0 || len(cfg.Certificates[0].Certificate) == 0 {
		return nil
	}
	leaf := cfg.Certificates[0].Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cfg.Certificates[0].Certificate[0]); err != nil {
			log.Warn("parse the listen certificate: SCRAM-SHA-256-PLUS not offered", "error", err)
			return nil
		}
	}
	h, err := certificateHash(leaf)
	if err != nil {
		log.Warn("the listen certificate has no tls-server-end-point binding: SCRAM-SHA-256-PLUS not offered (channel_binding=require clients cannot log in)", "error", err)
		return nil
	}
	return h
}

// janitor wipes expired cache entries every ttl/4 (between 1s and 5m).
func (a *authState) janitor(ttl time.Duration) {
	defer a.janitorWG.Done()
	t := time.NewTicker(min(max(ttl/4, time.Second), 5*time.Minute))
	defer t.Stop()
	for {
		select {
		case <-a.stopJanitor:
			return
		case <-t.C:
			a.keyCache.sweep()
		}
	}
}

func (a *authState) close() {
	a.closeOnce.Do(func() {
		close(a.stopJanitor)
		a.janitorWG.Wait()
		a.keyCache.clear()
		if a.secrets != nil {
			a.secrets.close()
		}
	})
}

// lookupSecret returns role's SCRAM secret, or nil when the role has none
// the proxy can use (no such role, an md5 hash, no password): the login
// then fails as PostgreSQL's would, after a mock exchange. A failed lookup
// is an *AuthLookupError.
func (a *authState) lookupSecret(ctx context.Context, role string, log *slog.Logger) (*scramSecret, error) {
	ctx, cancel := context.WithTimeout(ctx, a.lookupTimeout)
	defer cancel()
	start := time.Now()
	raw, found, err := a.secrets.rolpassword(ctx, role)
	a.metrics.lookupSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		a.metrics.lookups.WithLabelValues("error").Inc()
		log.Warn("verifier mode: SCRAM secret lookup failed", "error", err)
		return nil, &AuthLookupError{Err: err}
	}
	if !found {
		a.metrics.lookups.WithLabelValues("not_found").Inc()
		log.Info("verifier mode: no such role; the login will fail")
		return nil, nil
	}
	secret, err := parseSCRAMSecret(raw)
	if err != nil {
		a.metrics.lookups.WithLabelValues("not_scram").Inc()
		log.Warn("verifier mode: the role has no SCRAM-SHA-256 secret (an md5 hash or no password); the login will fail. " +
			"Set its password again with password_encryption = 'scram-sha-256'")
		return nil, nil
	}
	a.metrics.lookups.WithLabelValues("found").Inc()
	return secret, nil
}

// ReloadAuth is what a configuration reload does to logins: it empties the
// SCRAM key cache (and draws a new tag key), and re-reads
// upstream.auth_file. On error the previous secrets stay in use.
func (srv *Server) ReloadAuth() error {
	a := srv.auth
	a.keyCache.clear()
	if a.secrets != nil {
		if err := a.secrets.reload(); err != nil {
			return err
		}
	}
	return nil
}

// authMetrics count what logins cost the proxy.
type authMetrics struct {
	cache         *prometheus.CounterVec // result: hit | miss
	lookups       *prometheus.CounterVec // outcome: found | not_found | not_scram | error
	lookupSeconds prometheus.Histogram
	cacheHit      prometheus.Counter
	cacheMiss     prometheus.Counter
}

func newAuthMetrics(reg prometheus.Registerer) (*authMetrics, error) {
	m := &authMetrics{
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phiproxy_scram_key_cache_lookups_total",
			Help: "Auto-mode logins by whether the SCRAM keys derived from the password were cached (hit) or computed with PBKDF2 (miss).",
		}, []string{"result"}),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phiproxy_scram_secret_lookups_total",
			Help: "Verifier-mode lookups of a role's SCRAM secret, by outcome (found, not_found, not_scram, error).",
		}, []string{"outcome"}),
		lookupSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "phiproxy_scram_secret_lookup_seconds",
			Help:    "Time to look up a role's SCRAM secret (auth_query or auth_file), connecting included.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 8),
		}),
	}
	m.cacheHit, m.cacheMiss = m.cache.WithLabelValues("hit"), m.cache.WithLabelValues("miss")
	for _, o := range []string{"found", "not_found", "not_scram", "error"} {
		m.lookups.WithLabelValues(o)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.cache, m.lookups, m.lookupSeconds} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *authMetrics) cacheGet(hit bool) {
	if hit {
		m.cacheHit.Inc()
	} else {
		m.cacheMiss.Inc()
	}
}
