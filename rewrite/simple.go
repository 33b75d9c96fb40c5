package rewrite

import (
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// Simple-protocol texts carry their values as literals (psql, psycopg2,
// pgbench -M simple), so texts rarely repeat and every statement would be a
// cache miss and a full parse. AnalyzeSimple instead keys the plan by the
// text's shape: each plain string literal in a value position becomes a
// parameter ($1, $2, … in the key), the shape is analyzed once like a
// prepared statement, and the plan of each text is instantiated from it:
// parameters the shape encrypts or indexes become literal slots holding the
// text's values, the others get their literal back unchanged.
//
// It is safe because a parameter is never less protected than a literal:
// wherever a value reaches a PHI column, the analyzer encrypts or indexes
// the parameter standing there, or rejects the statement. Whatever the
// shape path cannot express (arrays, client parameters, literals it cannot
// decode, a shape that fails analysis) goes through Analyze of the exact
// text, which also yields the literal path's own errors.

// AnalyzeSimple returns the plan of sql, a simple Query's text, read with
// the server's default settings (standard_conforming_strings on,
// client_encoding UTF8). Its result equals Analyze's
// (TestAnalyzeSimpleMatchesAnalyze) but is usually made from a cached
// shape. Plans of texts that name a policy table are built per call and
// not cached.
func (c *Cache) AnalyzeSimple(sql string) (*Plan, error) {
	return c.AnalyzeSimpleWith(sql, LexOptions{})
}

// AnalyzeSimpleWith is AnalyzeSimple for a session whose scanner settings
// are o (from its ParameterStatus messages, once ReadyForQuery has
// confirmed them): the literals are found and decoded as the server will
// read them. pg_query reads every text with the default settings, so
// only texts and shape keys that read the same under those (portable:
// ASCII outside the replaced literals in a client_encoding other than
// UTF8, no backslash in a '…' string kept in the key when
// standard_conforming_strings is off) are analyzed and cached; those
// cache entries are right for every session, whatever its settings, so
// the settings need no place in the cache key. Anything else is refused
// (0A000). Literal values are in the client's encoding.
func (c *Cache) AnalyzeSimpleWith(sql string, o LexOptions) (*Plan, error) {
	if c.pol.Empty() || !mentionsPolicy(sql, c.pol) {
		return c.Analyze(sql)
	}
	def := o == LexOptions{}
	if def {
		if p, err, ok := c.lookup(sql); ok {
			return p, err
		}
	}
	sh, err := shapeWith(sql, o)
	switch {
	case err != nil && def:
		return c.Analyze(sql) // pg_query gives the text its own error
	case err != nil:
		return nil, lexRejection(sql, err, o)
	case !sh.textPortable && !(sh.ok && sh.keyPortable):
		return nil, settingsRejection(o)
	case !def && sh.textPortable:
		if p, err, ok := c.lookup(sql); ok {
			return p, err
		}
	}
	if !sh.ok {
		return c.Analyze(sql)
	}
	shape, err := c.Analyze(sh.key)
	switch {
	case err != nil && !sh.textPortable:
		return nil, keyError(err, sql, sh, o) // the text cannot be analyzed for its own error
	case shape != nil && shape.Passthrough && !sh.textPortable:
		// The policy table's name was inside a literal; the literals
		// are values, so the text touches no policy table either.
		return &Plan{SQL: sql, Passthrough: true, Statements: shape.Statements, Fingerprint: shape.Fingerprint}, nil
	case err != nil || shape.Passthrough:
		// A rejected shape: the text's own analysis gives its own error.
		// A shape that touches no policy table: the name was inside a
		// literal, rare enough to parse the text itself.
		return c.Analyze(sql)
	}
	if p, ok := instantiate(shape, c.slotsOf(sh.key, shape), sh.values); ok {
		return p, nil
	}
	if !sh.textPortable {
		return nil, settingsRejection(o)
	}
	return c.Analyze(sql)
}

// lookup returns the cached plan of exactly sql, counting a hit.
func (c *Cache) lookup(sql string) (*Plan, error, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[sql]
	if !ok {
		return nil, nil, false
	}
	c.unlink(e)
	c.pushFront(e)
	c.hits.Add(1)
	return e.plan, e.err, true
}

// lexRejection is the rejection of a text the server would refuse while
// reading it under the session's settings.
func lexRejection(sql string, err error, o LexOptions) *Error {
	le, ok := err.(*LexError)
	if !ok {
		return &Error{Code: CodeSyntaxError, Message: "syntax error"}
	}
	return &Error{Code: le.Code, Message: le.Message, Position: charPosition(sql, le.Pos, o.Encoding)}
}

// keyError is err, found in sh's key, told in terms of the client's text
// sql read under o: its position moved across the literals the key
// replaced by $n, and the parser's exact message quoting the literal
// where it quotes its $n (as the server, reading the text, would).
func keyError(err error, sql string, sh simpleShape, o LexOptions) error {
	e, ok := err.(*Error)
	if !ok || (e.Position == 0 && !strings.Contains(e.Exact, `"$`)) {
		return err
	}
	out := *e
	out.Position, out.Exact = 0, ""
	if e.Position == 0 {
		return &out
	}
	kb := 0 // the byte offset in the key of character e.Position
	for n := 1; n < e.Position && kb < len(sh.key); n++ {
		_, size := utf8.DecodeRuneInString(sh.key[kb:])
		kb += size
	}
	shift, slot := 0, -1 // bytes the literals before kb add; the literal at kb
	for i, l := range sh.values {
		at := l.start - shift // where its $n is in the key
		if kb < at {
			break
		}
		placeholder := len(strconv.Itoa(i+1)) + 1
		if kb < at+placeholder {
			slot = i
			break
		}
		shift += len(l.raw) - placeholder
	}
	tb := kb + shift
	if slot >= 0 {
		tb = sh.values[slot].start
	}
	if tb > len(sql) {
		return &out
	}
	out.Position = charPosition(sql, tb, o.Encoding)
	switch near := ` at or near "$`; {
	case e.Exact == "":
	case slot >= 0 && strings.HasSuffix(e.Exact, near+strconv.Itoa(slot+1)+`"`):
		out.Exact = strings.TrimSuffix(e.Exact, `$`+strconv.Itoa(slot+1)+`"`) + sh.values[slot].raw + `"`
	case slot < 0 && !strings.Contains(e.Exact, `"$`):
		out.Exact = e.Exact
	}
	return &out
}

// settingsRejection refuses a text on a policy table that pg_query cannot
// read as the server will under the session's settings.
func settingsRejection(o LexOptions) *Error {
	var hint []string
	if o.StandardStringsOff {
		hint = append(hint, "With standard_conforming_strings off, a '...' string holding a backslash is supported only as a value (col = '...', VALUES ('...')); write E'...' elsewhere.")
	}
	if o.Encoding.class() != classUTF8 {
		hint = append(hint, "With client_encoding "+o.Encoding.String()+", non-ASCII characters are supported only in string values (col = '...', VALUES ('...')).")
	}
	hint = append(hint, "Or SET standard_conforming_strings = on, client_encoding = 'UTF8'.")
	return (&Error{Code: CodeFeatureNotSupported,
		Message: "statements on PHI tables must read the same as with standard_conforming_strings on and client_encoding UTF8"}).hint(hint...)
}

// charPosition converts byte offset pos of sql to the 1-based character
// position an ErrorResponse carries.
func charPosition(sql string, pos int, e Encoding) int {
	switch e.class() {
	case classUTF8:
		return utf8.RuneCountInString(sql[:pos]) + 1
	case classClientOnly:
		n := 0
		for i := 0; i < pos; n++ {
			l := e.charLen(sql, i)
			if l < 1 {
				l = 1
			}
			i += l
		}
		return n + 1
	}
	return pos + 1
}

// paramSlot is one $n of a shape plan's SQL.
type paramSlot struct {
	start, end int
	param      int // index into Plan.Params; -1 for a literal slot ($0)
	literal    int // index into Plan.Literals when param is -1
}

// shapeSlots caches the parameter places of shape plans, by key. Shapes
// are few; the map is bounded like the cache.
type shapeSlots struct {
	mu sync.Mutex
	m  map[string][]paramSlot
}

// slotsOf returns the places of the parameters and literal slots in
// shape.SQL, in text order; nil when they cannot be found.
func (c *Cache) slotsOf(key string, shape *Plan) []paramSlot {
	c.shapes.mu.Lock()
	defer c.shapes.mu.Unlock()
	if s, ok := c.shapes.m[key]; ok {
		return s
	}
	if c.shapes.m == nil || len(c.shapes.m) >= c.max {
		c.shapes.m = map[string][]paramSlot{}
	}
	s := findSlots(shape)
	c.shapes.m[key] = s
	return s
}

func findSlots(shape *Plan) []paramSlot {
	toks, err := scan(shape.SQL)
	if err != nil {
		return nil
	}
	var slots []paramSlot
	lit := 0
	for _, t := range toks {
		if t.kind != pg.Token_PARAM {
			continue
		}
		text := shape.SQL[t.start:t.end]
		if text == slotPlaceholder {
			if lit >= len(shape.Literals) || shape.Literals[lit].Start != t.start {
				return nil
			}
			slots = append(slots, paramSlot{start: t.start, end: t.end, param: -1, literal: lit})
			lit++
			continue
		}
		n := 0
		for _, ch := range text[1:] {
			n = n*10 + int(ch-'0')
		}
		if n < 1 || n > len(shape.Params) {
			return nil
		}
		slots = append(slots, paramSlot{start: t.start, end: t.end, param: n - 1})
	}
	if lit != len(shape.Literals) {
		return nil
	}
	return slots
}

// instantiate builds the plan of one text from its shape's plan and the
// text's literals.
func instantiate(shape *Plan, slots []paramSlot, values []literal) (*Plan, bool) {
	if slots == nil && (len(shape.Params) > 0 || len(shape.Literals) > 0) {
		return nil, false
	}
	p := &Plan{Statements: shape.Statements, Fingerprint: shape.Fingerprint}
	n := len(shape.Literals)
	for _, s := range slots {
		if s.param >= 0 && shape.Params[s.param].Action != ActionNone {
			n++
		}
	}
	if n > 0 {
		p.Literals = make([]Literal, 0, n)
	}
	size := len(shape.SQL)
	for _, v := range values {
		size += len(v.raw)
	}
	var b strings.Builder
	b.Grow(size)
	at := 0
	// moved maps an offset in shape.SQL before the slots written so
	// far to the text's (Literal.Target): each slot shifts what follows.
	shifts := make([]shift, 0, len(slots))
	moved := func(off int) int { return movedOffset(shifts, off) }
	runs := runMapper{shape: shape.Runs, values: values}
	p.Runs = make([]Run, 0, len(shape.Runs)+len(slots)+1)
	for _, s := range slots {
		p.Runs = runs.add(p.Runs, at, s.start, b.Len())
		b.WriteString(shape.SQL[at:s.start])
		at = s.end
		if s.param < 0 {
			l := shape.Literals[s.literal]
			if l.Target > 0 {
				l.Target = moved(l.Target)
			}
			l.Loc = keyToText(values, l.Loc)
			l.Start = b.Len()
			b.WriteString(slotPlaceholder)
			l.End = b.Len()
			p.Literals = append(p.Literals, l)
			shifts = append(shifts, shift{s.end, b.Len() - s.end})
			continue
		}
		prm := shape.Params[s.param]
		if prm.Array || prm.Source >= len(values) {
			return nil, false
		}
		v := values[prm.Source]
		if prm.Action == ActionNone {
			p.Runs = appendRun(p.Runs, Run{SQL: b.Len(), Text: v.start, Len: len(v.raw)})
			b.WriteString(v.raw)
			shifts = append(shifts, shift{s.end, b.Len() - s.end})
			continue
		}
		l := Literal{Value: v.value, Action: prm.Action, Column: prm.Column, Index: prm.Index, Type: prm.Type, Assign: prm.Assign,
			Loc: v.start, Row: prm.Row}
		if prm.Target > 0 {
			l.Target = moved(prm.Target)
		}
		l.Start = b.Len()
		b.WriteString(slotPlaceholder)
		l.End = b.Len()
		p.Literals = append(p.Literals, l)
		shifts = append(shifts, shift{s.end, b.Len() - s.end})
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
		by += len(v.raw) - len("$"+strconv.Itoa(i+1))
	}
	return off + by
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
