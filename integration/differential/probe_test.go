package differential

import (
	"fmt"
	"math/rand/v2"
)

// The value probes run after the initial data and before the random
// statements: every odd and bad value of every pool, alone in its
// statement, written into a probe row of its table (read back), compared
// with = where its column is searchable, and inside an = ANY array
// parameter. The random grammar meets a given value in a given position
// rarely; the probes make sure each kind of value is tried in each way in
// every run, so that a difference is attributed to it alone.

// probeStatements returns the value probes. They draw from their own
// random source, so the statements generated after them do not depend on
// them.
func (g *generator) probeStatements() []*statement {
	r := rand.New(rand.NewPCG(14, 14))
	fixed := func(extended bool, tag string) *builder {
		b := &builder{g: g, r: r, st: &statement{seq: g.seq, extended: extended}, tags: map[string]bool{tag: true}}
		if extended {
			b.tag("proto.extended.text")
		} else {
			b.tag("proto.simple")
		}
		return b
	}
	var out []*statement
	for _, t := range g.s.tables {
		var cols []*column
		for _, c := range t.phiCols() {
			if p := splitPool(c.pool); len(p.odd)+len(p.bad) > 0 {
				cols = append(cols, c)
			}
		}
		if len(cols) == 0 {
			continue
		}
		id := g.nextID[t]
		g.nextID[t]++
		b := fixed(false, "probe.row")
		b.st.kind, b.st.table, b.st.ids = kindInsert, t, []int64{id}
		b.w(fmt.Sprintf("INSERT INTO %s (id) VALUES (%d)", t.name, id))
		out = append(out, b.finish())
		for _, c := range cols {
			for _, v := range pools[c.pool] {
				if v.tag == "" {
					continue
				}
				for _, extended := range []bool{false, true} {
					b := fixed(extended, "probe.write")
					b.st.kind, b.st.table, b.st.ids = kindUpdate, t, []int64{id}
					b.w("UPDATE ", t.name, " SET ", c.name, " = ", b.val(c, v), fmt.Sprintf(" WHERE id = %d", id))
					out = append(out, b.finish())
					if c.class == classPlain {
						continue
					}
					b = fixed(extended, "probe.eq")
					b.w("SELECT id FROM ", t.name, " WHERE ", c.name, " = ", b.val(c, v))
					out = append(out, b.finish())
				}
				if c.class != classPlain {
					b := fixed(true, "probe.any")
					b.w("SELECT id FROM ", t.name, " WHERE ", c.name, " = ANY (", b.array(c, []value{v}), ")")
					out = append(out, b.finish())
				}
			}
		}
	}
	return out
}
