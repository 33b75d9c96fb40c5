package crypto

import (
	"bytes"
	"strings"
	"testing"
)

func TestNormalizers(t *testing.T) {
	for _, tc := range []struct {
		name      string
		normalize []string
		in, want  string
	}{
		{"none", nil, " Ab ", " Ab "},
		{"trim ascii", []string{"trim"}, " \t alice \r\n", "alice"},
		{"trim unicode space", []string{"trim"}, "\u00a0\u2003bob\u3000", "bob"},
		{"trim keeps inner", []string{"trim"}, " a  b ", "a  b"},
		{"lower ascii", []string{"lower"}, "Alice@Example.COM", "alice@example.com"},
		{"lower unicode", []string{"lower"}, "ÉLODIE ΣΊΣΥΦΟΣ ДОМ", "élodie σίσυφοσ дом"},
		{"lower keeps invalid utf8", []string{"lower"}, "A\xffB\xc3", "a\xffb\xc3"},
		{"digits", []string{"digits"}, "123-45-6789", "123456789"},
		{"digits drops non-ascii digits", []string{"digits"}, "(555) ٣ 12", "55512"},
		{"digits empty", []string{"digits"}, "n/a", ""},
		{"nfc composes", []string{"nfc"}, "Ame\u0301lie", "Amélie"},
		{"nfc keeps composed", []string{"nfc"}, "Amélie", "Amélie"},
		{"nfc then lower", []string{"nfc", "lower"}, "E\u0301COLE", "école"},
		{"trim lower", []string{"trim", "lower"}, "  Alice@Example.COM ", "alice@example.com"},
		{"order matters: digits then trim", []string{"digits", "trim"}, " 1 2 ", "12"},
		{"btrim: spaces only", []string{"btrim"}, "  \t a b \u00a0 ", "\t a b \u00a0"},
		{"btrim all spaces", []string{"btrim"}, "   ", ""},
		{"ascii_lower: ASCII letters only", []string{"ascii_lower"}, "STRAẞE@Beispiel.DE İI Ä", "straẞe@beispiel.de İi Ä"},
		{"ascii_lower keeps invalid utf8", []string{"ascii_lower"}, "A\xffB\xc3", "a\xffb\xc3"},
		{"btrim ascii_lower", []string{"btrim", "ascii_lower"}, " Ann@X.ORG ", "ann@x.org"},
		{"all four; nfc does not fold full-width digits", []string{"nfc", "trim", "lower", "digits"}, " SSN: １23-45-6789 ", "23456789"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Normalize(nil, []byte(tc.in), tc.normalize)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("Normalize(%q, %v) = %q, want %q", tc.in, tc.normalize, got, tc.want)
			}
			// The indexer normalizes the same way.
			kr := testKeyring(t, map[uint32][]byte{1: seq(32, 1)}, 1, seq(32, 9))
			ix, err := kr.Indexer("g", tc.normalize, 0)
			if err != nil {
				t.Fatal(err)
			}
			plain, _ := kr.Indexer("g", nil, 0)
			if a, b := ix.Append(nil, []byte(tc.in)), plain.Append(nil, []byte(tc.want)); !bytes.Equal(a, b) {
				t.Fatal("indexer normalization differs from Normalize")
			}
		})
	}
}

func TestValidNormalizer(t *testing.T) {
	for _, n := range Normalizers() {
		if !ValidNormalizer(n) {
			t.Errorf("ValidNormalizer(%q) = false", n)
		}
	}
	for _, n := range []string{"", "upper", "Lower", "nfkc", "trim ", "ascii_upper"} {
		if ValidNormalizer(n) {
			t.Errorf("ValidNormalizer(%q) = true", n)
		}
	}
	kr := testKeyring(t, map[uint32][]byte{1: seq(32, 1)}, 1, seq(32, 9))
	if _, err := kr.Indexer("g", []string{"trim", "upper"}, 0); err == nil || !strings.Contains(err.Error(), `"upper"`) {
		t.Fatalf("unknown normalizer: %v", err)
	}
}

func TestIndexer(t *testing.T) {
	kr := testKeyring(t, map[uint32][]byte{1: seq(32, 1)}, 1, seq(32, 9))
	other := testKeyring(t, map[uint32][]byte{1: seq(32, 1)}, 1, seq(32, 10))
	dataKeyRoot := testKeyring(t, map[uint32][]byte{1: seq(32, 9)}, 1, seq(32, 9))
	ix := func(kr *Keyring, group string, bits int) *Indexer {
		t.Helper()
		i, err := kr.Indexer(group, []string{"trim", "lower"}, bits)
		if err != nil {
			t.Fatal(err)
		}
		return i
	}
	v := []byte("Alice@example.com")
	a := ix(kr, "public.patients.email", 0)
	if a.Bits() != 128 || a.Size() != 16 || len(a.Append(nil, v)) != 16 || len(a.AppendText(nil, v)) != a.TextSize() || a.TextSize() != 22 {
		t.Fatalf("default size: bits %d size %d text %d", a.Bits(), a.Size(), a.TextSize())
	}
	if !bytes.Equal(a.Append(nil, v), a.Append(nil, []byte(" ALICE@example.com "))) {
		t.Fatal("normalized-equal values index differently")
	}
	if bytes.Equal(a.Append(nil, v), a.Append(nil, []byte("bob@example.com"))) {
		t.Fatal("different values index alike")
	}
	if bytes.Equal(a.Append(nil, v), ix(kr, "public.patients.email2", 0).Append(nil, v)) {
		t.Fatal("two groups share an index key")
	}
	if !bytes.Equal(a.Append(nil, v), ix(dataKeyRoot, "public.patients.email", 0).Append(nil, v)) {
		t.Fatal("index depends on data keys; it must depend on the root key only")
	}
	if bytes.Equal(a.Append(nil, v), ix(other, "public.patients.email", 0).Append(nil, v)) {
		t.Fatal("index does not depend on the root key")
	}
	long := ix(kr, "public.patients.email", 256).Append(nil, v)
	short := ix(kr, "public.patients.email", 32).Append(nil, v)
	if len(long) != 32 || len(short) != 4 || !bytes.Equal(long[:16], a.Append(nil, v)) || !bytes.Equal(long[:4], short) {
		t.Fatal("truncation is not a prefix of the full HMAC")
	}
	if got := a.Append([]byte("p"), v); string(got[:1]) != "p" || len(got) != 17 {
		t.Fatal("Append does not append")
	}
	for _, bits := range []int{-8, 4, 12, 264, 1024} {
		if _, err := kr.Indexer("g", nil, bits); err == nil {
			t.Errorf("bits %d accepted", bits)
		}
	}
	if _, err := kr.Indexer("", nil, 0); err == nil {
		t.Error("empty group accepted")
	}
	if s := a.String(); !strings.Contains(s, "REDACTED") {
		t.Errorf("String() = %q", s)
	}
}

// TestNormalizedIndexer: a normalized index has its own key, bound to its
// group and normalizers, so it never shares index values with the exact
// index or with a normalized index of other normalizers.
func TestNormalizedIndexer(t *testing.T) {
	kr := testKeyring(t, map[uint32][]byte{1: seq(32, 1)}, 1, seq(32, 9))
	must := func(ix *Indexer, err error) *Indexer {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return ix
	}
	exact := must(kr.Indexer("g", nil, 0))
	ci := must(kr.NormalizedIndexer("g", []string{"ascii_lower"}, 0))
	ciTrim := must(kr.NormalizedIndexer("g", []string{"btrim", "ascii_lower"}, 0))
	v1 := must(kr.Indexer("g", []string{"ascii_lower"}, 0))
	v := []byte("ann@x.org")
	if bytes.Equal(exact.Append(nil, v), ci.Append(nil, v)) {
		t.Fatal("the exact and a normalized index share a key")
	}
	if bytes.Equal(ci.Append(nil, v), ciTrim.Append(nil, v)) {
		t.Fatal("normalized indexes of different normalizers share a key")
	}
	if !bytes.Equal(v1.Append(nil, v), exact.Append(nil, v)) {
		t.Fatal("a v1 normalized index is keyed by its group, like the exact index")
	}
	if again := must(kr.NormalizedIndexer("g", []string{"ascii_lower"}, 0)); again != ci {
		t.Error("NormalizedIndexer not cached")
	}
	if !bytes.Equal(ci.Append(nil, []byte("ANN@X.org")), ci.Append(nil, v)) {
		t.Fatal("normalizers not applied")
	}
	// AppendNormalized takes the value as the normalized form itself.
	if !bytes.Equal(ci.AppendNormalized(nil, v), ci.Append(nil, v)) {
		t.Fatal("AppendNormalized of a normalized value differs from Append")
	}
	if bytes.Equal(ci.AppendNormalized(nil, []byte("ANN@X.org")), ci.Append(nil, v)) {
		t.Fatal("AppendNormalized normalized its input")
	}
	if got := string(ci.AppendNormalizedText(nil, v)); got != string(ci.AppendText(nil, v)) {
		t.Fatalf("AppendNormalizedText = %q", got)
	}
	if _, err := kr.NormalizedIndexer("g", nil, 0); err == nil {
		t.Error("normalized indexer without normalizers accepted")
	}
	if _, err := kr.NormalizedIndexer("g\x00x", []string{"digits"}, 0); err == nil {
		t.Error("group with a NUL accepted")
	}
}
