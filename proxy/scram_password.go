package proxy

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"golang.org/x/text/secure/precis"
)

// This file is the auto mode's half of SCRAM (see scram.go): the only code
// of the package that handles a cleartext password. The verifier mode
// reaches none of it (TestVerifierModeNeverSeesAPassword checks the call
// graph).

// scramWithPassword answers the server's AuthenticationSASL (msg) with a
// SCRAM exchange of the proxy's own, using the password it asks the client
// for. It returns after the server's SASLFinal has been verified; the
// server's AuthenticationOk then reaches the client through relayAuth.
func (s *Session) scramWithPassword(msg []byte) error {
	offered, err := saslMechanisms(msg)
	if err != nil {
		return err
	}
	sc, err := s.upstreamSCRAMClient(offered)
	if err != nil {
		return err
	}
	password, err := s.readCleartextPassword()
	if err != nil {
		return err
	}

	sf, err := s.upstreamSCRAMFirst(sc)
	if err != nil {
		return err
	}
	cache := s.srv.auth.keyCache.Load()
	id := scramCacheID{role: s.user, salt: string(sf.salt), iterations: sf.iterations}
	keys, cached := cache.get(id, password)
	if !cached {
		if keys, err = passwordKeys(password, sf.salt, sf.iterations); err != nil {
			return err
		}
	}
	defer keys.wipe()
	if err := s.upstreamSCRAMFinal(sc, sf, &keys); err != nil {
		if cached {
			// The server refused (or could not prove itself with) keys
			// the cache gave: they are stale, whatever the reason.
			cache.forget(id)
		}
		return err
	}
	// Only keys the server has just accepted are cached: an entry always
	// stands for a password that was right for this salt.
	if !cached {
		cache.put(id, password, &keys)
	}
	return nil
}

// readCleartextPassword asks the client for its password
// (AuthenticationCleartextPassword, inside the client's TLS) and returns it
// SASLprep-normalized. The message buffer is wiped.
func (s *Session) readCleartextPassword() (string, error) {
	var ask [9]byte
	ask[0] = 'R'
	binary.BigEndian.PutUint32(ask[1:5], 8)
	binary.BigEndian.PutUint32(ask[5:9], authCleartextPassword)
	if err := s.writeClient(ask[:]); err != nil {
		return "", err
	}
	if err := s.flushClient(); err != nil {
		return "", err
	}
	typ, pw, err := s.clientR.next()
	if err != nil {
		return "", clientReadError(err)
	}
	if typ != 'p' || len(pw) < 6 || pw[len(pw)-1] != 0 {
		return "", protocolErrorf("expected a password message")
	}
	password := normalizeSCRAMPassword(string(pw[5 : len(pw)-1]))
	clear(pw)
	return password, nil
}

// passwordKeys derives ClientKey and ServerKey from a password: PBKDF2
// (HMAC-SHA-256) with the server's salt and iteration count, the cost the
// key cache saves.
func passwordKeys(password string, salt []byte, iterations int) (scramKeys, error) {
	salted, err := pbkdf2.Key(sha256.New, password, salt, iterations, sha256.Size)
	if err != nil {
		return scramKeys{}, fmt.Errorf("scram: %w", err)
	}
	defer clear(salted)
	var k scramKeys
	m := hmac.New(sha256.New, salted)
	m.Write([]byte("Client Key"))
	m.Sum(k.ClientKey[:0])
	m.Reset()
	m.Write([]byte("Server Key"))
	m.Sum(k.ServerKey[:0])
	return k, nil
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
