package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"

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
// reaches the proxy: the mode's code (this file, the SCRAM server in
// scram_server.go, the secret in scram_secret.go) has no access to one
// (nothing in it reads a PasswordMessage or derives keys from a password;
// TestVerifierModeNeverSeesAPassword walks the call graph to keep it so).
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
	offered, err := saslMechanisms(msg)
	if err != nil {
		return err
	}
	secret, err := s.srv.auth.lookupSecret(ctx, roleName(s.user), s.log)
	if err != nil {
		return err
	}

	sc, err := s.upstreamSCRAMClient(offered)
	if err != nil {
		return err
	}
	sf, err := s.upstreamSCRAMFirst(sc)
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

	if err := s.upstreamSCRAMFinal(sc, sf, &keys); err != nil {
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
