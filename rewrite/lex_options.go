package rewrite

import "fmt"

// The session settings PostgreSQL's scanner reads (scan.l: the GUC
// variables standard_conforming_strings, backslash_quote and, through the
// conversion of the query string, client_encoding).

// BackslashQuote is the backslash_quote setting.
type BackslashQuote uint8

// backslash_quote values. The zero value is the server's default.
const (
	BackslashQuoteSafeEncoding BackslashQuote = iota // refuse \' in client-only encodings
	BackslashQuoteOn
	BackslashQuoteOff
)

// LexOptions are the session settings PostgreSQL's scanner depends on. The
// zero value is the server's default: standard_conforming_strings on,
// client_encoding UTF8, backslash_quote safe_encoding.
type LexOptions struct {
	// StandardStringsOff is standard_conforming_strings = off: '…' is read
	// like E'…', backslash escapes included (scan.l {xqstart}).
	StandardStringsOff bool
	// Encoding is client_encoding (the database encoding must be UTF8).
	Encoding Encoding
	// BackslashQuote only decides whether \' in a string is an error.
	BackslashQuote BackslashQuote

	// pgQueryScan makes Lex read as pg_query's Scan does, for the
	// differential tests: no "--" comment in the whitespace continuing a
	// string, and none of the grammar filter's checks of U& tokens.
	pgQueryScan bool
}

// LexOptionsFor returns the options of a session from the values of its
// standard_conforming_strings and client_encoding ParameterStatus
// messages, or an error when the lexer cannot read such a session exactly
// (an encoding it refuses or does not know, a value it does not expect).
// backslash_quote is not reported; its default, safe_encoding, is assumed:
// another value only decides whether the server refuses \' in a string.
func LexOptionsFor(standardConformingStrings, clientEncoding string) (LexOptions, error) {
	var o LexOptions
	switch standardConformingStrings {
	case "on":
	case "off":
		o.StandardStringsOff = true
	default:
		return o, fmt.Errorf("rewrite: standard_conforming_strings %q", standardConformingStrings)
	}
	e, ok := EncodingByName(clientEncoding)
	if !ok || !e.Exact() {
		return o, fmt.Errorf("rewrite: client_encoding %q cannot be lexed exactly", clientEncoding)
	}
	o.Encoding = e
	return o, nil
}
