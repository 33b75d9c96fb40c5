package proxy

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// errUpstreamRefusedTLS: the server answered SSLRequest with 'N'. The proxy
// never falls back to plaintext.
var errUpstreamRefusedTLS = errors.New("the server does not accept TLS (answered SSLRequest with N)")

// dialUpstream opens a connection to the upstream, TLS negotiated per the
// configured mode, ready for a startup packet (or a CancelRequest), and
// records it in the metrics and readiness. With presentCert the proxy's own
// client certificate is offered (certificate-mapped sessions only; see
// clientcert.go).
func (srv *Server) dialUpstream(ctx context.Context, presentCert bool) (net.Conn, error) {
	start := time.Now()
	cfgs := srv.tls.Load()
	tlsCfg, groups := cfgs.upstream, &cfgs.groups
	if presentCert {
		if tlsCfg, groups = cfgs.upstreamCert, &cfgs.certGroups; tlsCfg == nil {
			// Validate requires upstream.tls.cert_file (and TLS) with
			// client_cert_roles; never fall back to another login.
			return nil, &AuthError{Msg: "no upstream client certificate configured"}
		}
	}
	conn, err := dialUpstream(ctx, srv.cfg.Upstream, tlsCfg, groups, srv.health.reachable)
	if err != nil {
		var ue *UpstreamError
		if errors.As(err, &ue) && ue.tls {
			srv.metrics.TLSHandshakeFailure.WithLabelValues("upstream").Inc()
		}
		return nil, err
	}
	srv.metrics.UpstreamConnect.Observe(time.Since(start).Seconds())
	return conn, nil
}

// CheckUpstream opens a connection to cfg's upstream as a session would
// (TCP, SSLRequest, TLS handshake and verification) and closes it. An
// *UpstreamError says whether the upstream was unreachable.
func CheckUpstream(ctx context.Context, cfg Config) error {
	cfg.SetDefaults()
	tlsCfg, err := upstreamTLSConfig(cfg.Upstream.TLS, cfg.Upstream.Address)
	if err != nil {
		return err
	}
	conn, err := dialUpstream(ctx, cfg.Upstream, tlsCfg, nil, func() {})
	if err != nil {
		return err
	}
	return conn.Close()
}

func dialUpstream(ctx context.Context, cfg UpstreamConfig, tlsCfg *tls.Config, groups *groupMemo, reachable func()) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	offer, narrow := tlsCfg, false
	if groups != nil && tlsCfg != nil {
		offer, narrow = groups.config(tlsCfg, time.Now())
	}
	conn, err := dialTLS(ctx, cfg.Address, offer, reachable)
	var ue *UpstreamError
	if narrow && errors.As(err, &ue) && ue.handshake {
		// The server no longer takes the group it chose: offer all.
		groups.forget()
		offer, narrow = tlsCfg, false
		conn, err = dialTLS(ctx, cfg.Address, offer, reachable)
	}
	if err != nil {
		return nil, err
	}
	if tc, ok := conn.(*tls.Conn); ok && groups != nil && !narrow {
		groups.learn(tlsCfg, tc.ConnectionState(), time.Now())
	}
	return conn, nil
}

// dialTLS connects to address and, unless tlsCfg is nil, sends SSLRequest
// and makes the TLS handshake with tlsCfg.
func dialTLS(ctx context.Context, address string, tlsCfg *tls.Config, reachable func()) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", address)
	if err != nil {
		return nil, &UpstreamError{Err: err, unreachable: true}
	}
	conn = withRawIO(conn)
	reachable()
	if tlsCfg == nil {
		return conn, nil
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	var req [8]byte
	binary.BigEndian.PutUint32(req[0:4], 8)
	binary.BigEndian.PutUint32(req[4:8], sslRequestCode)
	if _, err := conn.Write(req[:]); err != nil {
		conn.Close()
		return nil, &UpstreamError{Err: fmt.Errorf("send SSLRequest: %w", err)}
	}
	var answer [1]byte
	if _, err := io.ReadFull(conn, answer[:]); err != nil {
		conn.Close()
		return nil, &UpstreamError{Err: fmt.Errorf("read SSLRequest answer: %w", err)}
	}
	if answer[0] != 'S' {
		conn.Close()
		return nil, &UpstreamError{Err: errUpstreamRefusedTLS, tls: true}
	}
	tc := tls.Client(conn, tlsCfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, &UpstreamError{Err: fmt.Errorf("tls handshake: %w", err), tls: true, handshake: ctx.Err() == nil}
	}
	return tc, nil
}

// connectUpstream opens the session's upstream connection and its buffers;
// certLogin: the client's certificate maps to its role, and the proxy's own
// certificate is presented.
func (s *Session) connectUpstream(ctx context.Context, deadline time.Time, certLogin bool) error {
	conn, err := s.srv.dialUpstream(ctx, certLogin)
	if err != nil {
		return err
	}
	conn.SetDeadline(deadline)
	s.connMu.Lock()
	s.server = conn
	s.connMu.Unlock()
	if k := s.killErr.Load(); k != nil {
		return *k
	}
	lim := s.srv.cfg.Limits
	s.serverW = newFrameWriter(conn)
	s.serverR = newFrameReader(conn, lim.MaxServerMessageBytes, true, s.flushClient)
	// Until the relay starts only authentication messages come: bounded as
	// PostgreSQL bounds them (PG_MAX_AUTH_TOKEN_LENGTH), not by the
	// post-login limit, so unauthenticated clients cannot pin memory.
	s.clientR = newFrameReader(s.client, maxAuthMessage, false, s.flushServer)
	return nil
}

// forwardCancel relays a CancelRequest on a fresh upstream connection. The
// client holds the server's own BackendKeyData (relayed unchanged), so the
// packet goes upstream as sent; PostgreSQL accepts it after SSLRequest too.
// Neither side answers a CancelRequest.
func (s *Session) forwardCancel(ctx context.Context, pkt []byte) error {
	conn, err := s.srv.dialUpstream(ctx, false)
	if err != nil {
		s.log.Warn("forward cancel request", "error", err)
		return errCancelRequest
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(s.srv.cfg.Upstream.ConnectTimeout))
	if _, err := conn.Write(pkt); err != nil {
		s.log.Warn("forward cancel request", "error", err)
		return errCancelRequest
	}
	// Wait for the server to close, so the cancel has been read before the
	// client learns its connection is gone (libpq does the same).
	var b [1]byte
	conn.Read(b[:])
	return errCancelRequest
}
