package phi

import (
	"slices"
	"strings"

	"github.com/novamind/phiproxy/rewrite"
)

// Marked texts: splices into a plan's SQL, and INSERT … VALUES split at a row.

// splice replaces sql[start:end] with text; target: it writes a marker's
// field after a column name; loc: text is a copy of the client's text
// from byte loc (a literal forwarded as written), -1 for none.
type splice struct {
	start, end int
	text       []byte
	target     bool
	loc        int
}

// spliced is a plan's SQL with its splices, sorted by start, being
// written from base in a buffer; pieces records what is copied.
type spliced struct {
	sql    string
	edits  []splice
	base   int
	pieces []sentPiece
	nonce  string // in the name of the WITH query of a split INSERT
}

// appendRange appends sql[from:to] with the splices that start in it,
// without the fields after column names unless targets.
func (r *spliced) appendRange(dst []byte, from, to int, targets bool) []byte {
	i, _ := slices.BinarySearchFunc(r.edits, from, func(e splice, from int) int { return e.start - from })
	prev := from
	for ; i < len(r.edits) && r.edits[i].start < to; i++ {
		e := r.edits[i]
		if e.target && !targets {
			continue
		}
		dst = r.copyPlan(dst, prev, e.start)
		if e.loc >= 0 && len(e.text) > 0 {
			r.pieces = append(r.pieces, sentPiece{sent: len(dst) - r.base, plan: e.loc, n: len(e.text), client: true})
		}
		dst = append(dst, e.text...)
		prev = e.end
	}
	return r.copyPlan(dst, prev, to)
}

// copyPlan appends sql[from:to], noting the piece.
func (r *spliced) copyPlan(dst []byte, from, to int) []byte {
	if to > from {
		r.pieces = append(r.pieces, sentPiece{sent: len(dst) - r.base, plan: from, n: to - from})
	}
	return append(dst, r.sql[from:to]...)
}

// valuesSplit is an INSERT … VALUES whose first invalid value stored by a
// field marker is in row k > 0. The column list, and with it the marker,
// applies to every row, so the statement is sent in two: its rows before
// k in an INSERT in a WITH clause, analyzed first, then an INSERT of row
// k with the marker (appendSplit).
type valuesSplit struct {
	v *rewrite.InsertValues
	k int
}

// valuesSplits returns the INSERT statements of plan to split, in text
// order.
func valuesSplits(plan *rewrite.Plan, invalid map[int]invalidLiteral) []valuesSplit {
	var out []valuesSplit
	for i := range plan.Statements {
		v := plan.Statements[i].Values
		if v == nil {
			continue
		}
		k := -1
		for j, b := range invalid {
			l := &plan.Literals[j]
			if b.kind == markField && l.Target > 0 && inRows(v, l) && (k < 0 || l.Row < k) {
				k = l.Row
			}
		}
		if k > 0 && k < len(v.Rows) {
			out = append(out, valuesSplit{v, k})
		}
	}
	return out
}

// inRows reports whether l is in the rows of v.
func inRows(v *rewrite.InsertValues, l *rewrite.Literal) bool {
	return l.Start >= v.Rows[0][0] && l.End <= v.Rows[len(v.Rows)-1][1]
}

// splitAt reports whether l is in the split row of a split statement.
func splitAt(splits []valuesSplit, l *rewrite.Literal) bool {
	for _, sp := range splits {
		if inRows(sp.v, l) && l.Row == sp.k {
			return true
		}
	}
	return false
}

// appendSplit writes the INSERT of sp as
//
//	[WITH …,] phiproxy_rows_<nonce> AS (INSERT INTO t (…) VALUES row0, …, row(k-1))
//	INSERT INTO t (…, col.marker, …) VALUES rowk, rowk
//
// which PostgreSQL analyzes in the same order up to the marker: the rows
// before k as rows of a VALUES list of several (a lone row 0 twice), then
// row k (twice, for the same reason). It fails there, so nothing of it
// runs, and what follows row k, never analyzed, is left out.
func (r *spliced) appendSplit(dst []byte, sp valuesSplit) []byte {
	v := sp.v
	if strings.TrimSpace(r.sql[v.Start:v.Insert]) == "" {
		dst = append(append(dst, r.sql[v.Start:v.Insert]...), "WITH "...)
	} else {
		dst = append(r.appendRange(dst, v.Start, v.Insert, true), ", "...)
	}
	dst = append(append(append(dst, "phiproxy_rows_"...), r.nonce...), " AS ("...)
	dst = append(r.appendRange(dst, v.Insert, v.Values, false), ' ')
	for i := 0; i < sp.k; i++ {
		if i > 0 {
			dst = append(dst, ", "...)
		}
		dst = r.appendRange(dst, v.Rows[i][0], v.Rows[i][1], false)
	}
	if sp.k == 1 {
		dst = append(dst, ", "...)
		dst = r.appendRange(dst, v.Rows[0][0], v.Rows[0][1], false)
	}
	dst = append(dst, ") "...)
	dst = append(r.appendRange(dst, v.Insert, v.Values, true), ' ')
	row := v.Rows[sp.k]
	dst = r.appendRange(dst, row[0], row[1], true)
	dst = append(dst, ", "...)
	return r.appendRange(dst, row[0], row[1], true)
}
