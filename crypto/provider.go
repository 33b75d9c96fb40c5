package crypto

import (
	"context"
	"errors"
	"strconv"
)

// Provider names, as written in the configuration and the keyring file.
const (
	ProviderLocal  = "local"
	ProviderAWSKMS = "aws-kms"
)

// KeySize is the size of data keys, the blind-index root key and master keys.
const KeySize = 32

// ErrUnwrap marks a provider's failure to unwrap a key because the wrapped
// key, its encryption context or the master key is wrong (as opposed to the
// provider being unreachable).
var ErrUnwrap = errors.New("unwrap key")

// WrappedKey is a key encrypted under a provider's master key, as stored in
// the keyring file.
type WrappedKey struct {
	Provider    string // ProviderLocal or ProviderAWSKMS
	MasterKeyID string // which master key wrapped it (a local fingerprint or a KMS key ARN)
	Ciphertext  []byte // provider-specific; opaque to the keyring
}

// Provider wraps and unwraps keys under a master key. The keyring calls it
// only when a keyring is created, opened, rotated or rewrapped: never on the
// per-value path.
//
// The encryption context ec names the keyring and the key's purpose (see
// EncryptionContext); a provider must bind it to the wrapped key so that a
// wrapped key moved to another keyring, purpose or id does not unwrap.
//
// Error contract: Unwrap returns an error wrapping ErrUnwrap when the wrapped
// key or context is wrong or the master key does not match; any other error
// (timeouts, network, permissions) means the provider could not be asked.
// Errors never contain key material. All methods honour ctx.
type Provider interface {
	// Name returns ProviderLocal or ProviderAWSKMS.
	Name() string
	// GenerateKey returns a new random KeySize-byte key and its wrapped form.
	GenerateKey(ctx context.Context, ec map[string]string) (key []byte, w WrappedKey, err error)
	// Wrap wraps an existing key (used by rewrap).
	Wrap(ctx context.Context, key []byte, ec map[string]string) (WrappedKey, error)
	// Unwrap returns the plaintext key of w.
	Unwrap(ctx context.Context, w WrappedKey, ec map[string]string) ([]byte, error)
}

// Encryption-context keys and purposes bound to every wrapped key.
const (
	ContextKeyring = "phiproxy:keyring" // the keyring id
	ContextPurpose = "phiproxy:purpose" // PurposeDataKey or PurposeIndexRoot
	ContextKeyID   = "phiproxy:key-id"  // the data-key id, decimal (data keys only)

	PurposeDataKey   = "data-key"
	PurposeIndexRoot = "blind-index-root"
)

// EncryptionContext returns the context for a data key (id > 0) or, with id
// 0, for the blind-index root key of the keyring keyringID.
func EncryptionContext(keyringID string, id uint32) map[string]string {
	if id == 0 {
		return map[string]string{ContextKeyring: keyringID, ContextPurpose: PurposeIndexRoot}
	}
	return map[string]string{
		ContextKeyring: keyringID,
		ContextPurpose: PurposeDataKey,
		ContextKeyID:   strconv.FormatUint(uint64(id), 10),
	}
}
