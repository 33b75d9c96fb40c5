package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Startup packet codes (protocol docs, "Message Formats").
const (
	sslRequestCode    = 80877103
	gssEncRequestCode = 80877104
	cancelRequestCode = 80877102
	protocolMajor3    = 3
	// maxStartupPacket is PostgreSQL's MAX_STARTUP_PACKET_LENGTH.
	maxStartupPacket = 10000
	// maxAuthMessage bounds a client's authentication message, header
	// included: PostgreSQL's PG_MAX_AUTH_TOKEN_LENGTH (65535) plus ours.
	maxAuthMessage = 65535 + frameHeaderLen
)

// Authentication request codes of AuthenticationXXX ('R') messages.
const (
	authOK                = 0
	authCleartextPassword = 3
	authMD5Password       = 5
	authSASL              = 10
	authSASLContinue      = 11
	authSASLFinal         = 12
)

// startup negotiates TLS with the client, reads its startup message, opens
// the upstream connection and relays authentication up to the server's
// first ReadyForQuery, which it keeps in s.ready for prepare to send.
func (s *Session) startup(ctx context.Context) error {
	deadline := time.Now().Add(s.srv.cfg.Limits.HandshakeTimeout)
	s.raw.SetDeadline(deadline)

	var lg loginState
	startup, err := s.readStartup(ctx, &lg)
	if err != nil {
		return err
	}
	if lg.certLogin, err = s.clientCertLogin(); err != nil {
		return err
	}
	if err := s.connectUpstream(ctx, deadline, lg.certLogin); err != nil {
		return err
	}
	if _, err := s.server.Write(startup); err != nil {
		return &UpstreamError{Connected: true, Err: fmt.Errorf("send startup message: %w", err)}
	}
	return s.relayAuth(ctx, &lg)
}

// loginState is what the startup phase learns that authentication needs.
type loginState struct {
	// clientCB is the tls-server-end-point hash of the certificate the
	// client's handshake was served, what its SCRAM-SHA-256-PLUS binds
	// to (taken from the same configuration as the handshake, so a
	// reload in between cannot make them differ); nil: no binding.
	clientCB []byte
	// certLogin: the client's certificate maps to its role.
	certLogin bool
}

// readStartup handles SSLRequest, GSSENCRequest and CancelRequest and
// returns the client's StartupMessage, length included, to relay as is. It
// reads exactly each packet from the connection, never ahead, so no
// plaintext bytes sent before the TLS handshake can be mistaken for
// protected ones (CVE-2021-23214).
func (s *Session) readStartup(ctx context.Context, lg *loginState) ([]byte, error) {
	for {
		pkt, err := readStartupPacket(s.client)
		if err != nil {
			return nil, err
		}
		code := binary.BigEndian.Uint32(pkt[4:8])
		switch code {
		case sslRequestCode:
			if s.tlsClient {
				return nil, protocolErrorf("SSLRequest received twice")
			}
			if s.srv.clientTLS == nil {
				// No certificate configured: plaintext only.
				if _, err := s.client.Write([]byte{'N'}); err != nil {
					return nil, &clientIOError{err}
				}
				continue
			}
			if _, err := s.client.Write([]byte{'S'}); err != nil {
				return nil, &clientIOError{err}
			}
			// The configuration in force (reload.go), taken once so the
			// channel binding matches the certificate served.
			cfgs := s.srv.tls.Load()
			tc := tls.Server(s.raw, cfgs.client)
			lg.clientCB = cfgs.clientCB
			if err := tc.HandshakeContext(ctx); err != nil {
				s.srv.metrics.TLSHandshakeFailure.WithLabelValues("client").Inc()
				return nil, fmt.Errorf("%w: %w", errTLSHandshake, err)
			}
			s.client, s.tlsClient = tc, true
		case gssEncRequestCode:
			// GSSAPI encryption is not offered; the client may go on with
			// SSLRequest or a plaintext startup.
			if _, err := s.client.Write([]byte{'N'}); err != nil {
				return nil, &clientIOError{err}
			}
		case cancelRequestCode:
			return nil, s.forwardCancel(ctx, pkt)
		default:
			if code>>16 != protocolMajor3 {
				s.clientW = newFrameWriter(s.client)
				return nil, protocolErrorf("unsupported frontend protocol %d.%d", code>>16, code&0xffff)
			}
			s.clientW = newFrameWriter(s.client)
			if !s.tlsClient && !s.srv.cfg.Listen.TLS.AllowPlaintext {
				return nil, errTLSRequired
			}
			if err := s.parseStartup(pkt); err != nil {
				return nil, err
			}
			return pkt, nil
		}
	}
}

// readStartupPacket reads one length-prefixed startup packet (length
// included in the result).
func readStartupPacket(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			// A connection closed before sending anything (a health
			// probe, a port scan): not worth more than a client EOF.
			return nil, errClientTerminated
		}
		return nil, &clientIOError{err}
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n < 8 || n > maxStartupPacket {
		return nil, protocolErrorf("invalid length of startup packet")
	}
	pkt := make([]byte, n)
	copy(pkt, hdr[:])
	if _, err := io.ReadFull(r, pkt[4:]); err != nil {
		return nil, &clientIOError{unexpectedEOF(err)}
	}
	return pkt, nil
}

// parseStartup reads user and database (for logs) from a StartupMessage.
func (s *Session) parseStartup(pkt []byte) error {
	// pgproto3 knows protocol 3.0 and 3.2; other 3.x minors are relayed
	// as sent (the server answers NegotiateProtocolVersion), so decode a
	// copy labelled 3.0.
	body := bytes.Clone(pkt[4:])
	binary.BigEndian.PutUint32(body, pgproto3.ProtocolVersion30)
	var msg pgproto3.StartupMessage
	if err := msg.Decode(body); err != nil {
		return protocolErrorf("invalid startup message")
	}
	s.user = msg.Parameters["user"]
	if s.user == "" {
		return protocolErrorf("no PostgreSQL user name specified in startup packet")
	}
	s.database = msg.Parameters["database"]
	if s.database == "" {
		s.database = s.user
	}
	s.log = s.log.With("user", s.user, "database", s.database)
	return nil
}

// relayAuth relays the authentication exchange up to the server's first
// ReadyForQuery, which it keeps. The server's ErrorResponse (wrong password, no such
// database) reaches the client unchanged and ends the session.
func (s *Session) relayAuth(ctx context.Context, lg *loginState) error {
	verifierMode := s.srv.cfg.Upstream.SCRAM == SCRAMVerifier
	for {
		typ, msg, err := s.serverR.next()
		if err != nil {
			return upstreamReadError(err)
		}
		switch typ {
		case 'R':
			if len(msg) < 9 {
				return serverProtocolErrorf("short authentication message")
			}
			code := binary.BigEndian.Uint32(msg[5:9])
			switch code {
			case authOK, authSASLFinal:
				if err := s.writeClient(msg); err != nil {
					return err
				}
			case authCleartextPassword:
				if verifierMode {
					// pg_hba says "password" for this role: the client would
					// hand its password to the proxy, which this mode exists
					// to prevent.
					return &AuthError{Msg: "the server asks for a cleartext password, which upstream.scram: verifier never relays; use scram-sha-256 (or md5) in pg_hba.conf for this role"}
				}
				if err := s.writeClient(msg); err != nil {
					return err
				}
				if err := s.relayPassword(); err != nil {
					return err
				}
			case authMD5Password, authSASLContinue:
				if err := s.writeClient(msg); err != nil {
					return err
				}
				if err := s.relayPassword(); err != nil {
					return err
				}
			case authSASL:
				if verifierMode {
					if err := s.scramWithVerifier(ctx, msg, lg.clientCB); err != nil {
						return err
					}
					continue
				}
				if s.terminateSCRAM() {
					if err := s.scramWithPassword(msg); err != nil {
						return err
					}
					continue
				}
				stripped, err := stripSCRAMPlus(msg)
				if err != nil {
					return err
				}
				if err := s.writeClient(stripped); err != nil {
					return err
				}
				if err := s.relayPassword(); err != nil {
					return err
				}
			default:
				return &AuthError{Msg: fmt.Sprintf("authentication method %d (GSSAPI, SSPI or Kerberos) cannot be relayed", code)}
			}
		case 'E':
			if err := s.writeClient(msg); err != nil {
				return err
			}
			if err := s.flushClient(); err != nil {
				return err
			}
			return errAuthFailed
		case 'v', 'S', 'K', 'N':
			if typ == 'S' {
				s.noteParameterStatus(msg)
			}
			// NegotiateProtocolVersion, ParameterStatus, BackendKeyData,
			// NoticeResponse pass through. The client cancels with the
			// server's own key data, so CancelRequest forwarding needs no
			// mapping.
			if err := s.writeClient(msg); err != nil {
				return err
			}
		case 'Z':
			if len(msg) != 6 {
				return serverProtocolErrorf("invalid ReadyForQuery")
			}
			s.q.txStatus = msg[5]
			s.ready = append([]byte(nil), msg...)
			s.holding = true
			return nil
		default:
			return serverProtocolErrorf("unexpected message %q during authentication", typ)
		}
	}
}

// relayPassword forwards the client's answer to an authentication request
// (PasswordMessage, SASLInitialResponse, SASLResponse: all type 'p').
func (s *Session) relayPassword() error {
	if err := s.flushClient(); err != nil {
		return err
	}
	typ, msg, err := s.clientR.next()
	if err != nil {
		return clientReadError(err)
	}
	if typ != 'p' {
		return protocolErrorf("expected a password message, got type %q", typ)
	}
	_, err = s.serverW.Write(msg)
	clear(msg) // the password or proof; the bytes were copied into serverW
	if err != nil {
		return &UpstreamError{Connected: true, Err: err}
	}
	if err := s.serverW.Flush(); err != nil {
		return &UpstreamError{Connected: true, Err: err}
	}
	return nil
}

// stripSCRAMPlus removes SCRAM-SHA-256-PLUS from an AuthenticationSASL
// message: channel binding ties the exchange to the TLS connection it runs
// over, and the client's TLS connection ends at the proxy, so a client that
// chose it would fail.
func stripSCRAMPlus(msg []byte) ([]byte, error) {
	var sasl pgproto3.AuthenticationSASL
	if err := sasl.Decode(msg[5:]); err != nil {
		return nil, serverProtocolErrorf("invalid AuthenticationSASL")
	}
	mechs := sasl.AuthMechanisms[:0]
	for _, m := range sasl.AuthMechanisms {
		if m != scramPlus {
			mechs = append(mechs, m)
		}
	}
	if len(mechs) == 0 {
		return nil, &AuthError{Msg: "the server offers only SCRAM-SHA-256-PLUS, whose channel binding cannot pass through the proxy"}
	}
	sasl.AuthMechanisms = mechs
	out, err := sasl.Encode(nil)
	if err != nil {
		return nil, fmt.Errorf("encode AuthenticationSASL: %w", err)
	}
	return out, nil
}

// writeClient buffers msg for the client.
func (s *Session) writeClient(msg []byte) error {
	s.wmu.Lock()
	_, err := s.clientW.Write(msg)
	s.wmu.Unlock()
	if err != nil {
		return &clientIOError{err}
	}
	return nil
}

// upstreamReadError classifies an error of the server frame reader (whose
// flush callback writes to the client).
func upstreamReadError(err error) error {
	var (
		pe  *ProtocolError
		cio *clientIOError
	)
	if errors.As(err, &pe) || errors.As(err, &cio) {
		return err
	}
	return &UpstreamError{Connected: true, Err: err}
}

// clientReadError classifies an error of the client frame reader (whose
// flush callback writes to the server).
func clientReadError(err error) error {
	var (
		pe *ProtocolError
		ue *UpstreamError
	)
	if errors.As(err, &pe) || errors.As(err, &ue) {
		return err
	}
	if errors.Is(err, io.EOF) {
		return errClientTerminated
	}
	return &clientIOError{err}
}
