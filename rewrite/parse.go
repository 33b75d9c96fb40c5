package rewrite

import (
	"sort"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// This file is the seam to pg_query: parsing, scanning and fingerprinting.
// The analyzer reads pg_query's protobuf nodes directly (translating the
// whole PostgreSQL grammar into a private AST would double the code without
// making the walk safer); everything that calls into the C library is here.

// parse returns the raw parse tree, or the *Error of syntaxError: its
// Message never echoes the text near the error (it may be a PHI literal),
// its Exact does, for the client alone.
func parse(sql string) (*pg.ParseResult, error) {
	tree, err := pg.Parse(sql)
	if err != nil {
		return nil, syntaxError(err)
	}
	return tree, nil
}

// Fingerprint returns pg_query's fingerprint of sql, "" when it cannot be
// computed (a text that does not parse). Constants do not count: texts
// that differ only in their values share it. For logs and audit records
// of texts that have no plan (a refused one), never the text itself.
func Fingerprint(sql string) string { return fingerprint(sql) }

// fingerprint returns pg_query's fingerprint, "" if it cannot be computed.
func fingerprint(sql string) string {
	fp, err := pg.Fingerprint(sql)
	if err != nil {
		return ""
	}
	return fp
}

// token is one lexical token of the input, with byte offsets.
type token struct {
	start, end int
	kind       pg.Token
	keyword    pg.KeywordKind
}

// word reports whether the token is an identifier or a keyword.
func (t token) word() bool {
	return t.kind == pg.Token_IDENT || t.kind == pg.Token_UIDENT || t.keyword != pg.KeywordKind_NO_KEYWORD
}

// tokens lexes the whole input once; the analyzer uses it to find the byte
// ranges of the nodes it splices.
type tokens []token

func scan(sql string) (tokens, error) {
	res, err := pg.Scan(sql)
	if err != nil {
		return nil, syntaxError(err)
	}
	out := make(tokens, len(res.Tokens))
	for i, t := range res.Tokens {
		out[i] = token{start: int(t.Start), end: int(t.End), kind: t.Token, keyword: t.KeywordKind}
	}
	return out, nil
}

// at returns the index of the token starting at byte offset pos, or -1.
func (ts tokens) at(pos int) int {
	i := sort.Search(len(ts), func(i int) bool { return ts[i].start >= pos })
	if i < len(ts) && ts[i].start == pos {
		return i
	}
	return -1
}

// matching returns the index of the ")" closing the "(" at index i, or -1.
func (ts tokens) matching(i int) int {
	depth := 0
	for ; i < len(ts); i++ {
		switch ts[i].kind {
		case pg.Token_ASCII_40, pg.Token_ASCII_91:
			depth++
		case pg.Token_ASCII_41, pg.Token_ASCII_93:
			depth--
			if depth == 0 {
				return i
			}
		}
	}
	return -1
}
