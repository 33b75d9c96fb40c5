package rewrite

import (
	"github.com/novamind/phiproxy/policy"
	pg "github.com/pganalyze/pg_query_go/v6"
)

// outCol is one output column of a subquery or CTE. col is set when the
// column is a plain copy of a PHI column.
type outCol struct {
	name string
	col  *policy.Column
	ref  *pg.ColumnRef // the reference in the subquery's target list, for IN (SELECT ...)
}

// derived describes the output of a subquery or CTE: its named columns plus
// the tables whose columns a `*` brought in (names unknown without the
// catalog).
type derived struct {
	cols     []outCol
	stars    []*policy.Table
	unknown  bool // a `*` over a relation whose columns are unknown
	setop    bool
	lateRefs bool
}

// has reports whether the derived relation has a column named name:
// yes / no / maybe, and the PHI column it copies.
func (d *derived) has(a *analyzer, name string) (tri, *policy.Column) {
	for _, c := range d.cols {
		if c.name == name {
			return yes, c.col
		}
	}
	for _, t := range d.stars {
		if c := t.Column(name); c != nil {
			return yes, c
		}
		if t.IsIndexColumn(name) {
			return yes, nil
		}
	}
	if d.unknown {
		return maybe, nil
	}
	for _, t := range d.stars {
		if cols, ok := a.catalogColumns(t.Schema, t.Name); !ok {
			return maybe, nil
		} else if contains(cols, name) {
			return yes, nil
		}
	}
	return no, nil
}

type tri uint8

const (
	no tri = iota
	maybe
	yes
)

// rangeEntry is one item of a FROM list (or the target of a DML statement).
type rangeEntry struct {
	name    string        // the name references use: alias or relation name
	schema  string        // as written, "" if unqualified
	rel     string        // relation name, "" for subqueries and functions
	table   *policy.Table // the policy table, nil if none
	derived *derived      // subquery or CTE output; nil for relations
	opaque  bool          // function or other source: non-PHI columns, unknown names
}

// scope is the FROM scope of one query level.
type scope struct {
	entries []*rangeEntry
	parent  *scope
	ctes    map[string]*derived
	// outputs of the level's target list, for ORDER BY / GROUP BY by name
	// or position.
	outputs []outCol
}

func (s *scope) cte(name string) (*derived, bool) {
	for ; s != nil; s = s.parent {
		if d, ok := s.ctes[name]; ok {
			return d, true
		}
	}
	return nil, false
}

func (a *analyzer) catalogColumns(schema, table string) ([]string, bool) {
	if a.cat == nil {
		return nil, false
	}
	return a.cat.Columns(schema, table)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// has reports whether the entry has a column named name, and the PHI column
// (col) or the PHI column whose blind index it is (idx).
func (a *analyzer) entryHas(e *rangeEntry, name string) (t tri, col, idx *policy.Column) {
	switch {
	case e.table != nil:
		if c := e.table.Column(name); c != nil {
			return yes, c, nil
		}
		if c := e.table.IndexColumn(name); c != nil {
			return yes, nil, c
		}
		if cols, ok := a.catalogColumns(e.table.Schema, e.table.Name); ok {
			if contains(cols, name) {
				return yes, nil, nil
			}
			return no, nil, nil
		}
		return maybe, nil, nil
	case e.derived != nil:
		t, c := e.derived.has(a, name)
		return t, c, nil
	case e.rel != "":
		if cols, ok := a.catalogColumns(e.schema, e.rel); ok {
			if contains(cols, name) {
				return yes, nil, nil
			}
			return no, nil, nil
		}
		return maybe, nil, nil
	}
	return maybe, nil, nil
}

// ref is a resolved column reference.
type ref struct {
	col     *policy.Column // the PHI column, nil if not PHI
	idx     *policy.Column // set when the reference names col's blind-index column
	derived bool           // col reached through a subquery or CTE output
	star    bool
	entry   *rangeEntry
}

func (r ref) phi() bool { return r.col != nil }

// resolve finds what a column reference names. It fails closed: a name that
// could be a PHI column but might also be another table's column is
// rejected rather than guessed.
func (a *analyzer) resolve(cr *pg.ColumnRef, sc *scope) (ref, error) {
	names := make([]string, 0, len(cr.Fields))
	star := false
	for _, f := range cr.Fields {
		switch {
		case f.GetString_() != nil:
			names = append(names, f.GetString_().Sval)
		case f.GetAStar() != nil:
			star = true
		}
	}
	if star {
		return ref{star: true}, nil
	}
	switch len(names) {
	case 0:
		return ref{}, nil
	case 1:
		return a.resolveBare(names[0], cr.Location, sc)
	}
	col := names[len(names)-1]
	qual := names[:len(names)-1]
	if len(qual) == 3 {
		qual = qual[1:]
	}
	for s := sc; s != nil; s = s.parent {
		for _, e := range s.entries {
			if !entryMatches(e, qual) {
				continue
			}
			_, c, idx := a.entryHas(e, col)
			return ref{col: c, idx: idx, derived: e.derived != nil && c != nil, entry: e}, nil
		}
	}
	return ref{}, a.unresolved(col, cr.Location)
}

// unresolved fails closed on a reference PostgreSQL will not resolve either
// when its name is that of a PHI column of a table the statement touches.
func (a *analyzer) unresolved(name string, loc int32) error {
	if a.mentioned == nil && a.rawStmt != nil {
		a.mentioned = mentionedTables(a.rawStmt, a.pol)
		a.rawStmt = nil
	}
	for _, t := range a.mentioned {
		if c := t.Column(name); c != nil {
			return a.errorf(c, loc, "column reference %q cannot be resolved and may be PHI column %s; qualify it with its table name or alias", name, c.QualifiedName())
		}
	}
	return nil
}

func entryMatches(e *rangeEntry, qual []string) bool {
	switch len(qual) {
	case 1:
		return e.name == qual[0]
	case 2:
		if e.table != nil {
			return e.name == e.table.Name && e.table.Schema == qual[0] && e.table.Name == qual[1]
		}
		return e.name == e.rel && e.schema == qual[0] && e.rel == qual[1]
	}
	return false
}

func (a *analyzer) resolveBare(name string, loc int32, sc *scope) (ref, error) {
	var uncertain bool // an inner level might own the name
	for s := sc; s != nil; s = s.parent {
		var found []ref
		certain := false
		var phi *ref
		for _, e := range s.entries {
			t, c, idx := a.entryHas(e, name)
			if t == no {
				continue
			}
			r := ref{col: c, idx: idx, derived: e.derived != nil && c != nil, entry: e}
			found = append(found, r)
			if t == yes {
				certain = true
			}
			if c != nil || idx != nil {
				rr := r
				phi = &rr
			}
		}
		if phi != nil {
			col := phi.col
			if col == nil {
				col = phi.idx
			}
			if len(found) > 1 || uncertain {
				return ref{}, a.errorf(col, loc, "column reference %q is ambiguous: it may be PHI column %s; qualify it with its table name or alias", name, col.QualifiedName())
			}
			return *phi, nil
		}
		if certain {
			return ref{}, nil
		}
		if len(found) > 0 {
			uncertain = true
		}
	}
	if uncertain {
		return ref{}, nil
	}
	return ref{}, a.unresolved(name, loc)
}
