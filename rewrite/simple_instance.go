package rewrite

import (
	"slices"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// A shape's plan is made once; each text of the shape is an instance of
// it: every $n and literal slot of the shape's SQL becomes a literal slot
// of the text's plan (filled by the proxy), or for a parameter the shape
// forwards unchanged (ActionNone), the text's own literal as written.
// shapeInstance is what is needed to make the instances of one shape,
// found once per shape and kept in its cache entry.
type shapeInstance struct {
	// ok is false when the shape's texts cannot be made from its plan
	// (an array parameter, slots not found): they are analyzed
	// themselves.
	ok bool
	// slots are the shape SQL's $n and literal slots, in text order.
	slots []instanceSlot
	// maxSource is the highest literal of the text a slot takes (-1:
	// none); a text with fewer literals is analyzed itself.
	maxSource int
	// sqlLen is the length of the shape's SQL; runs, its Runs.
	sqlLen int
	runs   []Run
	// view is the plan handed out for the shape's texts by
	// AnalyzeSimpleScratch: what the statements are (Statements, Copy,
	// Fingerprint), SQL the shape's, no Literals and no Params. Rendered
	// without the scratch's literals it would send the shape's $n, which
	// the server refuses: never a value.
	view *Plan
}

// instanceSlot is one slot of a shape's SQL: lit (Start and End in the
// shape's SQL) with the value of the text's literal source, or when
// source is -1, a literal slot of the shape itself, as it is.
type instanceSlot struct {
	lit    Literal
	source int
}

// instanceOf returns the instance of e's plan, making it the first time.
func (c *Cache) instanceOf(e *cacheEntry) *shapeInstance {
	if in := e.inst.Load(); in != nil {
		return in
	}
	in := newInstance(e.plan)
	e.inst.CompareAndSwap(nil, in)
	return e.inst.Load()
}

// newInstance finds the slots of shape's SQL: pg_query's Scan finds its
// parameters, each matched with the plan's Params and Literals.
func newInstance(shape *Plan) *shapeInstance {
	in := &shapeInstance{maxSource: -1, sqlLen: len(shape.SQL), runs: shape.Runs}
	in.view = &Plan{SQL: shape.SQL, Statements: shape.Statements, Fingerprint: shape.Fingerprint, Copy: shape.Copy}
	if len(shape.Params) == 0 && len(shape.Literals) == 0 {
		in.ok = true
		return in
	}
	toks, err := scan(shape.SQL)
	if err != nil {
		return in
	}
	lit := 0
	for _, t := range toks {
		if t.kind != pg.Token_PARAM {
			continue
		}
		text := shape.SQL[t.start:t.end]
		if text == slotPlaceholder {
			if lit >= len(shape.Literals) || shape.Literals[lit].Start != t.start || shape.Literals[lit].Action == ActionNone {
				return in
			}
			in.slots = append(in.slots, instanceSlot{lit: shape.Literals[lit], source: -1})
			lit++
			continue
		}
		n := 0
		for _, ch := range text[1:] {
			n = n*10 + int(ch-'0')
		}
		if n < 1 || n > len(shape.Params) {
			return in
		}
		prm := shape.Params[n-1]
		if prm.Array {
			return in
		}
		in.slots = append(in.slots, instanceSlot{source: prm.Source, lit: Literal{Start: t.start, End: t.end,
			Action: prm.Action, Column: prm.Column, Index: prm.Index, Type: prm.Type, Assign: prm.Assign,
			Target: prm.Target, Row: prm.Row}})
		in.maxSource = max(in.maxSource, prm.Source)
	}
	if lit != len(shape.Literals) || len(in.slots) == 0 {
		in.slots = nil
		return in
	}
	in.ok = true
	return in
}

// appendLiterals appends to dst the literals of the text whose literals
// are values, one per slot (literal), with Start and End in the shape's
// SQL. The caller checked that values has a literal for every slot.
func (in *shapeInstance) appendLiterals(dst []Literal, values []literal) []Literal {
	n := len(dst)
	dst = slices.Grow(dst, len(in.slots))[:n+len(in.slots)]
	for i := range in.slots {
		in.setLiteral(&dst[n+i], i, values)
	}
	return dst
}

// literal is slot i's literal for the text whose literals are values: a
// parameter the shape forwards unchanged is an ActionNone literal whose
// Value is the text's literal as written.
func (in *shapeInstance) literal(i int, values []literal) Literal {
	var l Literal
	in.setLiteral(&l, i, values)
	return l
}

// setLiteral sets *l to literal(i, values). Its Loc is in the text; its
// Start, End and Target stay in the shape's SQL.
func (in *shapeInstance) setLiteral(l *Literal, i int, values []literal) {
	s := &in.slots[i]
	*l = s.lit
	switch {
	case s.source < 0:
		l.Loc = keyToText(values, l.Loc)
		return
	case l.Action == ActionNone:
		l.Value = values[s.source].raw
	default:
		l.Value = values[s.source].value
	}
	l.Loc = values[s.source].start
}

// appendRuns appends to dst the runs of the shape's SQL for the text whose
// literals are values, in the shape's SQL: the parts between the slots
// that are copies of the key are copies of the text.
func (in *shapeInstance) appendRuns(dst []Run, values []literal) []Run {
	runs := runMapper{shape: in.runs, values: values}
	at := 0
	for i := range in.slots {
		s := &in.slots[i].lit
		dst = runs.add(dst, at, s.Start, at)
		at = s.End
	}
	return runs.add(dst, at, in.sqlLen, at)
}

// instantiate builds the plan of one text from its shape's plan and the
// text's literals, as a plan of its own: literals forwarded unchanged are
// written into its SQL, the others are literal slots. Its Runs, the
// literals' Loc and Target and its statements' InsertValues are the
// text's.
func instantiate(shape *Plan, in *shapeInstance, values []literal) (*Plan, bool) {
	if !in.ok || in.maxSource >= len(values) {
		return nil, false
	}
	p := &Plan{Statements: shape.Statements, Fingerprint: shape.Fingerprint}
	n, size := 0, len(shape.SQL)
	for i := range in.slots {
		if s := &in.slots[i]; s.source < 0 || s.lit.Action != ActionNone {
			n++
		} else {
			size += len(values[s.source].raw)
		}
	}
	if n > 0 {
		p.Literals = make([]Literal, 0, n)
	}
	var b strings.Builder
	b.Grow(size)
	at := 0
	// moved maps an offset in shape.SQL before the slots written so
	// far to the text's (Literal.Target): each slot shifts what follows.
	shifts := make([]shift, 0, len(in.slots))
	moved := func(off int) int { return movedOffset(shifts, off) }
	runs := runMapper{shape: shape.Runs, values: values}
	p.Runs = make([]Run, 0, len(shape.Runs)+len(in.slots)+1)
	for i := range in.slots {
		l := in.literal(i, values)
		p.Runs = runs.add(p.Runs, at, l.Start, b.Len())
		b.WriteString(shape.SQL[at:l.Start])
		at = l.End
		if l.Action == ActionNone {
			p.Runs = appendRun(p.Runs, Run{SQL: b.Len(), Text: l.Loc, Len: len(l.Value)})
			b.WriteString(l.Value)
			shifts = append(shifts, shift{at, b.Len() - at})
			continue
		}
		if l.Target > 0 {
			l.Target = moved(l.Target)
		}
		l.Start = b.Len()
		b.WriteString(slotPlaceholder)
		l.End = b.Len()
		p.Literals = append(p.Literals, l)
		shifts = append(shifts, shift{at, b.Len() - at})
	}
	p.Runs = runs.add(p.Runs, at, len(shape.SQL), b.Len())
	b.WriteString(shape.SQL[at:])
	p.SQL = b.String()
	cloned := false
	for i, st := range shape.Statements {
		if st.Values == nil {
			continue
		}
		if !cloned {
			p.Statements, cloned = slices.Clone(shape.Statements), true
		}
		v := &InsertValues{Start: moved(st.Values.Start), Insert: moved(st.Values.Insert), Values: moved(st.Values.Values), End: moved(st.Values.End)}
		for _, r := range st.Values.Rows {
			v.Rows = append(v.Rows, [2]int{moved(r[0]), moved(r[1])})
		}
		p.Statements[i].Values = v
	}
	if c := shape.Copy; c != nil && c.Table == nil {
		// No slot follows the query of COPY (query) TO: its end keeps its
		// distance from the end of the text.
		cp := *c
		cp.QueryEnd = len(p.SQL) - (len(shape.SQL) - c.QueryEnd)
		p.Copy = &cp
	} else {
		p.Copy = shape.Copy
	}
	return p, true
}
