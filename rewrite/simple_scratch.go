package rewrite

import "strings"

// SimpleScratch is one session's space for the plans of its simple-protocol
// texts, reused from text to text so that a text whose shape is cached
// costs no allocation: its tokens, its shape key and the literal slots of
// its plan. It belongs to the goroutine that reads the session's client
// messages; the zero value is ready to use.
type SimpleScratch struct {
	buf shapeBuf
	// text and view are the text and the plan AnalyzeSimpleScratch last
	// made from a shape (view nil: it did not); render is the plan that
	// renders the text: view's, with lits, the text's literal slots.
	text   string
	view   *Plan
	render Plan
	lits   []Literal
	runs   []Run
	// templates are the shapes made last, the most recent first
	// (simple_template.go).
	templates [maxTemplates]shapeTemplate
}

// AnalyzeSimpleScratch returns the plan of sql as AnalyzeSimpleWith does,
// but for a text made from its cached shape it neither builds a plan nor
// copies the text: the plan returned is the shape's, shared by all its
// texts, and says what the statements are (Statements, Copy, Fingerprint),
// not what to send. What to send is sc.Render(plan): its Literals are the
// text's, in sc, valid until sc is used again. Plans of texts that are not
// made from a shape are returned as AnalyzeSimpleWith returns them, and
// sc.Render returns them unchanged.
func (c *Cache) AnalyzeSimpleScratch(sc *SimpleScratch, sql string, o LexOptions) (*Plan, error) {
	sc.text, sc.view = "", nil
	if o != (LexOptions{}) || c.pol.Empty() {
		// Other settings are rare: AnalyzeSimpleWith decides, for each
		// text, how it may be read.
		return c.AnalyzeSimpleWith(sql, o)
	}
	defer sc.buf.trim()
	if c.keyMentions {
		if t := sc.matchTemplate(c, sql); t != nil {
			c.hits.Add(1)
			return sc.bind(t.inst, sql), nil
		}
	}
	if !mentionsPolicy(sql, c.pol) {
		c.bypass.Add(1) // never cached (Cache.entry)
		return bypassPlan, nil
	}
	if !c.keyMentions {
		if t := sc.matchTemplate(c, sql); t != nil {
			c.hits.Add(1)
			return sc.bind(t.inst, sql), nil
		}
	}
	// From here on, this is AnalyzeSimpleWith with the default settings
	// for a text whose shape is cached, except that the text is not
	// looked up first: a text that has a shape is cached itself only
	// when its shape does not make it, and then AnalyzeSimpleWith goes on
	// to Analyze it, as this does.
	if strings.IndexByte(sql, '\'') < 0 {
		return c.Analyze(sql) // no literal, no shape
	}
	sh, err := sc.buf.build(sql, o)
	if err != nil || !sh.ok {
		return c.Analyze(sql) // pg_query gives the text its own error
	}
	e := c.lookupKey(sc.buf.key)
	if e == nil {
		return c.AnalyzeSimpleWith(sql, o) // analyzes the shape and caches it
	}
	if e.err != nil || e.plan.Passthrough {
		return c.Analyze(sql)
	}
	in := c.instanceOf(e)
	if !in.ok || in.maxSource >= len(sc.buf.values) {
		return c.Analyze(sql)
	}
	sc.remember(c, e, in, sql, sc.buf.values)
	return sc.bind(in, sql), nil
}

// bind makes sql, whose literals are in sc.buf.values, the text sc renders
// with in, and returns in's plan.
func (sc *SimpleScratch) bind(in *shapeInstance, sql string) *Plan {
	sc.lits = in.appendLiterals(sc.lits[:0], sc.buf.values)
	sc.runs = in.appendRuns(sc.runs[:0], sc.buf.values)
	if cap(sc.lits) > maxPooledTokens || cap(sc.runs) > maxPooledTokens {
		defer func() { sc.lits, sc.runs = nil, nil }()
	}
	v := in.view
	sc.render = Plan{SQL: v.SQL, Literals: sc.lits, Statements: v.Statements, Fingerprint: v.Fingerprint, Copy: v.Copy, Runs: sc.runs}
	sc.text, sc.view = sql, v
	return v
}

// Render returns the plan that renders p, the plan AnalyzeSimpleScratch
// last returned for text sql: p itself unless it was made from a shape.
// Its SQL is the shape's and its Literals, in sc, stand in for every $n
// and literal slot of it; a Literal with ActionNone is a literal of the
// text that goes as it is written (Value, quotes included), from Loc in
// the text. Positions are the text's as AnalyzeSimple's plan has them,
// but in the shape's SQL: the literals' Loc and Row are the text's, their
// Target and the statements' InsertValues the shape's, and Runs (in sc,
// valid until sc is used again) the parts of the shape's SQL between the
// slots that are copies of the text.
func (sc *SimpleScratch) Render(p *Plan, sql string) *Plan {
	if p != nil && p == sc.view && sql == sc.text {
		return &sc.render
	}
	return p
}
