package differential

import "fmt"

// The initial data: the same INSERT statements, through the proxy into
// enc and directly into plain, compared like every other statement (so a
// value the proxy stores differently never gets in). Every good value of
// each column's pool is written at least once, the rest at random, with
// NULLs and duplicates; every bad value then gets an INSERT of its own,
// which PostgreSQL refuses. A row whose INSERT does not agree is written
// again one column at a time (an INSERT of its id, then an UPDATE per
// column), so that one value the proxy gets wrong costs that value only.

// loadSize is how many rows of each table the initial data has.
type loadSize struct{ patients, notes, types int }

var defaultLoad = loadSize{patients: 60, notes: 90, types: 50}

// loadItem is one statement of the initial data, and for a row the
// statements that write it column by column if it does not agree.
type loadItem struct {
	st       *statement
	fallback func() []*statement // nil for a bad value
}

// loadStatements returns the statements that load the initial data.
func (g *generator) loadStatements(n loadSize) []loadItem {
	var out []loadItem
	s := g.s
	for _, tn := range []struct {
		t    *table
		rows int
	}{{s.patients, n.patients}, {s.notes, n.notes}, {s.types, n.types}} {
		phi := tn.t.phiCols()
		for i := range tn.rows {
			vals := make([]value, len(phi))
			for j, c := range phi {
				vals[j] = g.loadValue(c, i, j)
			}
			t, patient := tn.t, 1+g.r.Int64N(int64(n.patients))
			st := g.loadRow(t, patient, vals)
			id := st.ids[0]
			out = append(out, loadItem{st: st, fallback: func() []*statement { return g.loadColumns(t, id, patient, vals) }})
		}
	}
	for _, t := range s.tables {
		g.loaded[t] = g.nextID[t] - 1
	}
	for _, t := range s.tables {
		for _, c := range t.phiCols() {
			for _, v := range pools[c.pool] {
				if v.bad {
					out = append(out, loadItem{st: g.loadBad(t, c, v)})
				}
			}
		}
	}
	return out
}

// loadValue is the value of the j-th PHI column in row i: the pool's good
// values in turn for the first rows, then random ones and NULLs.
func (g *generator) loadValue(c *column, i, j int) value {
	var good []value
	for _, v := range pools[c.pool] {
		if !v.bad {
			good = append(good, v)
		}
	}
	if i < len(good) {
		return good[(i+5*j)%len(good)]
	}
	if g.r.IntN(10) == 0 {
		return null
	}
	return good[g.r.IntN(len(good))]
}

// loadBad is an INSERT of one bad value into c, which PostgreSQL refuses.
func (g *generator) loadBad(t *table, c *column, v value) *statement {
	phi := t.phiCols()
	vals := make([]value, len(phi))
	for j, pc := range phi {
		vals[j] = null
		if pc == c {
			vals[j] = v
		}
	}
	st := g.loadRow(t, 1, vals)
	st.tags = append(st.tags, "load.bad")
	return st
}

// loadColumns writes a row one column at a time: an INSERT of its id (and
// a note's patient), then an UPDATE of each non-NULL column. They go in
// the simple protocol and draw nothing from the random source, so the
// statements generated after the load do not depend on whether a
// fallback ran.
func (g *generator) loadColumns(t *table, id, patient int64, vals []value) []*statement {
	fixed := func() *builder {
		b := &builder{g: g, r: g.r, st: &statement{seq: g.seq}, tags: map[string]bool{"load.fallback": true, "proto.simple": true}}
		b.st.table, b.st.ids = t, []int64{id}
		return b
	}
	b := fixed()
	b.st.kind = kindInsert
	if t == g.s.notes {
		b.w(fmt.Sprintf("INSERT INTO %s (id, patient_id) VALUES (%d, %d)", t.name, id, patient))
	} else {
		b.w(fmt.Sprintf("INSERT INTO %s (id) VALUES (%d)", t.name, id))
	}
	out := []*statement{b.finish()}
	for i, c := range t.phiCols() {
		if vals[i].null {
			continue
		}
		b := fixed()
		b.st.kind = kindUpdate
		b.w("UPDATE ", t.name, " SET ", c.name, " = ", b.write(c, vals[i]), fmt.Sprintf(" WHERE id = %d", id))
		out = append(out, b.finish())
	}
	return out
}
