package crypto

import (
	"bytes"
	"fmt"
	"slices"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// A normalizer appends the normalized form of src to dst. Normalizers are
// applied in the order the policy lists them, before a value is indexed, so
// that values the application considers equal get equal blind indexes.
type normalizer func(dst, src []byte) []byte

// Normalizer names, as written in the policy (blind_index.normalize).
//
// btrim, ascii_lower and digits compute exactly what a PostgreSQL function
// computes, for every input, so that the proxy may answer SQL asking for
// that function with an index: btrim is PostgreSQL's trim(col) and
// btrim(col) (their default set is the space alone), ascii_lower is lower()
// where the collation's ctype is C or POSIX (str_tolower's asc_tolower),
// digits is regexp_replace(col, '[^0-9]', $$$$, 'g'). trim, lower and nfc
// follow Go's Unicode tables, which no PostgreSQL function shares for
// every input (Unicode white space is not trim()'s set; lower() depends on
// the collation, and under ICU maps İ to two characters); they remain for
// the indexes declared with them in v1.
const (
	NormalizeTrim       = "trim"        // drop leading and trailing Unicode white space
	NormalizeLower      = "lower"       // Unicode simple lower-case mapping, rune by rune
	NormalizeDigits     = "digits"      // keep only the ASCII digits 0-9
	NormalizeNFC        = "nfc"         // Unicode canonical composition (NFC)
	NormalizeBtrim      = "btrim"       // drop leading and trailing spaces (U+0020) only
	NormalizeASCIILower = "ascii_lower" // map A-Z to a-z; every other byte unchanged
)

// lookupNormalizer maps a name to its function. A switch rather than a
// package-level map keeps the set immutable.
func lookupNormalizer(name string) normalizer {
	switch name {
	case NormalizeTrim:
		return normTrim
	case NormalizeLower:
		return normLower
	case NormalizeDigits:
		return normDigits
	case NormalizeNFC:
		return normNFC
	case NormalizeBtrim:
		return normBtrim
	case NormalizeASCIILower:
		return normASCIILower
	}
	return nil
}

// Normalizers returns the valid normalizer names, sorted.
func Normalizers() []string {
	return []string{NormalizeASCIILower, NormalizeBtrim, NormalizeDigits, NormalizeLower, NormalizeNFC, NormalizeTrim}
}

// ValidNormalizer reports whether name is a known normalizer.
func ValidNormalizer(name string) bool { return lookupNormalizer(name) != nil }

// compileNormalizers resolves names in order, rejecting unknown names.
func compileNormalizers(names []string) ([]normalizer, error) {
	fs := make([]normalizer, 0, len(names))
	for _, n := range names {
		f := lookupNormalizer(n)
		if f == nil {
			return nil, fmt.Errorf("unknown normalizer %q (valid: %v)", n, Normalizers())
		}
		fs = append(fs, f)
	}
	return fs, nil
}

// Normalize applies the named normalizers in order to value and appends the
// result to dst. Tools that must reproduce the proxy's index input (such as
// migrations) use it; the Indexer does the same without allocating.
func Normalize(dst, value []byte, names []string) ([]byte, error) {
	fs, err := compileNormalizers(names)
	if err != nil {
		return dst, err
	}
	cur := slices.Clone(value)
	for _, f := range fs {
		cur = f(nil, cur)
	}
	return append(dst, cur...), nil
}

func normTrim(dst, src []byte) []byte { return append(dst, bytes.TrimSpace(src)...) }

// normLower maps each rune with unicode.ToLower (Go's Unicode tables: simple,
// context-free mappings, so the result is stable for a given Go release and
// independent of locale). Invalid UTF-8 bytes are kept as they are, so that
// distinct invalid inputs never collapse into U+FFFD.
func normLower(dst, src []byte) []byte {
	for i := 0; i < len(src); {
		c := src[i]
		if c < utf8.RuneSelf {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			dst = append(dst, c)
			i++
			continue
		}
		r, size := utf8.DecodeRune(src[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, c)
			i++
			continue
		}
		dst = utf8.AppendRune(dst, unicode.ToLower(r))
		i += size
	}
	return dst
}

// normDigits keeps ASCII digits only: "123-45-6789" and "123 45 6789" index
// alike. Other scripts' digits are dropped, not translated.
func normDigits(dst, src []byte) []byte {
	for _, c := range src {
		if '0' <= c && c <= '9' {
			dst = append(dst, c)
		}
	}
	return dst
}

// normBtrim drops leading and trailing spaces (0x20) and nothing else, as
// PostgreSQL's btrim(text) does with its default characters: tabs, line
// breaks and no-break spaces stay.
func normBtrim(dst, src []byte) []byte {
	return append(dst, bytes.Trim(src, " ")...)
}

// normASCIILower maps the bytes A-Z to a-z and copies every other byte, as
// PostgreSQL's lower() does under a C or POSIX ctype (asc_tolower). In
// UTF-8 no byte of a multi-byte character is ASCII, so characters
// outside ASCII (ẞ, İ, É) stay as they are.
func normASCIILower(dst, src []byte) []byte {
	for _, c := range src {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// normNFC composes to Unicode Normalization Form C, so that "é" typed as one
// code point or as "e" + combining acute index alike.
func normNFC(dst, src []byte) []byte { return norm.NFC.Append(dst, src...) }
