package phi

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/rewrite"
)

// A catalog built from the catalog query's rows (catalog_query.go).

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
