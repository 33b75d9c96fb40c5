package phi

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/rewrite"
)

// catalog is what the proxy knows of one database's policy tables: their
// OIDs, attribute numbers and column types, read from the database's own
// catalog. RowDescription names result columns by (table OID, attribute
// number), so that is how results are matched to the policy, whatever the
// query's aliases. A catalog is immutable once built.
type catalog struct {
	tables map[string]*catalogTable // by "schema.table", policy tables found in the database
	attrs  map[attrKey]attr         // PHI and blind-index columns by table OID and attnum
	// colls are the collations of the PHI columns by "schema.table.column",
	// and defColl the database's default collation (collation.go); known
	// is false when the rows carried no collation columns.
	colls      map[string]rewrite.Collation
	defColl    rewrite.Collation
	collsKnown bool
}

var (
	_ rewrite.Catalog    = (*catalog)(nil)
	_ rewrite.Collations = (*catalog)(nil)
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
	oid     uint32
	columns []string // live columns in attnum order
	// problem, when not empty, says why statements on this table must be
	// refused (a PHI column of the wrong type, a missing blind-index
	// column) and which DDL fixes it.
	problem string
}

// catalogQuery returns the query that reads the policy tables' columns,
// with what the rewriter needs to know of their collations
// (collationColumns). It names only tables and columns, never values, so
// it may be logged.
func catalogQuery(pol *policy.Policy) string {
	var b strings.Builder
	b.WriteString(`SELECT c.oid, n.nspname, c.relname, a.attnum, a.attname, a.atttypid, ` + collationColumns +
		` FROM pg_catalog.pg_class c` +
		` JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace` +
		` JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid` +
		collationJoins +
		` WHERE a.attnum > 0 AND NOT a.attisdropped AND (n.nspname, c.relname) IN (`)
	for i, t := range pol.Tables() {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "(%s, %s)", quoteLiteral(t.Schema), quoteLiteral(t.Name))
	}
	if len(pol.Tables()) == 0 {
		b.WriteString("(NULL, NULL)")
	}
	b.WriteString(") ORDER BY c.oid, a.attnum")
	return b.String()
}

// buildCatalog builds a catalog from the text-format rows of catalogQuery.
func buildCatalog(pol *policy.Policy, rows [][][]byte) (*catalog, error) {
	type column struct {
		attnum int16
		typ    uint32
	}
	cat := &catalog{tables: map[string]*catalogTable{}, attrs: map[attrKey]attr{}, colls: map[string]rewrite.Collation{}}
	cols := map[*catalogTable]map[string]column{}
	for _, r := range rows {
		if len(r) != 6 && len(r) != 6+collationWidth {
			return nil, fmt.Errorf("catalog row has %d columns, want %d", len(r), 6+collationWidth)
		}
		if len(r) > 6 {
			cat.addCollation(string(r[1])+"."+string(r[2])+"."+string(r[4]), r[6:])
		}
		oid, err1 := strconv.ParseUint(string(r[0]), 10, 32)
		attnum, err2 := strconv.ParseInt(string(r[3]), 10, 16)
		typ, err3 := strconv.ParseUint(string(r[5]), 10, 32)
		if err1 != nil || err2 != nil || err3 != nil {
			return nil, fmt.Errorf("catalog row: malformed number")
		}
		name := string(r[1]) + "." + string(r[2])
		t := cat.tables[name]
		if t == nil {
			t = &catalogTable{oid: uint32(oid)}
			cat.tables[name] = t
			cols[t] = map[string]column{}
		}
		t.columns = append(t.columns, string(r[4]))
		cols[t][string(r[4])] = column{attnum: int16(attnum), typ: uint32(typ)}
	}
	for _, pt := range pol.Tables() {
		t := cat.tables[pt.QualifiedName()]
		if t == nil {
			continue // the server reports the missing table itself
		}
		var problems []string
		for _, pc := range pt.Columns {
			c, ok := cols[t][pc.Name]
			if !ok {
				problems = append(problems, fmt.Sprintf("column %s is missing: ALTER TABLE %s ADD COLUMN %s %s;",
					pc.QualifiedName(), pt.QualifiedName(), pc.Name, pc.Storage))
				continue
			}
			if c.typ != storageOID(pc.Storage) {
				problems = append(problems, fmt.Sprintf("column %s must have type %s to hold ciphertext: ALTER TABLE %s ALTER COLUMN %s TYPE %s; (then phiproxy migrate encrypt)",
					pc.QualifiedName(), pc.Storage, pt.QualifiedName(), pc.Name, pc.Storage))
				continue
			}
			cat.attrs[attrKey{t.oid, c.attnum}] = attr{column: pc}
			// Every blind index of the column (exact and normalized) is
			// written with each value and hidden from results.
			for _, bi := range pc.Indexes() {
				ic, ok := cols[t][bi.Column]
				switch {
				case !ok:
					problems = append(problems, fmt.Sprintf("blind-index column %s.%s is missing: ALTER TABLE %s ADD COLUMN %s text; CREATE INDEX ON %s (%s);",
						pt.QualifiedName(), bi.Column, pt.QualifiedName(), bi.Column, pt.QualifiedName(), bi.Column))
				case ic.typ != pgtype.TextOID:
					problems = append(problems, fmt.Sprintf("blind-index column %s.%s must have type text: ALTER TABLE %s ALTER COLUMN %s TYPE text;",
						pt.QualifiedName(), bi.Column, pt.QualifiedName(), bi.Column))
				default:
					cat.attrs[attrKey{t.oid, ic.attnum}] = attr{column: pc, index: true}
				}
			}
		}
		t.problem = strings.Join(problems, " ")
	}
	return cat, nil
}

// Columns implements rewrite.Catalog.
func (c *catalog) Columns(schema, table string) ([]string, bool) {
	if c == nil {
		return nil, false
	}
	t := c.tables[schema+"."+table]
	if t == nil {
		return nil, false
	}
	return t.columns, true
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
	if ct := c.tables[t.QualifiedName()]; ct != nil {
		return ct.problem
	}
	return ""
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
