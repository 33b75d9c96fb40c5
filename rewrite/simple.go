package rewrite

import (
	"strconv"
	"strings"
	"unicode/utf8"
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
//
// A proxy session uses AnalyzeSimpleScratch (simple_scratch.go), which
// makes the same plans without building them: the shape's plan is shared
// and the text's literal slots live in the session's scratch, spliced
// straight into the query sent. The scratch also keeps the shapes the
// session sent last as templates (simple_template.go): a text that is one
// of them with other constants is not even lexed.

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
		if e := c.lookupEntry(sql); e != nil {
			return e.plan, e.err
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
		if e := c.lookupEntry(sql); e != nil {
			return e.plan, e.err
		}
	}
	if !sh.ok {
		return c.Analyze(sql)
	}
	e := c.entry(sh.key)
	shape, err := e.plan, e.err
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
	if p, ok := instantiate(shape, c.instanceOf(e), sh.values); ok {
		return p, nil
	}
	if !sh.textPortable {
		return nil, settingsRejection(o)
	}
	return c.Analyze(sql)
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
