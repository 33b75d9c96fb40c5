package phi

import (
	"fmt"
	"strings"

	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/rewrite"
)

// Problem is one reason a governed database cannot serve a policy table:
// statements on it are refused (55000) with Problem.String, /readyz says
// not ready, and `phiproxy check` lists it. Every text names tables,
// columns and objects, never values.
type Problem struct {
	// Table is the policy table, "schema.table".
	Table string
	Kind  ProblemKind
	// Message says what is wrong.
	Message string
	// DDL is the SQL that fixes it ("" when none can be given): for the
	// kinds missing and column, policy.DiffTable's statements, as
	// `phiproxy schema` prints them, separated by spaces.
	DDL string
	// Alias is the second name (ProblemAlias), as pg_identify_object
	// spells it: schema-qualified and quoted.
	Alias string
}

// ProblemKind classifies a Problem.
type ProblemKind string

// Kinds of problems.
const (
	// ProblemMissing: the database has no table of that name.
	ProblemMissing ProblemKind = "missing"
	// ProblemColumn: a PHI or blind-index column is missing, generated or
	// of a type that cannot hold what phiproxy stores in it.
	ProblemColumn ProblemKind = "column"
	// ProblemRelkind: the name is a view, foreign table or other relation
	// that does not store the values itself.
	ProblemRelkind ProblemKind = "relkind"
	// ProblemAlias: another relation or object reaches the table's rows
	// under a second name that phiproxy does not govern (a view, rule,
	// inheritance child or parent, partition, foreign table, trigger with
	// transition tables, function taking or returning its rows, column or
	// type built on its row type, subscription).
	ProblemAlias ProblemKind = "alias"
	// ProblemEpoch: the database lacks the catalog epoch's event triggers
	// (epoch.go), without which a second name created by another
	// connection could go unseen.
	ProblemEpoch ProblemKind = "epoch"
	// ProblemSearchPath: the catalog was read under a search_path that
	// puts a schema before pg_catalog, whose operators could have changed
	// what the catalog query found.
	ProblemSearchPath ProblemKind = "search_path"
)

// String is the problem and its fix, as clients and logs see it.
func (p Problem) String() string {
	if p.DDL == "" {
		return p.Message
	}
	return p.Message + ": " + p.DDL
}

// policyProblem is a problem of policy.DiffTable (one that Blocks) as
// the proxy reports it: the same message and DDL as `phiproxy schema`.
func policyProblem(p policy.Problem) Problem {
	kind := ProblemColumn
	if p.Column == "" { // the one Blocks problem of a table as a whole
		kind = ProblemMissing
	}
	return Problem{Table: p.Table, Kind: kind, Message: p.Msg, DDL: strings.Join(p.DDL, " ")}
}

// aliasProblem is the problem of a second name for t found by the catalog
// query: kind and identity (and extra, a column name, or the second name
// through which a child or parent reaches t) as its alias rows
// give them.
func aliasProblem(t *policy.Table, kind, identity, extra string) Problem {
	p := Problem{Table: t.QualifiedName(), Kind: ProblemAlias, Alias: identity}
	table := qualified(t)
	if extra != "" && kind != "column" {
		// A child or parent found through another second name: the
		// DDL detaches it from that one.
		table = extra
	}
	switch kind {
	case "view":
		p.Message = fmt.Sprintf("view %s reads it under a second name that phiproxy does not govern", identity)
		p.DDL = fmt.Sprintf("DROP VIEW %s;", identity)
	case "matview":
		p.Message = fmt.Sprintf("materialized view %s holds a copy of it under a second name", identity)
		p.DDL = fmt.Sprintf("DROP MATERIALIZED VIEW %s;", identity)
	case "rule":
		p.Message = fmt.Sprintf("rule %s rewrites statements into or out of it", identity)
		p.DDL = fmt.Sprintf("DROP RULE %s;", identity)
	case "child":
		p.Message = fmt.Sprintf("table %s inherits it: its rows are a second way into the table", identity)
		p.DDL = fmt.Sprintf("ALTER TABLE %s NO INHERIT %s;", identity, table)
	case "partition":
		p.Message = fmt.Sprintf("partition %s stores its rows under a second name", identity)
		p.DDL = fmt.Sprintf("ALTER TABLE %s DETACH PARTITION %s;", table, identity)
	case "parent":
		p.Message = fmt.Sprintf("it inherits %s, which reads its rows under a second name", identity)
		p.DDL = fmt.Sprintf("ALTER TABLE %s NO INHERIT %s;", table, identity)
	case "partitionof":
		p.Message = fmt.Sprintf("it is a partition of %s, which reads and writes its rows under a second name", identity)
		p.DDL = fmt.Sprintf("ALTER TABLE %s DETACH PARTITION %s;", identity, table)
	case "foreign":
		p.Message = fmt.Sprintf("foreign table %s points at it (its table_name and schema_name options name it)", identity)
		p.DDL = fmt.Sprintf("DROP FOREIGN TABLE %s;", identity)
	case "trigger":
		p.Message = fmt.Sprintf("trigger %s hands its rows to a function as transition tables", identity)
		p.DDL = fmt.Sprintf("DROP TRIGGER %s;", identity)
	case "rowfunction":
		p.Message = fmt.Sprintf("function %s takes or returns its rows", identity)
		p.DDL = fmt.Sprintf("DROP FUNCTION %s;", identity)
	case "column":
		p.Message = fmt.Sprintf("column %s of %s holds its rows (its row type)", extra, identity)
		p.DDL = fmt.Sprintf("ALTER TABLE %s DROP COLUMN %s;", identity, extra)
		p.Alias = identity + "." + extra
	case "domain":
		p.Message = fmt.Sprintf("domain %s is built on its row type", identity)
		p.DDL = fmt.Sprintf("DROP DOMAIN %s;", identity)
	case "type":
		p.Message = fmt.Sprintf("type %s is built on its row type", identity)
		p.DDL = fmt.Sprintf("DROP TYPE %s;", identity)
	case "subscription":
		p.Message = fmt.Sprintf("subscription %s replicates rows into it without phiproxy (remove the table from the publication first)", identity)
		p.DDL = fmt.Sprintf("ALTER SUBSCRIPTION %s REFRESH PUBLICATION;", identity)
	default:
		p.Message = fmt.Sprintf("%s is built on its row type", identity)
	}
	p.Message = "a second name bypasses phiproxy: " + p.Message
	return p
}

// qualified is a policy table's name for DDL.
func qualified(t *policy.Table) string {
	return rewrite.QuoteIdent(t.Schema) + "." + rewrite.QuoteIdent(t.Name)
}
