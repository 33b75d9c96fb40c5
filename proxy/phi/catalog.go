package phi

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgtype"

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

// The catalog query returns rows of six text columns, then the
// collationWidth columns of collationColumns, then the typeWidth columns
// of typeColumns. The first says what a row is: a column of a policy
// table (its OID, then schema, table, attnum, name, type OID, collation,
// type name, generated), or one of these markers (the other columns
// empty).
const (
	rowRelkind = "relkind" // table OID, schema, table, relkind, ""
	// rowGenerated: table OID, schema, table, a generated column's name, ""
	rowGenerated = "generated"
	rowAlias     = "alias" // table OID, alias kind, identity, extra, bare name
	// rowRemote: policy table's schema and name, the foreign table's
	// identity, "", its bare name (remoteAliasSQL)
	rowRemote = "remote"
)

// typeColumns are the catalog query's last output columns, per attribute:
// its type as format_type names it and whether it is generated (read
// through to_jsonb: attgenerated is new in PostgreSQL 12). They are what
// policy.DiffTable compares (buildCatalog).
const typeColumns = `pg_catalog.format_type(a.atttypid, a.atttypmod)::pg_catalog.text AS a9,` +
	` (coalesce(pg_catalog.to_jsonb(a) ->> 'attgenerated', '') <> '')::pg_catalog.text AS a10`

// typeWidth is how many columns typeColumns adds.
const typeWidth = 2

// catalogWidth is the width of the catalog query's rows.
const catalogWidth = 6 + collationWidth + typeWidth

// policyTablesIn is the SQL list of the policy tables' (schema, name).
func policyTablesIn(pol *policy.Policy) string {
	var b strings.Builder
	b.WriteString("(")
	for i, t := range pol.Tables() {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "(%s, %s)", quoteLiteral(t.Schema), quoteLiteral(t.Name))
	}
	if len(pol.Tables()) == 0 {
		b.WriteString("(NULL, NULL)")
	}
	b.WriteString(")")
	return b.String()
}

// policyTablesCTE starts the catalog queries with t, the policy's
// relations.
func policyTablesCTE(pol *policy.Policy) string {
	return `WITH t AS (SELECT c.oid, n.nspname, c.relname, c.relkind, c.reltype, c.relispartition` +
		` FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace` +
		` WHERE (n.nspname, c.relname) IN ` + policyTablesIn(pol) + `)`
}

// catalogQuery returns the query that reads the policy tables' columns,
// policy relations that are not tables, and, with
// aliases, the relations and objects that give a policy table a second
// name. It names only tables and columns, never values, so it may be
// logged.
func catalogQuery(pol *policy.Policy, aliases bool) string {
	const txt = `::pg_catalog.text`
	var b strings.Builder
	b.WriteString(policyTablesCTE(pol))
	if aliases {
		b.WriteString(viewsCTE + reachSQL)
	}
	b.WriteString(` SELECT a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10 FROM (`)
	// Columns.
	b.WriteString(`SELECT 0 AS k, t.oid::pg_catalog.int8 AS k1, a.attnum::pg_catalog.int8 AS k2,` +
		` t.oid` + txt + ` AS a0, t.nspname` + txt + ` AS a1, t.relname` + txt + ` AS a2, a.attnum` + txt + ` AS a3, a.attname` + txt + ` AS a4, a.atttypid` + txt + ` AS a5, ` + collationColumns + `, ` + typeColumns +
		` FROM t JOIN pg_catalog.pg_attribute a ON a.attrelid = t.oid` + collationJoins + ` WHERE a.attnum > 0 AND NOT a.attisdropped`)
	// Policy relations that are not tables.
	b.WriteString(` UNION ALL SELECT 1, t.oid::pg_catalog.int8, 0, '` + rowRelkind + `', t.oid` + txt + `, t.nspname` + txt + `, t.relname` + txt + `, t.relkind` + txt + `, '', '', '', '', '', ''` +
		` FROM t WHERE t.relkind NOT IN ('r', 'p')`)
	// Whether views read them: then viewsQuery reads those (views.go).
	b.WriteString(hasViewsSQL)
	// Generated columns, which COPY without a column list leaves out
	// (attgenerated is read through to_jsonb: PostgreSQL 11 lacks it).
	b.WriteString(` UNION ALL SELECT 2, t.oid::pg_catalog.int8, a.attnum::pg_catalog.int8, '` + rowGenerated + `', t.oid` + txt + `, t.nspname` + txt + `, t.relname` + txt + `, a.attname` + txt + `, '', '', '', '', '', ''` +
		` FROM t JOIN pg_catalog.pg_attribute a ON a.attrelid = t.oid WHERE a.attnum > 0 AND NOT a.attisdropped AND coalesce(pg_catalog.to_jsonb(a) ->> 'attgenerated', '') <> ''`)
	if aliases {
		b.WriteString(aliasSQL)
		b.WriteString(remoteAliasSQL(pol))
	}
	b.WriteString(epochSQL)
	b.WriteString(`) u ORDER BY k, k1, k2, a0, a1, a2, a3, a4`)
	return b.String()
}

// buildCatalog builds a catalog from the text-format rows of catalogQuery
// (a row of six or 6+collationWidth columns whose first is a number is a
// column row without type names: the form tests write). A policy table's
// problems are policy.DiffTable's Blocks problems, on what the rows say
// of its columns, so that the 55000 refusal, /readyz and `phiproxy
// check` give the message and DDL that `phiproxy schema` prints; then
// relations that are not tables, and second names.
func buildCatalog(pol *policy.Policy, rows [][][]byte) (*catalog, error) {
	cat := &catalog{tables: map[string]*catalogTable{}, attrs: map[attrKey]attr{}, problems: map[string][]Problem{}, colls: map[string]rewrite.Collation{}}
	live := map[*catalogTable]*policy.LiveTable{}
	byOID := map[uint32]*policy.Table{}
	var aliases, remotes, relkinds, generated [][][]byte
	views := map[uint32]*catalogView{}
	for _, r := range rows {
		if len(r) != 6 && len(r) != 6+collationWidth && len(r) != catalogWidth {
			return nil, fmt.Errorf("catalog row has %d columns, want %d", len(r), catalogWidth)
		}
		switch string(r[0]) {
		case rowHasViews:
			continue
		case rowView, rowViewCol, rowViewDep:
			if err := readViewRow(views, r); err != nil {
				return nil, err
			}
			continue
		case rowAlias:
			aliases = append(aliases, r)
			continue
		case rowRemote:
			remotes = append(remotes, r)
			continue
		case rowEpoch:
			cat.readEpochRow(r)
			continue
		case rowRelkind:
			relkinds = append(relkinds, r)
			continue
		case rowGenerated:
			generated = append(generated, r)
			continue
		}
		oid, err1 := strconv.ParseUint(string(r[0]), 10, 32)
		attnum, err2 := strconv.ParseInt(string(r[3]), 10, 16)
		typ, err3 := strconv.ParseUint(string(r[5]), 10, 32)
		if err1 != nil || err2 != nil || err3 != nil {
			return nil, fmt.Errorf("catalog row: malformed number")
		}
		name := string(r[1]) + "." + string(r[2])
		if len(r) > 6 {
			cat.addCollation(name+"."+string(r[4]), r[6:6+collationWidth])
		}
		t := cat.tables[name]
		if t == nil {
			t = &catalogTable{oid: uint32(oid)}
			cat.tables[name] = t
			// Kind "r": relations that are not tables are relkind rows.
			live[t] = &policy.LiveTable{Schema: string(r[1]), Name: string(r[2]), OID: t.oid, Kind: "r"}
			if pt := pol.Table(string(r[1]), string(r[2])); pt != nil {
				byOID[t.oid] = pt
			}
		}
		lc := policy.LiveColumn{Name: string(r[4]), Attnum: int16(attnum), TypeOID: uint32(typ), Type: typeNameOf(uint32(typ))}
		if len(r) == catalogWidth {
			lc.Type, lc.Generated = string(r[6+collationWidth]), string(r[7+collationWidth]) == "true"
		}
		live[t].Columns = append(live[t].Columns, lc)
	}
	for t, lt := range live {
		slices.SortFunc(lt.Columns, func(a, b policy.LiveColumn) int { return int(a.Attnum) - int(b.Attnum) })
		for _, c := range lt.Columns {
			t.columns = append(t.columns, c.Name)
		}
	}
	for _, pt := range pol.Tables() {
		t := cat.tables[pt.QualifiedName()]
		var lt *policy.LiveTable
		if t != nil {
			lt = live[t]
		}
		for _, p := range policy.DiffTable(pt, lt) {
			if p.Blocks {
				cat.problems[pt.QualifiedName()] = append(cat.problems[pt.QualifiedName()], policyProblem(p))
			}
		}
		if t == nil {
			continue
		}
		for _, pc := range pt.Columns {
			c := lt.Column(pc.Name)
			if c == nil || c.Generated || c.TypeOID != storageOID(pc.Storage) {
				continue // a Blocks problem
			}
			cat.attrs[attrKey{t.oid, c.Attnum}] = attr{column: pc}
			// Every blind index of the column (exact and normalized) is
			// written with each value and hidden from results.
			for _, bi := range pc.Indexes() {
				if ic := lt.Column(bi.Column); ic != nil && ic.TypeOID == pgtype.TextOID {
					cat.attrs[attrKey{t.oid, ic.Attnum}] = attr{column: pc, index: true}
				}
			}
		}
	}
	for _, r := range generated {
		if t := cat.tables[string(r[2])+"."+string(r[3])]; t != nil {
			t.generated = append(t.generated, string(r[4]))
		}
	}
	for _, r := range relkinds {
		pt := pol.Table(string(r[2]), string(r[3]))
		if pt == nil {
			continue
		}
		cat.problems[pt.QualifiedName()] = append(cat.problems[pt.QualifiedName()], Problem{Table: pt.QualifiedName(), Kind: ProblemRelkind,
			Message: fmt.Sprintf("%s is a %s, not a table: the policy must name the table that stores the values", pt.QualifiedName(), relkindName(string(r[4])))})
	}
	if err := cat.classifyViews(pol, views, byOID); err != nil {
		return nil, err
	}
	for _, r := range aliases {
		oid, err := strconv.ParseUint(string(r[1]), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("catalog row: malformed number")
		}
		pt := byOID[uint32(oid)]
		if pt == nil {
			continue
		}
		cat.addAlias(pol, pt, aliasProblem(pt, string(r[2]), string(r[3]), string(r[4])), string(r[5]))
	}
	for _, r := range remotes {
		if pt := pol.Table(string(r[1]), string(r[2])); pt != nil {
			cat.addAlias(pol, pt, aliasProblem(pt, "foreign", string(r[3]), ""), string(r[5]))
		}
	}
	if cat.pathAhead != "" {
		for _, pt := range pol.Tables() {
			cat.problems[pt.QualifiedName()] = append(cat.problems[pt.QualifiedName()],
				Problem{Table: pt.QualifiedName(), Kind: ProblemSearchPath, Message: searchPathMessage(cat.pathAhead)})
		}
	}
	if cat.epochKnown && !cat.epochOK {
		for _, pt := range pol.Tables() {
			if cat.tables[pt.QualifiedName()] != nil {
				cat.problems[pt.QualifiedName()] = append(cat.problems[pt.QualifiedName()], epochProblem(pt))
			}
		}
	}
	return cat, nil
}

// addAlias notes p, a second name of policy table pt, reached by
// statements under the bare name name ("" for none).
func (c *catalog) addAlias(pol *policy.Policy, pt *policy.Table, p Problem, name string) {
	if !slices.Contains(c.problems[pt.QualifiedName()], p) {
		c.problems[pt.QualifiedName()] = append(c.problems[pt.QualifiedName()], p)
	}
	if lower := strings.ToLower(name); lower != "" && len(pol.TablesNamed(name)) == 0 {
		if c.aliasNames == nil {
			c.aliasNames = map[string]Problem{}
		}
		if _, dup := c.aliasNames[lower]; !dup {
			c.aliasNames[lower] = p
		}
	}
}

// typeNameOf names a type OID as format_type does, for catalog rows that
// carry no type name (tests' rows): the storage types, and the OID of
// others.
func typeNameOf(oid uint32) string {
	switch oid {
	case pgtype.TextOID:
		return "text"
	case pgtype.ByteaOID:
		return "bytea"
	case pgtype.Int4OID:
		return "integer"
	}
	return "type " + strconv.FormatUint(uint64(oid), 10)
}

// qualified is a policy table's name for DDL.
func qualified(t *policy.Table) string {
	return rewrite.QuoteIdent(t.Schema) + "." + rewrite.QuoteIdent(t.Name)
}

// relkindName names a pg_class.relkind.
func relkindName(k string) string {
	switch k {
	case "v":
		return "view"
	case "m":
		return "materialized view"
	case "f":
		return "foreign table"
	case "S":
		return "sequence"
	case "i", "I":
		return "index"
	case "c":
		return "composite type"
	}
	return "relation of kind " + k
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
