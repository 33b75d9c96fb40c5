package crypto

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
)

// Envelope format v1 (see FORMAT.md for the full description and vectors):
//
//	raw:  version(1) || key id (4, big-endian) || nonce (12) || ciphertext || tag (16)
//	text: "phi1:" || base64 (standard alphabet, unpadded, canonical) of raw
//
// The raw form goes into bytea columns, the text form into text columns.
const (
	// Version1 is the first byte of every v1 envelope.
	Version1 byte = 0x01
	// TextPrefix starts the text form of an envelope. It lets migration tools
	// and database CHECK constraints tell ciphertext from plaintext.
	TextPrefix = "phi1:"
	// NonceSize is the AES-GCM nonce length: 96 random bits per value.
	NonceSize = 12
	// TagSize is the AES-GCM authentication tag length.
	TagSize = 16
	// Overhead is the size of a raw envelope minus the plaintext size.
	Overhead = headerSize + NonceSize + TagSize

	keyIDSize  = 4
	headerSize = 1 + keyIDSize // version || key id: the prefix bound into the AAD

	// MaxPlaintext bounds one value: PostgreSQL's largest field is 1 GiB.
	MaxPlaintext = 1 << 30
)

var b64 = base64.RawStdEncoding.Strict()

// IsCiphertext reports whether b looks like a v1 envelope in either form. It
// needs no key and checks only the shape (prefix, canonical base64, version
// byte, minimum length), so a raw bytea value that happens to start with
// 0x01 and is at least Overhead bytes long is reported as ciphertext.
func IsCiphertext(b []byte) bool {
	if bytes.HasPrefix(b, []byte(TextPrefix)) {
		s := b[len(TextPrefix):]
		if len(s) < b64.EncodedLen(Overhead) || hasNewline(s) {
			return false
		}
		// Decode the first quantum to read the version byte, then validate
		// the rest without keeping it.
		var q [3]byte
		if _, err := b64.Decode(q[:], s[:4]); err != nil || q[0] != Version1 {
			return false
		}
		return validBase64(s)
	}
	return len(b) >= Overhead && b[0] == Version1
}

// validBase64 reports whether s is canonical unpadded standard base64,
// without allocating.
func validBase64(s []byte) bool {
	var buf [48]byte // 64 characters per chunk
	for len(s) > 64 {
		if _, err := b64.Decode(buf[:], s[:64]); err != nil {
			return false
		}
		s = s[64:]
	}
	_, err := b64.Decode(buf[:], s)
	return err == nil
}

// envelopeKeyID returns the key id of a raw envelope; ok is false when the
// envelope is too short or has another version.
func envelopeKeyID(env []byte) (id uint32, ok bool) {
	if len(env) < Overhead || env[0] != Version1 {
		return 0, false
	}
	return binary.BigEndian.Uint32(env[1:headerSize]), true
}

// EnvelopeKeyID returns the data-key id named by an envelope in either form,
// without decrypting it. Re-encryption jobs use it to find values that are
// not under the active key.
func EnvelopeKeyID(env []byte) (uint32, bool) {
	if bytes.HasPrefix(env, []byte(TextPrefix)) {
		s := env[len(TextPrefix):]
		if len(s) < 8 {
			return 0, false
		}
		var q [6]byte
		if _, err := b64.Decode(q[:], s[:8]); err != nil || q[0] != Version1 {
			return 0, false
		}
		if !IsCiphertext(env) {
			return 0, false
		}
		return binary.BigEndian.Uint32(q[1:headerSize]), true
	}
	return envelopeKeyID(env)
}

// sliceForAppend extends in by n bytes, reusing its capacity when possible,
// and returns the whole slice and the new tail (as in crypto/cipher).
func sliceForAppend(in []byte, n int) (head, tail []byte) {
	if total := len(in) + n; cap(in) >= total {
		head = in[:total]
	} else {
		head = make([]byte, total)
		copy(head, in)
	}
	tail = head[len(in):]
	return
}

// hasNewline reports whether s holds \r or \n, which base64 decoders skip:
// an envelope with them would not be canonical.
func hasNewline(s []byte) bool {
	return bytes.IndexByte(s, '\n') >= 0 || bytes.IndexByte(s, '\r') >= 0
}
