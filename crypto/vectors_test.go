package crypto

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.json from the current implementation")

// vectors is testdata/vectors.json: known answers for format v1. Any change
// to the envelope, the derivation labels or the blind index fails
// TestKnownAnswerVectors. FORMAT.md describes the computation.
type vectors struct {
	Comment    string           `json:"comment"`
	Envelopes  []envelopeVector `json:"envelope_v1"`
	Indexes    []indexVector    `json:"blind_index_v1"`
	Normalized []indexVector    `json:"normalized_index_v1"`
	LocalWraps []localVector    `json:"local_wrap_v1"`
}

type envelopeVector struct {
	DataKey   string `json:"data_key"`
	KeyID     uint32 `json:"key_id"`
	Column    string `json:"column"`
	ColumnKey string `json:"column_key"` // HKDF output, for implementers
	Nonce     string `json:"nonce"`
	Plaintext string `json:"plaintext"` // hex
	AAD       string `json:"aad"`
	Envelope  string `json:"envelope"` // hex of the raw form
	Text      string `json:"text"`
}

type indexVector struct {
	RootKey    string   `json:"root_key"`
	Group      string   `json:"group"`
	Normalize  []string `json:"normalize"`
	Bits       int      `json:"bits"`
	Value      string   `json:"value"`
	Normalized string   `json:"normalized"`
	IndexKey   string   `json:"index_key"` // HKDF output, for implementers
	Index      string   `json:"index"`     // hex
	Text       string   `json:"text"`
	// AsIs is the index of Value taken as already normalized
	// (AppendNormalized), as for lower(col) = 'value'; normalized
	// indexes only.
	AsIs string `json:"as_is,omitempty"` // hex
}

type localVector struct {
	MasterKey   string            `json:"master_key"`
	MasterKeyID string            `json:"master_key_id"`
	Context     map[string]string `json:"context"`
	Key         string            `json:"key"`
	Wrapped     string            `json:"wrapped"` // nonce || ciphertext || tag; the nonce is random, so only unwrapping is checked
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// computeVectors derives every output from the inputs of in.
func computeVectors(t *testing.T, in vectors) vectors {
	out := in
	out.Envelopes = nil
	for _, v := range in.Envelopes {
		key, nonce, pt := unhex(t, v.DataKey), unhex(t, v.Nonce), unhex(t, v.Plaintext)
		ck, err := newColumnKey(v.KeyID, key, v.Column)
		if err != nil {
			t.Fatal(err)
		}
		sub, _ := hkdf.Key(sha256.New, key, nil, labelColumnKey+"\x00"+v.Column, 32)
		env := make([]byte, len(pt)+Overhead)
		copy(env[headerSize:], nonce)
		ck.seal(env, pt)
		v.ColumnKey = hex.EncodeToString(sub)
		v.AAD = hex.EncodeToString(ck.aad)
		v.Envelope = hex.EncodeToString(env)
		v.Text = TextPrefix + b64.EncodeToString(env)
		out.Envelopes = append(out.Envelopes, v)
	}
	out.Indexes = nil
	for _, v := range in.Indexes {
		root := unhex(t, v.RootKey)
		ix, err := newIndexer(root, v.Group, v.Normalize, v.Bits)
		if err != nil {
			t.Fatal(err)
		}
		norm, err := Normalize(nil, []byte(v.Value), v.Normalize)
		if err != nil {
			t.Fatal(err)
		}
		sub, _ := hkdf.Key(sha256.New, root, nil, labelBlindIndex+"\x00"+v.Group, 32)
		v.Normalized = string(norm)
		v.IndexKey = hex.EncodeToString(sub)
		v.Index = hex.EncodeToString(ix.Append(nil, []byte(v.Value)))
		v.Text = string(ix.AppendText(nil, []byte(v.Value)))
		out.Indexes = append(out.Indexes, v)
	}
	out.Normalized = nil
	for _, v := range in.Normalized {
		root := unhex(t, v.RootKey)
		ix, err := newNormalizedIndexer(root, v.Group, v.Normalize, v.Bits)
		if err != nil {
			t.Fatal(err)
		}
		norm, err := Normalize(nil, []byte(v.Value), v.Normalize)
		if err != nil {
			t.Fatal(err)
		}
		sub, _ := hkdf.Key(sha256.New, root, nil, normalizedIndexInfo(v.Group, v.Normalize), 32)
		v.Normalized = string(norm)
		v.IndexKey = hex.EncodeToString(sub)
		v.Index = hex.EncodeToString(ix.Append(nil, []byte(v.Value)))
		v.Text = string(ix.AppendText(nil, []byte(v.Value)))
		v.AsIs = hex.EncodeToString(ix.AppendNormalized(nil, []byte(v.Value)))
		out.Normalized = append(out.Normalized, v)
	}
	out.LocalWraps = nil
	for _, v := range in.LocalWraps {
		p, err := NewLocalProvider(unhex(t, v.MasterKey))
		if err != nil {
			t.Fatal(err)
		}
		v.MasterKeyID = p.MasterKeyID()
		if *update || v.Wrapped == "" {
			w, err := p.Wrap(context.Background(), unhex(t, v.Key), v.Context)
			if err != nil {
				t.Fatal(err)
			}
			v.Wrapped = hex.EncodeToString(w.Ciphertext)
		}
		out.LocalWraps = append(out.LocalWraps, v)
	}
	return out
}

func TestKnownAnswerVectors(t *testing.T) {
	path := filepath.Join("testdata", "vectors.json")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var want vectors
	if err := json.Unmarshal(data, &want); err != nil {
		t.Fatal(err)
	}
	got := computeVectors(t, want)
	if *update {
		b, _ := json.MarshalIndent(got, "", "  ")
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("vectors changed: format v1 is frozen (-want +got):\n%s", diff)
	}
	// The public API opens the frozen envelopes and unwraps the local keys.
	for _, v := range want.Envelopes {
		kr := testKeyring(t, map[uint32][]byte{v.KeyID: unhex(t, v.DataKey)}, v.KeyID, seq(32, 0))
		c := mustCipher(t, kr, v.Column)
		for _, env := range [][]byte{unhex(t, v.Envelope), []byte(v.Text)} {
			pt, err := c.Open(nil, env)
			if err != nil || !bytes.Equal(pt, unhex(t, v.Plaintext)) {
				t.Fatalf("open vector for %s: %v", v.Column, err)
			}
		}
	}
	for _, v := range want.LocalWraps {
		p, _ := NewLocalProvider(unhex(t, v.MasterKey))
		key, err := p.Unwrap(context.Background(), WrappedKey{Provider: ProviderLocal, MasterKeyID: v.MasterKeyID, Ciphertext: unhex(t, v.Wrapped)}, v.Context)
		if err != nil || !bytes.Equal(key, unhex(t, v.Key)) {
			t.Fatalf("unwrap local vector: %v", err)
		}
	}
}
