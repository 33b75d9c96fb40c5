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

// CheckSeparators compares seps, Separators of src read under client
// encoding enc, with where PostgreSQL's parser (pg_query) starts src's
// statements after the first: right after a semicolon of seps, in order.
// It fails when they differ, and must be asked whatever the lexer found:
// a text in which the lexer found no separator may hold several
// statements. A text that does not parse passes (bare nil): the server
// refuses it as a whole too, before running any of it.
//
// bare says, for each statement of a text that parses, whether it is one
// that PostgreSQL runs without taking a snapshot and that reads or writes
// no relation's rows (transaction control, SET, SHOW, LOCK, SET
// CONSTRAINTS; PlannedStmtRequiresSnapshot in pquery.c): a statement of
// the proxy's in front of it would take the transaction's snapshot first,
// after which PostgreSQL refuses SET TRANSACTION ISOLATION LEVEL, and it
// needs no check of the catalog.
func CheckSeparators(src string, seps []int, enc Encoding) (bare []bool, err error) {
	// The server parses the text converted to UTF-8; the shadow has its
	// characters at the same offsets (shadowOf).
	shadow, err := checkText(src, enc)
	if err != nil {
		return nil, err
	}
	tree, err := pg.Parse(shadow)
	if err != nil {
		return nil, nil
	}
	if len(seps) == 0 && len(tree.Stmts) <= 1 {
		return []bool{len(tree.Stmts) == 1 && bareStatement(tree.Stmts[0].Stmt)}, nil
	}
	if len(tree.Stmts) != len(seps)+1 {
		return nil, fmt.Errorf("%d statements, the lexer found %d", len(tree.Stmts), len(seps)+1)
	}
	for i, raw := range tree.Stmts[1:] {
		if int(raw.StmtLocation) != seps[i]+1 {
			return nil, fmt.Errorf("statement %d starts at byte %d, the lexer's after byte %d", i+2, raw.StmtLocation, seps[i])
		}
	}
	bare = make([]bool, len(tree.Stmts))
	for i, raw := range tree.Stmts {
		bare[i] = bareStatement(raw.Stmt)
	}
	return bare, nil
}

// bareStatement reports whether PostgreSQL runs n without a snapshot and
// reads or writes no relation's rows with it.
func bareStatement(n *pg.Node) bool {
	switch n.GetNode().(type) {
	case *pg.Node_TransactionStmt, *pg.Node_VariableSetStmt, *pg.Node_VariableShowStmt,
		*pg.Node_LockStmt, *pg.Node_ConstraintsSetStmt:
		return true
	}
	return false
}

// Parses reports whether pg_query parses src.
func Parses(src string) bool {
	_, err := pg.Parse(src)
	return err == nil
}
