package crypto

import (
	"fmt"
	"testing"
)

func BenchmarkSealOpen(b *testing.B) {
	kr := testKeyring(b, map[uint32][]byte{1: seq(32, 1), 2: seq(32, 2)}, 2, seq(32, 9))
	c := mustCipher(b, kr, "public.patients.email")
	for _, n := range []int{32, 1024} {
		pt := seq(n, 0)
		b.Run(fmt.Sprintf("raw/%dB/nil-dst", n), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(n))
			for b.Loop() {
				env, _ := c.Seal(nil, pt)
				if _, err := c.Open(nil, env); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("raw/%dB/reused-dst", n), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(n))
			env, out := make([]byte, 0, 4096), make([]byte, 0, 4096)
			for b.Loop() {
				env, _ = c.Seal(env[:0], pt)
				out, _ = c.Open(out[:0], env)
			}
		})
		b.Run(fmt.Sprintf("text/%dB/nil-dst", n), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(n))
			for b.Loop() {
				env, _ := c.SealText(nil, pt)
				if _, err := c.Open(nil, env); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("text/%dB/reused-dst", n), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(n))
			env, out := make([]byte, 0, 4096), make([]byte, 0, 4096)
			for b.Loop() {
				env, _ = c.SealText(env[:0], pt)
				out, _ = c.Open(out[:0], env)
			}
		})
	}
}

func BenchmarkBlindIndex(b *testing.B) {
	kr := testKeyring(b, map[uint32][]byte{1: seq(32, 1)}, 1, seq(32, 9))
	value := []byte("  Alice.Example@Example.COM     ") // 32 bytes
	for _, tc := range []struct {
		name      string
		normalize []string
	}{
		{"none", nil},
		{"trim-lower", []string{"trim", "lower"}},
		{"nfc-trim-lower", []string{"nfc", "trim", "lower"}},
	} {
		ix, err := kr.Indexer("public.patients.email", tc.normalize, 0)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			out := make([]byte, 0, 64)
			for b.Loop() {
				out = ix.AppendText(out[:0], value)
			}
		})
	}
	b.Run("parallel/trim-lower", func(b *testing.B) {
		ix, _ := kr.Indexer("public.patients.email", []string{"trim", "lower"}, 0)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			out := make([]byte, 0, 64)
			for pb.Next() {
				out = ix.AppendText(out[:0], value)
			}
		})
	})
}
