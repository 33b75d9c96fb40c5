package differential

import (
	"fmt"
	"strconv"
	"strings"
)

// The write productions: INSERT (single and multi-row, positional,
// DEFAULT, ON CONFLICT, RETURNING), INSERT … SELECT, UPDATE and DELETE.
// Every INSERT writes explicit ids, so that both sides stay in step even
// when one side refuses: a sequence advances on a statement that fails.

// writeTable picks the table a write goes to.
func (b *builder) writeTable() *table {
	switch n := b.r.IntN(10); {
	case n < 4:
		return b.g.s.patients
	case n < 7:
		return b.g.s.notes
	default:
		return b.g.s.types
	}
}

// insertCols picks the columns of an INSERT into t: id, the foreign key
// of a note, and some PHI columns.
func (b *builder) insertCols(t *table) []*column {
	cols := []*column{t.cols[0]}
	if t == b.g.s.notes {
		cols = append(cols, t.col("patient_id"))
	}
	phi := t.phiCols()
	for _, i := range b.r.Perm(len(phi)) {
		if b.r.IntN(10) < 6 || len(cols) == 1 || (t == b.g.s.notes && len(cols) == 2) {
			cols = append(cols, phi[i])
		}
	}
	return cols
}

// returning sometimes appends RETURNING.
func (b *builder) returning(t *table, prefix string) {
	switch b.r.IntN(10) {
	case 0, 1:
		b.tag(prefix + ".returning")
		b.w(" RETURNING ", list("", b.outputCols(t)))
	case 2:
		b.tag(prefix + ".returning")
		b.w(" RETURNING *")
	}
}

// genInsert writes an INSERT of new rows, or of existing ids with ON
// CONFLICT.
func genInsert(b *builder) {
	t := b.writeTable()
	b.st.kind, b.st.table = kindInsert, t
	nrows := 1
	if b.r.IntN(10) < 3 {
		nrows = 2 + b.r.IntN(2)
		b.tag("insert.multi")
	}
	conflict := b.r.IntN(10) < 2
	positional := b.r.IntN(10) == 0
	cols := t.cols
	if positional {
		b.tag("insert.positional")
		b.w("INSERT INTO ", t.name, " VALUES ")
	} else {
		cols = b.insertCols(t)
		b.w("INSERT INTO ", t.name, " (", list("", cols), ") VALUES ")
	}
	for r := range nrows {
		id := b.newID(t)
		if conflict && b.r.IntN(10) < 6 {
			id = 1 + b.r.Int64N(b.g.nextID[t])
		}
		b.st.ids = append(b.st.ids, id)
		if r > 0 {
			b.w(", ")
		}
		b.w("(", strconv.FormatInt(id, 10))
		for _, c := range cols[1:] {
			b.w(", ")
			switch {
			case c.name == "created_at":
				b.w("DEFAULT")
			case c.phi() && b.r.IntN(20) == 0:
				b.tag("insert.default")
				b.w("DEFAULT")
			default:
				b.w(b.write(c, b.pick(c, true)))
			}
		}
		b.w(")")
	}
	if conflict {
		b.onConflict(t, cols)
	}
	b.returning(t, "insert")
}

// onConflict appends ON CONFLICT (id) DO NOTHING or DO UPDATE.
func (b *builder) onConflict(t *table, cols []*column) {
	var phi []*column
	for _, c := range cols {
		if c.phi() {
			phi = append(phi, c)
		}
	}
	if len(phi) == 0 || b.r.IntN(3) == 0 {
		b.tag("insert.conflict_nothing")
		b.w(" ON CONFLICT (id) DO NOTHING")
		return
	}
	b.tag("insert.conflict_update")
	var sets []string
	for _, c := range b.some(phi, 1+b.r.IntN(2)) {
		if b.r.IntN(4) == 0 {
			b.tag("insert.conflict_update.value")
			sets = append(sets, c.name+" = "+b.write(c, b.pick(c, true)))
			continue
		}
		sets = append(sets, c.name+" = EXCLUDED."+c.name)
	}
	b.w(" ON CONFLICT (id) DO UPDATE SET ", strings.Join(sets, ", "))
}

// genInsertSelect copies rows of a table into itself: refused when a PHI
// column is copied.
func genInsertSelect(b *builder) {
	t := b.writeTable()
	b.st.kind, b.st.table = kindInsert, t
	cols := b.insertCols(t)
	src := "id + 1000000"
	for _, c := range cols[1:] {
		src += ", " + c.name
	}
	b.w("INSERT INTO ", t.name, " (", list("", cols), ") SELECT ", src, " FROM ", t.name, " WHERE ", b.pred(t, ""))
}

// genUpdate sets one or two columns of the rows a predicate selects.
func genUpdate(b *builder) {
	t := b.writeTable()
	b.st.kind, b.st.table = kindUpdate, t
	alias, from := b.maybeAlias(t)
	phi := t.phiCols()
	var sets []string
	for _, c := range b.some(phi, 1+b.r.IntN(2)) {
		if o := b.sameType(phi, c); o != nil && b.r.IntN(20) == 0 {
			// A ciphertext is bound to its column: copying it into
			// another column must be refused.
			b.tag("update.copy")
			sets = append(sets, c.name+" = "+o.name)
			continue
		}
		sets = append(sets, c.name+" = "+b.write(c, b.pick(c, true)))
	}
	if t == b.g.s.notes && b.r.IntN(10) == 0 {
		c := t.col("patient_id")
		sets = append(sets, c.name+" = "+b.val(c, b.pick(c, false)))
	}
	b.w("UPDATE ", from, " SET ", strings.Join(sets, ", "), " WHERE ", b.bound(t, alias, "update"))
	b.returning(t, "update")
}

// bound mostly restricts an UPDATE or DELETE to a window of ten ids, as
// applications mostly change a few rows, and then reads back only that
// window. The rare unbounded one has a single selective predicate:
// together they keep the tables from running empty or alike.
func (b *builder) bound(t *table, alias, prefix string) (where string) {
	if b.r.IntN(20) == 0 {
		b.tag(prefix + ".unbounded")
		return b.selectiveAtom(t, alias)
	}
	lo := 1 + b.r.Int64N(b.g.nextID[t])
	for id := lo; id <= lo+9; id++ {
		b.st.ids = append(b.st.ids, id)
	}
	return fmt.Sprintf("%s AND %s BETWEEN %d AND %d", b.pred(t, alias), ref(alias, "id"), lo, lo+9)
}

// selectiveAtom is an atom that selects few rows: =, IN, = ANY or IS
// NOT DISTINCT FROM.
func (b *builder) selectiveAtom(t *table, alias string) string {
	var sel []production
	for _, p := range b.g.atoms {
		if selective[p.name] {
			sel = append(sel, p)
		}
	}
	if len(sel) == 0 {
		return b.atom(t.cols, alias, "pred") // all switched off: any atom
	}
	saved := b.g.atoms
	b.g.atoms = sel
	defer func() { b.g.atoms = saved }()
	return b.atom(t.cols, alias, "pred")
}

var selective = map[string]bool{"pred.eq": true, "pred.in": true, "pred.any": true, "pred.not_distinct": true}

// trimStatements delete the rows written more than keepIDs ids ago,
// except the initial data, notes first (a patient with notes cannot be
// deleted): the generator never sees results, so this is what bounds the
// tables' size, and with it the cost of a statement.
func (g *generator) trimStatements() []*statement {
	var out []*statement
	for _, t := range []*table{g.s.notes, g.s.patients, g.s.types} {
		hi := g.nextID[t] - keepIDs
		if hi <= g.loaded[t] {
			continue
		}
		b := g.newBuilder()
		b.tag("trim")
		b.st.kind, b.st.table = kindDelete, t
		b.w(fmt.Sprintf("DELETE FROM %s WHERE id > %d AND id < %d", t.name, g.loaded[t], hi))
		if t == g.s.patients {
			b.w(" AND id NOT IN (SELECT patient_id FROM clinical_notes)")
		}
		out = append(out, b.finish())
	}
	return out
}

// keepIDs is how many of the latest ids of a table trimStatements keeps;
// trimEvery is how many statements apart they run.
const (
	keepIDs   = 300
	trimEvery = 250
)

// sameType returns another column of cols with c's type, or nil.
func (b *builder) sameType(cols []*column, c *column) *column {
	for _, o := range cols {
		if o != c && o.typ == c.typ {
			return o
		}
	}
	return nil
}

// genDelete deletes the rows a predicate selects (a patient with notes
// cannot be deleted: 23503 on both sides).
func genDelete(b *builder) {
	t := b.writeTable()
	b.st.kind, b.st.table = kindDelete, t
	alias, from := b.maybeAlias(t)
	b.w("DELETE FROM ", from, " WHERE ", b.bound(t, alias, "delete"))
	b.returning(t, "delete")
}

// loadRow returns the INSERT of one row of the initial data: vals holds a
// value for each PHI column of t (in order), and a note's patient.
func (g *generator) loadRow(t *table, patient int64, vals []value) *statement {
	b := g.newBuilder()
	b.tag("load")
	b.st.kind, b.st.table = kindInsert, t
	id := b.newID(t)
	b.st.ids = []int64{id}
	cols := []*column{t.cols[0]}
	lits := []string{strconv.FormatInt(id, 10)}
	if t == g.s.notes {
		cols = append(cols, t.col("patient_id"))
		lits = append(lits, strconv.FormatInt(patient, 10))
	}
	for i, c := range t.phiCols() {
		cols = append(cols, c)
		lits = append(lits, b.write(c, vals[i]))
	}
	b.w("INSERT INTO ", t.name, " (", list("", cols), ") VALUES (", strings.Join(lits, ", "), ")")
	return b.finish()
}
