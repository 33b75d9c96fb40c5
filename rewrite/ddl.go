package rewrite

import (
	"strings"

	"github.com/novamind/phiproxy/policy"
	pg "github.com/pganalyze/pg_query_go/v6"
)

// This file holds the rules for DDL that could make the server compute or
// store a PHI value from SQL text (issue 9, item 2) or give a policy table
// a second name (item 4). The policy is the only thing that tells phiproxy
// which values to encrypt; the server never does. So every place where
// PostgreSQL itself would put a value into a PHI column or a blind-index
// column (a DEFAULT, a generated or identity column, ALTER COLUMN TYPE
// ... USING, a domain's default, a copied LIKE definition, a table created
// from a query) is refused, and so is every name under which a policy
// table's rows can be read or written that the policy does not list
// (foreign tables, imported schemas, subscriptions, renames: the rules on
// names are in ddl_names.go, subscriptions in stmt.go).
//
// Harmless, and passed through (they carry no value into a PHI column):
//   - CREATE TABLE x (LIKE patients ...) of a non-policy table: it copies
//     column definitions, never rows; what is later written to x is not PHI
//     by the policy's definition.
//   - DEFAULT NULL, ALTER COLUMN ... DROP DEFAULT / DROP EXPRESSION / DROP
//     IDENTITY: no value.
//   - ALTER COLUMN <phi> TYPE <its storage type> with no USING, or USING the
//     column itself (casts of it allowed): this is how an operator prepares
//     a table before `phiproxy migrate encrypt`; the values are the ones
//     already stored.
//   - CHECK constraints, indexes and statistics on plain PHI columns: they
//     compute on ciphertext only (an expression on a PHI column or a
//     comparison with a value is refused like anywhere else: the value
//     would be stored in the catalog in plaintext).
//   - CREATE PUBLICATION: it ships what is stored, ciphertext and blind
//     indexes; a row filter comparing a PHI column is refused as above.
//   - COMMENT ON, SECURITY LABEL, GRANT: no column values.

// typeNames returns the String parts of a name list.
func typeNames(list []*pg.Node) []string {
	out := make([]string, 0, len(list))
	for _, n := range list {
		if s := n.GetString_(); s != nil {
			out = append(out, s.Sval)
		}
	}
	return out
}

// isType reports whether tn is exactly the built-in type want, written
// unqualified or in pg_catalog, without modifiers or array bounds.
func isType(tn *pg.TypeName, want string) bool {
	if tn == nil || len(tn.ArrayBounds) > 0 || len(tn.Typmods) > 0 || tn.Setof || tn.PctType {
		return false
	}
	names := typeNames(tn.Names)
	switch len(names) {
	case 1:
		return names[0] == want
	case 2:
		return names[0] == "pg_catalog" && names[1] == want
	}
	return false
}

// isNull reports whether n is NULL, possibly cast.
func isNull(n *pg.Node) bool {
	for n.GetTypeCast() != nil {
		n = n.GetTypeCast().Arg
	}
	c := n.GetAConst()
	return c != nil && c.Isnull
}

// policyColumn is the PHI column or blind-index column of t named name.
type policyColumn struct {
	col     *policy.Column // the PHI column (for an index column, the one it indexes)
	index   string         // the name when it is one of col's blind-index columns
	storage string         // the type the column must have
}

func columnOf(t *policy.Table, name string) (policyColumn, bool) {
	if c := t.Column(name); c != nil {
		return policyColumn{col: c, storage: string(c.Storage)}, true
	}
	if c := t.IndexColumn(name); c != nil {
		return policyColumn{col: c, index: name, storage: "text"}, true
	}
	return policyColumn{}, false
}

func (pc policyColumn) String() string {
	if pc.index != "" {
		return "blind-index column " + pc.col.Table.QualifiedName() + "." + pc.index
	}
	return "PHI column " + pc.col.QualifiedName()
}

// ddlError is a 0A000 rejection about pc.
func (a *analyzer) ddlError(pc policyColumn, loc int32, format string, args ...any) *Error {
	return a.errorf(pc.col, loc, format, args...)
}

// columnDef checks a column definition of a policy table (CREATE TABLE,
// ALTER TABLE ADD COLUMN): a PHI or blind-index column must have its
// storage type and no default, generated expression or identity.
func (a *analyzer) columnDef(t *policy.Table, cd *pg.ColumnDef, what string) error {
	pc, ok := columnOf(t, cd.Colname)
	if !ok {
		return nil
	}
	loc := cd.Location
	if !isType(cd.TypeName, pc.storage) {
		// A domain (CREATE DOMAIN d AS text DEFAULT 'x' CHECK (...)) or any
		// other type would add a default or compute on the value.
		return a.ddlError(pc, loc, "%s: %s must be declared with its storage type %s: another type (a domain, an array, a typmod) could give it a default or compute on its values", what, pc, pc.storage)
	}
	if cd.RawDefault != nil && !isNull(cd.RawDefault) {
		return a.defaultError(pc, loc, what)
	}
	for _, n := range cd.Constraints {
		c := n.GetConstraint()
		if c == nil {
			continue
		}
		switch c.Contype {
		case pg.ConstrType_CONSTR_DEFAULT:
			if c.RawExpr != nil && !isNull(c.RawExpr) {
				return a.defaultError(pc, c.Location, what)
			}
		case pg.ConstrType_CONSTR_GENERATED:
			return a.ddlError(pc, c.Location, "%s: a generated %s is not supported: the server would compute and store its value in plaintext", what, pc)
		case pg.ConstrType_CONSTR_IDENTITY:
			return a.ddlError(pc, c.Location, "%s: an identity %s is not supported: the server would generate and store its values in plaintext", what, pc)
		}
	}
	return nil
}

func (a *analyzer) defaultError(pc policyColumn, loc int32, what string) error {
	where := ""
	if strings.HasSuffix(what, "ADD COLUMN") {
		where = "; ADD COLUMN also keeps it in pg_attribute.attmissingval"
	}
	return a.ddlError(pc, loc, "%s: a DEFAULT for %s is not supported: the server would store the default value in plaintext (phiproxy encrypts only values sent with INSERT and UPDATE%s)", what, pc, where)
}

// createStmt checks CREATE TABLE (and the base of CREATE FOREIGN TABLE) of
// a policy table.
func (a *analyzer) createStmt(s *pg.CreateStmt) error {
	rv := s.Relation
	if rv == nil {
		return nil
	}
	t, err := a.rangeVarTable(rv, nil)
	if err != nil {
		return err
	}
	for _, n := range s.TableElts {
		if err := a.foreignKeys(t, n); err != nil {
			return err
		}
	}
	if t == nil {
		return nil
	}
	what := "CREATE TABLE " + t.QualifiedName()
	if s.OfTypename != nil {
		return a.tableError(t, rv.Location, "%s OF a type is not supported for a PHI table: the type's attributes (a domain with a default, for one) are not checked; declare the columns", what)
	}
	for _, n := range s.TableElts {
		switch x := n.Node.(type) {
		case *pg.Node_ColumnDef:
			if err := a.columnDef(t, x.ColumnDef, what); err != nil {
				return err
			}
		case *pg.Node_TableLikeClause:
			// INCLUDING DEFAULTS / GENERATED / IDENTITY / ALL copy
			// expressions into PHI columns, and even a plain LIKE copies
			// column types phiproxy cannot see (a domain with a default).
			return a.tableError(t, rv.Location, "%s (LIKE ...) is not supported for a PHI table: the copied column types, defaults and generated expressions could make the server store plaintext; declare the columns", what)
		}
	}
	return nil
}

// alterTable checks each subcommand of ALTER TABLE (ONLY, IF EXISTS, any
// number of subcommands) on a policy table.
func (a *analyzer) alterTable(s *pg.AlterTableStmt) error {
	if s.Objtype == pg.ObjectType_OBJECT_FOREIGN_TABLE {
		for _, c := range s.Cmds {
			cmd := c.GetAlterTableCmd()
			if cmd != nil && cmd.Subtype == pg.AlterTableType_AT_GenericOptions {
				if err := a.foreignOptions(cmd.Def.GetList().GetItems(), s.Relation.GetLocation()); err != nil {
					return err
				}
			}
		}
	}
	t, err := a.rangeVarTable(s.Relation, nil)
	if err != nil {
		return err
	}
	for _, c := range s.Cmds {
		cmd := c.GetAlterTableCmd()
		if cmd != nil && (cmd.Subtype == pg.AlterTableType_AT_AddConstraint || cmd.Subtype == pg.AlterTableType_AT_AddColumn) {
			if err := a.foreignKeys(t, cmd.Def); err != nil {
				return err
			}
		}
	}
	if t == nil {
		return nil
	}
	what := "ALTER TABLE " + t.QualifiedName()
	loc := s.Relation.Location
	for _, c := range s.Cmds {
		cmd := c.GetAlterTableCmd()
		if cmd == nil {
			continue
		}
		if cmd.Subtype == pg.AlterTableType_AT_AddColumn {
			if cd := cmd.Def.GetColumnDef(); cd != nil {
				if err := a.columnDef(t, cd, what+" ADD COLUMN"); err != nil {
					return err
				}
			}
			continue
		}
		pc, ok := columnOf(t, cmd.Name)
		if !ok {
			continue
		}
		switch cmd.Subtype {
		case pg.AlterTableType_AT_ColumnDefault:
			if cmd.Def != nil && !isNull(cmd.Def) {
				return a.defaultError(pc, loc, what+" ALTER COLUMN "+cmd.Name+" SET DEFAULT")
			}
		case pg.AlterTableType_AT_AlterColumnType:
			cd := cmd.Def.GetColumnDef()
			if cd == nil {
				return a.ddlError(pc, loc, "%s ALTER COLUMN %s TYPE: cannot read the new type", what, cmd.Name)
			}
			if !isType(cd.TypeName, pc.storage) {
				return a.ddlError(pc, loc, "%s ALTER COLUMN %s TYPE: %s must keep its storage type %s", what, cmd.Name, pc, pc.storage)
			}
			if cd.RawDefault != nil && !isNull(cd.RawDefault) && !columnItself(cd.RawDefault, cmd.Name) {
				return a.ddlError(pc, loc, "%s ALTER COLUMN %s TYPE ... USING an expression is not supported for %s: the server would compute and store its result in plaintext (supported: no USING, or USING the column itself)", what, cmd.Name, pc)
			}
			// Checked: the column itself, or NULL. The generic walk would
			// refuse the cast in USING col::text as computing on the column.
			cd.RawDefault = nil
		case pg.AlterTableType_AT_AddIdentity, pg.AlterTableType_AT_SetIdentity:
			return a.ddlError(pc, loc, "%s ALTER COLUMN %s: an identity %s is not supported: the server would generate and store its values in plaintext", what, cmd.Name, pc)
		case pg.AlterTableType_AT_SetExpression:
			return a.ddlError(pc, loc, "%s ALTER COLUMN %s SET EXPRESSION: a generated %s is not supported: the server would compute and store its value in plaintext", what, cmd.Name, pc)
		}
	}
	return nil
}

// columnItself reports whether a USING expression is the column name, or
// casts of it: the stored values, unchanged or re-typed, nothing new.
func columnItself(n *pg.Node, name string) bool {
	for n.GetTypeCast() != nil {
		n = n.GetTypeCast().Arg
	}
	cr := n.GetColumnRef()
	if cr == nil || len(cr.Fields) == 0 {
		return false
	}
	s := cr.Fields[len(cr.Fields)-1].GetString_()
	return s != nil && s.Sval == name
}

// policyNameIn returns the first policy table whose name occurs in s
// (ASCII case-insensitively), or nil.
func (a *analyzer) policyNameIn(s string) *policy.Table {
	l := strings.ToLower(s)
	for _, t := range a.pol.Tables() {
		if strings.Contains(l, strings.ToLower(t.Name)) {
			return t
		}
	}
	return nil
}

// foreignKeys refuses a FOREIGN KEY (a table constraint, or REFERENCES on
// a column definition n) whose referencing columns in t, or whose
// referenced columns in a policy table, include a PHI or blind-index
// column: ON UPDATE CASCADE / SET DEFAULT would make the server write
// another table's values, plaintext, into a PHI column, and a key on
// ciphertext never matches anyway (its associated data binds the column).
// REFERENCES patients with no column list names the primary key: the
// referencing side is still checked.
func (a *analyzer) foreignKeys(t *policy.Table, n *pg.Node) error {
	var cols []string
	var cons []*pg.Node
	switch {
	case n.GetColumnDef() != nil:
		cd := n.GetColumnDef()
		cols, cons = []string{cd.Colname}, cd.Constraints
	case n.GetConstraint() != nil:
		cols, cons = typeNames(n.GetConstraint().FkAttrs), []*pg.Node{n}
	}
	for _, cn := range cons {
		c := cn.GetConstraint()
		if c == nil || c.Contype != pg.ConstrType_CONSTR_FOREIGN {
			continue
		}
		if t != nil {
			for _, name := range cols {
				if pc, ok := columnOf(t, name); ok {
					return a.ddlError(pc, c.Location, "a FOREIGN KEY on %s is not supported: its ON UPDATE / ON DELETE actions would make the server write another table's values into it in plaintext, and a key on ciphertext never matches", pc)
				}
			}
		}
		pt, err := a.rangeVarTable(c.Pktable, nil)
		if err != nil {
			return err
		}
		if pt == nil {
			continue
		}
		for _, name := range typeNames(c.PkAttrs) {
			if pc, ok := columnOf(pt, name); ok {
				return a.ddlError(pc, c.Location, "a FOREIGN KEY referencing %s is not supported: a key on ciphertext never matches, and its actions would copy the column's values into another table", pc)
			}
		}
	}
	return nil
}
