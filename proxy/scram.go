package proxy

import (
	"bytes"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"
	"golang.org/x/text/secure/precis"
)

// Why the proxy sometimes runs SCRAM itself.
//
// A client that reaches the proxy over TLS sends the GS2 flag "y" when the
// server offers no SCRAM-SHA-256-PLUS (libpq and pgx both do, by default):
// "I support channel binding, I believe you do not". PostgreSQL, reached over
// TLS, does support it, so it must treat "y" as a downgrade attack and
// refuses the login (auth-scram.c, "SCRAM channel binding negotiation
// error"). Rewriting the flag is impossible: it is covered by the client's
// proof. So when both legs are TLS, the proxy asks the client for its
// password (AuthenticationCleartextPassword, inside the client's TLS) and
// runs SCRAM-SHA-256 with the server itself, with channel binding to the
// server's certificate when offered. Each user still logs in with their own
// role and password; the proxy holds the password only for the exchange
// and keeps no copy. (It could read PHI anyway: see the threat model.)
// Upstream.SCRAM = "relay" turns this off; clients must then use
// channel_binding=disable.

// terminateSCRAM reports whether the proxy runs SCRAM with the server itself.
func (s *Session) terminateSCRAM() bool {
	if s.srv.cfg.Upstream.SCRAM == SCRAMRelay {
		return false
	}
	_, upstreamTLS := s.server.(*tls.Conn)
	return s.tlsClient && upstreamTLS
}

// scramWithPassword answers the server's AuthenticationSASL (msg) with a
// SCRAM exchange of the proxy's own, using the password it asks the client
// for. It returns after the server's SASLFinal has been verified; the
// server's AuthenticationOk then reaches the client through relayAuth.
func (s *Session) scramWithPassword(msg []byte) error {
	var sasl pgproto3.AuthenticationSASL
	if err := sasl.Decode(msg[5:]); err != nil {
		return serverProtocolErrorf("invalid AuthenticationSASL")
	}
	var ask [9]byte
	ask[0] = 'R'
	binary.BigEndian.PutUint32(ask[1:5], 8)
	binary.BigEndian.PutUint32(ask[5:9], authCleartextPassword)
	if err := s.writeClient(ask[:]); err != nil {
		return err
	}
	if err := s.flushClient(); err != nil {
		return err
	}
	typ, pw, err := s.clientR.next()
	if err != nil {
		return clientReadError(err)
	}
	if typ != 'p' || len(pw) < 6 || pw[len(pw)-1] != 0 {
		return protocolErrorf("expected a password message")
	}
	password := normalizeSCRAMPassword(string(pw[5 : len(pw)-1]))
	clear(pw)

	sc := &scramClient{mechanism: "SCRAM-SHA-256", gs2: "y,,"}
	if slices.Contains(sasl.AuthMechanisms, scramPlus) {
		if h, err := certificateHash(s.server.(*tls.Conn)); err == nil {
			sc.mechanism, sc.gs2, sc.cbData = scramPlus, "p=tls-server-end-point,,", h
		}
	} else if !slices.Contains(sasl.AuthMechanisms, "SCRAM-SHA-256") {
		return &AuthError{Msg: "the server offers no SASL mechanism the proxy supports"}
	}

	first, err := sc.clientFirst()
	if err != nil {
		return err
	}
	if err := s.sendServer(&pgproto3.SASLInitialResponse{AuthMechanism: sc.mechanism, Data: first}); err != nil {
		return err
	}
	serverFirst, err := s.readSASL(authSASLContinue)
	if serverFirst == nil || err != nil {
		return err
	}
	final, err := sc.clientFinal(serverFirst, password)
	if err != nil {
		return err
	}
	if err := s.sendServer(&pgproto3.SASLResponse{Data: final}); err != nil {
		return err
	}
	serverFinal, err := s.readSASL(authSASLFinal)
	if serverFinal == nil || err != nil {
		return err
	}
	return sc.verifyServerFinal(serverFinal)
}

// sendServer encodes msg to the server and flushes.
func (s *Session) sendServer(msg pgproto3.FrontendMessage) error {
	buf, err := msg.Encode(nil)
	if err != nil {
		return fmt.Errorf("encode %T: %w", msg, err)
	}
	if _, err := s.serverW.Write(buf); err != nil {
		return &UpstreamError{Connected: true, Err: err}
	}
	if err := s.serverW.Flush(); err != nil {
		return &UpstreamError{Connected: true, Err: err}
	}
	return nil
}

// readSASL reads the server's next SASL message of the given code and
// returns its data (a copy). An ErrorResponse is relayed to the client
// and ends the login (errAuthFailed).
func (s *Session) readSASL(code uint32) ([]byte, error) {
	for {
		typ, msg, err := s.serverR.next()
		if err != nil {
			return nil, upstreamReadError(err)
		}
		switch typ {
		case 'N':
			if err := s.writeClient(msg); err != nil {
				return nil, err
			}
			continue
		case 'E':
			if err := s.writeClient(msg); err != nil {
				return nil, err
			}
			if err := s.flushClient(); err != nil {
				return nil, err
			}
			return nil, errAuthFailed
		case 'R':
			if len(msg) >= 9 && binary.BigEndian.Uint32(msg[5:9]) == code {
				return bytes.Clone(msg[9:]), nil
			}
		}
		return nil, serverProtocolErrorf("unexpected message %q during SCRAM", typ)
	}
}

// scramClient is the client side of SCRAM-SHA-256(-PLUS), RFC 5802/7677.
type scramClient struct {
	mechanism string
	gs2       string // GS2 header: "y,," or "p=tls-server-end-point,,"
	cbData    []byte // channel binding data for -PLUS
	user      string // SCRAM user name; empty: PostgreSQL uses the startup user

	clientNonce     string
	clientFirstBare string
	authMessage     []byte
	saltedPassword  []byte
}

func (c *scramClient) clientFirst() ([]byte, error) {
	if c.clientNonce == "" {
		var raw [18]byte
		if _, err := rand.Read(raw[:]); err != nil {
			return nil, fmt.Errorf("scram nonce: %w", err)
		}
		c.clientNonce = base64.RawStdEncoding.EncodeToString(raw[:])
	}
	// PostgreSQL takes the user from the startup message; the SCRAM user
	// name is left empty, as libpq does.
	c.clientFirstBare = "n=" + c.user + ",r=" + c.clientNonce
	return []byte(c.gs2 + c.clientFirstBare), nil
}

func (c *scramClient) clientFinal(serverFirst []byte, password string) ([]byte, error) {
	var nonce, salt string
	iterations := 0
	for _, attr := range strings.Split(string(serverFirst), ",") {
		k, v, _ := strings.Cut(attr, "=")
		switch k {
		case "r":
			nonce = v
		case "s":
			salt = v
		case "i":
			n, err := strconv.Atoi(v)
			if err != nil {
				return nil, serverProtocolErrorf("invalid SCRAM iteration count")
			}
			iterations = n
		}
	}
	if !strings.HasPrefix(nonce, c.clientNonce) || len(nonce) == len(c.clientNonce) {
		return nil, serverProtocolErrorf("invalid SCRAM server nonce")
	}
	saltBytes, err := base64.StdEncoding.DecodeString(salt)
	if err != nil || iterations < 1 || iterations > 1<<24 {
		return nil, serverProtocolErrorf("invalid SCRAM salt or iteration count")
	}
	c.saltedPassword, err = pbkdf2.Key(sha256.New, password, saltBytes, iterations, sha256.Size)
	if err != nil {
		return nil, fmt.Errorf("scram: %w", err)
	}
	cb := base64.StdEncoding.EncodeToString(append([]byte(c.gs2), c.cbData...))
	withoutProof := "c=" + cb + ",r=" + nonce
	c.authMessage = []byte(c.clientFirstBare + "," + string(serverFirst) + "," + withoutProof)

	clientKey := hmacSHA256(c.saltedPassword, []byte("Client Key"))
	storedKey := sha256.Sum256(clientKey)
	signature := hmacSHA256(storedKey[:], c.authMessage)
	proof := make([]byte, len(clientKey))
	subtle.XORBytes(proof, clientKey, signature)
	return []byte(withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof)), nil
}

func (c *scramClient) verifyServerFinal(serverFinal []byte) error {
	v, ok := bytes.CutPrefix(serverFinal, []byte("v="))
	if !ok {
		return serverProtocolErrorf("invalid SCRAM server-final-message")
	}
	got, err := base64.StdEncoding.DecodeString(string(v))
	if err != nil {
		return serverProtocolErrorf("invalid SCRAM server signature")
	}
	serverKey := hmacSHA256(c.saltedPassword, []byte("Server Key"))
	want := hmacSHA256(serverKey, c.authMessage)
	if !hmac.Equal(got, want) {
		return &AuthError{Msg: "the database server failed SCRAM verification"}
	}
	return nil
}

func hmacSHA256(key, data []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(data)
	return m.Sum(nil)
}

// normalizeSCRAMPassword applies SASLprep as PostgreSQL does: a password
// that does not survive it is used as is.
func normalizeSCRAMPassword(password string) string {
	normalized, err := precis.OpaqueString.String(password)
	if err != nil {
		return password
	}
	return normalized
}

// certificateHash is the tls-server-end-point channel binding data (RFC
// 5929 section 4.1): the server certificate hashed with its signature's
// hash, SHA-256 for MD5 and SHA-1.
func certificateHash(conn *tls.Conn) ([]byte, error) {
	state := conn.ConnectionState()
	if len(state.PeerCertificates) == 0 {
		return nil, fmt.Errorf("no server certificate")
	}
	cert := state.PeerCertificates[0]
	var h hash.Hash
	switch cert.SignatureAlgorithm {
	case x509.MD5WithRSA, x509.SHA1WithRSA, x509.ECDSAWithSHA1,
		x509.SHA256WithRSA, x509.SHA256WithRSAPSS, x509.ECDSAWithSHA256:
		h = sha256.New()
	case x509.SHA384WithRSA, x509.SHA384WithRSAPSS, x509.ECDSAWithSHA384:
		h = sha512.New384()
	case x509.SHA512WithRSA, x509.SHA512WithRSAPSS, x509.ECDSAWithSHA512:
		h = sha512.New()
	default:
		return nil, fmt.Errorf("no tls-server-end-point hash for %v", cert.SignatureAlgorithm)
	}
	h.Write(cert.Raw)
	return h.Sum(nil), nil
}
