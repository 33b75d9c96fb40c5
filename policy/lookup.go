package policy

// Lookups used by rewrite and proxy. A loaded Policy is never modified, so
// these are safe for concurrent use; callers must not modify the slices
// they return.

// TablesNamed returns the policy tables whose unqualified name is name, in
// policy order. More than one means an unqualified reference is ambiguous.
func (p *Policy) TablesNamed(name string) []*Table {
	if p == nil {
		return nil
	}
	var out []*Table
	for _, t := range p.tables {
		if t.Name == name {
			out = append(out, t)
		}
	}
	return out
}

// Empty reports whether the policy protects nothing.
func (p *Policy) Empty() bool { return p == nil || len(p.tables) == 0 }

// IndexColumn returns the PHI column whose blind index is stored in the
// column named name, or nil.
func (t *Table) IndexColumn(name string) *Column {
	if t == nil {
		return nil
	}
	for _, c := range t.Columns {
		if c.BlindIndex != nil && c.BlindIndex.Column == name {
			return c
		}
	}
	return nil
}

// IsIndexColumn reports whether name is a blind-index column of t.
func (t *Table) IsIndexColumn(name string) bool { return t.IndexColumn(name) != nil }

// Indexed reports whether the column has a blind index (can be compared for
// equality).
func (c *Column) Indexed() bool { return c != nil && c.BlindIndex != nil }

// SameIndex reports whether c and o share a blind-index key, so their index
// columns can be compared (joins).
func (c *Column) SameIndex(o *Column) bool {
	return c.Indexed() && o.Indexed() && c.BlindIndex.Group == o.BlindIndex.Group
}
