package crypto

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"slices"
)

// EnvMasterKey names the environment variable holding a base64 local master
// key; it overrides LocalConfig.MasterKeyFile.
const EnvMasterKey = "PHIPROXY_MASTER_KEY"

// Labels of the local provider's derivations from the master key.
const (
	labelLocalWrap  = "phiproxy/v1/local-wrap"   // HKDF info of the wrapping key; also the AAD prefix
	labelLocalKeyID = "phiproxy/v1/local-key-id" // HKDF info of the master-key fingerprint
)

// LocalProvider wraps keys with AES-256-GCM under a key derived from a local
// 32-byte master key. It is meant for development and tests: the master key
// sits on the proxy host (a file or an environment variable, never the
// database). Wrapped form: nonce (12) || ciphertext || tag (16), with the
// encryption context as associated data. Safe for concurrent use.
type LocalProvider struct {
	id   string // "local:" + 16 hex digits, a fingerprint of the master key
	aead cipher.AEAD
}

var (
	_ Provider       = (*LocalProvider)(nil)
	_ fmt.Stringer   = (*LocalProvider)(nil)
	_ slog.LogValuer = (*LocalProvider)(nil)
)

// NewLocalProvider returns a provider for a KeySize-byte master key. The
// caller may clear masterKey afterwards.
func NewLocalProvider(masterKey []byte) (*LocalProvider, error) {
	if len(masterKey) != KeySize {
		return nil, fmt.Errorf("local master key: want %d bytes, got %d", KeySize, len(masterKey))
	}
	wrapKey, err := hkdf.Key(sha256.New, masterKey, nil, labelLocalWrap, KeySize)
	if err != nil {
		return nil, fmt.Errorf("local master key: %w", err)
	}
	defer clear(wrapKey)
	fp, err := hkdf.Key(sha256.New, masterKey, nil, labelLocalKeyID, 8)
	if err != nil {
		return nil, fmt.Errorf("local master key: %w", err)
	}
	block, err := aes.NewCipher(wrapKey)
	if err != nil {
		return nil, fmt.Errorf("local master key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("local master key: %w", err)
	}
	return &LocalProvider{id: "local:" + hex.EncodeToString(fp), aead: aead}, nil
}

// LoadLocalProvider reads the master key from the environment variable
// EnvMasterKey (via getenv, usually os.Getenv) or else from
// cfg.MasterKeyFile. Both hold base64 (standard alphabet, padding optional).
func LoadLocalProvider(cfg LocalConfig, getenv func(string) string) (*LocalProvider, error) {
	var key []byte
	var err error
	switch {
	case getenv != nil && getenv(EnvMasterKey) != "":
		key, err = ParseMasterKey([]byte(getenv(EnvMasterKey)))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", EnvMasterKey, err)
		}
	case cfg.MasterKeyFile != "":
		key, err = ReadMasterKeyFile(cfg.MasterKeyFile)
		if err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("local provider: no master key: set %s or keys.local.master_key_file", EnvMasterKey)
	}
	defer clear(key)
	return NewLocalProvider(key)
}

// ParseMasterKey decodes a base64 master key (surrounding white space
// ignored). Errors never echo the input.
func ParseMasterKey(text []byte) ([]byte, error) {
	s := bytes.TrimSpace(text)
	s = bytes.TrimRight(s, "=")
	key := make([]byte, base64.RawStdEncoding.DecodedLen(len(s)))
	n, err := base64.RawStdEncoding.Decode(key, s)
	if err != nil {
		clear(key)
		return nil, errors.New("master key is not valid base64")
	}
	if n != KeySize {
		clear(key)
		return nil, fmt.Errorf("master key: want %d bytes, got %d", KeySize, n)
	}
	return key[:n], nil
}

// ReadMasterKeyFile reads a base64 master key file. Like the keyring, it
// must not be readable by group or others.
func ReadMasterKeyFile(path string) ([]byte, error) {
	if err := checkPrivate(path); err != nil {
		return nil, fmt.Errorf("master key file: %w", err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("master key file: %w", err)
	}
	defer clear(data)
	key, err := ParseMasterKey(data)
	if err != nil {
		return nil, fmt.Errorf("master key file %s: %w", path, err)
	}
	return key, nil
}

// WriteNewMasterKeyFile creates path (mode 0600; it must not exist) holding a
// new random base64 master key, for development setups.
func WriteNewMasterKeyFile(path string) error {
	key := make([]byte, KeySize)
	rand.Read(key)
	defer clear(key)
	text := base64.StdEncoding.AppendEncode(nil, key)
	text = append(text, '\n')
	defer clear(text)
	return writeFileAtomic(path, text, true)
}

// Name returns ProviderLocal.
func (p *LocalProvider) Name() string { return ProviderLocal }

// MasterKeyID returns the master key's fingerprint.
func (p *LocalProvider) MasterKeyID() string { return p.id }

func (p *LocalProvider) String() string { return "LocalProvider{" + p.id + ", key: [REDACTED]}" }

// LogValue implements slog.LogValuer; it never logs the key.
func (p *LocalProvider) LogValue() slog.Value {
	return slog.GroupValue(slog.String("provider", ProviderLocal), slog.String("master_key_id", p.id))
}

// GenerateKey returns a new random key and its wrapped form.
func (p *LocalProvider) GenerateKey(ctx context.Context, ec map[string]string) ([]byte, WrappedKey, error) {
	key := make([]byte, KeySize)
	rand.Read(key)
	w, err := p.Wrap(ctx, key, ec)
	if err != nil {
		clear(key)
		return nil, WrappedKey{}, err
	}
	return key, w, nil
}

// Wrap encrypts key under the master key, bound to ec.
func (p *LocalProvider) Wrap(ctx context.Context, key []byte, ec map[string]string) (WrappedKey, error) {
	if err := ctx.Err(); err != nil {
		return WrappedKey{}, fmt.Errorf("local wrap: %w", err)
	}
	out := make([]byte, NonceSize, NonceSize+len(key)+TagSize)
	rand.Read(out)
	out = p.aead.Seal(out, out[:NonceSize], key, localAAD(ec))
	return WrappedKey{Provider: ProviderLocal, MasterKeyID: p.id, Ciphertext: out}, nil
}

// Unwrap decrypts w. A key wrapped by another master key or bound to another
// context fails with ErrUnwrap.
func (p *LocalProvider) Unwrap(ctx context.Context, w WrappedKey, ec map[string]string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("local unwrap: %w", err)
	}
	if w.Provider != ProviderLocal {
		return nil, fmt.Errorf("local unwrap: key wrapped by provider %q: %w", w.Provider, ErrUnwrap)
	}
	if w.MasterKeyID != p.id {
		return nil, fmt.Errorf("local unwrap: key wrapped by master key %s, this master key is %s: %w", w.MasterKeyID, p.id, ErrUnwrap)
	}
	if len(w.Ciphertext) < NonceSize+TagSize {
		return nil, fmt.Errorf("local unwrap: wrapped key too short: %w", ErrUnwrap)
	}
	key, err := p.aead.Open(nil, w.Ciphertext[:NonceSize], w.Ciphertext[NonceSize:], localAAD(ec))
	if err != nil {
		return nil, fmt.Errorf("local unwrap: %w", ErrUnwrap)
	}
	return key, nil
}

// localAAD serialises an encryption context canonically: the label, then for
// each key in byte order: len(k) (2 bytes BE) || k || len(v) (2 bytes BE) || v.
func localAAD(ec map[string]string) []byte {
	aad := []byte(labelLocalWrap)
	for _, k := range slices.Sorted(maps.Keys(ec)) {
		aad = binary.BigEndian.AppendUint16(aad, uint16(len(k)))
		aad = append(aad, k...)
		aad = binary.BigEndian.AppendUint16(aad, uint16(len(ec[k])))
		aad = append(aad, ec[k]...)
	}
	return aad
}

// checkPrivate refuses a file that group or others may access.
func checkPrivate(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%s: mode %04o allows group or other access; run chmod 600 %s: %w", path, perm, path, fs.ErrPermission)
	}
	return nil
}
