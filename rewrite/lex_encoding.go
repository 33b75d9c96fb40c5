package rewrite

import (
	"strings"
	"unicode/utf8"
)

// PostgreSQL does not lex the bytes a client sends: it first converts the
// whole query string from client_encoding to the database encoding
// (pq_getmsgstring → pg_client_to_server) and lexes the result. The lexer
// works on the client's bytes, so for each client encoding it must know
// which byte sequences the server's scanner will see as ASCII and which as
// one multibyte character (a "letter" to scan.l, whose ident_start,
// dolq_start and string bodies take every byte from \200 to \377).
//
// This file assumes the database encoding is UTF8 (the proxy must check the
// server_encoding ParameterStatus). The claims below were checked against a
// PostgreSQL 15 server by converting every one- and two-byte sequence of
// each encoding to UTF8 (integration/lexer_test.go keeps that check):
//
//   - ASCII bytes convert to themselves in every encoding the server offers.
//   - No byte ≥ 0x80 of a single-byte encoding, and no multibyte character
//     of SJIS, BIG5, GBK, UHC, GB18030, JOHAB and the EUC encodings,
//     converts to an ASCII character, so a multibyte character is one
//     letter to the scanner whatever its trailing bytes are.
//   - SHIFT_JIS_2004 is the exception: 0x815F converts to '\' and 0x81B0
//     to '~'. It is refused.
//   - Single-byte encodings convert injectively; SJIS (398 pairs), BIG5
//     and EUC_JP have distinct characters with one UTF8 form, so two
//     dollar-quote tags that differ on the client may be equal on the
//     server. Non-ASCII dollar-quote tags are refused in every multibyte
//     encoding but UTF8.
//
// Invalid or unmappable characters make the server refuse the whole
// statement before lexing it; the lexer reports what it can see of that
// (invalid UTF8, a truncated or malformed character of a client-only
// encoding) and leaves unmappable characters to the server, which then runs
// nothing.

// Encoding is a client_encoding the lexer knows. The zero value is UTF8.
type Encoding uint8

// The encodings PostgreSQL offers as client_encoding, by its names.
const (
	EncodingUTF8 Encoding = iota
	EncodingSQLASCII
	EncodingLATIN1
	EncodingLATIN2
	EncodingLATIN3
	EncodingLATIN4
	EncodingLATIN5
	EncodingLATIN6
	EncodingLATIN7
	EncodingLATIN8
	EncodingLATIN9
	EncodingLATIN10
	EncodingWIN1250
	EncodingWIN1251
	EncodingWIN1252
	EncodingWIN1253
	EncodingWIN1254
	EncodingWIN1255
	EncodingWIN1256
	EncodingWIN1257
	EncodingWIN1258
	EncodingWIN866
	EncodingWIN874
	EncodingKOI8R
	EncodingKOI8U
	EncodingISO8859_5
	EncodingISO8859_6
	EncodingISO8859_7
	EncodingISO8859_8
	EncodingEUCJP
	EncodingEUCCN
	EncodingEUCKR
	EncodingEUCTW
	EncodingEUCJIS2004
	EncodingSJIS
	EncodingBIG5
	EncodingGBK
	EncodingUHC
	EncodingGB18030
	EncodingJOHAB
	EncodingSHIFTJIS2004
	EncodingMULEINTERNAL
	numEncodings
)

// encodingNames are PostgreSQL's names (pg_enc2name_tbl), as the server
// reports client_encoding in ParameterStatus.
var encodingNames = [numEncodings]string{
	"UTF8", "SQL_ASCII", "LATIN1", "LATIN2", "LATIN3", "LATIN4", "LATIN5", "LATIN6", "LATIN7", "LATIN8", "LATIN9", "LATIN10",
	"WIN1250", "WIN1251", "WIN1252", "WIN1253", "WIN1254", "WIN1255", "WIN1256", "WIN1257", "WIN1258", "WIN866", "WIN874",
	"KOI8R", "KOI8U", "ISO_8859_5", "ISO_8859_6", "ISO_8859_7", "ISO_8859_8",
	"EUC_JP", "EUC_CN", "EUC_KR", "EUC_TW", "EUC_JIS_2004",
	"SJIS", "BIG5", "GBK", "UHC", "GB18030", "JOHAB", "SHIFT_JIS_2004", "MULE_INTERNAL",
}

// String returns PostgreSQL's name of e.
func (e Encoding) String() string {
	if e < numEncodings {
		return encodingNames[e]
	}
	return "unknown"
}

// EncodingByName returns the encoding PostgreSQL calls name, compared as
// the server does (clean_encoding_name: letters and digits only, any case),
// so "UTF8", "utf-8" and "Latin1" are found. Only the canonical names the
// server reports in ParameterStatus are known, not its aliases.
func EncodingByName(name string) (Encoding, bool) {
	clean := func(s string) string {
		var b strings.Builder
		for i := 0; i < len(s); i++ {
			c := s[i]
			switch {
			case c >= 'a' && c <= 'z' || c >= '0' && c <= '9':
				b.WriteByte(c)
			case c >= 'A' && c <= 'Z':
				b.WriteByte(c + 'a' - 'A')
			}
		}
		return b.String()
	}
	want := clean(name)
	for e, n := range encodingNames {
		if clean(n) == want {
			return Encoding(e), true
		}
	}
	return 0, false
}

// encodingClass says how the lexer reads an encoding's bytes.
type encodingClass uint8

const (
	// classUTF8: the bytes are what the server lexes (UTF8, and SQL_ASCII,
	// whose input the server verifies as UTF8 and does not convert).
	classUTF8 encodingClass = iota
	// classSingleByte: one byte a character; bytes ≥ 0x80 are letters.
	classSingleByte
	// classASCIISafe: multibyte, every byte of a multibyte character
	// ≥ 0x80 (EUC_*): lexed bytewise like UTF8; non-ASCII dollar tags
	// refused.
	classASCIISafe
	// classClientOnly: trailing bytes may be ASCII (SJIS, BIG5, GBK, UHC,
	// GB18030, JOHAB): lexed over whole characters (pg_encoding_mblen).
	classClientOnly
	// classRefused: cannot be lexed exactly (see the file comment).
	classRefused
)

func (e Encoding) class() encodingClass {
	switch {
	case e == EncodingUTF8 || e == EncodingSQLASCII:
		return classUTF8
	case e >= EncodingLATIN1 && e <= EncodingISO8859_8:
		return classSingleByte
	case e >= EncodingEUCJP && e <= EncodingEUCJIS2004:
		return classASCIISafe
	case e >= EncodingSJIS && e <= EncodingJOHAB:
		return classClientOnly
	}
	return classRefused
}

// Exact reports whether the lexer reproduces the server's scanner for
// client encoding e (with a UTF8 database). Lex refuses the others.
func (e Encoding) Exact() bool { return e.class() != classRefused }

// clientOnly reports whether e is one of PostgreSQL's client-only
// encodings (PG_ENCODING_IS_CLIENT_ONLY), in which backslash_quote =
// safe_encoding refuses \'.
func (e Encoding) clientOnly() bool { return e.class() == classClientOnly }

// charLen returns the length of the character of client-only encoding e
// starting at s[i], or -1 when it is not a valid character there: the
// server's pg_encoding_verifymbchar (src/common/wchar.c), which the
// conversion to UTF8 applies before lexing, refusing the statement.
func (e Encoding) charLen(s string, i int) int {
	c := s[i]
	if c < 0x80 {
		return 1
	}
	rest := len(s) - i
	switch e {
	case EncodingSJIS: // pg_sjis_mblen, pg_sjis_verifychar
		if c >= 0xa1 && c <= 0xdf {
			return 1 // half-width katakana
		}
		if rest < 2 || !(c >= 0x81 && c <= 0x9f || c >= 0xe0 && c <= 0xfc) {
			return -1
		}
		if c2 := s[i+1]; c2 >= 0x40 && c2 <= 0x7e || c2 >= 0x80 && c2 <= 0xfc {
			return 2
		}
		return -1
	case EncodingBIG5, EncodingGBK, EncodingUHC: // any non-NUL trailing byte
		if rest < 2 || s[i+1] == 0 {
			return -1
		}
		return 2
	case EncodingGB18030: // pg_gb18030_verifychar
		if rest >= 4 && s[i+1] >= 0x30 && s[i+1] <= 0x39 {
			if c >= 0x81 && c <= 0xfe && s[i+2] >= 0x81 && s[i+2] <= 0xfe && s[i+3] >= 0x30 && s[i+3] <= 0x39 {
				return 4
			}
			return -1
		}
		if rest >= 2 && c >= 0x81 && c <= 0xfe {
			if c2 := s[i+1]; c2 >= 0x40 && c2 <= 0x7e || c2 >= 0x80 && c2 <= 0xfe {
				return 2
			}
		}
		return -1
	case EncodingJOHAB: // pg_euc_mblen, then trailing bytes 0xa1..0xfe
		n := 2
		switch c {
		case 0x8e:
			n = 2
		case 0x8f:
			n = 3
		}
		if rest < n {
			return -1
		}
		for k := 1; k < n; k++ {
			if t := s[i+k]; t < 0xa1 || t > 0xfe {
				return -1
			}
		}
		return n
	}
	return 1
}

// shadowOf returns src with every byte of each multibyte character of
// client-only encoding e replaced by 0x80, so the bytewise lexer sees each
// character as the server does (a run of letter bytes) at the same
// offsets; or the offset of the first invalid character.
func shadowOf(src string, e Encoding) (string, int) {
	var b strings.Builder
	b.Grow(len(src))
	for i := 0; i < len(src); {
		n := e.charLen(src, i)
		if n < 0 {
			return "", i
		}
		if n == 1 && src[i] < 0x80 {
			b.WriteByte(src[i])
		} else {
			for range n {
				b.WriteByte(0x80)
			}
		}
		i += n
	}
	return b.String(), -1
}

// checkText returns the shadow text to lex src with under e, or the error
// the server reports for its bytes before lexing them.
func checkText(src string, e Encoding) (string, error) {
	switch e.class() {
	case classRefused:
		return "", &LexError{Code: "0A000", Message: "client_encoding " + e.String() + " cannot be lexed exactly"}
	case classUTF8:
		if !utf8.ValidString(src) {
			i := 0
			for i < len(src) {
				r, n := utf8.DecodeRuneInString(src[i:])
				if r == utf8.RuneError && n <= 1 {
					break
				}
				i += n
			}
			return "", &LexError{Code: "22021", Message: `invalid byte sequence for encoding "UTF8"`, Pos: i}
		}
	case classClientOnly:
		shadow, bad := shadowOf(src, e)
		if bad >= 0 {
			return "", &LexError{Code: "22021", Message: "invalid byte sequence for encoding " + `"` + e.String() + `"`, Pos: bad}
		}
		return shadow, nil
	}
	return src, nil
}
