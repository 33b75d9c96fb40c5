package rewrite

import (
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

// AnalyzeSimple returns the plan of sql, a simple Query's text. Its result
// equals Analyze's (TestAnalyzeSimpleMatchesAnalyze) but is usually made
// from a cached shape. Plans of texts that name a policy table are built
// per call and not cached.
func (c *Cache) AnalyzeSimple(sql string) (*Plan, error) {
	if c.pol.Empty() || !mentionsPolicy(sql, c.pol) {
		return c.Analyze(sql)
	}
	if p, err, ok := c.lookup(sql); ok {
		return p, err
	}
	key, values, ok := shapeOf(sql)
	if !ok {
		return c.Analyze(sql)
	}
	shape, err := c.Analyze(key)
	if err != nil || shape.Passthrough {
		// A rejected shape: the text's own analysis gives its own error.
		// A shape that touches no policy table: the name was inside a
		// literal, rare enough to parse the text itself.
		return c.Analyze(sql)
	}
	if p, ok := instantiate(shape, c.slotsOf(key, shape), values); ok {
		return p, nil
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

// literal is one string literal of a simple-protocol text.
type literal struct {
	raw   string // as written, quotes included
	value string // its value
}

// shapeOf returns sql with each plain string literal in a value position
// replaced by $1, $2, … and the literals, or false when the text has
// client parameters or cannot be scanned.
func shapeOf(sql string) (key string, values []literal, ok bool) {
	if !utf8.ValidString(sql) {
		return "", nil, false // the parser refuses it; let it say so
	}
	toks, err := scan(sql)
	if err != nil {
		return "", nil, false
	}
	var b strings.Builder
	at := 0
	for i, t := range toks {
		if t.kind == pg.Token_PARAM {
			return "", nil, false
		}
		if t.kind != pg.Token_SCONST || i == 0 || !valuePosition(sql, toks[i-1]) {
			continue
		}
		if i+1 < len(toks) && (toks[i+1].kind == pg.Token_ASCII_46 || toks[i+1].kind == pg.Token_ASCII_91) {
			continue // $1.f and $1[1] parse, 'x'.f and 'x'[1] do not
		}
		raw := sql[t.start:t.end]
		v, ok := plainString(raw)
		if !ok {
			continue // E'', U&'', $$…$$ or a continued literal: stays in the key
		}
		values = append(values, literal{raw: raw, value: v})
		b.WriteString(sql[at:t.start])
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(len(values)))
		at = t.end
	}
	if len(values) == 0 {
		return "", nil, false
	}
	b.WriteString(sql[at:])
	return b.String(), values, true
}

// valuePosition reports whether a literal after token prev stands where a
// parameter may stand with the same meaning: after "(", ",", or a
// comparison or assignment operator. After a type name (DATE '…') or a
// keyword (LIKE '…', INTERVAL '…') it stays a literal.
func valuePosition(sql string, prev token) bool {
	switch sql[prev.start:prev.end] {
	case "(", ",", "=", "<>", "!=":
		return true
	}
	return false
}

// plainString decodes a standard string literal ('…' with ” for a quote).
// Other forms (E'…', U&'…', dollar quoting, literals continued across lines)
// are refused.
func plainString(raw string) (string, bool) {
	if len(raw) < 2 || raw[0] != '\'' || raw[len(raw)-1] != '\'' {
		return "", false
	}
	body := raw[1 : len(raw)-1]
	if strings.Contains(strings.ReplaceAll(body, "''", ""), "'") {
		return "", false
	}
	return strings.ReplaceAll(body, "''", "'"), true
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
	var b strings.Builder
	b.Grow(len(shape.SQL) + 16*len(values))
	at := 0
	for _, s := range slots {
		b.WriteString(shape.SQL[at:s.start])
		at = s.end
		if s.param < 0 {
			l := shape.Literals[s.literal]
			l.Start = b.Len()
			b.WriteString(slotPlaceholder)
			l.End = b.Len()
			p.Literals = append(p.Literals, l)
			continue
		}
		prm := shape.Params[s.param]
		if prm.Array || prm.Source >= len(values) {
			return nil, false
		}
		v := values[prm.Source]
		if prm.Action == ActionNone {
			b.WriteString(v.raw)
			continue
		}
		start := b.Len()
		b.WriteString(slotPlaceholder)
		p.Literals = append(p.Literals, Literal{Start: start, End: b.Len(), Value: v.value, Action: prm.Action, Column: prm.Column, Type: prm.Type, Assign: prm.Assign})
	}
	b.WriteString(shape.SQL[at:])
	p.SQL = b.String()
	return p, true
}
