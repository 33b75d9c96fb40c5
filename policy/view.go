package policy

import "fmt"

// Views over policy tables (issue 10 item 5). A view whose columns pass a
// policy table's PHI columns through unchanged (the proxy decides which
// views do, from the database's catalog) is read like a policy table whose
// PHI columns have no blind index: its rows are decrypted with the keys of
// the columns it copies, and a statement that would make PostgreSQL
// compare, order or compute on them is refused. Nothing is ever written
// through it. WithViews adds such views to a policy, for the rewriter.

// View describes one such view.
type View struct {
	Schema, Name string
	// Columns are the view's columns that copy a PHI column, in the
	// view's column order; its other columns are not listed.
	Columns []ViewColumn
}

// ViewColumn is a column of a view that copies a PHI column.
type ViewColumn struct {
	Name string
	// Base is the policy table's column whose values it returns (through
	// other views, if it reads one).
	Base *Column
}

// WithViews returns a policy that holds p's tables and, after them, a
// table for each view, marked View: its columns carry the logical type,
// storage, associated data and access rule of their Base, and no blind
// index. p is not modified. A view named like a table already in the
// policy is an error.
func (p *Policy) WithViews(views []View) (*Policy, error) {
	if len(views) == 0 {
		return p, nil
	}
	out := &Policy{byName: make(map[string]*Table, len(p.Tables())+len(views)), databases: p.Databases()}
	for _, t := range p.Tables() {
		out.tables = append(out.tables, t)
		out.byName[t.QualifiedName()] = t
	}
	for _, v := range views {
		t := &Table{Schema: v.Schema, Name: v.Name, View: true, byName: make(map[string]*Column, len(v.Columns))}
		q := t.QualifiedName()
		if _, dup := out.byName[q]; dup {
			return nil, fmt.Errorf("view %s: the policy already has a table of that name", q)
		}
		for _, vc := range v.Columns {
			b := vc.Base
			if b == nil || b.Base != nil {
				return nil, fmt.Errorf("view %s: column %s: its base must be a policy table's column", q, vc.Name)
			}
			if _, dup := t.byName[vc.Name]; dup {
				return nil, fmt.Errorf("view %s: duplicate column %s", q, vc.Name)
			}
			c := &Column{Table: t, Name: vc.Name, Type: b.Type, Storage: b.Storage, AssociatedData: b.AssociatedData, Access: b.Access, Base: b}
			t.Columns = append(t.Columns, c)
			t.byName[c.Name] = c
		}
		out.tables = append(out.tables, t)
		out.byName[q] = t
	}
	return out, nil
}

// Root returns the policy table's column that c stands for: c itself, or
// for a column of a view (WithViews), the column it copies.
func (c *Column) Root() *Column {
	if c != nil && c.Base != nil {
		return c.Base
	}
	return c
}
