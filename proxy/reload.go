package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
)

// A running Server takes new certificates and a new interceptor without a
// restart: sessions that start afterwards use them, sessions in flight keep
// what they started with (their TLS connections are established, and
// their interceptor's state is their own).

// tlsConfigs are the TLS settings in force; Reload swaps them whole.
// newTLSConfigs (auth.go) builds them.
type tlsConfigs struct {
	client   *tls.Config // nil: plaintext only
	upstream *tls.Config // nil: mode disable
	// upstreamCert is upstream with the proxy's own client certificate
	// (upstream.tls.cert_file), nil without one: for certificate-mapped
	// sessions and the auth_user only.
	upstreamCert *tls.Config
	// clientCB is the tls-server-end-point hash of client's certificate,
	// what a client's SCRAM-SHA-256-PLUS binds to; nil: no binding.
	clientCB []byte
	// groups and certGroups: the key exchange group the server chose, for
	// upstream and upstreamCert (upstream_group.go).
	groups, certGroups groupMemo
}

// listenTLS returns the client-side TLS configuration that the Server
// hands to every handshake: a fixed shell whose GetConfigForClient reads
// the configuration in force, so a reload reaches new handshakes.
func (srv *Server) listenTLS(first *tls.Config) *tls.Config {
	if first == nil {
		return nil
	}
	return &tls.Config{
		MinVersion: first.MinVersion,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return srv.tls.Load().client, nil
		},
	}
}

// Reload re-reads the certificates, keys and CA bundles that cfg names for
// both legs and makes new sessions use them, and icpt (when not nil) for
// new sessions. Settings that cannot change while running (addresses,
// turning client TLS on or off, the upstream TLS mode) must equal the
// running ones. On any error nothing changes.
func (srv *Server) Reload(cfg Config, icpt Interceptor) error {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid proxy config: %w", err)
	}
	old := srv.cfg
	switch {
	case cfg.Listen.Address != old.Listen.Address, cfg.Metrics.Address != old.Metrics.Address,
		cfg.Upstream.Address != old.Upstream.Address:
		return errors.New("listen, metrics and upstream addresses take effect only at a restart")
	case (cfg.Listen.TLS.CertFile == "") != (old.Listen.TLS.CertFile == ""):
		return errors.New("turning client TLS on or off takes effect only at a restart")
	case (cfg.Upstream.TLS.Mode == TLSModeDisable) != (old.Upstream.TLS.Mode == TLSModeDisable):
		return errors.New("turning upstream TLS on or off takes effect only at a restart")
	}
	if err := authNeedsRestart(old, cfg); err != nil {
		return err
	}
	cfgs, err := newTLSConfigs(cfg)
	if err != nil {
		return err
	}
	commitAuth, err := srv.auth.prepareReload(cfg, cfgs)
	if err != nil {
		return err
	}
	srv.tls.Store(cfgs)
	commitAuth()
	if icpt != nil {
		srv.icpt.Store(&icpt)
	}
	return nil
}

// interceptor is the Interceptor for a new session, nil for none.
func (srv *Server) interceptor() Interceptor {
	if p := srv.icpt.Load(); p != nil {
		return *p
	}
	return nil
}
