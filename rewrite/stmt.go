package rewrite

import (
	"strings"

	"github.com/novamind/phiproxy/policy"
	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// statement analyzes one top-level statement into a.stmt.
func (a *analyzer) statement(n *pg.Node) error {
	if n == nil {
		return nil
	}
	switch x := n.Node.(type) {
	case *pg.Node_SelectStmt:
		a.stmt.Kind = KindSelect
		for s := x.SelectStmt; s != nil; s = s.Larg {
			if err := a.intoPolicyTable(s.IntoClause); err != nil {
				return err
			}
		}
		before := a.touches
		out, err := a.selectStmt(x.SelectStmt, nil)
		if err != nil {
			return err
		}
		a.lastOut = out
		if a.touches > before && hasInto(x.SelectStmt) {
			return a.opaqueReject(n, "SELECT INTO copies PHI columns into a table phiproxy does not protect")
		}
		return nil
	case *pg.Node_InsertStmt:
		a.stmt.Kind = KindInsert
		out, err := a.insertStmt(x.InsertStmt, nil)
		a.lastOut = a.withReturning(out)
		return err
	case *pg.Node_UpdateStmt:
		a.stmt.Kind = KindUpdate
		out, err := a.updateStmt(x.UpdateStmt, nil)
		a.lastOut = a.withReturning(out)
		return err
	case *pg.Node_DeleteStmt:
		a.stmt.Kind = KindDelete
		out, err := a.deleteStmt(x.DeleteStmt, nil)
		a.lastOut = a.withReturning(out)
		return err
	case *pg.Node_TransactionStmt:
		a.stmt.Kind = KindTransaction
		return nil
	case *pg.Node_ExplainStmt:
		err := a.statement(x.ExplainStmt.Query)
		a.stmt.Kind = KindOther
		return err
	case *pg.Node_DeclareCursorStmt:
		// Rewritten and refused as the SELECT it declares (cursor.go).
		err := a.statement(x.DeclareCursorStmt.Query)
		a.stmt.Kind = KindSelect
		a.stmt.Cursor = cursorUse(n)
		return err
	case *pg.Node_FetchStmt, *pg.Node_ClosePortalStmt, *pg.Node_DiscardStmt:
		a.stmt.Cursor = cursorUse(n)
	case *pg.Node_ViewStmt:
		// A view over a PHI table is allowed when phiproxy can decrypt
		// its columns (view.go); writes through it are refused.
		a.stmt.Kind = KindDDL
		if err := a.shadowName(x.ViewStmt.View); err != nil {
			return err
		}
		return a.createView(x.ViewStmt, n)
	case *pg.Node_CreateStmt:
		a.stmt.Kind = KindDDL
		if err := a.shadowName(x.CreateStmt.Relation); err != nil {
			return err
		}
		if len(x.CreateStmt.InhRelations) > 0 || x.CreateStmt.Partbound != nil {
			return a.refuseIfTouching(n, "a table that inherits from or is a partition of a PHI table is not supported: its rows would bypass the policy")
		}
		if err := a.createStmt(x.CreateStmt); err != nil {
			return err
		}
	case *pg.Node_CreateForeignTableStmt:
		a.stmt.Kind = KindDDL
		if err := a.foreignTable(x.CreateForeignTableStmt); err != nil {
			return err
		}
		if b := x.CreateForeignTableStmt.BaseStmt; b != nil && (len(b.InhRelations) > 0 || b.Partbound != nil) {
			return a.refuseIfTouching(n, "a foreign table that inherits from or is a partition of a PHI table is not supported: its rows would bypass the policy")
		}
	case *pg.Node_ImportForeignSchemaStmt:
		a.stmt.Kind = KindDDL
		// Its table list names remote tables, not local ones.
		return a.importForeignSchema(x.ImportForeignSchemaStmt)
	case *pg.Node_CreateSubscriptionStmt, *pg.Node_AlterSubscriptionStmt:
		// A subscription applies rows from another server to local tables
		// of the same names, without phiproxy: plaintext from a publisher
		// would land in PHI columns. Publications are harmless: they ship
		// what is stored here, ciphertext and blind indexes.
		return a.errorf(nil, int32(a.stmtStart), "CREATE and ALTER SUBSCRIPTION are not supported while a PHI policy is active: replicated rows are written without phiproxy and could store plaintext in PHI columns")
	case *pg.Node_AlterTableStmt:
		a.stmt.Kind = KindDDL
		for _, c := range x.AlterTableStmt.Cmds {
			switch c.GetAlterTableCmd().GetSubtype() {
			case pg.AlterTableType_AT_AddInherit, pg.AlterTableType_AT_AttachPartition:
				return a.refuseIfTouching(n, "inheritance and partitions involving a PHI table are not supported: rows written through the other table would bypass the policy")
			}
		}
		if err := a.alterTable(x.AlterTableStmt); err != nil {
			return err
		}
	case *pg.Node_RenameStmt:
		a.stmt.Kind = KindDDL
		r := x.RenameStmt
		if r.RenameType == pg.ObjectType_OBJECT_SCHEMA {
			return a.renameSchema(r)
		}
		if rv := r.Relation; rv != nil {
			// A view over PHI tables may be renamed: the catalog is read
			// again after DDL, and finds it under its new name.
			switch ts := mentionedTables(&pg.Node{Node: &pg.Node_RangeVar{RangeVar: rv}}, a.pol); {
			case len(ts) > 0 && !onlyViews(ts):
				return a.refuseIfTouching(n, "renaming a PHI table or column would leave it outside the policy; change the policy first")
			case len(ts) > 0:
				if err := a.viewChanged(); err != nil {
					return err
				}
			}
		}
		if isRelation(r.RenameType) {
			schema := ""
			if r.Relation != nil {
				schema = r.Relation.Schemaname
			}
			if err := a.renameTo(schema, r.Newname, int32(a.stmtStart)); err != nil {
				return err
			}
		}
		if r.RenameType == pg.ObjectType_OBJECT_DOMAIN || r.RenameType == pg.ObjectType_OBJECT_TYPE {
			if err := a.storageTypeName([]string{r.Newname}, int32(a.stmtStart)); err != nil {
				return err
			}
		}
	case *pg.Node_AlterObjectSchemaStmt:
		a.stmt.Kind = KindDDL
		s := x.AlterObjectSchemaStmt
		if rv := s.Relation; rv != nil {
			switch ts := mentionedTables(&pg.Node{Node: &pg.Node_RangeVar{RangeVar: rv}}, a.pol); {
			case len(ts) > 0 && !onlyViews(ts):
				return a.refuseIfTouching(n, "moving a PHI table to another schema would leave it outside the policy; change the policy first")
			case len(ts) > 0:
				if err := a.viewChanged(); err != nil {
					return err
				}
			}
		}
		if rv := s.Relation; rv != nil && isRelation(s.ObjectType) {
			if err := a.renameTo(s.Newschema, rv.Relname, rv.Location); err != nil {
				return err
			}
		}
	case *pg.Node_CreateSchemaStmt:
		a.stmt.Kind = KindDDL
		err := a.createSchema(x.CreateSchemaStmt)
		a.stmt.Kind = KindDDL
		return err
	case *pg.Node_CreateSeqStmt:
		a.stmt.Kind = KindDDL
		if err := a.shadowName(x.CreateSeqStmt.Sequence); err != nil {
			return err
		}
	case *pg.Node_CreateDomainStmt:
		a.stmt.Kind = KindDDL
		if err := a.storageTypeName(typeNames(x.CreateDomainStmt.Domainname), int32(a.stmtStart)); err != nil {
			return err
		}
	case *pg.Node_CopyStmt:
		if a.depth > 0 {
			return a.refuseIfTouching(n, "COPY of a PHI table inside a function or DO block is not supported")
		}
		return a.copyStmt(n, x.CopyStmt)
	case *pg.Node_MergeStmt:
		return a.refuseIfTouching(n, "MERGE on a PHI table is not supported; use INSERT ... ON CONFLICT or UPDATE")
	case *pg.Node_CreateTableAsStmt:
		// Also CREATE MATERIALIZED VIEW: a copy of PHI columns under a
		// name the policy does not list.
		if err := a.intoPolicyTable(x.CreateTableAsStmt.Into); err != nil {
			return err
		}
		return a.refuseIfTouching(n, "CREATE TABLE AS / SELECT INTO copies PHI columns into a table phiproxy does not protect")
	case *pg.Node_PrepareStmt:
		return a.refuseIfTouching(n, "SQL-level PREPARE of a statement on a PHI table is not supported (EXECUTE arguments would reach the server unencrypted); use the extended protocol")
	case *pg.Node_RuleStmt:
		return a.refuseIfTouching(n, "rules on PHI tables are not supported")
	case *pg.Node_DoStmt:
		a.stmt.Kind = KindDDL // it may change the catalog
		return a.doStmt(x.DoStmt)
	case *pg.Node_CreateFunctionStmt:
		a.stmt.Kind = KindDDL
		return a.createFunction(x.CreateFunctionStmt)
	case *pg.Node_CreateTrigStmt:
		a.stmt.Kind = KindDDL
		return a.createTrigger(x.CreateTrigStmt)
	}
	if isDDL(n) {
		a.stmt.Kind = KindDDL
	}
	return a.generic(n)
}

// withReturning is the output of a DML statement: its RETURNING list,
// with the PHI columns a RETURNING * brought in.
func (a *analyzer) withReturning(d *derived) *derived {
	if d == nil {
		d = &derived{}
	}
	for _, r := range a.stmt.Returning {
		d.cols = append(d.cols, outCol{col: r.Column})
	}
	return d
}

func hasInto(s *pg.SelectStmt) bool {
	for ; s != nil; s = s.Larg {
		if s.IntoClause != nil {
			return true
		}
	}
	return false
}

func (a *analyzer) opaqueReject(n *pg.Node, msg string) error {
	if len(a.stmt.Tables) == 0 {
		return a.errorf(nil, int32(a.stmtStart), "%s", msg)
	}
	e := a.errorf(nil, int32(a.stmtStart), "table %s: %s", a.stmt.Tables[0].QualifiedName(), msg)
	e.Table = a.stmt.Tables[0].QualifiedName()
	return e
}

// refuseIfTouching rejects n when it references a policy table anywhere.
func (a *analyzer) refuseIfTouching(n *pg.Node, msg string) error {
	tables, err := a.collectTables(n)
	if err != nil {
		return err
	}
	if len(tables) > 0 {
		for _, t := range tables {
			a.touch(t)
		}
		return a.opaqueReject(n, msg)
	}
	return a.generic(n)
}

func isDDL(n *pg.Node) bool {
	name := oneofName(n)
	switch name {
	case "index_stmt", "rename_stmt", "comment_stmt", "grant_stmt", "grant_role_stmt", "define_stmt", "composite_type_stmt":
		return true
	case "vacuum_stmt", "reindex_stmt", "cluster_stmt":
		// Maintenance that rewrites or scans storage: no values, no rows
		// to decrypt, so no catalog guard in front of it, which would
		// make VACUUM and REINDEX CONCURRENTLY fail ("cannot be executed
		// within a pipeline").
		return true
	}
	return strings.HasPrefix(name, "create_") || strings.HasPrefix(name, "alter_") || strings.HasPrefix(name, "drop_")
}

func oneofName(n *pg.Node) string {
	m := n.ProtoReflect()
	f := m.WhichOneof(m.Descriptor().Oneofs().Get(0))
	if f == nil {
		return ""
	}
	return string(f.Name())
}

// collectTables returns the policy tables named by any RangeVar under n.
func (a *analyzer) collectTables(n *pg.Node) ([]*policy.Table, error) {
	var out []*policy.Table
	var err error
	eachRangeVar(n, func(rv *pg.RangeVar) {
		t, e := a.rangeVarTable(rv, nil)
		if e != nil && err == nil {
			err = e
		}
		if t != nil {
			out = append(out, t)
		}
	})
	return out, err
}

// eachRangeVar calls fn for every RangeVar (table reference) under n.
func eachRangeVar(n *pg.Node, fn func(*pg.RangeVar)) {
	eachMessage(n, func(m protoreflect.Message) bool {
		if rv, ok := m.Interface().(*pg.RangeVar); ok {
			fn(rv)
			return false
		}
		return true
	})
}

// executeWithArgs returns the first SQL-level EXECUTE under n that passes
// arguments, or nil.
func executeWithArgs(n *pg.Node) *pg.ExecuteStmt {
	var found *pg.ExecuteStmt
	eachMessage(n, func(m protoreflect.Message) bool {
		if ex, ok := m.Interface().(*pg.ExecuteStmt); ok && len(ex.Params) > 0 && found == nil {
			found = ex
		}
		return found == nil
	})
	return found
}

// eachMessage calls fn for every message under n, depth first, descending
// into a message only when fn returns true.
func eachMessage(n *pg.Node, fn func(protoreflect.Message) bool) {
	var visit func(m protoreflect.Message)
	visit = func(m protoreflect.Message) {
		if !fn(m) {
			return
		}
		m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			if fd.Kind() != protoreflect.MessageKind || fd.IsMap() {
				return true
			}
			if fd.IsList() {
				l := v.List()
				for i := 0; i < l.Len(); i++ {
					visit(l.Get(i).Message())
				}
			} else {
				visit(v.Message())
			}
			return true
		})
	}
	visit(n.ProtoReflect())
}

// generic handles statements with no specific rule (DDL, utility): the
// policy tables they name are recorded, and any PHI column found in an
// expression under them is rejected (a CHECK, an index expression, a
// default). An expression that would need rewriting (a PHI column compared
// with a value in a CHECK, an index predicate, a policy, a publication row
// filter) is refused too: the server stores the definition and evaluates
// it later, and a blind-index value written into it would go stale.
func (a *analyzer) generic(n *pg.Node) error {
	m := a.mark()
	if err := a.genericWalk(n); err != nil {
		return err
	}
	if col, ok := a.rewrittenSince(m); ok && isDDL(n) {
		what := strings.ToUpper(strings.ReplaceAll(strings.TrimSuffix(oneofName(n), "_stmt"), "_", " "))
		name := "a PHI column"
		if col != nil {
			name = "PHI column " + col.QualifiedName()
		}
		return a.errorf(col, int32(a.stmtStart), "this %s statement compares %s with a value, which is not supported: the server keeps the definition (a CHECK constraint, an index predicate, a policy, a publication row filter, a trigger condition) and would evaluate it later, on ciphertext", what, name)
	}
	return nil
}

func (a *analyzer) genericWalk(n *pg.Node) error {
	tables, err := a.collectTables(n)
	if err != nil {
		return err
	}
	sc := &scope{}
	for _, t := range tables {
		a.touch(t)
		sc.entries = append(sc.entries, &rangeEntry{name: t.Name, schema: t.Schema, rel: t.Name, table: t})
	}
	if len(tables) == 0 {
		// Nothing of ours: still number the parameters.
		return a.children(n, sc, describe(n))
	}
	return a.children(n, sc, "a "+strings.ToUpper(strings.TrimSuffix(oneofName(n), "_stmt"))+" statement")
}

// rangeVarTable resolves a table name to its policy table, nil for tables
// the policy does not name and for CTE references. An unqualified name
// matching tables of the policy in several schemas is rejected.
func (a *analyzer) rangeVarTable(rv *pg.RangeVar, sc *scope) (*policy.Table, error) {
	if rv == nil {
		return nil, nil
	}
	if rv.Schemaname != "" {
		t := a.pol.Table(rv.Schemaname, rv.Relname)
		if t != nil {
			a.touch(t)
		}
		return t, nil
	}
	if _, ok := sc.cte(rv.Relname); ok {
		return nil, nil
	}
	ts := a.pol.TablesNamed(rv.Relname)
	switch len(ts) {
	case 0:
		return nil, nil
	case 1:
		a.touch(ts[0])
		return ts[0], nil
	}
	e := a.errorf(nil, rv.Location, "table name %q is ambiguous: the policy protects it in schemas %s and %s; qualify it with its schema", rv.Relname, ts[0].Schema, ts[1].Schema)
	e.Table = ts[0].QualifiedName()
	return nil, e
}

// mentionedTables returns the policy tables any RangeVar under n may name,
// without resolving scopes (CTE names included): for fail-closed checks only.
func mentionedTables(n *pg.Node, pol *policy.Policy) []*policy.Table {
	var out []*policy.Table
	eachRangeVar(n, func(rv *pg.RangeVar) {
		if rv.Schemaname != "" {
			if t := pol.Table(rv.Schemaname, rv.Relname); t != nil {
				out = append(out, t)
			}
		} else {
			out = append(out, pol.TablesNamed(rv.Relname)...)
		}
	})
	return out
}
