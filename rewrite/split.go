package rewrite

import (
	"fmt"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// Separators returns, appended to dst, the byte offsets in src of the
// semicolons after which another statement of src starts: the boundaries
// the server runs src's statements at, one after the other (a simple
// Query). toks are src's tokens (Lex). A semicolon inside parentheses
// (CREATE RULE … DO (…; …)) or inside a BEGIN ATOMIC … END body separates
// nothing; an empty statement (";;", or comments only) is no statement.
//
// The lexer is exact, the ATOMIC rule a reading of the grammar: callers
// that must not be wrong compare the result with the parser's
// (CheckSeparators).
func Separators(dst []int, src string, toks []Token) []int {
	depth, atomic := 0, 0 // parentheses; BEGIN ATOMIC … END nesting (CASE … END inside it)
	open := false         // a statement has started since the last separator
	sep := -1             // the separator before it
	prev := ""            // the previous word, lowercased when it matters
	for _, t := range toks {
		if t.Kind == TokenLineComment || t.Kind == TokenBlockComment {
			continue
		}
		word := ""
		if t.Kind == TokenIdent {
			word = strings.ToLower(src[t.Start:t.End])
		}
		if t.Kind == TokenChar {
			switch src[t.Start] {
			case '(':
				depth++
			case ')':
				depth--
			case ';':
				if depth == 0 && atomic == 0 {
					if open {
						sep, open = t.Start, false
					} else if sep >= 0 {
						sep = t.Start // an empty statement: the next one starts after this one
					}
					prev = ""
					continue
				}
			}
		}
		switch {
		case word == "atomic" && prev == "begin":
			atomic++
		case atomic > 0 && word == "case":
			atomic++
		case atomic > 0 && word == "end":
			atomic--
		}
		if !open {
			if sep >= 0 {
				dst = append(dst, sep)
			}
			open = true
		}
		prev = word
	}
	return dst
}

// CheckSeparators compares seps, Separators of src, with where
// PostgreSQL's parser (pg_query) starts src's statements after the first:
// right after a semicolon of seps, in order. It fails when they differ. A
// text that does not parse passes: the server refuses it as a whole too,
// before running any of it.
func CheckSeparators(src string, seps []int) error {
	tree, err := pg.Parse(src)
	if err != nil || len(seps) == 0 && len(tree.Stmts) <= 1 {
		return nil
	}
	if len(tree.Stmts) != len(seps)+1 {
		return fmt.Errorf("%d statements, the lexer found %d", len(tree.Stmts), len(seps)+1)
	}
	for i, raw := range tree.Stmts[1:] {
		if int(raw.StmtLocation) != seps[i]+1 {
			return fmt.Errorf("statement %d starts at byte %d, the lexer's after byte %d", i+2, raw.StmtLocation, seps[i])
		}
	}
	return nil
}

// Parses reports whether pg_query parses src.
func Parses(src string) bool {
	_, err := pg.Parse(src)
	return err == nil
}
