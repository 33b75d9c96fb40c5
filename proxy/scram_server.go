package proxy

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgerrcode"
)

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
