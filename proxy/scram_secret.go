package proxy

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"log/slog"
	"strconv"
	"strings"
)

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
