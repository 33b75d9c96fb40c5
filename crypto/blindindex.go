package crypto

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"hash"
	"log/slog"
	"strings"
	"sync"
)

// labelBlindIndex is the HKDF info prefix of a group's blind-index key
// (exact indexes, and normalized indexes declared in the v1 form):
// info = labelBlindIndex || 0x00 || group.
const labelBlindIndex = "phiproxy/v1/blind-index"

// labelNormalizedIndex is the HKDF info prefix of the key of a normalized
// index: info = labelNormalizedIndex || 0x00 || group || 0x00 ||
// normalizer names joined by ",". Group names hold no control characters
// (the policy refuses them) and normalizer names are [a-z_], so the
// encoding is injective. The key is bound to the normalizers so that an
// exact index and a normalized one never share a key: with one key, the
// exact index of "ann@x.org" would equal the lower-cased index of
// "Ann@X.org", linking rows across the two columns.
const labelNormalizedIndex = "phiproxy/v1/normalized-index"

// Blind-index output sizes, in bits.
const (
	DefaultIndexBits = 128
	MinIndexBits     = 8
	MaxIndexBits     = 256

	maxPooledScratch = 64 << 10
)

// Indexer computes the blind index of one index group: HMAC-SHA-256, keyed by
// a key derived from the keyring's blind-index root key and the group name,
// over the normalized value, truncated to Bits.
//
// A blind index is a PRF output used for equality lookups, not a MAC: nobody
// verifies it, so truncation does not weaken authenticity. Keeping 128 bits
// (the default) makes accidental collisions negligible (about 2^-64 at 2^32
// distinct values), so the proxy never sees a false positive. Fewer bits
// deliberately add false positives and hide frequencies (CipherSweet); the
// caller must then drop non-matching rows after decryption.
//
// Columns share index values only when they share a group (joins). An
// Indexer is safe for concurrent use.
type Indexer struct {
	group     string
	normalize []string
	funcs     []normalizer
	size      int       // output bytes = bits/8
	pool      sync.Pool // *indexState, so hashers and buffers are reused
}

// indexState is the per-call scratch an Indexer reuses.
type indexState struct {
	mac  hash.Hash
	a, b []byte
	sum  [sha256.Size]byte
}

var (
	_ fmt.Stringer   = (*Indexer)(nil)
	_ slog.LogValuer = (*Indexer)(nil)
)

func newIndexer(root []byte, group string, normalize []string, bits int) (*Indexer, error) {
	return newIndexerInfo(root, group, normalize, bits, labelBlindIndex+"\x00"+group)
}

// normalizedIndexInfo is the HKDF info of a normalized index's key.
func normalizedIndexInfo(group string, normalize []string) string {
	return labelNormalizedIndex + "\x00" + group + "\x00" + strings.Join(normalize, ",")
}

func newNormalizedIndexer(root []byte, group string, normalize []string, bits int) (*Indexer, error) {
	if len(normalize) == 0 {
		return nil, fmt.Errorf("blind index group %q: a normalized index needs normalizers", group)
	}
	if strings.ContainsFunc(group, func(r rune) bool { return r < 0x20 }) {
		return nil, fmt.Errorf("blind index group %q: control character in the group name", group)
	}
	return newIndexerInfo(root, group, normalize, bits, normalizedIndexInfo(group, normalize))
}

func newIndexerInfo(root []byte, group string, normalize []string, bits int, info string) (*Indexer, error) {
	if group == "" {
		return nil, fmt.Errorf("blind index: empty group name")
	}
	if bits == 0 {
		bits = DefaultIndexBits
	}
	if bits < MinIndexBits || bits > MaxIndexBits || bits%8 != 0 {
		return nil, fmt.Errorf("blind index group %q: bits %d must be a multiple of 8 in [%d, %d]", group, bits, MinIndexBits, MaxIndexBits)
	}
	funcs, err := compileNormalizers(normalize)
	if err != nil {
		return nil, fmt.Errorf("blind index group %q: %w", group, err)
	}
	key, err := hkdf.Key(sha256.New, root, nil, info, 32)
	if err != nil {
		return nil, fmt.Errorf("blind index group %q: derive key: %w", group, err)
	}
	ix := &Indexer{
		group:     group,
		normalize: append([]string(nil), normalize...),
		funcs:     funcs,
		size:      bits / 8,
	}
	// The pool's New closure owns the only reference to the key.
	ix.pool.New = func() any { return &indexState{mac: hmac.New(sha256.New, key)} }
	return ix, nil
}

// Group returns the index group name.
func (ix *Indexer) Group() string { return ix.group }

// Bits returns the output length in bits.
func (ix *Indexer) Bits() int { return ix.size * 8 }

// Size returns the raw output length in bytes.
func (ix *Indexer) Size() int { return ix.size }

// TextSize returns the length of the text form.
func (ix *Indexer) TextSize() int { return b64.EncodedLen(ix.size) }

func (ix *Indexer) String() string {
	return fmt.Sprintf("Indexer{group: %q, normalize: [%s], bits: %d, key: [REDACTED]}", ix.group, strings.Join(ix.normalize, " "), ix.Bits())
}

// LogValue implements slog.LogValuer; it never logs the key.
func (ix *Indexer) LogValue() slog.Value {
	return slog.GroupValue(slog.String("group", ix.group), slog.Any("normalize", ix.normalize), slog.Int("bits", ix.Bits()))
}

// Append appends the raw blind index (Size bytes) of value to dst.
func (ix *Indexer) Append(dst, value []byte) []byte {
	st := ix.pool.Get().(*indexState)
	cur := value
	for i, f := range ix.funcs {
		// Alternate between the two scratch buffers so that a normalizer
		// never reads the buffer it writes.
		if i%2 == 0 {
			st.a = f(st.a[:0], cur)
			cur = st.a
		} else {
			st.b = f(st.b[:0], cur)
			cur = st.b
		}
	}
	st.mac.Reset()
	st.mac.Write(cur)
	sum := st.mac.Sum(st.sum[:0])
	dst = append(dst, sum[:ix.size]...)
	clear(st.a)
	clear(st.b)
	if cap(st.a) > maxPooledScratch || cap(st.b) > maxPooledScratch {
		st.a, st.b = nil, nil // don't pin one huge value's buffers
	}
	ix.pool.Put(st)
	return dst
}

// AppendText appends the text form of the blind index (unpadded standard
// base64 of Append's output), as stored in the sibling `_bidx` text column.
func (ix *Indexer) AppendText(dst, value []byte) []byte {
	var raw [MaxIndexBits / 8]byte
	idx := ix.Append(raw[:0], value)
	return b64.AppendEncode(dst, idx)
}

// AppendNormalized appends the raw blind index of a value that already is
// a normalized form: the normalizers are not applied. It answers
// `lower(email) = $1`, where the value is compared with the normalized
// form as it is; a value no normalized form can equal (upper-case, say)
// then matches nothing, as in PostgreSQL.
func (ix *Indexer) AppendNormalized(dst, normalized []byte) []byte {
	st := ix.pool.Get().(*indexState)
	st.mac.Reset()
	st.mac.Write(normalized)
	sum := st.mac.Sum(st.sum[:0])
	dst = append(dst, sum[:ix.size]...)
	ix.pool.Put(st)
	return dst
}

// AppendNormalizedText is AppendNormalized in the text form.
func (ix *Indexer) AppendNormalizedText(dst, normalized []byte) []byte {
	var raw [MaxIndexBits / 8]byte
	idx := ix.AppendNormalized(raw[:0], normalized)
	return b64.AppendEncode(dst, idx)
}
