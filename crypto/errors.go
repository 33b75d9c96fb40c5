package crypto

import (
	"errors"
	"fmt"
)

// ErrDecrypt is the one generic decryption failure: a malformed envelope, an
// unsupported version, a wrong column binding, tampering and a wrong key all
// look the same to the caller, as in Tink ("decryption failed"). Match it with
// errors.Is.
var ErrDecrypt = errors.New("decryption failed")

// ErrUnknownKey reports an envelope naming a data key that the keyring does
// not hold (never created here, or retired). It is distinct from ErrDecrypt:
// the value may be intact, the keyring is the problem.
var ErrUnknownKey = errors.New("unknown data key")

// DecryptError is returned by (*ColumnCipher).Open. It names the column
// identity and the data-key id found in the envelope (0 when the envelope was
// too malformed to carry one), and never the value. Err is ErrDecrypt or
// ErrUnknownKey.
type DecryptError struct {
	Column string // the associated-data identity of the column
	KeyID  uint32 // the key id read from the envelope, 0 if unreadable
	Err    error  // ErrDecrypt or ErrUnknownKey
}

func (e *DecryptError) Error() string {
	return fmt.Sprintf("column %q: key %d: %v", e.Column, e.KeyID, e.Err)
}

// Unwrap returns ErrDecrypt or ErrUnknownKey.
func (e *DecryptError) Unwrap() error { return e.Err }
