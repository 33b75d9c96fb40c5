package phi

import (
	"bytes"
	"encoding/binary"
	"slices"
	"strings"

	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/rewrite"
)

// catalog is what the proxy knows of one database's policy tables: their
// OIDs, attribute numbers and column types, read from the database's own
// catalog, with what makes a table unfit for service (problems). Result
// columns are named by (table OID, attribute number) in RowDescription, so
// that is how results are matched to the policy, whatever the query's
// aliases. A catalog is immutable once built.
type catalog struct {
	tables map[string]*catalogTable // by "schema.table", policy tables found in the database
	attrs  map[attrKey]attr         // PHI and blind-index columns by table OID and attnum
	// problems are, by "schema.table", why statements on a policy table
	// must be refused: the table is missing, a column is missing or of the
	// wrong type, or a second name for it exists (an alias).
	problems map[string][]Problem
	// aliasNames are the bare names (lower case) by which statements reach
	// a second name for a policy table (a view, a child table, a foreign
	// table, a function...), with the problem it is.
	aliasNames map[string]Problem
	// colls are the collations of the PHI columns by "schema.table.column",
	// and defColl the database's default collation (collation.go); known
	// is false when the rows carried no collation columns.
	colls      map[string]rewrite.Collation
	defColl    rewrite.Collation
	collsKnown bool
	// views are the decrypting views over policy tables by
	// "schema.view" (views.go), and pol the policy plans are made with:
	// the engine's, plus those views as read-only tables.
	views map[string]*catalogView
	pol   *policy.Policy
	// epoch is the database's catalog epoch (epoch.go); epochOK says its
	// triggers are installed, epochKnown that the rows had its row (the
	// catalogs unit tests write have none).
	epoch               string
	epochOK, epochKnown bool
	// secondNames is the hash of the policy tables' second names read
	// with the epoch (policy.SecondNamesSQL).
	secondNames string
	// pathAhead are the schemas the session's search_path put before
	// pg_catalog when the catalog was read (epoch.go's pathAheadSQL):
	// then nothing else the read found can be trusted.
	pathAhead string
}

var (
	_ rewrite.Catalog          = (*catalog)(nil)
	_ rewrite.Collations       = (*catalog)(nil)
	_ rewrite.GeneratedColumns = (*catalog)(nil)
)

// attrKey names a column as RowDescription does.
type attrKey struct {
	table  uint32
	attnum int16
}

// attr is a column the proxy transforms in results.
type attr struct {
	column *policy.Column // the PHI column, or the column whose blind index this is
	index  bool           // a blind-index column: hidden from results
}

// catalogTable is one policy table as the database has it.
type catalogTable struct {
	oid       uint32
	columns   []string // live columns in attnum order
	generated []string // the generated ones among them
}

// Columns implements rewrite.Catalog.
func (c *catalog) Columns(schema, table string) ([]string, bool) {
	if c == nil {
		return nil, false
	}
	t := c.tables[schema+"."+table]
	if t == nil {
		return c.viewColumns(schema + "." + table)
	}
	return t.columns, true
}

// Generated implements rewrite.GeneratedColumns.
func (c *catalog) Generated(schema, table string) ([]string, bool) {
	if c == nil {
		return nil, false
	}
	t := c.tables[schema+"."+table]
	if t == nil {
		return nil, false
	}
	return t.generated, true
}

// lookup returns what the proxy does with a result column.
func (c *catalog) lookup(table uint32, attnum int16) (attr, bool) {
	if c == nil || table == 0 {
		return attr{}, false
	}
	a, ok := c.attrs[attrKey{table, attnum}]
	return a, ok
}

// problem returns why statements on a policy table must be refused, or "".
func (c *catalog) problem(t *policy.Table) string {
	if c == nil {
		return ""
	}
	if t.View {
		return c.viewRefusal(t)
	}
	if len(c.problems) == 0 {
		return "" // the usual case: no name to build per statement
	}
	ps := c.problems[t.QualifiedName()]
	if len(ps) == 0 {
		return ""
	}
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, " ")
}

// sameTables reports whether o describes the tables ts exactly as c does:
// a plan made against c for statements on ts is then valid against o.
func (c *catalog) sameTables(o *catalog, ts []*policy.Table) bool {
	if c == o {
		return true
	}
	for _, t := range ts {
		q := t.QualifiedName()
		if t.View {
			if !c.sameView(o, q) {
				return false
			}
			continue
		}
		ct, ot := c.tables[q], o.tables[q]
		if (ct == nil) != (ot == nil) || !slices.Equal(c.problems[q], o.problems[q]) {
			return false
		}
		if ct == nil {
			continue
		}
		if ct.oid != ot.oid || !slices.Equal(ct.columns, ot.columns) || !slices.Equal(ct.generated, ot.generated) || c.defColl != o.defColl {
			return false
		}
		for _, col := range ct.columns {
			if c.colls[q+"."+col] != o.colls[q+"."+col] {
				return false
			}
		}
		for k, a := range c.attrs {
			if k.table == ct.oid && o.attrs[k] != a {
				return false
			}
		}
		for k := range o.attrs {
			if _, ok := c.attrs[k]; k.table == ot.oid && !ok {
				return false
			}
		}
	}
	return true
}

// describesPHI reports whether a RowDescription message names a PHI or
// blind-index column, reading only its table OIDs and attribute numbers.
// A malformed message answers true, leaving the full decode to refuse it.
func (c *catalog) describesPHI(msg []byte) bool {
	if c == nil || len(c.attrs) == 0 {
		return false
	}
	b := msg[5:]
	if len(b) < 2 {
		return true
	}
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	for range n {
		i := bytes.IndexByte(b, 0)
		if i < 0 || len(b) < i+1+18 {
			return true
		}
		f := b[i+1:]
		// name\0, table OID (4), attribute number (2), type OID (4),
		// type size (2), type modifier (4), format (2).
		if _, ok := c.lookup(binary.BigEndian.Uint32(f), int16(binary.BigEndian.Uint16(f[4:]))); ok {
			return true
		}
		b = f[18:]
	}
	return false
}
