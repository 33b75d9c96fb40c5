package rewrite

import (
	"strings"

	"github.com/novamind/phiproxy/policy"
	pg "github.com/pganalyze/pg_query_go/v6"
)

// The DDL that could give a policy table a second name (issue 9, item 4;
// ddl.go has the rules on values): foreign tables and imported schemas,
// tables created from a query, renames, schemas, and relations that shadow
// a policy table's name.

// foreignTable refuses a foreign table that could be a second name for a
// policy table: postgres_fdw (or a loopback server) reads and writes the
// remote table named by the table_name / schema_name options, or by the
// foreign table's own name without them. Writes through it would bypass
// the policy. Any option value naming a policy table counts (other
// wrappers use other option names, or a query).
func (a *analyzer) foreignTable(s *pg.CreateForeignTableStmt) error {
	rv := s.BaseStmt.GetRelation()
	if rv != nil {
		if ts := a.pol.TablesNamed(rv.Relname); len(ts) > 0 {
			return a.tableError(ts[0], rv.Location, "a foreign table named like PHI table %s is not supported: it reads and writes a remote table of that name, outside the policy", ts[0].QualifiedName())
		}
	}
	loc := rv.GetLocation()
	if err := a.foreignOptions(s.Options, loc); err != nil {
		return err
	}
	for _, n := range s.BaseStmt.GetTableElts() {
		if cd := n.GetColumnDef(); cd != nil {
			if err := a.foreignOptions(cd.Fdwoptions, loc); err != nil {
				return err
			}
		}
	}
	return nil
}

func (a *analyzer) foreignOptions(opts []*pg.Node, loc int32) error {
	for _, n := range opts {
		d := n.GetDefElem()
		if d == nil {
			continue
		}
		v := d.Arg.GetString_()
		if v == nil {
			continue
		}
		if t := a.policyNameIn(v.Sval); t != nil {
			return a.tableError(t, loc, "a foreign table whose option %s names PHI table %s is not supported: it would be a second name for the table, read and written outside the policy", d.Defname, t.QualifiedName())
		}
	}
	return nil
}

// importForeignSchema refuses IMPORT FOREIGN SCHEMA when it would create a
// foreign table for a policy table: the remote schema is a policy table's
// schema (the server may be a loopback to this database) and the import
// includes that table's name. Imports of other schemas, or LIMIT TO lists
// (or EXCEPT lists) that leave every policy table out, cannot alias one.
func (a *analyzer) importForeignSchema(s *pg.ImportForeignSchemaStmt) error {
	for _, t := range a.pol.Tables() {
		if t.Schema != s.RemoteSchema {
			continue
		}
		listed := false
		for _, n := range s.TableList {
			if rv := n.GetRangeVar(); rv != nil && rv.Relname == t.Name {
				listed = true
			}
		}
		included := listed
		switch s.ListType {
		case pg.ImportForeignSchemaType_FDW_IMPORT_SCHEMA_ALL:
			included = true
		case pg.ImportForeignSchemaType_FDW_IMPORT_SCHEMA_EXCEPT:
			included = !listed
		}
		if included {
			return a.tableError(t, int32(a.stmtStart), "IMPORT FOREIGN SCHEMA %s would create a foreign table for PHI table %s, a second name read and written outside the policy: leave it out with LIMIT TO or EXCEPT", s.RemoteSchema, t.QualifiedName())
		}
	}
	return nil
}

// intoPolicyTable refuses SELECT ... INTO and CREATE TABLE ... AS that
// create a table named like a policy table: its rows come from the query,
// computed by the server in plaintext.
func (a *analyzer) intoPolicyTable(into *pg.IntoClause) error {
	if into == nil || into.Rel == nil {
		return nil
	}
	if err := a.shadowName(into.Rel); err != nil {
		return err
	}
	t, err := a.rangeVarTable(into.Rel, nil)
	if t == nil || err != nil {
		return err
	}
	return a.tableError(t, into.Rel.Location, "creating PHI table %s from a query (CREATE TABLE AS, SELECT INTO, CREATE MATERIALIZED VIEW) is not supported: the server would store the query's values in plaintext", t.QualifiedName())
}

// renameTo refuses giving a relation the name of a policy table (ALTER
// TABLE x RENAME TO patients, ALTER TABLE other.patients SET SCHEMA
// public), in any schema: phiproxy would treat rows it never encrypted as
// the policy table's, a foreign table so named would alias the remote one,
// and in another schema it would shadow the policy table's unqualified
// name (see shadowName).
func (a *analyzer) renameTo(schema, name string, loc int32) error {
	// In any schema: in the policy table's own it would be the table, in
	// another a second relation of that name (see shadowName).
	ts := a.pol.TablesNamed(name)
	if len(ts) == 0 {
		return nil
	}
	return a.tableError(ts[0], loc, "giving a relation the name of PHI table %s is not supported: its rows were never encrypted by phiproxy; create the table through phiproxy and copy the rows with INSERT", ts[0].QualifiedName())
}

// isRelation reports whether a RENAME or SET SCHEMA acts on a relation.
func isRelation(t pg.ObjectType) bool {
	switch t {
	case pg.ObjectType_OBJECT_TABLE, pg.ObjectType_OBJECT_FOREIGN_TABLE, pg.ObjectType_OBJECT_VIEW,
		pg.ObjectType_OBJECT_MATVIEW, pg.ObjectType_OBJECT_SEQUENCE, pg.ObjectType_OBJECT_INDEX:
		return true
	}
	return false
}

// storageTypeName refuses creating a type or domain named like a storage
// type (text, bytea): with its schema first in search_path, a column
// declared `text` would get the domain, and its default or checks.
func (a *analyzer) storageTypeName(names []string, loc int32) error {
	if len(names) == 0 {
		return nil
	}
	switch n := names[len(names)-1]; n {
	case string(policy.StorageText), string(policy.StorageBytea):
		return a.errorf(nil, loc, "a type or domain named %s is not supported while a PHI policy is active: it could stand in for the storage type of PHI columns", n)
	}
	return nil
}

// policySchemaTable returns the first policy table in schema name, or nil.
func (a *analyzer) policySchemaTable(name string) *policy.Table {
	for _, t := range a.pol.Tables() {
		if t.Schema == name {
			return t
		}
	}
	return nil
}

// renameSchema refuses ALTER SCHEMA ... RENAME from or to the schema of a
// policy table: the policy knows a table by its schema-qualified name, so
// renamed, its rows would be read and written under a name the policy does
// not list (plaintext stored through it), and a schema renamed to a policy
// schema would put unencrypted tables under policy names. CREATE SCHEMA of
// a policy schema's name (it cannot exist twice) and ALTER SCHEMA ... OWNER
// TO carry no rows and pass.
func (a *analyzer) renameSchema(r *pg.RenameStmt) error {
	a.stmt.Kind = KindDDL
	for _, name := range []string{r.Subname, r.Newname} {
		if t := a.policySchemaTable(name); t != nil {
			return a.tableError(t, int32(a.stmtStart), "ALTER SCHEMA %s RENAME TO %s is not supported: schema %s holds PHI table %s, which the policy names by its schema; renamed, its rows would be read and written outside the policy (change the policy first)", r.Subname, r.Newname, name, t.QualifiedName())
		}
	}
	return nil
}

// createSchema checks CREATE SCHEMA ... with schema elements (CREATE
// TABLE, VIEW, INDEX, SEQUENCE, TRIGGER, GRANT). PostgreSQL runs them with
// the new schema first in search_path, so an unqualified name in an
// element may mean the new schema's relation or a policy table's: an
// element that names a relation like a policy table (creates one, or
// refers to one, in any schema) is refused whole, fail closed; run it as a
// statement of its own. Every other element goes through the statement
// rules, as if sent alone.
func (a *analyzer) createSchema(s *pg.CreateSchemaStmt) error {
	for _, elt := range s.SchemaElts {
		var named *policy.Table
		eachRangeVar(elt, func(rv *pg.RangeVar) {
			if ts := a.pol.TablesNamed(rv.Relname); len(ts) > 0 && named == nil {
				named = ts[0]
			}
		})
		if named != nil {
			a.touch(named)
			return a.tableError(named, int32(a.stmtStart), "CREATE SCHEMA %s with a schema element naming a relation %s is not supported: the elements run with the new schema first in search_path, so phiproxy cannot tell whether it is PHI table %s; send the element as a statement of its own", s.Schemaname, named.Name, named.QualifiedName())
		}
		if err := a.statement(elt); err != nil {
			return err
		}
	}
	return nil
}

// shadowName refuses creating a relation (table, view, materialized view,
// sequence, CREATE TABLE AS / SELECT INTO) named like a policy table in a
// schema other than that table's own, or as a temporary relation. The
// rewriter resolves an unqualified name by the policy, not by search_path:
// a temporary patients (pg_temp comes first) or other.patients with other
// earlier in search_path would get ciphertext written into it and
// returned from it, and once none can be created, SET search_path cannot
// make a name mean another relation (short of relations created without
// phiproxy, which its catalog read has to notice). An unqualified,
// non-temporary name is taken as the policy table's own (its column rules
// apply).
func (a *analyzer) shadowName(rv *pg.RangeVar) error {
	if rv == nil {
		return nil
	}
	ts := a.pol.TablesNamed(rv.Relname)
	if len(ts) == 0 {
		return nil
	}
	temp := rv.Relpersistence == "t" || strings.HasPrefix(rv.Schemaname, "pg_temp")
	if !temp && (rv.Schemaname == "" || a.pol.Table(rv.Schemaname, rv.Relname) != nil) {
		return nil
	}
	where := "schema " + rv.Schemaname
	if temp {
		where = "a temporary schema"
	}
	return a.tableError(ts[0], rv.Location, "creating a relation named %s in %s is not supported while PHI table %s is in the policy: phiproxy resolves the unqualified name %s to the PHI table whatever search_path says, so the other relation would get ciphertext written into it and read from it; choose another name", rv.Relname, where, ts[0].QualifiedName(), rv.Relname)
}
