package policy

import "slices"

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

// IndexColumn returns the PHI column whose blind index (exact or
// normalized) is stored in the column named name, or nil.
func (t *Table) IndexColumn(name string) *Column {
	c, _ := t.Index(name)
	return c
}

// Index returns the PHI column and the blind index stored in the column
// named name, or nils.
func (t *Table) Index(name string) (*Column, *BlindIndex) {
	if t == nil {
		return nil, nil
	}
	for _, c := range t.Columns {
		for _, ix := range c.Indexes() {
			if ix.Column == name {
				return c, ix
			}
		}
	}
	return nil, nil
}

// IsIndexColumn reports whether name is a blind-index column of t.
func (t *Table) IsIndexColumn(name string) bool { return t.IndexColumn(name) != nil }

// Indexes returns every blind index of the column, the exact one first and
// then the normalized ones in policy order: the sibling columns written
// with each value. The slice is shared: do not modify it.
func (c *Column) Indexes() []*BlindIndex {
	if c == nil {
		return nil
	}
	return c.indexes
}

// Indexed reports whether the column has an exact blind index, so that it
// can be compared for equality.
func (c *Column) Indexed() bool { return c != nil && c.BlindIndex != nil }

// SearchIndex returns the normalized index named name, or nil.
func (c *Column) SearchIndex(name string) *BlindIndex {
	if c == nil {
		return nil
	}
	for _, ix := range c.Search {
		if ix.Name == name {
			return ix
		}
	}
	return nil
}

// SameIndex reports whether c and o share an exact blind-index key, so
// their exact index columns can be compared (joins).
func (c *Column) SameIndex(o *Column) bool {
	return c.Indexed() && o.Indexed() && c.BlindIndex.Group == o.BlindIndex.Group
}

// Databases returns the databases the policy names in policy.databases, in
// policy order; nil when it names none, and then it governs every database
// (Governs).
func (p *Policy) Databases() []string {
	if p == nil {
		return nil
	}
	return p.databases
}

// Governs reports whether the policy applies to sessions on database db
// (the name a client gives in its startup message). A policy that lists
// databases governs exactly those; one that lists none governs every
// database, so that forgetting the list can only refuse statements (a
// policy table missing in some database), never let PHI through in
// plaintext. An empty policy governs nothing.
//
// Names are compared as PostgreSQL looks them up: it cuts the startup
// message's name to maxNameBytes bytes (listed names are no longer), so a
// governed name with bytes appended still names it.
func (p *Policy) Governs(db string) bool {
	if p.Empty() {
		return false
	}
	if p.databases == nil {
		return true
	}
	return slices.Contains(p.databases, cutName(db))
}

// maxNameBytes is the longest name PostgreSQL keeps (NAMEDATALEN - 1).
const maxNameBytes = 63

// cutName is name as PostgreSQL cuts a startup message's database name:
// to maxNameBytes bytes, whatever the characters.
func cutName(name string) string {
	if len(name) > maxNameBytes {
		return name[:maxNameBytes]
	}
	return name
}
