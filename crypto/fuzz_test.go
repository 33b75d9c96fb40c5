package crypto

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

// FuzzEnvelope: Open never panics on any input, in either form; anything it
// accepts re-encodes byte for byte (age FuzzMalleability): the raw envelope
// is the only one for its plaintext+nonce, and the text form is canonical.
func FuzzEnvelope(f *testing.F) {
	kr := testKeyring(f, map[uint32][]byte{1: seq(32, 1), 2: seq(32, 2)}, 2, seq(32, 9))
	c := mustCipher(f, kr, "public.patients.email")
	for _, n := range []int{0, 1, 17, 64} {
		raw, _ := c.Seal(nil, seq(n, 3))
		text, _ := c.SealText(nil, seq(n, 3))
		f.Add(raw)
		f.Add(text)
	}
	f.Add([]byte(TextPrefix))
	f.Add([]byte{Version1})
	f.Fuzz(func(t *testing.T, env []byte) {
		pt, err := c.Open(nil, env)
		isCT := IsCiphertext(env)
		if err != nil {
			var de *DecryptError
			if !errors.As(err, &de) || (!errors.Is(err, ErrDecrypt) && !errors.Is(err, ErrUnknownKey)) {
				t.Fatalf("unexpected error type: %v", err)
			}
			return
		}
		if !isCT {
			t.Fatal("Open accepted what IsCiphertext rejects")
		}
		// Re-encode with the same key and nonce: must equal the input.
		text := bytes.HasPrefix(env, []byte(TextPrefix))
		raw := env
		if text {
			raw, _ = b64.DecodeString(string(env[len(TextPrefix):]))
		}
		id, _ := EnvelopeKeyID(env)
		k := c.key(id)
		out := make([]byte, len(pt)+Overhead)
		copy(out[headerSize:], raw[headerSize:headerSize+NonceSize])
		k.seal(out, pt)
		if text {
			out = append([]byte(TextPrefix), b64.EncodeToString(out)...)
		}
		if !bytes.Equal(out, env) {
			t.Fatalf("decode∘encode is not the identity:\n in %x\nout %x", env, out)
		}
	})
}

// FuzzKeyringFile: parsing never panics, and an accepted file survives
// Marshal and Parse unchanged.
func FuzzKeyringFile(f *testing.F) {
	f.Add([]byte(`{"format":"phiproxy-keyring/v1","keyring_id":"k","data_keys":[{"id":1,"state":"active","created":"2026-01-01T00:00:00Z","provider":"local","master_key_id":"local:x","wrapped_key":"AQ=="}],"blind_index_root":{"created":"2026-01-01T00:00:00Z","provider":"aws-kms","master_key_id":"arn:aws:kms:x","wrapped_key":"AQI="}}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		kf, err := ParseKeyringFile(data)
		if err != nil {
			return
		}
		out, err := kf.Marshal()
		if err != nil {
			t.Fatalf("accepted file does not marshal: %v", err)
		}
		again, err := ParseKeyringFile(out)
		if err != nil {
			t.Fatalf("marshalled file does not parse: %v\n%s", err, out)
		}
		out2, _ := again.Marshal()
		if !bytes.Equal(out, out2) {
			t.Fatalf("not stable:\n%s\n%s", out, out2)
		}
		if !json.Valid(out) {
			t.Fatal("invalid JSON")
		}
	})
}
