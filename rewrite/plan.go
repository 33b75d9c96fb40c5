package rewrite

import "github.com/novamind/phiproxy/policy"

// This file is the contract between rewrite and proxy: what a Plan says.

// Catalog answers what the rewriter cannot learn from SQL text alone. The
// proxy implements it from the live database's catalog.
type Catalog interface {
	// Columns returns the names of the table's live (not dropped) columns
	// in attribute-number order, blind-index columns included, and false
	// when the table is unknown. Used to expand INSERT without a column
	// list and SELECT *, and to prove that an unqualified column name does
	// not belong to a non-policy table of the FROM list. schema is "" when
	// the SQL names a non-policy table unqualified (resolve it by the
	// search_path, or answer false). Answering false is always safe: the
	// rewriter then rejects what it cannot resolve.
	Columns(schema, table string) ([]string, bool)
}

// Collations is implemented by a Catalog that also knows the collations
// PostgreSQL applies to the policy's columns (the proxy's catalog does).
// Without it, SQL whose meaning depends on the collation (lower(), upper()
// and the class \D on a PHI column) is refused, and = is assumed to
// compare bytes, as under every deterministic collation.
type Collations interface {
	// Collation describes the collation of a PHI column (the stored
	// column's, which stands for the plaintext column's), or with column
	// "" the database's default collation, which parameters and literals
	// take; false when it is not known.
	Collation(schema, table, column string) (Collation, bool)
}

// Collation is what the rewriter needs to know of a collation.
type Collation struct {
	// CTypeC: the ctype is C or POSIX (libc), so lower() and upper()
	// change the ASCII letters A-Z and a-z only, and \d is [0-9]: exactly
	// what the ascii_lower and digits normalizers compute.
	CTypeC bool
	// Nondeterministic: strings that differ in bytes may compare equal
	// (an ICU collation with deterministic = false), so no blind index
	// can answer = on the column.
	Nondeterministic bool
}

// Action says what the proxy does to one value before it goes upstream.
type Action uint8

const (
	// ActionNone forwards the value unchanged: it is not PHI.
	ActionNone Action = iota
	// ActionEncrypt replaces the value by its ciphertext for Column.
	ActionEncrypt
	// ActionIndex replaces the value by its blind index in Index (nil:
	// Column's exact index): the index's normalizers are applied to the
	// value, then its HMAC is taken.
	ActionIndex
	// ActionIndexNormalized replaces the value by its blind index in Index
	// taken as the normalized form itself, with no normalizer applied
	// (lower(email) = $1 compares the lower-cased column with $1 as it
	// is): crypto's AppendNormalizedText.
	ActionIndexNormalized
)

// Param is one parameter ($n) of the rewritten SQL. Plan.Params[i] is $i+1.
type Param struct {
	// Source is the 0-based index of the client's parameter whose value
	// this is. Several rewritten parameters may share a source (an INSERT
	// sends the value encrypted and, as an added parameter, indexed).
	Source int
	Action Action
	// Column is the PHI column the value is encrypted or indexed for; nil
	// for ActionNone.
	Column *policy.Column
	// Index is which of Column's blind indexes ActionIndex and
	// ActionIndexNormalized compute; nil means Column.BlindIndex (the
	// exact index).
	Index *policy.BlindIndex
	// Array is true for `col = ANY($n)`: the value is an array and the action
	// applies to each element.
	Array bool
	// Type is the type name of an explicit cast on the parameter
	// ($1::date), "" for none, TypeUnknown for a cast the proxy cannot
	// take at face value (a type modifier, an array, a schema other than
	// pg_catalog, several casts). PostgreSQL gives an undeclared
	// parameter the type of its cast.
	Type string
	// Assign is true when the value is stored (INSERT, UPDATE SET, and
	// the blind index added beside them), false when it is compared:
	// PostgreSQL converts a value of another type differently in each.
	Assign bool
	// Target and Row: as Literal's, for the literal slots a shape's
	// parameters become (simple.go); not used for a client's parameters.
	Target, Row int
}

// TypeUnknown marks a cast the proxy does not interpret.
const TypeUnknown = "?"

// Literal types besides a cast's type name (Literal.Type).
const (
	LiteralNumber = "number" // 42, -1.5e3: typed int4, int8 or numeric by its text
	LiteralBool   = "bool"   // TRUE, FALSE
)

// Literal is a value written in the SQL text (simple protocol, psql) that
// the proxy must replace before sending.
type Literal struct {
	// Start and End are the byte range in Plan.SQL to overwrite with the
	// transformed value as a complete SQL literal (quotes included). The
	// range holds the placeholder "$0" (never the plaintext), so a template
	// sent unspliced fails at the server.
	Start, End int
	// Value is the literal's value with SQL quoting removed ('O''Brien' ->
	// O'Brien); numbers keep their text.
	Value  string
	Action Action // ActionEncrypt, ActionIndex or ActionIndexNormalized
	Column *policy.Column
	Index  *policy.BlindIndex // as Param.Index
	// Type is the type the literal has before it meets the column: ""
	// for a plain string ('...', type unknown), LiteralNumber,
	// LiteralBool, the type name of one cast on a string ('...'::date,
	// date '...'), or TypeUnknown.
	Type string
	// Assign: as Param.Assign.
	Assign bool
	// Loc is the byte offset in the client's text of the literal's
	// constant (where PostgreSQL puts the cursor of an error in reading
	// it).
	Loc int
	// Target is, for a value stored into a column (ActionEncrypt), the
	// byte offset in Plan.SQL right after that column's name in the SET
	// list or the INSERT column list, where a field selection
	// (col.field) may be written; 0 when there is none.
	Target int
	// Row is the 0-based row of INSERT … VALUES that holds the value; 0
	// elsewhere.
	Row int
}

// Kind classifies a statement for the proxy.
type Kind uint8

// Statement kinds.
const (
	KindOther Kind = iota
	KindSelect
	KindInsert
	KindUpdate
	KindDelete
	KindDDL // may change the catalog: the proxy refreshes what it knows
	KindTransaction
	// KindCopy is COPY ... FROM STDIN or TO STDOUT on a policy table, or
	// COPY (query) TO STDOUT reading one: Plan.Copy says how its rows are
	// rewritten.
	KindCopy
)

// Statement is what the plan knows about one statement of the text.
type Statement struct {
	Kind Kind
	// Tables are the policy tables the statement touches (nil for none).
	Tables []*policy.Table
	// Returning lists the RETURNING columns that are PHI (the proxy may
	// also rely on RowDescription's table OID and attribute number). A
	// `RETURNING *` is expanded from the Catalog when it knows the table.
	Returning []ResultColumn
	// Uses are the PHI columns the statement writes or compares, for audit
	// records and access checks: ActionEncrypt for a column given a value
	// (written), ActionIndex for one compared by its blind index (a
	// search: with a value, or with another column of its index group).
	// Each pair once, in order of first use. The blind index the proxy
	// adds beside a written value is part of the write, not a search.
	Uses []ColumnUse
	// Cursor is what the statement does with a SQL cursor (DECLARE,
	// FETCH, MOVE, CLOSE, DISCARD ALL), nil for other statements.
	Cursor *CursorUse
	// ChangesViews: the statement creates, replaces, renames or moves a
	// view over policy tables. What the view's columns are the proxy
	// learns only by reading the catalog once it has run: no statement
	// may be planned between the two (a later one in the same text is
	// refused; the proxy refuses those it is sent before then).
	ChangesViews bool
	// Values is where the parts of an INSERT … VALUES of several rows
	// are in Plan.SQL, nil for other statements.
	Values *InsertValues
}

// InsertValues is the layout in Plan.SQL (byte offsets) of an INSERT …
// VALUES with several rows: enough for the proxy to write another
// statement that analyzes its first rows in a WITH clause (marker.go).
type InsertValues struct {
	// Start is where the statement starts, its WITH clause included;
	// Insert, where its word INSERT starts (Start when there is no WITH
	// clause); Values, right after its word VALUES; End, where it ends.
	Start, Insert, Values, End int
	// Rows are the rows, parentheses included.
	Rows [][2]int
}

// ColumnUse is a PHI column and what a statement does with it.
type ColumnUse struct {
	Column *policy.Column
	Action Action // ActionEncrypt or ActionIndex
}

// Plan is the analysis of one SQL text (which may hold several statements).
// Plans are immutable and shared by every session through the cache.
type Plan struct {
	// SQL is the text to send upstream; for a passthrough plan, the
	// input (empty when Cache.Analyze decided by its byte scan alone: the
	// caller forwards the text it has). When Literals is not empty it is a
	// template: the proxy splices each literal's replacement into it.
	SQL string
	// Passthrough is true when no statement touches a policy table: SQL is
	// the input (or empty, see SQL), Params, Literals and Statements may be empty, and the proxy
	// forwards the message as raw bytes. Statements (with their Kind, e.g.
	// KindDDL) are filled when the text was parsed, empty when the fast
	// path decided without parsing.
	Passthrough bool
	// ClientParams is the number of parameters the client binds (the
	// highest $n in the input).
	ClientParams int
	// Params describes every parameter of SQL; len(Params) >= ClientParams
	// when any parameter is rewritten, else it may be nil.
	Params []Param
	// Literals are sorted by Start and do not overlap.
	Literals []Literal
	// Statements are in text order.
	Statements []Statement
	// Fingerprint is pg_query's fingerprint of the input, for logs (never
	// the text itself, which may hold PHI literals).
	Fingerprint string
	// Copy is set when the text is one COPY statement of KindCopy: the
	// proxy rewrites its rows (copy.go).
	Copy *Copy
	// Runs are the parts of SQL copied unchanged from the input, in
	// order: they tell where a position of an error in SQL is in the
	// client's text.
	Runs []Run
}

// Run is a part of Plan.SQL copied unchanged from the input: Len bytes at
// byte offset SQL of Plan.SQL, at byte offset Text of the input.
type Run struct{ SQL, Text, Len int }

// appendRun appends a run to runs, merged with the last one when it
// continues it.
func appendRun(runs []Run, r Run) []Run {
	if r.Len <= 0 {
		return runs
	}
	if n := len(runs); n > 0 {
		last := &runs[n-1]
		if last.SQL+last.Len == r.SQL && last.Text+last.Len == r.Text {
			last.Len += r.Len
			return runs
		}
	}
	return append(runs, r)
}

// ResultColumn is a result column that holds a PHI column's ciphertext.
type ResultColumn struct {
	Index  int // 0-based position in the statement's result row
	Column *policy.Column
}
