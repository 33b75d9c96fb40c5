package crypto

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// KeyringFormat is the value of the "format" member of a keyring file.
const KeyringFormat = "phiproxy-keyring/v1"

// maxKeyringFile bounds what ReadKeyringFile reads.
const maxKeyringFile = 4 << 20

// KeyState is the life-cycle state of a data key.
type KeyState string

// Data-key states. Exactly one key is active: it seals new values. All
// active and decrypt-only keys open values. Retired keys are kept (still
// wrapped) for the record but are not unwrapped: values under them fail with
// ErrUnknownKey.
const (
	StateActive      KeyState = "active"
	StateDecryptOnly KeyState = "decrypt-only"
	StateRetired     KeyState = "retired"
)

// KeyringFile is the on-disk keyring: metadata and wrapped keys only, never
// a plaintext key. See FORMAT.md.
type KeyringFile struct {
	Format    string          `json:"format"`     // KeyringFormat
	ID        string          `json:"keyring_id"` // random, bound into every wrapped key's encryption context
	DataKeys  []DataKeyRecord `json:"data_keys"`  // sorted by ID
	IndexRoot IndexRootRecord `json:"blind_index_root"`
}

// DataKeyRecord is one data key in the keyring file.
type DataKeyRecord struct {
	ID      uint32    `json:"id"`
	State   KeyState  `json:"state"`
	Created time.Time `json:"created"`
	WrappedRecord
}

// IndexRootRecord is the blind-index root key in the keyring file.
type IndexRootRecord struct {
	Created time.Time `json:"created"`
	WrappedRecord
}

// WrappedRecord is a wrapped key and what wrapped it.
type WrappedRecord struct {
	Provider    string `json:"provider"`
	MasterKeyID string `json:"master_key_id"`
	WrappedKey  []byte `json:"wrapped_key"` // standard base64 in JSON
}

func (w WrappedRecord) wrapped() WrappedKey {
	return WrappedKey{Provider: w.Provider, MasterKeyID: w.MasterKeyID, Ciphertext: w.WrappedKey}
}

func recordOf(w WrappedKey) WrappedRecord {
	return WrappedRecord{Provider: w.Provider, MasterKeyID: w.MasterKeyID, WrappedKey: w.Ciphertext}
}

// ParseKeyringFile decodes and validates a keyring file: known members only,
// no trailing data, a supported format, unique non-zero ids, valid states,
// exactly one active key, known providers and non-empty wrapped keys.
func ParseKeyringFile(data []byte) (*KeyringFile, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f KeyringFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("parse keyring: %w", jsonError(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("parse keyring: trailing data after the keyring object")
	}
	if err := f.Validate(); err != nil {
		return nil, err
	}
	return &f, nil
}

// Validate checks the invariants listed at ParseKeyringFile.
func (f *KeyringFile) Validate() error {
	if f.Format != KeyringFormat {
		return fmt.Errorf("keyring: format %q is not supported (want %q)", f.Format, KeyringFormat)
	}
	if f.ID == "" {
		return errors.New("keyring: missing keyring_id")
	}
	if len(f.DataKeys) == 0 {
		return errors.New("keyring: no data keys")
	}
	active := 0
	for i, k := range f.DataKeys {
		if k.ID == 0 {
			return errors.New("keyring: data key id 0 is reserved")
		}
		if i > 0 && k.ID <= f.DataKeys[i-1].ID {
			return fmt.Errorf("keyring: data key ids must be unique and ascending (key %d after %d)", k.ID, f.DataKeys[i-1].ID)
		}
		switch k.State {
		case StateActive:
			active++
		case StateDecryptOnly, StateRetired:
		default:
			return fmt.Errorf("keyring: data key %d: unknown state %q", k.ID, k.State)
		}
		if err := k.WrappedRecord.validate(); err != nil {
			return fmt.Errorf("keyring: data key %d: %w", k.ID, err)
		}
	}
	if active != 1 {
		return fmt.Errorf("keyring: want exactly one active data key, found %d", active)
	}
	if err := f.IndexRoot.WrappedRecord.validate(); err != nil {
		return fmt.Errorf("keyring: blind_index_root: %w", err)
	}
	return nil
}

func (w WrappedRecord) validate() error {
	switch w.Provider {
	case ProviderLocal, ProviderAWSKMS:
	default:
		return fmt.Errorf("unknown provider %q", w.Provider)
	}
	if w.MasterKeyID == "" {
		return errors.New("missing master_key_id")
	}
	if len(w.WrappedKey) == 0 {
		return errors.New("missing wrapped_key")
	}
	return nil
}

// Active returns the active data key record.
func (f *KeyringFile) Active() DataKeyRecord {
	for _, k := range f.DataKeys {
		if k.State == StateActive {
			return k
		}
	}
	return DataKeyRecord{}
}

// Retire marks data key id retired. It refuses the active key and unknown
// ids; retiring a retired key is a no-op. The caller must first have
// re-encrypted every value under the key (migrate reencrypt): afterwards
// such values no longer decrypt.
func (f *KeyringFile) Retire(id uint32) error {
	i := slices.IndexFunc(f.DataKeys, func(k DataKeyRecord) bool { return k.ID == id })
	if i < 0 {
		return fmt.Errorf("retire key %d: %w", id, ErrUnknownKey)
	}
	if f.DataKeys[i].State == StateActive {
		return fmt.Errorf("retire key %d: it is the active key; rotate first", id)
	}
	f.DataKeys[i].State = StateRetired
	return nil
}

// Marshal encodes the file as indented JSON with a trailing newline.
func (f *KeyringFile) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode keyring: %w", err)
	}
	return append(b, '\n'), nil
}

// ReadKeyringFile reads and parses the keyring at path. It refuses a file
// that group or others may access.
func ReadKeyringFile(path string) (*KeyringFile, error) {
	if err := checkPrivate(path); err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, maxKeyringFile+1))
	if err != nil {
		return nil, fmt.Errorf("keyring: read %s: %w", path, err)
	}
	if len(data) > maxKeyringFile {
		return nil, fmt.Errorf("keyring: %s is larger than %d bytes", path, maxKeyringFile)
	}
	f, err := ParseKeyringFile(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// WriteKeyringFile validates f and writes it to path atomically with mode
// 0600. With createNew it fails if path exists.
func WriteKeyringFile(path string, f *KeyringFile, createNew bool) error {
	if err := f.Validate(); err != nil {
		return err
	}
	data, err := f.Marshal()
	if err != nil {
		return err
	}
	return writeFileAtomic(path, data, createNew)
}

// writeFileAtomic writes data to a temporary file in path's directory with
// mode 0600, syncs it, renames it over path (or, with createNew, links it so
// that an existing file is never replaced) and syncs the directory, so a
// crash leaves either the old or the new file, never a torn one.
func writeFileAtomic(path string, data []byte, createNew bool) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmpName := tmp.Name()
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmpName)
		}
	}()
	if err = tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err = tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: sync: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if createNew {
		if err = os.Link(tmpName, path); err != nil {
			return fmt.Errorf("create %s: %w", path, err)
		}
		os.Remove(tmpName)
	} else if err = os.Rename(tmpName, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("write %s: open directory: %w", path, err)
	}
	defer d.Close()
	if err = d.Sync(); err != nil {
		return fmt.Errorf("write %s: sync directory: %w", path, err)
	}
	return nil
}

// jsonError describes a decoding error of encoding/json in the file's
// terms: the member and the kind of value, never Go type names or the
// value itself.
func jsonError(err error) error {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		return fmt.Errorf("member %q: %s is not allowed here", te.Field, te.Value)
	case errors.As(err, &se):
		return fmt.Errorf("not valid JSON (at byte %d)", se.Offset)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return fmt.Errorf("unknown member %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return errors.New("the file ends early: not a complete JSON object")
	}
	return errors.New("not a valid keyring document")
}
