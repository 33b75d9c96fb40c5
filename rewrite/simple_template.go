package rewrite

import (
	"strings"
	"unicode/utf8"
)

// A session sends few shapes, text after text. The shapes it made last are
// kept in its scratch as templates: the text of the shape between its
// literals. A text that is a template's text with a '…' constant in each
// place (none continued, no NUL, valid UTF8) is lexed exactly as the
// template's text was, with those constants in place of its own: the
// lexer reads the same bytes up to each constant (the token before one is
// "(", ",", "=", "<>" or "!=", which ends at the quote whatever follows
// it), finds the constant's end where the quote closing it is, and goes on
// in the same bytes after it. So it has the template's shape key and is
// made from the same cached plan, without being lexed, keyed or looked up.
//
// Nor does it need mentionsPolicy: the shape's plan is cached (not
// bypassed), so the key mentions the policy, and every match the byte scan
// finds in the key it finds in the text, unless a table name holds "$" or
// a digit and matches across a $n (Cache.keyMentions). A keyword is only
// more likely to match next to a quote than next to $n.

// maxTemplates is how many shapes a scratch keeps; maxTemplateBytes
// bounds the text kept for one.
const (
	maxTemplates     = 4
	maxTemplateBytes = 16 << 10
)

// shapeTemplate is a shape a session's texts had lately.
type shapeTemplate struct {
	cache *Cache // whose entry it is (nil: an empty slot)
	entry *cacheEntry
	inst  *shapeInstance
	// text is the shape's text without its literals: piece i is
	// text[cuts[i-1]:cuts[i]] (from 0; the last runs to the end), and a
	// literal follows each piece but the last.
	text []byte
	cuts []int
}

// remember makes sql, whose literals are values and whose shape's cache
// entry is e, the most recent template.
func (sc *SimpleScratch) remember(c *Cache, e *cacheEntry, in *shapeInstance, sql string, values []literal) {
	if len(sql) > maxTemplateBytes {
		return
	}
	last := maxTemplates - 1
	t := sc.templates[last] // reuse the oldest's buffers
	copy(sc.templates[1:], sc.templates[:last])
	t.cache, t.entry, t.inst = c, e, in
	t.text, t.cuts = t.text[:0], t.cuts[:0]
	at := 0
	for _, v := range values {
		t.text = append(t.text, sql[at:v.start]...)
		t.cuts = append(t.cuts, len(t.text))
		at = v.start + len(v.raw)
	}
	t.text = append(t.text, sql[at:]...)
	sc.templates[0] = t
}

// matchTemplate returns the template of c that sql is an instance of, its
// literals appended to sc's values; nil when there is none.
func (sc *SimpleScratch) matchTemplate(c *Cache, sql string) *shapeTemplate {
	for i := range sc.templates {
		t := &sc.templates[i]
		if t.cache != c {
			continue
		}
		if values, ok := t.match(sql, sc.buf.values[:0]); ok {
			sc.buf.values = values
			return t
		}
	}
	return nil
}

// match appends to dst the literals of sql if it is an instance of t.
func (t *shapeTemplate) match(sql string, dst []literal) ([]literal, bool) {
	pos, prev, first := 0, 0, -1
	doubled := false
	for _, cut := range t.cuts {
		piece := t.text[prev:cut]
		prev = cut
		if len(sql)-pos < len(piece)+2 || sql[pos:pos+len(piece)] != string(piece) {
			return dst, false
		}
		pos += len(piece)
		if sql[pos] != '\'' {
			return dst, false
		}
		k, d := standardBody(sql, pos+1)
		if k < 0 {
			return dst, false
		}
		if next, _ := continuation(sql, k+1); next >= 0 {
			return dst, false
		}
		if first < 0 {
			first = pos
		}
		dst = append(dst, literal{raw: sql[pos : k+1], value: sql[pos+1 : k], start: pos, doubled: d})
		doubled = doubled || d
		pos = k + 1
	}
	if sql[pos:] != string(t.text[prev:]) {
		return dst, false
	}
	// The pieces between the literals are the template's, which is valid
	// UTF8 without NUL, cut at quotes: the span of the literals is valid
	// and has no NUL when their bodies are and have none.
	if span := sql[max(first, 0):pos]; strings.IndexByte(span, 0) >= 0 || !utf8.ValidString(span) {
		return dst, false
	}
	if doubled {
		for i := range dst {
			if v := &dst[i]; v.doubled {
				v.value = strings.ReplaceAll(v.value, "''", "'")
			}
		}
	}
	return dst, true
}
