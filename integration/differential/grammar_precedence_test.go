package differential

import (
	"strconv"
	"strings"
)

// Error precedence (issue 14): statements with an invalid PHI value and
// an invalid plain value, placed where PostgreSQL meets one or the other
// first — WHERE and RETURNING before UPDATE's SET list, casts before the
// values of a row or SET list are assigned, rows in order, parameters in
// order at Bind. Both sides fail; the SQLSTATE must agree. Tagged
// "prec.<shape>", and "prec.cast" when the plain value is a cast (which
// PostgreSQL reads before the uncast values around it).

// genPrecedence writes one statement of the class.
func genPrecedence(b *builder) {
	t := b.g.s.types
	b.st.kind, b.st.table = kindUpdate, t
	for id := int64(1); id <= 10; id++ {
		b.st.ids = append(b.st.ids, id) // read back, though the statement fails
	}
	switch b.r.IntN(5) {
	case 0:
		b.tag("prec.update_where")
		b.w("UPDATE ", t.name, " SET ", b.precSets(t, false), " WHERE ")
		b.w(b.precConds(t), " AND id BETWEEN 1 AND 10")
		if b.r.IntN(4) == 0 {
			b.tag("prec.returning")
			b.w(" RETURNING id, ", b.badPlain(true))
		}
	case 1:
		b.tag("prec.update_set")
		b.w("UPDATE ", t.name, " SET ", b.precSets(t, true), " WHERE id BETWEEN 1 AND 10")
	case 2:
		b.st.kind, b.st.ids = kindInsert, nil
		b.precInsert(t)
	case 3:
		b.tag("prec.delete")
		b.st.kind = kindDelete
		b.w("DELETE FROM ", t.name, " WHERE ", b.precConds(t), " AND id BETWEEN 1 AND 10")
	default:
		b.tag("prec.select")
		b.st.kind = kindRead
		b.w("SELECT id FROM ", t.name, " WHERE ", b.precConds(t))
	}
}

// precPHI returns a PHI column of t that has invalid values, and one of
// them; indexed: one that can be compared.
func (b *builder) precPHI(t *table, indexed bool) (*column, value) {
	var cands []*column
	for _, c := range t.phiCols() {
		if len(splitPool(c.pool).bad) > 0 && (!indexed || c.class == classExact || c.class == classNorm) {
			cands = append(cands, c)
		}
	}
	c := cands[b.r.IntN(len(cands))]
	p := splitPool(c.pool)
	return c, p.bad[b.r.IntN(len(p.bad))]
}

// badPlain returns an invalid value for the integer id column: a literal
// (quoted, or cast when cast), or in the extended protocol sometimes a
// parameter. None holds a PHI value of the pools (the leak check looks for
// them in the server log).
func (b *builder) badPlain(cast bool) string {
	v := []string{"abc", "1.5", "2222222222", ""}[b.r.IntN(4)] // 22P02, 22P02, 22003, 22P02
	if cast {
		b.tag("prec.cast")
		return quote(v) + "::int4"
	}
	if b.st.extended && b.r.IntN(2) == 0 {
		b.tag("prec.plain_param")
		b.st.params = append(b.st.params, param{val: []byte(v)})
		return "$" + strconv.Itoa(len(b.st.params))
	}
	return quote(v)
}

// precConds is a condition with an invalid PHI comparison and an invalid
// plain one, in either order.
func (b *builder) precConds(t *table) string {
	c, v := b.precPHI(t, true)
	var phi string
	if b.r.IntN(3) == 0 {
		phi = c.name + " IN (" + b.val(c, b.pick(c, false)) + ", " + b.val(c, v) + ")"
	} else {
		phi = c.name + " = " + b.val(c, v)
	}
	plain := "id = " + b.badPlain(b.r.IntN(4) == 0)
	if b.r.IntN(2) == 0 {
		return "(" + phi + " OR " + plain + ")"
	}
	return "(" + plain + " OR " + phi + ")"
}

// precSets is an UPDATE's SET list with an invalid PHI value; with plain,
// an invalid plain value (for id) before or after it too.
func (b *builder) precSets(t *table, plain bool) string {
	c, v := b.precPHI(t, false)
	sets := []string{c.name + " = " + b.write(c, v)}
	if o := b.precOther(t, c); o != nil {
		sets = append(sets, o.name+" = "+b.write(o, b.pick(o, true)))
	}
	if plain {
		p := "id = " + b.badPlain(b.r.IntN(4) == 0)
		if b.r.IntN(2) == 0 {
			sets = append([]string{p}, sets...)
		} else {
			sets = append(sets, p)
		}
	}
	b.r.Shuffle(len(sets), func(i, j int) { sets[i], sets[j] = sets[j], sets[i] })
	return strings.Join(sets, ", ")
}

// precOther sometimes returns another PHI column of t than c.
func (b *builder) precOther(t *table, c *column) *column {
	if b.r.IntN(2) == 0 {
		return nil
	}
	phi := t.phiCols()
	if o := phi[b.r.IntN(len(phi))]; o != c {
		return o
	}
	return nil
}

// precInsert is an INSERT of two or three rows, one with an invalid PHI
// value and one (the same or another) with an invalid plain id, sometimes
// with ON CONFLICT DO UPDATE setting an invalid PHI value.
func (b *builder) precInsert(t *table) {
	b.tag("prec.insert")
	c, v := b.precPHI(t, false)
	cols := []*column{t.cols[0], c}
	if o := b.precOther(t, c); o != nil {
		cols = append(cols, o)
	}
	idFirst := b.r.IntN(2) == 0
	if !idFirst {
		cols[0], cols[1] = cols[1], cols[0]
	}
	nrows := 2 + b.r.IntN(2)
	badPHIRow, badIDRow := b.r.IntN(nrows), b.r.IntN(nrows)
	var rows []string
	for r := range nrows {
		id := b.newID(t)
		b.st.ids = append(b.st.ids, id)
		vals := make([]string, len(cols))
		for i, col := range cols {
			switch {
			case col == t.cols[0] && r == badIDRow:
				vals[i] = b.badPlain(b.r.IntN(4) == 0)
			case col == t.cols[0]:
				vals[i] = strconv.FormatInt(id, 10)
			case col == c && r == badPHIRow:
				vals[i] = b.write(c, v)
			default:
				vals[i] = b.write(col, b.pick(col, false))
			}
		}
		rows = append(rows, "("+strings.Join(vals, ", ")+")")
	}
	b.w("INSERT INTO ", t.name, " (", list("", cols), ") VALUES ", strings.Join(rows, ", "))
	if b.r.IntN(4) == 0 {
		b.tag("prec.conflict")
		c2, v2 := b.precPHI(t, false)
		b.w(" ON CONFLICT (id) DO UPDATE SET ", c2.name, " = ", b.write(c2, v2))
	}
}
