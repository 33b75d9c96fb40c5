package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgproto3"
)

// The verifier mode (upstream.scram: verifier).
//
// The proxy is the SCRAM server for the client and the SCRAM client for
// PostgreSQL, and bridges the two with the role's SCRAM secret, read from
// the server by a login of its own (auth_user, auth_query) or from a file:
//
//	client ──SCRAM-SHA-256-PLUS, bound to the proxy's certificate──▶ proxy
//	proxy  ──SCRAM-SHA-256(-PLUS), bound to the server's certificate──▶ PostgreSQL
//
// The secret holds StoredKey = H(ClientKey) and ServerKey. The client's
// proof is ClientKey XOR HMAC(StoredKey, AuthMessage), so the proxy checks
// it as PostgreSQL does (H(proof XOR HMAC(StoredKey, AuthMessage)) =
// StoredKey), which recovers ClientKey; with ClientKey it proves the same
// role to the server on its own exchange, and it checks the server's
// signature with ServerKey. Neither side ever sends a password, so none
// reaches the proxy: this file has no access to one (nothing here reads a
// PasswordMessage or derives keys from a password; TestVerifierModeNever-
// SeesAPassword walks the call graph to keep it so).
//
// Channel binding: with -PLUS the client's proof covers the hash of the
// certificate its TLS connection ended at, the proxy's (tls-server-end-
// point, RFC 5929). A man in the middle between client and proxy ends the
// client's TLS with another certificate, so the proof it could relay fails
// here, whether or not the client verified the certificate.
//
// What the proxy learns: the role's secret (as PgBouncer's auth_query does)
// and, from each successful login, its ClientKey, which lets whoever holds
// it log in to this server as that role until the password changes (it is
// what SCRAM's proof proves). Neither is the password: neither works
// against another service where the user reused it, nor for md5 or
// password logins. The ClientKey is wiped once the server has accepted it.
//
// Order of events (startup.go's relayAuth calls scramWithVerifier when the
// server asks for SASL):
//
//  1. look the role's secret up;
//  2. send the server our client-first-message and read its salt and
//     iteration count; for a role without a SCRAM secret the server makes
//     up a mock salt, so the client sees the salt it would see directly;
//  3. run the exchange with the client with that salt; a wrong proof, a
//     role the lookup did not find, or a secret whose salt is not the
//     server's (changed since it was read) fail here with 28P01, the error
//     PostgreSQL gives, after a complete exchange, as PostgreSQL's mock
//     authentication does;
//  4. prove ClientKey to the server, check its signature with ServerKey;
//  5. send the client its server-final-message; the server's
//     AuthenticationOk follows through relayAuth.

// scramWithVerifier runs the verifier mode's two exchanges; msg is the
// server's AuthenticationSASL, clientCB the channel-binding data of the
// client's TLS connection (nil: SCRAM-SHA-256-PLUS is not offered).
func (s *Session) scramWithVerifier(ctx context.Context, msg []byte, clientCB []byte) error {
	var sasl pgproto3.AuthenticationSASL
	if err := sasl.Decode(msg[5:]); err != nil {
		return serverProtocolErrorf("invalid AuthenticationSASL")
	}
	secret, err := s.srv.auth.lookupSecret(ctx, roleName(s.user), s.log)
	if err != nil {
		return err
	}

	sc, err := s.upstreamSCRAMClient(sasl.AuthMechanisms)
	if err != nil {
		return err
	}
	first, err := sc.clientFirst()
	if err != nil {
		return err
	}
	if err := s.sendServer(&pgproto3.SASLInitialResponse{AuthMechanism: sc.mechanism, Data: first}); err != nil {
		return err
	}
	raw, err := s.readSASL(authSASLContinue)
	if err != nil {
		return err
	}
	sf, err := sc.parseServerFirst(raw)
	if err != nil {
		return err
	}
	if secret != nil && (!bytes.Equal(secret.salt, sf.salt) || secret.iterations != sf.iterations) {
		s.log.Warn("verifier mode: the role's SCRAM secret does not match the server's (the password changed since it was read?); login refused")
		secret = nil
	}

	sv, err := newSCRAMServer(secret, sf.salt, sf.iterations, clientCB)
	if err != nil {
		return err
	}
	clientKey, serverFinal, err := s.scramServerExchange(sv)
	if err != nil {
		return err
	}
	if secret == nil { // a doomed exchange never succeeds; belt and braces
		return passwordFailed(roleName(s.user))
	}
	keys := scramKeys{ClientKey: clientKey, ServerKey: secret.serverKey}
	clear(clientKey[:])
	defer keys.wipe()

	final, err := sc.clientFinal(sf, &keys)
	if err != nil {
		return err
	}
	if err := s.sendServer(&pgproto3.SASLResponse{Data: final}); err != nil {
		return err
	}
	upstreamFinal, err := s.readSASL(authSASLFinal)
	if err != nil {
		return err
	}
	if err := sc.verifyServerFinal(upstreamFinal); err != nil {
		return err
	}
	return s.sendClient(&pgproto3.AuthenticationSASLFinal{Data: serverFinal})
}

// scramServerExchange runs sv with the client up to its verified proof.
func (s *Session) scramServerExchange(sv *scramServer) (clientKey [sha256.Size]byte, serverFinal []byte, err error) {
	if err := s.sendClient(&pgproto3.AuthenticationSASL{AuthMechanisms: sv.mechanisms()}); err != nil {
		return clientKey, nil, err
	}
	body, err := s.readSASLMessage()
	if err != nil {
		return clientKey, nil, err
	}
	var initial pgproto3.SASLInitialResponse
	if err := initial.Decode(body); err != nil {
		return clientKey, nil, protocolErrorf("invalid SASLInitialResponse")
	}
	serverFirst, err := sv.clientFirst(initial.AuthMechanism, initial.Data)
	if err != nil {
		return clientKey, nil, err
	}
	if err := s.sendClient(&pgproto3.AuthenticationSASLContinue{Data: serverFirst}); err != nil {
		return clientKey, nil, err
	}
	body, err = s.readSASLMessage()
	if err != nil {
		return clientKey, nil, err
	}
	clientKey, serverFinal, err = sv.clientFinal(body)
	if errors.Is(err, errSCRAMProof) {
		return clientKey, nil, passwordFailed(roleName(s.user))
	}
	return clientKey, serverFinal, err
}

// readSASLMessage flushes what the client is waiting for and reads its
// next SASL message ('p'), returning the body (a copy).
func (s *Session) readSASLMessage() ([]byte, error) {
	if err := s.flushClient(); err != nil {
		return nil, err
	}
	typ, msg, err := s.clientR.next()
	if err != nil {
		return nil, clientReadError(err)
	}
	switch typ {
	case 'p':
		return bytes.Clone(msg[5:]), nil
	case 'X':
		// The client gave up (libpq does when it will not use the
		// mechanisms offered, e.g. channel_binding=require over plaintext).
		return nil, errClientTerminated
	}
	return nil, protocolErrorf("expected SASL response (got message type %q)", typ)
}

// passwordFailed is PostgreSQL's answer to a wrong password (auth.c,
// auth_failed).
func passwordFailed(user string) error {
	return &LoginError{Code: pgerrcode.InvalidPassword, Message: fmt.Sprintf("password authentication failed for user %q", user)}
}

// roleName is the role PostgreSQL looks up for a startup user name: the
// name cut to NAMEDATALEN-1 (63) bytes, bytes not characters, as
// ProcessStartupPacket cuts it.
func roleName(user string) string {
	const maxLen = 63
	if len(user) > maxLen {
		return user[:maxLen]
	}
	return user
}

// scramSecret is a role's SCRAM-SHA-256 secret, as PostgreSQL stores it in
// pg_authid.rolpassword:
//
//	SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>
//
// (salt and keys in base64). It lets its holder check a client's proof and
// prove the server to a client, not log in as the role.
type scramSecret struct {
	iterations int
	salt       []byte
	storedKey  [sha256.Size]byte
	serverKey  [sha256.Size]byte
}

func (*scramSecret) String() string       { return "[REDACTED scram secret]" }
func (*scramSecret) GoString() string     { return "[REDACTED scram secret]" }
func (*scramSecret) LogValue() slog.Value { return slog.StringValue("[REDACTED scram secret]") }

// errNotSCRAM: a rolpassword that is not a SCRAM-SHA-256 secret (an md5
// hash, or garbage).
var errNotSCRAM = errors.New("not a SCRAM-SHA-256 secret")

// parseSCRAMSecret parses a rolpassword value.
func parseSCRAMSecret(s string) (*scramSecret, error) {
	rest, ok := strings.CutPrefix(s, "SCRAM-SHA-256$")
	if !ok {
		return nil, errNotSCRAM
	}
	iterSalt, keys, ok := strings.Cut(rest, "$")
	if !ok {
		return nil, errNotSCRAM
	}
	iter, salt, ok1 := strings.Cut(iterSalt, ":")
	stored, server, ok2 := strings.Cut(keys, ":")
	if !ok1 || !ok2 {
		return nil, errNotSCRAM
	}
	v := &scramSecret{}
	var err error
	if v.iterations, err = strconv.Atoi(iter); err != nil || v.iterations < 1 || v.iterations > maxSCRAMIterations {
		return nil, errNotSCRAM
	}
	if v.salt, err = base64.StdEncoding.DecodeString(salt); err != nil || len(v.salt) == 0 {
		return nil, errNotSCRAM
	}
	for _, k := range []struct {
		b64 string
		dst *[sha256.Size]byte
	}{{stored, &v.storedKey}, {server, &v.serverKey}} {
		b, err := base64.StdEncoding.DecodeString(k.b64)
		if err != nil || len(b) != sha256.Size {
			return nil, errNotSCRAM
		}
		copy(k.dst[:], b)
	}
	return v, nil
}

// scramServer is the server side of SCRAM-SHA-256(-PLUS) as PostgreSQL runs
// it (auth-scram.c), with the same checks and error messages. It is used
// once, for one client.
type scramServer struct {
	secret *scramSecret
	// doomed: the exchange goes through the motions and fails at the
	// proof (no such role, no SCRAM secret), as PostgreSQL's mock
	// authentication does.
	doomed bool
	// cbData is the hash of the proxy's certificate; nil: -PLUS is not
	// offered (a plaintext client, or a certificate with no binding).
	cbData []byte

	cbindFlag       byte // 'n', 'y' or 'p'
	clientNonce     string
	serverNonce     string
	clientFirstBare string
	serverFirst     string
}

// errSCRAMProof: the client's proof is wrong (or the exchange was doomed).
var errSCRAMProof = errors.New("scram: invalid proof")

// newSCRAMServer prepares an exchange with secret, or with a mock one
// (doomed) when secret is nil. salt and iterations are what the client is
// told: the server's, which are the secret's when it is current.
func newSCRAMServer(secret *scramSecret, salt []byte, iterations int, cbData []byte) (*scramServer, error) {
	sv := &scramServer{secret: secret, cbData: cbData}
	if secret == nil {
		// A mock secret: random keys no proof matches. Its salt is the
		// server's own (mock) salt, so the client sees what it would
		// see without the proxy.
		mock := &scramSecret{iterations: iterations, salt: salt}
		if _, err := rand.Read(mock.storedKey[:]); err != nil {
			return nil, fmt.Errorf("scram mock secret: %w", err)
		}
		sv.secret, sv.doomed = mock, true
	}
	return sv, nil
}

// mechanisms are the SASL mechanisms offered to the client, in
// PostgreSQL's order.
func (sv *scramServer) mechanisms() []string {
	if sv.cbData != nil {
		return []string{scramPlus, scramSHA256}
	}
	return []string{scramSHA256}
}

// malformed is PostgreSQL's "malformed SCRAM message" (08P01).
func malformed(detail string) error {
	return &LoginError{Code: pgerrcode.ProtocolViolation, Message: "malformed SCRAM message", Detail: detail}
}

// clientFirst reads the client-first-message and returns the
// server-first-message (read_client_first_message and
// build_server_first_message in auth-scram.c).
func (sv *scramServer) clientFirst(mechanism string, data []byte) ([]byte, error) {
	plus := false
	switch {
	case mechanism == scramPlus && sv.cbData != nil:
		plus = true
	case mechanism == scramSHA256:
	default:
		return nil, &LoginError{Code: pgerrcode.ProtocolViolation, Message: "client selected an invalid SASL authentication mechanism"}
	}
	if len(data) == 0 {
		return nil, &LoginError{Code: pgerrcode.ProtocolViolation, Message: "malformed SCRAM message", Detail: "The message is empty."}
	}
	if bytes.IndexByte(data, 0) >= 0 {
		return nil, &LoginError{Code: pgerrcode.ProtocolViolation, Message: "malformed SCRAM message", Detail: "Message length does not match input length."}
	}
	p := string(data)
	sv.cbindFlag = p[0]
	switch p[0] {
	case 'n', 'y':
		if plus {
			return nil, malformed("The client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not include channel binding data.")
		}
		if p[0] == 'y' && sv.cbData != nil {
			// We offered -PLUS and the client believes we did not:
			// someone removed it on the way (a downgrade).
			return nil, &LoginError{Code: pgerrcode.InvalidAuthorizationSpecification,
				Message: "SCRAM channel binding negotiation error",
				Detail:  "The client supports SCRAM channel binding but thinks the server does not.  However, this server does support channel binding."}
		}
		if len(p) < 2 || p[1] != ',' {
			return nil, malformed("Comma expected.")
		}
		p = p[2:]
	case 'p':
		if !plus {
			return nil, malformed("The client selected SCRAM-SHA-256 without channel binding, but the SCRAM message includes channel binding data.")
		}
		cbType, rest, err := readSCRAMAttr(p, 'p')
		if err != nil {
			return nil, err
		}
		if cbType != "tls-server-end-point" {
			return nil, &LoginError{Code: pgerrcode.ProtocolViolation, Message: "unsupported SCRAM channel-binding type"}
		}
		p = rest
	default:
		return nil, malformed("Unexpected channel-binding flag.")
	}
	if strings.HasPrefix(p, "a") {
		return nil, &LoginError{Code: pgerrcode.FeatureNotSupported, Message: "client uses authorization identity, but it is not supported"}
	}
	if !strings.HasPrefix(p, ",") {
		return nil, malformed("Unexpected attribute in client-first-message.")
	}
	p = p[1:]
	sv.clientFirstBare = p
	if strings.HasPrefix(p, "m") {
		return nil, &LoginError{Code: pgerrcode.FeatureNotSupported, Message: "client requires an unsupported SCRAM extension"}
	}
	// The user name is ignored: PostgreSQL uses the startup user.
	_, p, err := readSCRAMAttr(p, 'n')
	if err != nil {
		return nil, err
	}
	if sv.clientNonce, p, err = readSCRAMAttr(p, 'r'); err != nil {
		return nil, err
	}
	if !scramPrintable(sv.clientNonce) {
		return nil, &LoginError{Code: pgerrcode.ProtocolViolation, Message: "non-printable characters in SCRAM nonce"}
	}
	for p != "" { // optional extensions, ignored
		if _, _, p, err = readSCRAMAttrAny(p); err != nil {
			return nil, err
		}
	}
	if sv.serverNonce, err = scramNonce(); err != nil {
		return nil, err
	}
	sv.serverFirst = "r=" + sv.clientNonce + sv.serverNonce + ",s=" +
		base64.StdEncoding.EncodeToString(sv.secret.salt) + ",i=" + strconv.Itoa(sv.secret.iterations)
	return []byte(sv.serverFirst), nil
}

// clientFinal reads the client-final-message, checks channel binding,
// nonce and proof, and returns the client's ClientKey and the
// server-final-message. A wrong proof is errSCRAMProof.
func (sv *scramServer) clientFinal(data []byte) (clientKey [sha256.Size]byte, serverFinal []byte, err error) {
	if len(data) == 0 || bytes.IndexByte(data, 0) >= 0 {
		return clientKey, nil, malformed("Message length does not match input length.")
	}
	input := string(data)
	cbind, p, err := readSCRAMAttr(input, 'c')
	if err != nil {
		return clientKey, nil, err
	}
	if sv.cbindFlag == 'p' {
		want := base64.StdEncoding.EncodeToString(append([]byte("p=tls-server-end-point,,"), sv.cbData...))
		if subtle.ConstantTimeCompare([]byte(cbind), []byte(want)) != 1 {
			return clientKey, nil, &LoginError{Code: pgerrcode.InvalidAuthorizationSpecification, Message: "SCRAM channel binding check failed"}
		}
	} else if !(cbind == "biws" && sv.cbindFlag == 'n') && !(cbind == "eSws" && sv.cbindFlag == 'y') {
		return clientKey, nil, &LoginError{Code: pgerrcode.ProtocolViolation, Message: "unexpected SCRAM channel-binding attribute in client-final-message"}
	}
	nonce, p, err := readSCRAMAttr(p, 'r')
	if err != nil {
		return clientKey, nil, err
	}
	// Extensions up to the proof, which is last.
	var proofB64 string
	for {
		start := len(input) - len(p)
		var attr byte
		var v string
		if attr, v, p, err = readSCRAMAttrAny(p); err != nil {
			return clientKey, nil, err
		}
		if attr == 'p' {
			proofB64 = v
			input = input[:start-1] // client-final-message-without-proof
			break
		}
	}
	if p != "" {
		return clientKey, nil, malformed("Garbage found at the end of client-final-message.")
	}
	proof, err := base64.StdEncoding.DecodeString(proofB64)
	if err != nil || len(proof) != sha256.Size {
		return clientKey, nil, malformed("Malformed proof in client-final-message.")
	}
	if nonce != sv.clientNonce+sv.serverNonce {
		return clientKey, nil, &LoginError{Code: pgerrcode.ProtocolViolation, Message: "invalid SCRAM response", Detail: "Nonce does not match."}
	}

	authMessage := []byte(sv.clientFirstBare + "," + sv.serverFirst + "," + input)
	signature := hmacSHA256(sv.secret.storedKey[:], authMessage)
	subtle.XORBytes(clientKey[:], proof, signature)
	stored := sha256.Sum256(clientKey[:])
	// As PostgreSQL: compute the proof even when doomed, so timing does
	// not tell whether the role exists.
	if subtle.ConstantTimeCompare(stored[:], sv.secret.storedKey[:]) != 1 || sv.doomed {
		clear(clientKey[:])
		return clientKey, nil, errSCRAMProof
	}
	serverSignature := hmacSHA256(sv.secret.serverKey[:], authMessage)
	return clientKey, []byte("v=" + base64.StdEncoding.EncodeToString(serverSignature)), nil
}

// readSCRAMAttr reads attr=value from the start of p (up to a comma) and
// returns the value and what follows the comma.
func readSCRAMAttr(p string, attr byte) (value, rest string, err error) {
	if p == "" || p[0] != attr {
		return "", "", malformed(fmt.Sprintf("Expected attribute %q.", attr))
	}
	if len(p) < 2 || p[1] != '=' {
		return "", "", malformed(fmt.Sprintf("Expected character \"=\" for attribute %q.", attr))
	}
	value, rest, _ = strings.Cut(p[2:], ",")
	return value, rest, nil
}

// readSCRAMAttrAny reads whichever attribute starts p.
func readSCRAMAttrAny(p string) (attr byte, value, rest string, err error) {
	if p == "" {
		return 0, "", "", malformed("Attribute expected, but found end of string.")
	}
	a := p[0]
	if !('a' <= a && a <= 'z' || 'A' <= a && a <= 'Z') {
		return 0, "", "", malformed("Attribute expected, but found invalid character.")
	}
	value, rest, err = readSCRAMAttr(p, a)
	return a, value, rest, err
}

// scramPrintable: RFC 5802's printable, %x21-2B / %x2D-7E.
func scramPrintable(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7E || c == ',' {
			return false
		}
	}
	return true
}
