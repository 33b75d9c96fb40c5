package phi

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/rewrite"
)

// Views over policy tables (issue 10 item 5). PostgreSQL reports a view's
// OID and attribute numbers in RowDescription, not those of the table it
// reads, so the proxy must know what each column of a view is to decrypt
// it. The catalog query reads every view that reads a policy table,
// directly or through other views, with its definition (pg_get_viewdef),
// its columns and the columns it depends on (pg_depend), and the proxy
// classifies it:
//
//   - a decrypting view passes PHI columns through unchanged: each of its
//     columns that depends on one is a plain reference to it, and the server
//     computes nothing on ciphertext to answer it (rewrite.ViewColumns:
//     no PHI column in a predicate, join, grouping, ordering, DISTINCT or
//     function, no blind index exposed). Its columns are decrypted with the
//     keys of the columns they copy, and the rewriter sees it as a
//     read-only policy table whose PHI columns have no blind index
//     (policy.WithViews): selecting them is fine, computing on them or
//     writing through the view is refused (0A000).
//   - any other view is a second name phiproxy does not govern: the policy
//     table is refused (55000) with the view named, as issue 9 does.
//
// The classification must never outlive the definition it was made from:
// the catalog guard (guard.go) checks each decrypting view's definition at
// every batch that relies on the catalog.

// Row kinds of the views part of the catalog query.
const (
	rowHasViews = "hasviews" // some view reads a policy table: read them (viewsQuery)
	rowView     = "view"     // view OID, root policy table OID, schema, name, identity, definition, xmin of its _RETURN rule
	rowViewCol  = "viewcol"  // view OID, attnum, name, type OID
	rowViewDep  = "viewdep"  // view OID, OID of a policy table or view it reads, attnum read
)

// viewsCTE adds to viewsQuery and to the catalog query with aliases vw,
// the views that read a policy table, directly or through views: view
// OID, and the policy table it reaches as root, once per root. A view's
// _RETURN rule depends on the columns it reads.
const viewsCTE = `, vw AS (WITH RECURSIVE w(oid, root) AS (` +
	`SELECT r.ev_class, t.oid FROM t` + viewRuleJoins + `t.oid` + viewRuleWhere + `t.oid` +
	` UNION SELECT r.ev_class, w.root FROM w` + viewRuleJoins + `w.oid` + viewRuleWhere + `w.oid` +
	`) SELECT oid, root FROM w)`

const (
	viewRuleJoins = ` JOIN pg_catalog.pg_depend d ON d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass` +
		` AND d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass` +
		` JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid JOIN pg_catalog.pg_class rc ON rc.oid = r.ev_class AND d.refobjid = `
	viewRuleWhere = ` WHERE r.rulename = '_RETURN' AND rc.relkind = 'v' AND r.ev_class <> `
)

// hasViewsSQL is the branch of the catalog query that says whether a view
// reads a policy table: only then does the session run viewsQuery, whose
// recursive search and views' definitions cost more than the rest of the
// catalog query to plan and run.
const hasViewsSQL = ` UNION ALL SELECT 2, 0, -3, '` + rowHasViews + `', '', '', '', '', '', '', '', '', '', '' WHERE EXISTS (SELECT FROM t` +
	viewRuleJoins + `t.oid` + viewRuleWhere + `t.oid)`

// viewsQuery returns the query that reads the views of vw: one row per
// view and root, its columns, and the columns of policy tables and views
// it depends on. Its rows complete the catalog query's when that says
// views exist (readViews).
func viewsQuery(pol *policy.Policy) string {
	return policyTablesCTE(pol) + viewsCTE + ` SELECT a0, a1, a2, a3, a4, a5, a6, a7, a8 FROM (` +
		strings.TrimPrefix(viewsSQL, " UNION ALL ") + `) u ORDER BY k, k1, k2, a0, a1, a2, a3, a4`
}

// readViews completes the rows of a catalog query with those of
// viewsQuery, run with query, when they say views read a policy table.
func readViews(pol *policy.Policy, rows [][][]byte, query func(string) ([][][]byte, error)) ([][][]byte, error) {
	for _, r := range rows {
		if len(r) > 0 && string(r[0]) == rowHasViews {
			more, err := query(viewsQuery(pol))
			if err != nil {
				return nil, err
			}
			return append(rows, more...), nil
		}
	}
	return rows, nil
}

// viewsSQL are the branches of viewsQuery.
const viewsSQL = ` UNION ALL SELECT 2 AS k, c.oid::pg_catalog.int8 AS k1, -1 AS k2, '` + rowView + `' AS a0, c.oid::pg_catalog.text AS a1, vw.root::pg_catalog.text AS a2,` +
	` n.nspname::pg_catalog.text AS a3, c.relname::pg_catalog.text AS a4,` +
	` (pg_catalog.pg_identify_object('pg_catalog.pg_class'::pg_catalog.regclass, c.oid, 0)).identity AS a5,` +
	` pg_catalog.pg_get_viewdef(c.oid) AS a6, r.xmin::pg_catalog.text AS a7, ''::pg_catalog.text AS a8` +
	` FROM vw JOIN pg_catalog.pg_class c ON c.oid = vw.oid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace` +
	` JOIN pg_catalog.pg_rewrite r ON r.ev_class = c.oid AND r.rulename = '_RETURN'` +
	` UNION ALL SELECT 2, a.attrelid::pg_catalog.int8, a.attnum::pg_catalog.int8, '` + rowViewCol + `', a.attrelid::pg_catalog.text, a.attnum::pg_catalog.text,` +
	` a.attname::pg_catalog.text, a.atttypid::pg_catalog.text, '', '', '', ''` +
	` FROM pg_catalog.pg_attribute a WHERE a.attrelid IN (SELECT oid FROM vw) AND a.attnum > 0 AND NOT a.attisdropped` +
	` UNION ALL SELECT DISTINCT 2, r.ev_class::pg_catalog.int8, d.refobjsubid::pg_catalog.int8, '` + rowViewDep + `', r.ev_class::pg_catalog.text,` +
	` d.refobjid::pg_catalog.text, d.refobjsubid::pg_catalog.text, '', '', '', '', ''` +
	` FROM pg_catalog.pg_rewrite r JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = r.oid` +
	` AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjsubid > 0` +
	` WHERE r.ev_class IN (SELECT oid FROM vw) AND r.rulename = '_RETURN' AND d.refobjid IN (SELECT oid FROM t UNION ALL SELECT oid FROM vw)`

// catalogView is a view over policy tables as the catalog shows it.
type catalogView struct {
	oid                    uint32
	schema, name, identity string
	def                    string
	// xmin is the transaction that wrote the version of the view's
	// _RETURN rule whose definition def is: any other version (CREATE OR
	// REPLACE VIEW) has another (views_guard.go).
	xmin    string
	roots   []uint32 // OIDs of the policy tables it reaches
	columns []viewColumn
	deps    []attrKey // columns of policy tables and views it reads

	// Set by classification.
	decrypting bool
	why        string           // why it is not decrypting
	phi        []*policy.Column // per column, the policy column it copies (Root), or nil
	tables     []*policy.Table  // the policy tables of roots
}

// viewColumn is a column of a view.
type viewColumn struct {
	attnum int16
	name   string
	typ    uint32
}

// readViewRow adds one row of the views part of the catalog query.
func readViewRow(views map[uint32]*catalogView, r [][]byte) error {
	num := func(b []byte, bits int) (int64, bool) {
		n, err := strconv.ParseInt(string(b), 10, bits+1)
		return n, err == nil
	}
	oid, ok := num(r[1], 32)
	if !ok {
		return fmt.Errorf("catalog row: malformed number")
	}
	v := views[uint32(oid)]
	if v == nil {
		v = &catalogView{oid: uint32(oid)}
		views[v.oid] = v
	}
	switch string(r[0]) {
	case rowView:
		root, ok := num(r[2], 32)
		if !ok || len(r) < 8 {
			return fmt.Errorf("catalog row: malformed view")
		}
		v.roots = append(v.roots, uint32(root))
		v.schema, v.name, v.identity, v.def, v.xmin = string(r[3]), string(r[4]), string(r[5]), string(r[6]), string(r[7])
	case rowViewCol:
		attnum, ok1 := num(r[2], 16)
		typ, ok2 := num(r[4], 32)
		if !ok1 || !ok2 {
			return fmt.Errorf("catalog row: malformed number")
		}
		v.columns = append(v.columns, viewColumn{attnum: int16(attnum), name: string(r[3]), typ: uint32(typ)})
	case rowViewDep:
		rel, ok1 := num(r[2], 32)
		attnum, ok2 := num(r[3], 16)
		if !ok1 || !ok2 {
			return fmt.Errorf("catalog row: malformed number")
		}
		v.deps = append(v.deps, attrKey{uint32(rel), int16(attnum)})
	}
	return nil
}

// classifyViews decides which views are decrypting views, in dependency
// order (a view over a view comes after it), fills the catalog's attrs,
// views and policy for them, and makes the others problems of the policy
// tables they reach. pol is the engine's policy; byOID its tables by OID.
func (c *catalog) classifyViews(pol *policy.Policy, views map[uint32]*catalogView, byOID map[uint32]*policy.Table) error {
	c.pol = pol
	if len(views) == 0 {
		return nil
	}
	// keys name each PHI column of a policy table, and of a decrypting
	// view once classified, by table OID and attnum, as pg_depend does;
	// by qualified name ("schema.table.column"), which WithViews keeps
	// while it makes new columns for the views each time.
	keys := map[string]attrKey{}
	for k, a := range c.attrs {
		if !a.index {
			keys[a.column.QualifiedName()] = k
		}
	}
	oids := make([]uint32, 0, len(views))
	for oid, v := range views {
		oids = append(oids, oid)
		slices.SortFunc(v.columns, func(a, b viewColumn) int { return int(a.attnum) - int(b.attnum) })
		slices.Sort(v.roots)
		v.roots = slices.Compact(v.roots)
		for _, r := range v.roots {
			if t := byOID[r]; t != nil {
				v.tables = append(v.tables, t)
			}
		}
	}
	slices.Sort(oids)
	var specs []policy.View
	done := map[uint32]bool{}
	for progress := true; progress; {
		progress = false
		for _, oid := range oids {
			v := views[oid]
			if done[oid] || !v.ready(views, done) {
				continue
			}
			done[oid], progress = true, true
			c.classifyView(v, views, keys)
			if !v.decrypting {
				continue
			}
			spec := policy.View{Schema: v.schema, Name: v.name}
			for i, col := range v.columns {
				if v.phi[i] != nil {
					spec.Columns = append(spec.Columns, policy.ViewColumn{Name: col.name, Base: v.phi[i]})
				}
			}
			next, err := pol.WithViews(append(slices.Clone(specs), spec))
			if err != nil {
				v.decrypting, v.why = false, err.Error()
				continue
			}
			specs = append(specs, spec)
			c.pol = next
			for i, col := range v.columns {
				if v.phi[i] != nil {
					k := attrKey{v.oid, col.attnum}
					c.attrs[k] = attr{column: v.phi[i]}
					keys[v.schema+"."+v.name+"."+col.name] = k
				}
			}
			if c.views == nil {
				c.views = map[string]*catalogView{}
			}
			c.views[v.schema+"."+v.name] = v
		}
	}
	for _, oid := range oids {
		v := views[oid]
		if !done[oid] {
			v.why = "it reads views phiproxy could not order"
		}
		if !v.decrypting {
			c.viewProblem(pol, v)
		}
	}
	return nil
}

// ready reports whether every view v reads has been classified.
func (v *catalogView) ready(views map[uint32]*catalogView, done map[uint32]bool) bool {
	for _, d := range v.deps {
		if _, isView := views[d.table]; isView && d.table != v.oid && !done[d.table] {
			return false
		}
	}
	return true
}

// classifyView decides whether v is a decrypting view (c.pol holds the
// decrypting views classified so far, keys their columns).
func (c *catalog) classifyView(v *catalogView, views map[uint32]*catalogView, keys map[string]attrKey) {
	fail := func(format string, args ...any) { v.decrypting, v.why = false, fmt.Sprintf(format, args...) }
	for _, d := range v.deps {
		if dv := views[d.table]; dv != nil && !dv.decrypting {
			fail("it reads view %s, which phiproxy cannot decrypt", dv.identity)
			return
		}
	}
	if v.def == "" || len(v.roots) == 0 {
		fail("its definition could not be read")
		return
	}
	cols, err := rewrite.ViewColumns(v.def, c.pol, c)
	if err != nil {
		var re *rewrite.Error
		if errors.As(err, &re) {
			fail("%s", re.Message)
		} else {
			fail("its definition could not be analyzed")
		}
		return
	}
	if len(cols) != len(v.columns) {
		fail("its definition has %d columns, the view %d", len(cols), len(v.columns))
		return
	}
	// What the definition copies must be exactly what PostgreSQL says the
	// view reads of PHI and blind-index columns: a name resolved otherwise
	// than the server resolved it (search_path), or a PHI column read
	// anywhere but as a plain output column, makes them differ.
	var copied, read []attrKey
	v.phi = make([]*policy.Column, len(cols))
	for i, col := range cols {
		if col == nil {
			continue
		}
		k, ok := keys[col.QualifiedName()]
		if !ok {
			fail("column %s copies %s, which the catalog does not describe", v.columns[i].name, col.QualifiedName())
			return
		}
		if want := storageOID(col.Root().Storage); v.columns[i].typ != want {
			fail("column %s has another type than %s", v.columns[i].name, col.QualifiedName())
			return
		}
		copied = append(copied, k)
		v.phi[i] = col.Root()
	}
	for _, d := range v.deps {
		if _, phi := c.attrs[d]; phi {
			read = append(read, d)
		}
	}
	slices.SortFunc(copied, compareKeys)
	slices.SortFunc(read, compareKeys)
	if !slices.Equal(slices.Compact(copied), slices.Compact(read)) {
		fail("it reads PHI or blind-index columns other than as plain output columns")
		return
	}
	v.decrypting, v.why = true, ""
}

func compareKeys(a, b attrKey) int {
	if a.table != b.table {
		if a.table < b.table {
			return -1
		}
		return 1
	}
	return int(a.attnum) - int(b.attnum)
}

// viewProblem makes a view that is not decrypting a second name of each
// policy table it reaches: those tables are refused, and so are
// statements that name it.
func (c *catalog) viewProblem(pol *policy.Policy, v *catalogView) {
	for _, t := range v.tables {
		p := aliasProblem(t, "view", v.identity, "")
		p.Message += " (" + v.why + ")"
		if !slices.Contains(c.problems[t.QualifiedName()], p) {
			c.problems[t.QualifiedName()] = append(c.problems[t.QualifiedName()], p)
		}
		if name := strings.ToLower(v.name); name != "" && len(pol.TablesNamed(v.name)) == 0 {
			if c.aliasNames == nil {
				c.aliasNames = map[string]Problem{}
			}
			if _, dup := c.aliasNames[name]; !dup {
				c.aliasNames[name] = p
			}
		}
	}
}

// viewRefusal is what refuses statements on the decrypting view t: the
// problems of the policy tables it reads.
func (c *catalog) viewRefusal(t *policy.Table) string {
	v := c.views[t.QualifiedName()]
	if v == nil {
		return fmt.Sprintf("view %s is no longer one phiproxy can decrypt", t.QualifiedName())
	}
	var msgs []string
	for _, rt := range v.tables {
		if msg := c.problem(rt); msg != "" {
			msgs = append(msgs, fmt.Sprintf("it reads table %s: %s", rt.QualifiedName(), msg))
		}
	}
	return strings.Join(msgs, " ")
}

// sameView reports whether o describes the decrypting view named q
// exactly as c does (sameTables).
func (c *catalog) sameView(o *catalog, q string) bool {
	cv, ov := c.views[q], o.views[q]
	if cv == nil || ov == nil {
		return cv == ov
	}
	if cv.oid != ov.oid || cv.xmin != ov.xmin || cv.def != ov.def || !slices.Equal(cv.columns, ov.columns) || !slices.Equal(cv.phi, ov.phi) {
		return false
	}
	return c.sameTables(o, cv.tables)
}

// viewColumns answers Columns for a decrypting view.
func (c *catalog) viewColumns(q string) ([]string, bool) {
	v := c.views[q]
	if v == nil {
		return nil, false
	}
	names := make([]string, len(v.columns))
	for i, col := range v.columns {
		names[i] = col.name
	}
	return names, true
}
