package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
)

// clientTLSConfig builds the TLS server side that clients connect to, or nil
// when no certificate is configured (plaintext only, allowed by Validate
// only with allow_plaintext).
func clientTLSConfig(c ListenTLSConfig) (*tls.Config, error) {
	if c.CertFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("load listen certificate: %w", err)
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS13,
		// PostgreSQL 17 clients negotiating TLS directly (sslnegotiation=
		// direct) require this ALPN; others send none, which is accepted.
		NextProtos: []string{"postgresql"},
		// No session tickets, as PostgreSQL (SSL_OP_NO_TICKET): its
		// clients never resume, so each ticket was a record encrypted and
		// written for nothing on every connection; and every connection
		// proves its client certificate anew.
		SessionTicketsDisabled: true,
	}
	if c.MinVersion == "1.2" {
		cfg.MinVersion = tls.VersionTLS12
	}
	if c.ClientCAFile != "" {
		pool, err := loadCertPool(c.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("listen.tls.client_ca_file: %w", err)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// upstreamTLSConfig builds the TLS client towards PostgreSQL, or nil for
// mode disable. The modes mean what they mean in libpq, except that there is
// no fallback: a server that answers SSLRequest with 'N' is refused.
func upstreamTLSConfig(c UpstreamTLSConfig, address string) (*tls.Config, error) {
	if c.Mode == TLSModeDisable {
		return nil, nil
	}
	serverName := c.ServerName
	if serverName == "" {
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			return nil, fmt.Errorf("upstream.address: %w", err)
		}
		serverName = host
	}
	var roots *x509.CertPool
	if c.CAFile != "" {
		pool, err := loadCertPool(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("upstream.tls.ca_file: %w", err)
		}
		roots = pool
	}
	cfg := &tls.Config{
		ServerName: serverName,
		RootCAs:    roots,
		MinVersion: tls.VersionTLS12, // PostgreSQL's own default minimum
	}
	switch c.Mode {
	case TLSModeVerifyFull:
		// The standard verification: chain and host name.
	case TLSModeVerifyCA:
		// Chain only: skip the built-in check (which includes the host
		// name) and verify the chain ourselves.
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			return verifyChain(cs, roots)
		}
	case TLSModeRequire:
		// Encryption without authentication, as libpq's sslmode=require.
		cfg.InsecureSkipVerify = true
	default:
		return nil, fmt.Errorf("upstream.tls.mode %q unknown", c.Mode)
	}
	return cfg, nil
}

func verifyChain(cs tls.ConnectionState, roots *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("upstream presented no certificate")
	}
	opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool()}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
		return fmt.Errorf("verify upstream certificate chain: %w", err)
	}
	return nil
}

func loadCertPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no PEM certificates in %s", path)
	}
	return pool, nil
}
