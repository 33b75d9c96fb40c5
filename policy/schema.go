package policy

import (
	"fmt"
	"slices"
	"strings"
)

// Step says when the DDL of a Problem runs while a table is adopted.
type Step int

const (
	// StepPrepare runs before phiproxy serves the table and before
	// `phiproxy migrate encrypt`: tables, storage types, blind-index
	// columns and their indexes, and the removal of what would refuse or
	// misread ciphertext (indexes, CHECK constraints and defaults on PHI
	// columns). The proxy refuses statements on a table whose storage
	// types or blind-index columns are wrong.
	StepPrepare Step = 1
	// StepProtect runs once every value of the table is ciphertext: the
	// CHECK constraints that make PostgreSQL itself refuse plaintext, added
	// NOT VALID (a brief lock, no scan) and then validated (a scan that
	// lets reads and writes continue). Not before: PostgreSQL checks every
	// CHECK constraint on each row an UPDATE writes, so one added while
	// rows are still plaintext would make the application's updates of
	// those rows fail.
	StepProtect Step = 2
)

// Problem is one way a database differs from what the policy needs, and
// the DDL that fixes it.
type Problem struct {
	Table  string // "schema.table"
	Column string // the PHI column concerned, "" for the table
	Step   Step
	Msg    string // what is wrong; it names objects, never values
	// DDL are the statements that fix it, in order, each complete and
	// ending in ";". Empty when only the operator can decide the fix (Msg
	// says what to do).
	DDL []string
	// Blocks says that phiproxy refuses statements on the table while the
	// problem remains (55000, with this Msg and DDL; /readyz fails): the
	// table, a PHI column or a blind-index column is missing, or a column
	// cannot hold what phiproxy stores (a storage type other than the
	// policy's, a generated PHI column). The other problems leave the
	// table served: slower lookups, plaintext PostgreSQL would accept
	// around the proxy, or defaults and constraints that fail writes.
	Blocks bool
}

// logicalPGType is the name format_type gives each logical type, the form
// Diff compares a live column's type with.
var logicalPGType = map[LogicalType]string{
	TypeText:        "text",
	TypeVarchar:     "character varying",
	TypeInt4:        "integer",
	TypeInt8:        "bigint",
	TypeNumeric:     "numeric",
	TypeBool:        "boolean",
	TypeDate:        "date",
	TypeTimestamptz: "timestamp with time zone",
	TypeUUID:        "uuid",
	TypeJSONB:       "jsonb",
	TypeBytea:       "bytea",
}

// Diff compares the policy with a database's catalog and returns what must
// change, in policy order: table by table, column by column, StepPrepare
// problems of a table before its StepProtect ones. It is pure: no I/O.
// `phiproxy schema`, `check`, `migrate` and the demo print it; the proxy
// refuses statements on a table with the Blocks problems of DiffTable,
// so that all of them give the same message and DDL.
func Diff(p *Policy, live LiveCatalog) []Problem {
	var out []Problem
	for _, t := range p.Tables() {
		out = append(out, DiffTable(t, live[t.QualifiedName()])...)
	}
	return out
}

// MissingTableMsg is the Msg of the problem of a policy table that the
// database lacks.
const MissingTableMsg = "it does not exist (or the policy misspells its name): create it with its own columns and primary key, or correct policy.tables"

// DiffTable is Diff for one policy table, as the database holds it (lt;
// nil when it has no table of that name). A caller that read only the
// table's columns (names, attnums, types, generation) gets every Blocks
// problem right; the others also need its indexes and constraints.
func DiffTable(t *Table, lt *LiveTable) []Problem {
	if lt == nil {
		return []Problem{{
			Table: t.QualifiedName(), Step: StepPrepare, Blocks: true,
			Msg: MissingTableMsg,
			DDL: CreateTableSQL(t, CreateOptions{}),
		}}
	}
	if lt.Kind != "r" {
		return []Problem{{
			Table: t.QualifiedName(), Step: StepPrepare,
			Msg: fmt.Sprintf("is a %s, not a plain table: phiproxy protects plain tables only (not views, partitioned or foreign tables)", relkindName(lt.Kind)),
		}}
	}
	var out, protect []Problem
	for _, c := range t.Columns {
		out = append(out, diffColumn(c, lt)...)
		protect = append(protect, diffCheck(c, lt)...)
	}
	return append(out, protect...)
}

// diffColumn returns the StepPrepare problems of one PHI column.
func diffColumn(c *Column, lt *LiveTable) []Problem {
	var out []Problem
	table := QuoteQualified(lt.Schema, lt.Name)
	col := QuoteIdent(c.Name)
	add := func(msg string, ddl ...string) {
		out = append(out, Problem{Table: lt.QualifiedName(), Column: c.Name, Step: StepPrepare, Msg: msg, DDL: ddl})
	}
	block := func(msg string, ddl ...string) {
		add(msg, ddl...)
		out[len(out)-1].Blocks = true
	}
	lc := lt.Column(c.Name)
	switch {
	case lc == nil:
		block(fmt.Sprintf("PHI column %s is missing", c.Name),
			fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s %s;", table, col, c.Storage))
	case lc.Generated:
		block(fmt.Sprintf("PHI column %s is generated: PostgreSQL would compute it from plaintext", c.Name),
			fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s DROP EXPRESSION;", table, col))
	}
	// A generation expression counts as a default: DROP EXPRESSION drops it.
	if lc != nil && lc.HasDefault && !lc.Generated {
		add(fmt.Sprintf("PHI column %s has a default: PostgreSQL would write it as plaintext", c.Name),
			fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s DROP DEFAULT;", table, col))
	}
	for _, ix := range lt.Indexes {
		if !slices.Contains(ix.Uses, c.Name) {
			continue
		}
		switch {
		case ix.Primary:
			add(fmt.Sprintf("PHI column %s is part of the primary key %s: encrypting it would change the key; protect another column or key the table otherwise", c.Name, ix.Constraint))
		case ix.Constraint != "":
			add(fmt.Sprintf("constraint %s on PHI column %s compares ciphertext, which differs for equal values; %s", ix.Constraint, c.Name, uniqueHint(c, ix)),
				fmt.Sprintf("ALTER TABLE %s DROP CONSTRAINT %s;", table, QuoteIdent(ix.Constraint)))
		default:
			add(fmt.Sprintf("index %s on PHI column %s would hold plaintext and cannot serve lookups on ciphertext; %s", ix.Name, c.Name, uniqueHint(c, ix)),
				fmt.Sprintf("DROP INDEX CONCURRENTLY IF EXISTS %s;", QuoteQualified(lt.Schema, ix.Name)))
		}
	}
	for _, ck := range lt.Checks {
		if ck.Name != c.CheckName() && slices.Contains(ck.Columns, c.Name) {
			add(fmt.Sprintf("CHECK constraint %s reads PHI column %s: it would judge ciphertext", ck.Name, c.Name),
				fmt.Sprintf("ALTER TABLE %s DROP CONSTRAINT %s;", table, QuoteIdent(ck.Name)))
		}
	}
	if lc != nil && !lc.Generated && lc.Type != string(c.Storage) {
		block(fmt.Sprintf("PHI column %s has type %s; phiproxy stores %s ciphertext; the cast keeps its text form for `phiproxy migrate encrypt`", c.Name, lc.Type, c.Storage),
			fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s TYPE %s USING %s;", table, col, c.Storage, usingExpr(col, lc.Type, c)))
	}
	// Every blind index: the exact one and the normalized ones.
	for _, ix := range c.Indexes() {
		bi := QuoteIdent(ix.Column)
		createIndex := fmt.Sprintf("CREATE INDEX CONCURRENTLY %s ON %s (%s);", QuoteIdent(c.IndexNameOf(ix)), table, bi)
		switch bc := lt.Column(ix.Column); {
		case bc == nil:
			// With its btree index: a problem of its own when the
			// column exists.
			block(fmt.Sprintf("blind-index column %s of %s is missing", ix.Column, c.Name),
				fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s text;", table, bi), createIndex)
			continue
		case bc.Type != "text":
			block(fmt.Sprintf("blind-index column %s of %s has type %s, not text (run `phiproxy migrate reindex` after the change)", ix.Column, c.Name, bc.Type),
				fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s TYPE text USING %s::text;", table, bi, bi))
		}
		if !hasIndexOn(lt, ix.Column) {
			var ddl []string
			for _, li := range lt.Indexes {
				if li.Name == c.IndexNameOf(ix) { // a failed CREATE INDEX CONCURRENTLY, or an index of another shape
					ddl = append(ddl, fmt.Sprintf("DROP INDEX CONCURRENTLY IF EXISTS %s;", QuoteQualified(lt.Schema, li.Name)))
				}
			}
			ddl = append(ddl, createIndex)
			add(fmt.Sprintf("blind-index column %s of %s has no valid btree index: equality lookups would scan the table", ix.Column, c.Name), ddl...)
		}
	}
	return out
}

// diffCheck returns the StepProtect problem of one PHI column: its
// ciphertext CHECK constraint missing or not validated.
func diffCheck(c *Column, lt *LiveTable) []Problem {
	table := QuoteQualified(lt.Schema, lt.Name)
	name := QuoteIdent(c.CheckName())
	p := Problem{Table: lt.QualifiedName(), Column: c.Name, Step: StepProtect}
	switch ck := lt.Check(c.CheckName()); {
	case ck == nil:
		p.Msg = fmt.Sprintf("PHI column %s has no ciphertext CHECK constraint: PostgreSQL would accept plaintext written around the proxy", c.Name)
		p.DDL = []string{
			fmt.Sprintf("ALTER TABLE %s ADD CONSTRAINT %s CHECK (%s) NOT VALID;", table, name, CiphertextCheck(QuoteIdent(c.Name), c.Storage)),
			fmt.Sprintf("ALTER TABLE %s VALIDATE CONSTRAINT %s;", table, name),
		}
	case !ck.Validated:
		p.Msg = fmt.Sprintf("ciphertext CHECK constraint %s of %s is not validated: rows written before it may hold plaintext", ck.Name, c.Name)
		p.DDL = []string{fmt.Sprintf("ALTER TABLE %s VALIDATE CONSTRAINT %s;", table, name)}
	default:
		return nil
	}
	return []Problem{p}
}

// hasIndexOn reports whether a valid btree index has col as its first key.
func hasIndexOn(lt *LiveTable, col string) bool {
	for _, ix := range lt.Indexes {
		if ix.Valid && ix.Method == "btree" && len(ix.Keys) > 0 && ix.Keys[0] == col {
			return true
		}
	}
	return false
}

// uniqueHint says what replaces a unique index or constraint on a PHI
// column.
func uniqueHint(c *Column, ix LiveIndex) string {
	if !ix.Unique {
		return "drop it"
	}
	if c.BlindIndex != nil && len(ix.Keys) == 1 {
		return fmt.Sprintf("drop it, and enforce uniqueness on the exact blind index instead (unique per value, as before): CREATE UNIQUE INDEX CONCURRENTLY ON %s (%s)",
			QuoteQualified(c.Table.Schema, c.Table.Name), QuoteIdent(c.BlindIndex.Column))
	}
	return "drop it: uniqueness of an encrypted column can only be enforced on an exact blind index (blind_index: {})"
}

// usingExpr is the USING expression that turns a column of type live into
// the column's storage holding PostgreSQL's text output of its logical
// type (for bytea, in hex), which `phiproxy migrate encrypt` canonicalizes
// as the proxy does. Casts to date and timestamptz read DateStyle and
// TimeZone: Script sets them.
func usingExpr(col, live string, c *Column) string {
	src := col
	if !sameType(live, c.Type) {
		src = fmt.Sprintf("%s::%s", col, c.Type)
	}
	var text string
	switch c.Type {
	case TypeBytea:
		text = fmt.Sprintf(`'\x' || encode(%s, 'hex')`, src)
	case TypeText, TypeVarchar:
		text = col + "::text"
	default:
		text = src + "::text"
	}
	if c.Storage == StorageBytea {
		if c.Type == TypeBytea {
			return src
		}
		return fmt.Sprintf("convert_to(%s, 'UTF8')", text)
	}
	return text
}

// sameType reports whether format_type's name for a live column is the
// logical type, with or without a type modifier ("numeric(10,2)").
func sameType(live string, t LogicalType) bool {
	name := logicalPGType[t]
	return live == name || strings.HasPrefix(live, name+"(")
}

func relkindName(k string) string {
	switch k {
	case "p":
		return "partitioned table"
	case "v":
		return "view"
	case "m":
		return "materialized view"
	case "f":
		return "foreign table"
	}
	return "relation of kind " + QuoteLiteral(k)
}
