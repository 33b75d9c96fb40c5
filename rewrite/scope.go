package rewrite

import (
	"github.com/novamind/phiproxy/policy"
	pg "github.com/pganalyze/pg_query_go/v6"
)

// outCol is one output column of a subquery or CTE. col is set when the
// column is a plain copy of a PHI column, idx when it is a copy of one's
// blind-index column (a `*` over a policy table brings those in too).
type outCol struct {
	name string
	col  *policy.Column
	idx  *policy.Column
	ref  *pg.ColumnRef // the reference in the subquery's target list, for IN (SELECT ...)
}

// derived describes the output of a subquery or CTE: its named columns plus
// the tables whose columns a `*` brought in (names unknown without the
// catalog).
type derived struct {
	cols    []outCol
	stars   []*policy.Table
	unknown bool // a `*` over a relation whose columns are unknown
	setop   bool
}

// has reports whether the derived relation has a column named name:
// yes / no / maybe, and the PHI column it copies (col) or whose blind
// index it copies (idx).
func (d *derived) has(a *analyzer, name string) (t tri, col, idx *policy.Column) {
	for _, c := range d.cols {
		if c.name == name {
			return yes, c.col, c.idx
		}
	}
	for _, t := range d.stars {
		if c := t.Column(name); c != nil {
			return yes, c, nil
		}
		if c := t.IndexColumn(name); c != nil {
			return yes, nil, c
		}
	}
	if d.unknown {
		return maybe, nil, nil
	}
	for _, t := range d.stars {
		if cols, ok := a.catalogColumns(t.Schema, t.Name); !ok {
			return maybe, nil, nil
		} else if contains(cols, name) {
			return yes, nil, nil
		}
	}
	return no, nil, nil
}

// ordered reports whether cols is the derived relation's complete output,
// in order: no `*` left unexpanded. Only then can an alias list be mapped
// onto it by position.
func (d *derived) ordered() bool { return len(d.stars) == 0 && !d.unknown }

// carriesPHI reports whether any output column may hold a PHI column's
// ciphertext or blind index.
func (d *derived) carriesPHI() bool {
	if d.firstPHI() != nil {
		return true
	}
	for _, c := range d.cols {
		if c.idx != nil {
			return true
		}
	}
	return false
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
	// colAlias maps the names of a column alias list (FROM patients AS
	// p(a, b)) to the policy table's columns; renamed holds the real names
	// it hides. Both nil without an alias list.
	colAlias map[string]string
	renamed  map[string]bool
}

// carriesPHI reports whether a whole-row reference to e could contain a
// PHI column's ciphertext or blind index.
func (e *rangeEntry) carriesPHI() bool {
	return e.table != nil || (e.derived != nil && e.derived.carriesPHI())
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
		if real, ok := e.colAlias[name]; ok {
			name = real
		} else if e.renamed[name] {
			return no, nil, nil // hidden by the alias list
		}
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
		return e.derived.has(a, name)
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
			if err := a.hidden(e, col, cr.Location); err != nil {
				return ref{}, err
			}
			_, c, idx := a.entryHas(e, col)
			return ref{col: c, idx: idx, derived: e.derived != nil && (c != nil || idx != nil), entry: e}, nil
		}
	}
	// schema.table names no column: it is a whole-row reference.
	if e := wholeRowEntry(sc, names); e != nil {
		return ref{}, a.wholeRow(e, cr.Location)
	}
	return ref{}, a.unresolved(col, cr.Location)
}

// wholeRowEntry returns the range entry that qual names as a relation, when
// a whole-row reference to it could hold PHI; nil otherwise.
func wholeRowEntry(sc *scope, qual []string) *rangeEntry {
	if len(qual) == 3 {
		qual = qual[1:]
	}
	for s := sc; s != nil; s = s.parent {
		for _, e := range s.entries {
			if entryMatches(e, qual) && e.carriesPHI() {
				return e
			}
		}
	}
	return nil
}

// wholeRow rejects a whole-row reference (p, p.*, (p).col, city(p),
// p::text, to_jsonb(p)) to a relation that holds PHI: the row value
// carries ciphertext, so any comparison, cast or function on it computes
// on ciphertext, and a result would return it undecrypted inside a record.
// Only a top-level SELECT or RETURNING `*` / `p.*`, which the proxy expands
// column by column, is supported.
func (a *analyzer) wholeRow(e *rangeEntry, loc int32) error {
	var t *policy.Table
	switch {
	case e.table != nil:
		t = e.table
	case e.derived != nil:
		if c := e.derived.firstPHI(); c != nil {
			t = c.Table
		}
		for _, c := range e.derived.cols {
			if t == nil && c.idx != nil {
				t = c.idx.Table
			}
		}
	}
	name := e.name
	if name == "" {
		name = e.rel
	}
	what := "a relation holding PHI columns"
	if t != nil {
		what = "PHI table " + t.QualifiedName()
	}
	err := a.errorf(nil, loc, "a whole-row reference to %s (%s) is not supported: the row holds ciphertext", quoteIdent(name), what).
		hint("Name the columns instead: comparing, casting or passing the row to a function would compute on ciphertext, and returning it would return ciphertext inside a record. Supported: SELECT " + quoteIdent(name) + ".* or * at the top level of a SELECT or RETURNING list.")
	if t != nil {
		err.Table = t.QualifiedName()
	}
	return err
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

// hidden rejects a reference by its real name to a PHI or blind-index
// column that e's alias list renamed: PostgreSQL no longer knows the name
// there, and guessing what it means could send the value in plaintext.
func (a *analyzer) hidden(e *rangeEntry, name string, loc int32) error {
	if !e.renamed[name] {
		return nil
	}
	if _, alias := e.colAlias[name]; alias {
		return nil // the name now stands for another column
	}
	c := e.table.Column(name)
	if c == nil {
		c = e.table.IndexColumn(name)
	}
	if c == nil {
		return nil
	}
	return a.errorf(c, loc, "column %s of %s is renamed by the alias list of %s: refer to it by its alias", name, c.Table.QualifiedName(), quoteIdent(e.name))
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
			if err := a.hidden(e, name, loc); err != nil {
				return ref{}, err
			}
			t, c, idx := a.entryHas(e, name)
			if t == no {
				continue
			}
			r := ref{col: c, idx: idx, derived: e.derived != nil && (c != nil || idx != nil), entry: e}
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
	// No column is certainly named so: PostgreSQL then reads the name as
	// a whole-row reference to a relation of the FROM list.
	if e := wholeRowEntry(sc, []string{name}); e != nil {
		return ref{}, a.wholeRow(e, loc)
	}
	if uncertain {
		return ref{}, nil
	}
	return ref{}, a.unresolved(name, loc)
}
