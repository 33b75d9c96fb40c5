package differential

import (
	"fmt"
	"strings"
)

// The statement productions: what applications send. Reads are here,
// writes in grammar_write_test.go.
var statementProductions = []production{
	{name: "select.where", weight: 22, gen: genSelectWhere},
	{name: "select.star", weight: 6, gen: genSelectStar},
	{name: "select.cmp_output", weight: 6, gen: genCmpOutput},
	{name: "join.fk", weight: 5, gen: genJoinFK},
	{name: "join.self", weight: 5, gen: genJoinSelf},
	{name: "setop", weight: 6, gen: genSetop},
	{name: "setop.values", weight: 1, gen: genSetopValues},
	{name: "sub.in", weight: 3, gen: genSubIn},
	{name: "sub.exists", weight: 3, gen: genSubExists},
	{name: "sub.scalar", weight: 2, gen: genSubScalar},
	{name: "sub.from", weight: 3, gen: genSubFrom},
	{name: "sub.in_phi", weight: 2, gen: genSubInPHI},
	{name: "cte", weight: 4, gen: genCTE},
	{name: "agg", weight: 6, gen: genAgg},
	{name: "insert", weight: 14, gen: genInsert},
	{name: "insert.select", weight: 1, gen: genInsertSelect},
	{name: "update", weight: 8, gen: genUpdate},
	{name: "delete", weight: 3, gen: genDelete},
	{name: "precedence", weight: 3, gen: genPrecedence},
}

// ref qualifies a column name with alias, if any.
func ref(alias, name string) string {
	if alias == "" {
		return name
	}
	return alias + "." + name
}

// outputCols picks id and up to four more columns of t.
func (b *builder) outputCols(t *table) []*column {
	return append([]*column{t.cols[0]}, b.some(t.cols[1:], 1+b.r.IntN(4))...)
}

// list renders columns as a select list.
func list(alias string, cols []*column) string {
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = ref(alias, c.name)
	}
	return strings.Join(names, ", ")
}

// hasPHI reports whether any of cols is PHI.
func hasPHI(cols []*column) bool {
	for _, c := range cols {
		if c.phi() {
			return true
		}
	}
	return false
}

// maybeAlias returns "" or an alias for t, and the FROM item.
func (b *builder) maybeAlias(t *table) (alias, from string) {
	if b.r.IntN(3) == 0 {
		return "x", t.name + " AS x"
	}
	return "", t.name
}

// orderLimit sometimes appends ORDER BY id and LIMIT/OFFSET, and rarely an
// ORDER BY on a PHI column, which the proxy must refuse.
func (b *builder) orderLimit(t *table, alias string) {
	switch n := b.r.IntN(20); {
	case n < 6:
		b.tag("order.id")
		dir := []string{"", " DESC", " ASC"}[b.r.IntN(3)]
		b.w(" ORDER BY ", ref(alias, "id"), dir)
		if b.r.IntN(2) == 0 {
			b.tag("limit")
			b.w(fmt.Sprintf(" LIMIT %d", 1+b.r.IntN(10)))
			if b.r.IntN(3) == 0 {
				b.w(fmt.Sprintf(" OFFSET %d", b.r.IntN(5)))
			}
		}
	case n == 6:
		c := b.some(t.phiCols(), 1)[0]
		b.tag("order.phi." + string(c.class))
		b.w(" ORDER BY ", ref(alias, c.name), ", ", ref(alias, "id"))
	}
}

func genSelectWhere(b *builder) {
	t := b.anyTable()
	alias, from := b.maybeAlias(t)
	b.w("SELECT ", list(alias, b.outputCols(t)), " FROM ", from, " WHERE ", b.pred(t, alias))
	b.orderLimit(t, alias)
}

func genSelectStar(b *builder) {
	t := b.anyTable()
	alias, from := b.maybeAlias(t)
	b.w("SELECT * FROM ", from)
	if b.r.IntN(5) > 0 {
		b.w(" WHERE ", b.pred(t, alias))
	}
	b.orderLimit(t, alias)
}

// genCmpOutput writes comparisons as output columns.
func genCmpOutput(b *builder) {
	t := b.anyTable()
	b.w("SELECT id")
	for i := range 1 + b.r.IntN(3) {
		b.w(", ", b.atom(t.cols, "", "out"), fmt.Sprintf(" AS c%d", i+1))
	}
	b.w(" FROM ", t.name)
	if b.r.IntN(2) == 0 {
		b.w(" WHERE ", b.pred(t, ""))
	}
}

// genJoinFK joins the notes to their patients on the non-PHI foreign key.
func genJoinFK(b *builder) {
	s := b.g.s
	join := " JOIN "
	if b.r.IntN(3) == 0 {
		join = " LEFT JOIN "
		b.tag("join.left")
	}
	cols := "p.id, n.id AS note_id"
	if pc := b.some(s.patients.cols[1:], b.r.IntN(3)); len(pc) > 0 {
		cols += ", " + list("p", pc)
	}
	if nc := b.some(s.notes.cols[2:], b.r.IntN(3)); len(nc) > 0 {
		cols += ", " + list("n", nc)
	}
	b.w("SELECT ", cols, " FROM patients p", join, "clinical_notes n ON n.patient_id = p.id WHERE ")
	if b.r.IntN(2) == 0 {
		b.w(b.pred(s.patients, "p"))
	} else {
		b.w(b.pred(s.notes, "n"))
	}
}

// genJoinSelf joins a table to itself on one column: a blind index when
// the column has one, a refusal when it is PHI without one.
func genJoinSelf(b *builder) {
	t := b.g.s.patients
	if b.r.IntN(3) == 0 {
		t = b.g.s.types
	}
	c := b.some(append(t.phiCols(), t.cols[0]), 1)[0]
	b.tag("join.on." + string(c.class))
	if c.class == classNorm {
		b.tag(tagCmpNorm)
	}
	cols := "a.id, b.id AS b_id"
	if b.r.IntN(2) == 0 {
		cols += ", a." + c.name + ", b." + c.name
	}
	b.w("SELECT ", cols, " FROM ", t.name, " a JOIN ", t.name, " b ON a.", c.name, " = b.", c.name)
	if b.r.IntN(2) == 0 {
		b.w(" AND a.id <> b.id")
	}
	// A window of a's ids keeps the result small whatever the table's size.
	lo := 1 + b.r.Int64N(b.g.nextID[t])
	b.w(fmt.Sprintf(" WHERE a.id BETWEEN %d AND %d", lo, lo+29))
	if b.r.IntN(2) == 0 {
		b.w(" AND ", b.pred(t, "a"))
	}
}

// genSetop combines two selects of the same columns.
func genSetop(b *builder) {
	ops := []string{"UNION", "UNION ALL", "INTERSECT", "EXCEPT", "INTERSECT ALL", "EXCEPT ALL"}
	op := ops[b.r.IntN(len(ops))]
	t := b.anyTable()
	cols := b.outputCols(t)
	if b.r.IntN(2) == 0 {
		cols = cols[1:] // without id, duplicates matter
	}
	kind := "nonphi"
	if hasPHI(cols) {
		kind = "phi"
	}
	b.tag("setop." + strings.ToLower(strings.ReplaceAll(op, " ", "_")) + "." + kind)
	b.w("SELECT ", list("", cols), " FROM ", t.name, " WHERE ", b.pred(t, ""),
		" ", op, " SELECT ", list("", cols), " FROM ", t.name, " WHERE ", b.pred(t, ""))
}

// genSetopValues adds a VALUES row to a PHI result column: the literal
// must be encrypted or the statement refused, never forwarded.
func genSetopValues(b *builder) {
	t := b.anyTable()
	c := b.some(t.phiCols(), 1)[0]
	b.w("SELECT id, ", c.name, " FROM ", t.name, " WHERE ", b.pred(t, ""),
		" UNION ALL VALUES (0, ", b.val(c, b.uniqueValue(c)), ")")
}

func genSubIn(b *builder) {
	s := b.g.s
	not := ""
	if b.r.IntN(3) == 0 {
		not = "NOT "
	}
	b.w("SELECT ", list("", b.outputCols(s.patients)), " FROM patients WHERE id ", not,
		"IN (SELECT patient_id FROM clinical_notes WHERE ", b.pred(s.notes, ""), ")")
}

func genSubExists(b *builder) {
	s := b.g.s
	not := ""
	if b.r.IntN(3) == 0 {
		not = "NOT "
	}
	b.w("SELECT ", list("p", b.outputCols(s.patients)), " FROM patients p WHERE ", not,
		"EXISTS (SELECT 1 FROM clinical_notes n WHERE n.patient_id = p.id AND ", b.pred(s.notes, "n"), ")")
}

// genSubScalar has a scalar subquery as an output column: a count, or a
// PHI value, whose RowDescription names no table.
func genSubScalar(b *builder) {
	s := b.g.s
	sub := "(SELECT count(*) FROM clinical_notes n WHERE n.patient_id = p.id)"
	if b.r.IntN(2) == 0 {
		c := b.some(s.notes.phiCols(), 1)[0]
		b.tag("sub.scalar.phi")
		sub = "(SELECT n." + c.name + " FROM clinical_notes n WHERE n.patient_id = p.id ORDER BY n.id LIMIT 1)"
	}
	b.w("SELECT p.id, ", sub, " AS sub, ", list("p", b.outputCols(s.patients)[1:]), " FROM patients p WHERE ",
		b.pred(s.patients, "p"))
}

// genSubFrom selects from a derived table, sometimes with a predicate on
// its PHI columns.
func genSubFrom(b *builder) {
	t := b.anyTable()
	cols := b.outputCols(t)
	b.w("SELECT * FROM (SELECT ", list("", cols), " FROM ", t.name, " WHERE ", b.pred(t, ""), ") s")
	if b.r.IntN(2) == 0 {
		b.tag("sub.from.pred")
		b.w(" WHERE ", b.atom(cols, "s", "pred"))
	}
}

// genSubInPHI compares a PHI column with the same column of a subquery.
func genSubInPHI(b *builder) {
	t := b.g.s.patients
	if b.r.IntN(3) == 0 {
		t = b.g.s.types
	}
	c := b.some(t.phiCols(), 1)[0]
	b.tag("sub.in_phi." + string(c.class))
	if c.class == classNorm {
		b.tag(tagCmpNorm)
	}
	b.w("SELECT id, ", c.name, " FROM ", t.name, " WHERE ", c.name, " IN (SELECT ", c.name, " FROM ", t.name,
		" WHERE ", b.pred(t, ""), ")")
}

func genCTE(b *builder) {
	t := b.anyTable()
	cols := b.outputCols(t)
	b.w("WITH s AS (SELECT ", list("", cols), " FROM ", t.name, " WHERE ", b.pred(t, ""), ") ")
	switch b.r.IntN(3) {
	case 0:
		b.tag("cte.pred")
		b.w("SELECT * FROM s WHERE ", b.atom(cols, "s", "pred"))
	case 1:
		b.tag("cte.count")
		b.w("SELECT count(*) FROM s")
	default:
		b.w("SELECT * FROM s")
	}
}

// genAgg writes aggregates: counts are exact on ciphertext; DISTINCT,
// GROUP BY, min and max on PHI columns are not and must be refused.
func genAgg(b *builder) {
	t := b.anyTable()
	c := b.some(t.cols[1:], 1)[0]
	where := func() {
		if b.r.IntN(2) == 0 {
			b.w(" WHERE ", b.pred(t, ""))
		}
	}
	switch b.r.IntN(8) {
	case 0, 1:
		b.tag("agg.count_star")
		b.w("SELECT count(*) FROM ", t.name)
		where()
	case 2, 3:
		b.tag("agg.count_col." + string(c.class))
		b.w("SELECT count(", c.name, ") FROM ", t.name)
		where()
	case 4:
		b.tag("agg.group_nonphi")
		b.w("SELECT patient_id, count(*) FROM clinical_notes")
		t = b.g.s.notes
		where()
		b.w(" GROUP BY patient_id")
	case 5:
		b.tag("agg.count_distinct." + string(c.class))
		b.w("SELECT count(DISTINCT ", c.name, ") FROM ", t.name)
	case 6:
		b.tag("agg.group_phi." + string(c.class))
		b.w("SELECT ", c.name, ", count(*) FROM ", t.name, " GROUP BY ", c.name)
	default:
		b.tag("agg.max." + string(c.class))
		b.w("SELECT max(", c.name, ") FROM ", t.name)
	}
}
