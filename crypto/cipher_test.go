package crypto

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	kr := testKeyring(t, map[uint32][]byte{1: seq(32, 1), 2: seq(32, 2)}, 2, seq(32, 9))
	c := mustCipher(t, kr, "public.patients.email")
	sizes := []int{0, 1, 2, 3, 4, 15, 16, 17, 31, 32, 33, 100, 255, 1000, 1024, 4096, 65535, 65536, 1 << 20}
	for _, n := range sizes {
		pt := seq(n, byte(n))
		t.Run(fmt.Sprintf("raw/%d", n), func(t *testing.T) {
			env, err := c.Seal(nil, pt)
			if err != nil {
				t.Fatal(err)
			}
			if len(env) != n+Overhead || !IsCiphertext(env) {
				t.Fatalf("envelope length %d, IsCiphertext %v", len(env), IsCiphertext(env))
			}
			if id, ok := EnvelopeKeyID(env); !ok || id != 2 {
				t.Fatalf("EnvelopeKeyID = %d, %v; want 2", id, ok)
			}
			got, err := c.Open([]byte("prefix"), env)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, append([]byte("prefix"), pt...)) {
				t.Fatal("plaintext mismatch")
			}
		})
		t.Run(fmt.Sprintf("text/%d", n), func(t *testing.T) {
			env, err := c.SealText([]byte("x"), pt)
			if err != nil {
				t.Fatal(err)
			}
			env = env[1:]
			if !strings.HasPrefix(string(env), TextPrefix) || !IsCiphertext(env) {
				t.Fatalf("text envelope not recognized: %.20q", env)
			}
			if id, ok := EnvelopeKeyID(env); !ok || id != 2 {
				t.Fatalf("EnvelopeKeyID = %d, %v; want 2", id, ok)
			}
			got, err := c.Open(nil, env)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, pt) {
				t.Fatal("plaintext mismatch")
			}
		})
	}
}

func TestOpenWithDecryptOnlyKey(t *testing.T) {
	old := testKeyring(t, map[uint32][]byte{1: seq(32, 1)}, 1, seq(32, 9))
	env, err := mustCipher(t, old, "s.t.c").SealText(nil, []byte("before rotation"))
	if err != nil {
		t.Fatal(err)
	}
	rotated := testKeyring(t, map[uint32][]byte{1: seq(32, 1), 2: seq(32, 2)}, 2, seq(32, 9))
	c := mustCipher(t, rotated, "s.t.c")
	got, err := c.Open(nil, env)
	if err != nil || string(got) != "before rotation" {
		t.Fatalf("Open = %q, %v", got, err)
	}
	fresh, _ := c.Seal(nil, []byte("x"))
	if id, _ := EnvelopeKeyID(fresh); id != 2 {
		t.Fatalf("new value sealed under key %d, want the active key 2", id)
	}
}

func TestEveryBitFlipFails(t *testing.T) {
	kr := testKeyring(t, map[uint32][]byte{1: seq(32, 1), 2: seq(32, 2)}, 1, seq(32, 9))
	c := mustCipher(t, kr, "public.patients.ssn")
	for _, n := range []int{0, 1, 32} {
		env, _ := c.Seal(nil, seq(n, 7))
		for i := range len(env) * 8 {
			mod := bytes.Clone(env)
			mod[i/8] ^= 1 << (i % 8)
			if _, err := c.Open(nil, mod); err == nil {
				t.Fatalf("size %d: flip of bit %d opened", n, i)
			} else if !errors.Is(err, ErrDecrypt) && !errors.Is(err, ErrUnknownKey) {
				t.Fatalf("size %d: flip of bit %d: %v", n, i, err)
			}
		}
		text, _ := c.SealText(nil, seq(n, 7))
		for i := range len(text) * 8 {
			mod := bytes.Clone(text)
			mod[i/8] ^= 1 << (i % 8)
			if _, err := c.Open(nil, mod); err == nil {
				t.Fatalf("text size %d: flip of bit %d opened", n, i)
			}
		}
	}
}

func TestTruncationAndExtensionFail(t *testing.T) {
	kr := testKeyring(t, map[uint32][]byte{1: seq(32, 1)}, 1, seq(32, 9))
	c := mustCipher(t, kr, "s.t.c")
	env, _ := c.Seal(nil, []byte("hello"))
	for n := range len(env) {
		if _, err := c.Open(nil, env[:n]); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
	if _, err := c.Open(nil, append(bytes.Clone(env), 0)); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("extended: %v", err)
	}
	text, _ := c.SealText(nil, []byte("hello"))
	for _, bad := range []string{string(text) + "=", string(text[:20]) + "\n" + string(text[20:]), string(text) + "A", TextPrefix} {
		if _, err := c.Open(nil, []byte(bad)); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("Open(%q): %v", bad, err)
		}
	}
}

func TestColumnBinding(t *testing.T) {
	kr := testKeyring(t, map[uint32][]byte{1: seq(32, 1)}, 1, seq(32, 9))
	a := mustCipher(t, kr, "public.patients.email")
	b := mustCipher(t, kr, "public.patients.ssn")
	renamed := mustCipher(t, kr, "public.patients.email") // a renamed column keeps its identity
	for _, seal := range []func([]byte, []byte) ([]byte, error){a.Seal, a.SealText} {
		env, _ := seal(nil, []byte("alice@example.com"))
		_, err := b.Open(nil, env)
		var de *DecryptError
		if !errors.As(err, &de) || !errors.Is(err, ErrDecrypt) || errors.Is(err, ErrUnknownKey) {
			t.Fatalf("moved ciphertext: %v", err)
		}
		if de.Column != "public.patients.ssn" || de.KeyID != 1 {
			t.Fatalf("DecryptError = %+v", de)
		}
		if strings.Contains(err.Error(), "alice") || !strings.Contains(err.Error(), "decryption failed") {
			t.Fatalf("error message %q", err)
		}
		if got, err := renamed.Open(nil, env); err != nil || string(got) != "alice@example.com" {
			t.Fatalf("same identity: %q, %v", got, err)
		}
	}
}

func TestUnknownKey(t *testing.T) {
	other := testKeyring(t, map[uint32][]byte{7: seq(32, 7)}, 7, seq(32, 9))
	kr := testKeyring(t, map[uint32][]byte{1: seq(32, 1)}, 1, seq(32, 9))
	env, _ := mustCipher(t, other, "s.t.c").Seal(nil, []byte("v"))
	text, _ := mustCipher(t, other, "s.t.c").SealText(nil, []byte("v"))
	c := mustCipher(t, kr, "s.t.c")
	for _, e := range [][]byte{env, text} {
		_, err := c.Open(nil, e)
		var de *DecryptError
		if !errors.Is(err, ErrUnknownKey) || errors.Is(err, ErrDecrypt) || !errors.As(err, &de) || de.KeyID != 7 {
			t.Fatalf("Open: %v", err)
		}
	}
}

func TestWrongDataKeySameID(t *testing.T) {
	a := testKeyring(t, map[uint32][]byte{1: seq(32, 1)}, 1, seq(32, 9))
	b := testKeyring(t, map[uint32][]byte{1: seq(32, 2)}, 1, seq(32, 9))
	env, _ := mustCipher(t, a, "s.t.c").Seal(nil, []byte("v"))
	if _, err := mustCipher(t, b, "s.t.c").Open(nil, env); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("Open under another key with the same id: %v", err)
	}
}

func TestNoncesNeverRepeat(t *testing.T) {
	n := 1_000_000
	if testing.Short() {
		n = 100_000
	}
	kr := testKeyring(t, map[uint32][]byte{1: seq(32, 1)}, 1, seq(32, 9))
	c := mustCipher(t, kr, "s.t.c")
	seen := make(map[[NonceSize]byte]struct{}, n)
	buf := make([]byte, 0, Overhead)
	for i := range n {
		env, _ := c.Seal(buf[:0], nil)
		nonce := [NonceSize]byte(env[headerSize:])
		if _, dup := seen[nonce]; dup {
			t.Fatalf("nonce repeated after %d seals", i)
		}
		seen[nonce] = struct{}{}
	}
}

func TestIsCiphertext(t *testing.T) {
	kr := testKeyring(t, map[uint32][]byte{1: seq(32, 1)}, 1, seq(32, 9))
	c := mustCipher(t, kr, "s.t.c")
	raw, _ := c.Seal(nil, []byte("x"))
	text, _ := c.SealText(nil, []byte("x"))
	for _, tc := range []struct {
		name string
		in   []byte
		want bool
	}{
		{"raw", raw, true},
		{"text", text, true},
		{"empty", nil, false},
		{"plain", []byte("alice@example.com"), false},
		{"prefix only", []byte(TextPrefix), false},
		{"short raw", raw[:Overhead-1], false},
		{"raw other version", append([]byte{2}, raw[1:]...), false},
		{"text bad char", append(bytes.Clone(text[:len(text)-1]), '*'), false},
		{"text padded", append(bytes.Clone(text), '='), false},
		{"text newline", append(bytes.Clone(text), '\n'), false},
		{"text plaintext after prefix", []byte("phi1: not really a ciphertext, just a note"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsCiphertext(tc.in); got != tc.want {
				t.Fatalf("IsCiphertext = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestConcurrentUse(t *testing.T) {
	kr := testKeyring(t, map[uint32][]byte{1: seq(32, 1)}, 1, seq(32, 9))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			c := mustCipher(t, kr, "s.t.c")
			ix, err := kr.Indexer("g", []string{"lower"}, 0)
			if err != nil {
				t.Error(err)
				return
			}
			want := ix.AppendText(nil, []byte("SAME"))
			var buf, out []byte
			for i := range 2000 {
				pt := fmt.Appendf(nil, "goroutine %d value %d", g, i)
				buf, _ = c.SealText(buf[:0], pt)
				var err error
				if out, err = c.Open(out[:0], buf); err != nil || !bytes.Equal(out, pt) {
					t.Errorf("round trip: %v", err)
					return
				}
				if got := ix.AppendText(nil, []byte("same")); !bytes.Equal(got, want) {
					t.Errorf("index changed under concurrency")
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestNoAllocationsWithCapacity(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	kr := testKeyring(t, map[uint32][]byte{1: seq(32, 1)}, 1, seq(32, 9))
	c := mustCipher(t, kr, "s.t.c")
	ix, _ := kr.Indexer("g", []string{"trim", "lower", "nfc"}, 0)
	pt := seq(32, 1)
	value := []byte("  Alice@Example.COM ")
	env := make([]byte, 0, 256)
	out := make([]byte, 0, 256)
	allocs := testing.AllocsPerRun(200, func() {
		env, _ = c.Seal(env[:0], pt)
		out, _ = c.Open(out[:0], env)
		env, _ = c.SealText(env[:0], pt)
		out, _ = c.Open(out[:0], env)
		out = ix.AppendText(out[:0], value)
		out = ix.Append(out[:0], value)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per run with preallocated buffers, want 0", allocs)
	}
	allocs = testing.AllocsPerRun(200, func() {
		e, _ := c.Seal(nil, pt)
		_, _ = c.Open(nil, e)
	})
	if allocs > 2 {
		t.Fatalf("seal+open with nil buffers: %v allocations, want <= 2", allocs)
	}
}

func TestCipherValidation(t *testing.T) {
	kr := testKeyring(t, map[uint32][]byte{1: seq(32, 1)}, 1, seq(32, 9))
	if _, err := kr.Cipher(""); err == nil {
		t.Fatal("empty column identity accepted")
	}
	a, b := mustCipher(t, kr, "s.t.c"), mustCipher(t, kr, "s.t.c")
	if a != b {
		t.Fatal("Cipher is not cached")
	}
}
