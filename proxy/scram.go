package proxy

import (
	"bytes"
	"crypto/hmac"
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
	"log/slog"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"
)

// How SCRAM-SHA-256 logins cross the proxy (upstream.scram).
//
// A client that reaches the proxy over TLS sends the GS2 flag "y" when the
// server offers no SCRAM-SHA-256-PLUS (libpq and pgx both do, by default):
// "I support channel binding, I believe you do not". PostgreSQL, reached over
// TLS, does support it, so it must treat "y" as a downgrade attack and
// refuses the login (auth-scram.c, "SCRAM channel binding negotiation
// error"). Rewriting the flag is impossible: it is covered by the client's
// proof. Hence three modes:
//
//   - auto (default; scram_password.go): when both legs are TLS, the proxy
//     asks the client for its password (AuthenticationCleartextPassword,
//     inside the client's TLS) and runs SCRAM-SHA-256 with the server
//     itself, channel-bound to the server's certificate when offered. The
//     keys derived from a password are cached (scram_cache.go), so a
//     reconnecting client costs HMACs, not PBKDF2.
//   - verifier (scram_verifier.go, scram_server.go): the proxy reads the
//     role's SCRAM secret (StoredKey, ServerKey) from the server or a file,
//     is the SCRAM server for the client (SCRAM-SHA-256-PLUS bound to the
//     proxy's own certificate), recovers the ClientKey from the client's
//     proof and uses it as the SCRAM client towards the server. No password
//     ever reaches the proxy.
//   - relay: SCRAM is relayed untouched, -PLUS stripped; clients must use
//     channel_binding=disable when both legs are TLS.
//
// Both the auto and the verifier modes drive the server with scramClient,
// which holds keys (ClientKey, ServerKey), never a password.

// terminateSCRAM reports whether the proxy runs SCRAM with the server itself
// in auto mode.
func (s *Session) terminateSCRAM() bool {
	if s.srv.cfg.Upstream.SCRAM != SCRAMAuto {
		return false
	}
	_, upstreamTLS := s.server.(*tls.Conn)
	return s.tlsClient && upstreamTLS
}

// scramKeys are the two keys SCRAM derives from a salted password (RFC 5802
// section 3): ClientKey proves the client, ServerKey proves the server.
// Either is enough to impersonate its side to this server (with this salt),
// so they are treated as secrets: never logged, wiped after use.
type scramKeys struct {
	ClientKey [sha256.Size]byte
	ServerKey [sha256.Size]byte
}

func (k *scramKeys) String() string       { return "[REDACTED scram keys]" }
func (k *scramKeys) LogValue() slog.Value { return slog.StringValue("[REDACTED scram keys]") }

// wipe zeroes the keys.
func (k *scramKeys) wipe() { *k = scramKeys{} }

// upstreamSCRAMClient chooses the mechanism to use with the server among
// those it offers: SCRAM-SHA-256-PLUS bound to the server's certificate
// when offered over TLS, else SCRAM-SHA-256.
func (s *Session) upstreamSCRAMClient(offered []string) (*scramClient, error) {
	sc := &scramClient{mechanism: scramSHA256, gs2: "y,,"}
	if _, isTLS := s.server.(*tls.Conn); !isTLS {
		sc.gs2 = "n,,"
	}
	if slices.Contains(offered, scramPlus) {
		if tc, ok := s.server.(*tls.Conn); ok {
			if h, err := peerCertificateHash(tc); err == nil {
				sc.mechanism, sc.gs2, sc.cbData = scramPlus, "p=tls-server-end-point,,", h
				return sc, nil
			}
		}
	}
	if !slices.Contains(offered, scramSHA256) {
		return nil, &AuthError{Msg: "the server offers no SASL mechanism the proxy supports"}
	}
	return sc, nil
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

// sendClient encodes msg to the client (buffered; flushClient sends it).
func (s *Session) sendClient(msg pgproto3.BackendMessage) error {
	buf, err := msg.Encode(nil)
	if err != nil {
		return fmt.Errorf("encode %T: %w", msg, err)
	}
	return s.writeClient(buf)
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

// saslMechanisms reads the mechanisms the server offers in its
// AuthenticationSASL (msg).
func saslMechanisms(msg []byte) ([]string, error) {
	var sasl pgproto3.AuthenticationSASL
	if err := sasl.Decode(msg[5:]); err != nil {
		return nil, serverProtocolErrorf("invalid AuthenticationSASL")
	}
	return sasl.AuthMechanisms, nil
}

// upstreamSCRAMFirst opens the proxy's exchange with the server: it sends
// sc's client-first-message and reads the server-first-message, whose salt
// and iteration count the keys must be for. Both modes call it.
func (s *Session) upstreamSCRAMFirst(sc *scramClient) (serverFirst, error) {
	first, err := sc.clientFirst()
	if err != nil {
		return serverFirst{}, err
	}
	if err := s.sendServer(&pgproto3.SASLInitialResponse{AuthMechanism: sc.mechanism, Data: first}); err != nil {
		return serverFirst{}, err
	}
	raw, err := s.readSASL(authSASLContinue)
	if err != nil {
		return serverFirst{}, err
	}
	return sc.parseServerFirst(raw)
}

// upstreamSCRAMFinal ends the proxy's exchange with the server: it proves
// keys.ClientKey and checks the server's signature with keys.ServerKey.
// On nil the server has accepted the login; its AuthenticationOk follows
// through relayAuth. Both modes call it.
func (s *Session) upstreamSCRAMFinal(sc *scramClient, sf serverFirst, keys *scramKeys) error {
	final, err := sc.clientFinal(sf, keys)
	if err != nil {
		return err
	}
	if err := s.sendServer(&pgproto3.SASLResponse{Data: final}); err != nil {
		return err
	}
	serverFinal, err := s.readSASL(authSASLFinal)
	if err != nil {
		return err
	}
	return sc.verifyServerFinal(serverFinal)
}

// SASL mechanism names.
const (
	scramSHA256 = "SCRAM-SHA-256"
	scramPlus   = "SCRAM-SHA-256-PLUS"
)

// scramClient is the client side of SCRAM-SHA-256(-PLUS), RFC 5802/7677,
// as the proxy runs it with the server. It works from keys (ClientKey,
// ServerKey), never from a password: the auto mode derives them from the
// client's password (or finds them cached), the verifier mode recovers
// the ClientKey from the client's own proof.
type scramClient struct {
	mechanism string
	gs2       string // GS2 header: "n,,", "y,," or "p=tls-server-end-point,,"
	cbData    []byte // channel binding data for -PLUS
	user      string // SCRAM user name; empty: PostgreSQL uses the startup user

	clientNonce     string
	clientFirstBare string
	authMessage     []byte
	serverKey       [sha256.Size]byte // for verifyServerFinal
}

// serverFirst is a parsed server-first-message.
type serverFirst struct {
	raw        []byte
	nonce      string // client nonce + server nonce
	salt       []byte
	iterations int
}

func (c *scramClient) clientFirst() ([]byte, error) {
	if c.clientNonce == "" {
		nonce, err := scramNonce()
		if err != nil {
			return nil, err
		}
		c.clientNonce = nonce
	}
	// PostgreSQL takes the user from the startup message; the SCRAM user
	// name is left empty, as libpq does.
	c.clientFirstBare = "n=" + c.user + ",r=" + c.clientNonce
	return []byte(c.gs2 + c.clientFirstBare), nil
}

// parseServerFirst reads the server's salt and iteration count and checks
// its nonce extends ours.
func (c *scramClient) parseServerFirst(raw []byte) (serverFirst, error) {
	sf := serverFirst{raw: raw}
	var salt string
	for _, attr := range strings.Split(string(raw), ",") {
		k, v, _ := strings.Cut(attr, "=")
		switch k {
		case "r":
			sf.nonce = v
		case "s":
			salt = v
		case "i":
			n, err := strconv.Atoi(v)
			if err != nil {
				return sf, serverProtocolErrorf("invalid SCRAM iteration count")
			}
			sf.iterations = n
		}
	}
	if !strings.HasPrefix(sf.nonce, c.clientNonce) || len(sf.nonce) == len(c.clientNonce) {
		return sf, serverProtocolErrorf("invalid SCRAM server nonce")
	}
	var err error
	sf.salt, err = base64.StdEncoding.DecodeString(salt)
	if err != nil || len(sf.salt) == 0 || sf.iterations < 1 || sf.iterations > maxSCRAMIterations {
		return sf, serverProtocolErrorf("invalid SCRAM salt or iteration count")
	}
	return sf, nil
}

// maxSCRAMIterations bounds the iteration count a server may ask for (a
// hostile one could otherwise make the proxy spin). PostgreSQL's
// scram_iterations allows up to INT_MAX; 2^24 is 4,096 times its default.
const maxSCRAMIterations = 1 << 24

// clientFinal builds the client-final-message proving keys.ClientKey and
// keeps keys.ServerKey to check the server's signature.
func (c *scramClient) clientFinal(sf serverFirst, keys *scramKeys) ([]byte, error) {
	cb := base64.StdEncoding.EncodeToString(append([]byte(c.gs2), c.cbData...))
	withoutProof := "c=" + cb + ",r=" + sf.nonce
	c.authMessage = []byte(c.clientFirstBare + "," + string(sf.raw) + "," + withoutProof)
	c.serverKey = keys.ServerKey

	storedKey := sha256.Sum256(keys.ClientKey[:])
	proof := hmacSHA256(storedKey[:], c.authMessage)
	subtle.XORBytes(proof, proof, keys.ClientKey[:])
	return []byte(withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof)), nil
}

func (c *scramClient) verifyServerFinal(serverFinal []byte) error {
	defer clear(c.serverKey[:])
	v, ok := bytes.CutPrefix(serverFinal, []byte("v="))
	if !ok {
		return serverProtocolErrorf("invalid SCRAM server-final-message")
	}
	got, err := base64.StdEncoding.DecodeString(string(v))
	if err != nil {
		return serverProtocolErrorf("invalid SCRAM server signature")
	}
	want := hmacSHA256(c.serverKey[:], c.authMessage)
	if !hmac.Equal(got, want) {
		return &AuthError{Msg: "the database server failed SCRAM verification"}
	}
	return nil
}

// scramNonce is a fresh nonce: 18 random bytes in base64, as PostgreSQL
// makes them (SCRAM_RAW_NONCE_LEN).
func scramNonce() (string, error) {
	var raw [18]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("scram nonce: %w", err)
	}
	return base64.StdEncoding.EncodeToString(raw[:]), nil
}

func hmacSHA256(key, data []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(data)
	return m.Sum(nil)
}

// peerCertificateHash is the tls-server-end-point channel binding data of
// the server's certificate on conn.
func peerCertificateHash(conn *tls.Conn) ([]byte, error) {
	state := conn.ConnectionState()
	if len(state.PeerCertificates) == 0 {
		return nil, fmt.Errorf("no server certificate")
	}
	return certificateHash(state.PeerCertificates[0])
}

// certificateHash is the tls-server-end-point channel binding data (RFC
// 5929 section 4.1): the certificate hashed with its signature's hash
// function, SHA-256 for MD5 and SHA-1. Signature algorithms with no single
// hash (Ed25519) have no tls-server-end-point binding.
func certificateHash(cert *x509.Certificate) ([]byte, error) {
	var h hash.Hash
	switch cert.SignatureAlgorithm {
	case x509.MD5WithRSA, x509.SHA1WithRSA, x509.ECDSAWithSHA1, x509.DSAWithSHA1,
		x509.SHA256WithRSA, x509.SHA256WithRSAPSS, x509.ECDSAWithSHA256, x509.DSAWithSHA256:
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
