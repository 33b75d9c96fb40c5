package rewrite

import "sort"

// Where the parts of a text's plan made from its shape are in the client's
// text (Literal.Loc, Plan.Runs) and in the plan's SQL (Literal.Target,
// InsertValues): the shape's plan says it of its key, in which each of the
// text's literals is a $n.

// keyToText maps a byte offset in a shape's key, outside its $n, to the
// text the key was made of: each value before it was written as $n in the
// key (values are numbered in text order).
func keyToText(values []literal, off int) int {
	by := 0
	for i, v := range values {
		key := v.start - by // where its $n starts in the key
		if key >= off {
			break
		}
		by += len(v.raw) - 1 - digits(i+1)
	}
	return off + by
}

// digits is the number of decimal digits of n > 0.
func digits(n int) int {
	d := 1
	for ; n >= 10; n /= 10 {
		d++
	}
	return d
}

// runMapper finds, for a part of a shape's SQL copied into a text's plan,
// where its pieces copied from the shape's key are in the text.
type runMapper struct {
	shape  []Run // the shape's: its SQL and its key
	values []literal
	i      int // the first run not wholly before the parts still to come
}

// add appends to runs the pieces of shape SQL [from, to), written at out
// in the plan, that are copies of the key. Parts come in text order.
func (m *runMapper) add(runs []Run, from, to, out int) []Run {
	for ; m.i < len(m.shape) && m.shape[m.i].SQL+m.shape[m.i].Len <= from; m.i++ {
	}
	for j := m.i; j < len(m.shape) && m.shape[j].SQL < to; j++ {
		r := m.shape[j]
		x, y := max(r.SQL, from), min(r.SQL+r.Len, to)
		if x < y {
			runs = appendRun(runs, Run{SQL: out + x - from, Text: keyToText(m.values, r.Text+x-r.SQL), Len: y - x})
		}
	}
	return runs
}

// shift says that offsets of a shape's SQL from from on are by bytes
// further in a text's plan.
type shift struct{ from, by int }

// movedOffset maps off through shifts, sorted by from.
func movedOffset(shifts []shift, off int) int {
	i := sort.Search(len(shifts), func(i int) bool { return shifts[i].from > off })
	if i == 0 {
		return off
	}
	return off + shifts[i-1].by
}
