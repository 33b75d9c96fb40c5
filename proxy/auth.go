package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// authState is what the server keeps for logins across sessions: the
// verifier mode's secret store, the auto mode's key cache and the client
// certificate map. Built by New; Reload replaces the cache (empty) and the
// map, and points the store at the new settings (prepareReload).
type authState struct {
	log *slog.Logger
	// keyCache: auto mode only; nil otherwise or when turned off.
	keyCache atomic.Pointer[scramKeyCache]
	// secrets: verifier mode only.
	secrets       secretStore
	lookupTimeout atomic.Int64 // time.Duration
	// certRoles: nil unless listen.tls.client_cert_roles.
	certRoles atomic.Pointer[certRoleMap]
	metrics   *authMetrics

	stopJanitor chan struct{}
	janitorWG   sync.WaitGroup
	closeOnce   sync.Once
}

// newTLSConfigs builds the TLS configurations cfg names: both legs, the
// upstream leg with the proxy's client certificate, and the channel-binding
// data of the listen certificate.
func newTLSConfigs(cfg Config) (*tlsConfigs, error) {
	client, err := clientTLSConfig(cfg.Listen.TLS)
	if err != nil {
		return nil, err
	}
	upstream, err := upstreamTLSConfig(cfg.Upstream.TLS, cfg.Upstream.Address)
	if err != nil {
		return nil, err
	}
	t := &tlsConfigs{client: client, upstream: upstream}
	if u := cfg.Upstream.TLS; u.CertFile != "" && upstream != nil {
		cert, err := tls.LoadX509KeyPair(u.CertFile, u.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load upstream client certificate: %w", err)
		}
		t.upstreamCert = upstream.Clone()
		t.upstreamCert.Certificates = []tls.Certificate{cert}
	}
	if client != nil {
		t.clientCB, _ = ownCertificateHash(client)
	}
	return t, nil
}

func newAuthState(cfg Config, log *slog.Logger, cfgs *tlsConfigs, reg prometheus.Registerer) (_ *authState, err error) {
	a := &authState{log: log, stopJanitor: make(chan struct{})}
	if a.metrics, err = newAuthMetrics(reg); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	u := cfg.Upstream
	switch u.SCRAM {
	case SCRAMAuto:
		// The janitor follows whichever cache is current.
		a.janitorWG.Add(1)
		go a.janitor(u.SCRAMCache.TTL)
	case SCRAMVerifier:
		if u.AuthFile != "" {
			a.secrets = &fileSecrets{}
		} else {
			a.secrets = &querySecrets{log: log, sem: make(chan struct{}, 1)}
		}
	}
	commit, err := a.prepareReload(cfg, cfgs)
	if err != nil {
		a.close()
		return nil, err
	}
	commit()
	return a, nil
}

// authNeedsRestart refuses a reload that changes how logins work in a way
// a running server cannot follow: the SCRAM mode, or where secrets come
// from.
func authNeedsRestart(old, cfg Config) error {
	if old.Upstream.SCRAM != cfg.Upstream.SCRAM {
		return errors.New("upstream.scram takes effect only at a restart")
	}
	if (old.Upstream.AuthFile == "") != (cfg.Upstream.AuthFile == "") {
		return errors.New("switching between auth_user and auth_file takes effect only at a restart")
	}
	return nil
}

// prepareReload reads what cfg's authentication settings name (the
// auth_user's password, auth_file, the certificate map) and returns the
// function that puts it in force. On error nothing changes. Putting it in
// force empties the key cache.
func (a *authState) prepareReload(cfg Config, cfgs *tlsConfigs) (commit func(), err error) {
	u := cfg.Upstream
	var roles *certRoleMap
	if len(cfg.Listen.TLS.ClientCertRoles) > 0 {
		if roles, err = parseCertRoles(cfg.Listen.TLS.ClientCertRoles); err != nil {
			return nil, fmt.Errorf("listen.tls.client_cert_roles: %w", err)
		}
	}
	var cache *scramKeyCache
	if u.SCRAM == SCRAMAuto {
		if cache = newSCRAMKeyCache(u.SCRAMCache.Size, u.SCRAMCache.TTL); cache != nil {
			cache.onGet = a.metrics.cacheGet
		}
	}
	commitSecrets := func() {}
	switch st := a.secrets.(type) {
	case *fileSecrets:
		m, err := readAuthFile(u.AuthFile)
		if err != nil {
			return nil, err
		}
		commitSecrets = func() { st.set(u.AuthFile, m) }
	case *querySecrets:
		// The auth_user's connection presents the proxy's client
		// certificate when there is one: it may log in with cert.
		tlsCfg := cfgs.upstream
		if cfgs.upstreamCert != nil {
			tlsCfg = cfgs.upstreamCert
		}
		pc, err := authConnConfig(u, tlsCfg)
		if err != nil {
			return nil, err
		}
		commitSecrets = func() { st.use(pc, u.AuthQuery) }
	}
	if u.SCRAM == SCRAMVerifier && cfgs.client != nil && cfgs.clientCB == nil {
		a.log.Warn("the listen certificate has no tls-server-end-point binding (an Ed25519 signature?): " +
			"SCRAM-SHA-256-PLUS is not offered, clients with channel_binding=require cannot log in")
	}
	return func() {
		a.certRoles.Store(roles)
		a.lookupTimeout.Store(int64(u.AuthQueryTimeout))
		commitSecrets()
		if old := a.keyCache.Swap(cache); old != nil {
			old.retire()
		}
	}, nil
}

// ownCertificateHash is the channel-binding data of the proxy's leaf
// certificate.
func ownCertificateHash(cfg *tls.Config) ([]byte, error) {
	if len(cfg.Certificates) == 0 || len(cfg.Certificates[0].Certificate) == 0 {
		return nil, errors.New("no certificate")
	}
	leaf := cfg.Certificates[0].Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cfg.Certificates[0].Certificate[0]); err != nil {
			return nil, err
		}
	}
	return certificateHash(leaf)
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
			a.keyCache.Load().sweep()
		}
	}
}

func (a *authState) close() {
	a.closeOnce.Do(func() {
		close(a.stopJanitor)
		a.janitorWG.Wait()
		a.keyCache.Load().retire()
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
	ctx, cancel := context.WithTimeout(ctx, time.Duration(a.lookupTimeout.Load()))
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

// ReloadAuth empties the SCRAM key cache (drawing a new tag key) and
// re-reads upstream.auth_file; Reload (SIGHUP) does this and more. On error
// the previous secrets stay in use.
func (srv *Server) ReloadAuth() error {
	a := srv.auth
	a.keyCache.Load().clear()
	if fs, ok := a.secrets.(*fileSecrets); ok {
		path := fs.currentPath()
		m, err := readAuthFile(path)
		if err != nil {
			return err
		}
		fs.set(path, m)
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
