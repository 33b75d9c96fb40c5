package phi

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"sync"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/rewrite"
)

// COPY FROM STDIN on a policy table. The client's rows are read as
// PostgreSQL reads them (copyread.go), in its format and options; each PHI
// value is checked by its logical type as an INSERT checks it, encrypted,
// and indexed; and the rows go on to the server in its default text
// format, the blind indexes last: one CopyData per client CopyData (or per
// copyFlushBytes), never a statement per row. A row the proxy cannot take
// fails the COPY on the server with CopyFail, so nothing of it is stored,
// and the client gets PostgreSQL's error for it (copyResult.ErrorResponse),
// with the line it is on.

// copyFailMarker is the message of the proxy's own CopyFail; the server
// answers it with "COPY from stdin failed: " and this text, which the
// proxy replaces by the client's error.
const copyFailMarker = "phiproxy: COPY data refused"

// copyFlushBytes is how much rewritten data is held before it goes
// upstream within one client CopyData.
const copyFlushBytes = 256 << 10

// maxCopyLine bounds one line of COPY data held in memory.
const maxCopyLine = 64 << 20

// maxLineMarks bounds the line-number marks kept per COPY; past it the
// server's errors name no line.
const maxLineMarks = 1 << 16

// copyIn is one COPY FROM STDIN under way. clientToServer, but for the
// fields under mu, which the COPY's responder reads on serverToClient.
type copyIn struct {
	s      *session
	cp     *rewrite.Copy
	table  string // the table's name as PostgreSQL's error contexts give it
	r      *copyReader
	header bool   // the header line is still to come
	out    []byte // the CopyData being built: type, length, rows
	idx    []byte // the blind indexes of the row at hand, each after a tab
	sent   int64  // rows written for the server (its line numbers)
	delta  int64  // the client's line number minus the server's, at the last mark
	done   bool   // failed, or the client ended the COPY
	// forward sends a message upstream (Conn.Forward).
	forward func([]byte) error

	mu sync.Mutex
	// marks: from server line row on, the client's line is row + delta.
	marks  []lineMark
	lost   bool // marks overflowed
	failed *copyError
	// clientFail is the message of the client's CopyFail, set: the client
	// canceled.
	clientFail *string
}

type lineMark struct{ row, delta int64 }

func (s *session) newCopyIn(cp *rewrite.Copy, ascii error) *copyIn {
	c := &copyIn{s: s, cp: cp, table: cp.Table.Name, r: newCopyReader(&cp.Options), header: cp.Options.Header != rewrite.HeaderNone}
	if s.c != nil {
		c.forward = s.c.Forward
	}
	c.r.nonASCII = ascii
	c.out = append(make([]byte, 0, 64<<10), 'd', 0, 0, 0, 0)
	return c
}

// CopyData implements proxy.CopyInterceptor.
func (s *session) CopyData(msg []byte) error {
	c := s.copying
	switch {
	case c != nil && !c.done:
		c.r.feed(msg[5:])
		return c.rows(false)
	case c != nil || s.copyDiscard:
		return nil // after the proxy failed the COPY, or refused it: dropped
	}
	return s.c.Forward(msg)
}

// CopyEnd implements proxy.CopyInterceptor.
func (s *session) CopyEnd(typ byte, msg []byte) error {
	c := s.copying
	s.copying, s.copyDiscard = nil, c != nil || s.copyDiscard
	switch {
	case c == nil && !s.copyDiscard:
		return s.c.Forward(msg)
	case c == nil || c.done:
		return nil
	case typ == 'f':
		// Canceled by the client: its message goes back to it, not to
		// the server's log.
		m, _, _ := proxy.CString(msg[5:])
		text := string(m)
		c.mu.Lock()
		c.clientFail = &text
		c.mu.Unlock()
		c.done = true
		return c.copyFail()
	}
	if err := c.rows(true); err != nil || c.done {
		return err
	}
	if err := c.flush(); err != nil {
		return err
	}
	c.done = true
	return c.forward(msg)
}

// rows rewrites the complete lines of data fed so far (all of them at eof).
func (c *copyIn) rows(eof bool) error {
	for {
		line, res, err := c.r.next(eof)
		if err != nil {
			return c.fail(err, "")
		}
		if res == lineMore {
			if len(c.r.in)-c.r.base > maxCopyLine {
				return c.fail(&copyReadError{code: pgerrcode.ProgramLimitExceeded, msg: fmt.Sprintf("COPY line longer than phiproxy's limit of %d MiB", maxCopyLine>>20)}, "")
			}
			break
		}
		if c.header {
			c.header = false
			if c.cp.Options.Header == rewrite.HeaderMatch {
				if err := c.matchHeader(line); err != nil {
					return c.fail(err, "")
				}
			}
		} else if len(line) > 0 || res == lineFull {
			if err := c.row(line); err != nil || c.done {
				return err
			}
		}
		if res == lineLast {
			break
		}
		if len(c.out) >= copyFlushBytes {
			if err := c.flush(); err != nil {
				return err
			}
		}
	}
	return c.flush()
}

// row rewrites one line of data into c.out.
func (c *copyIn) row(line []byte) error {
	r := c.r
	if err := r.split(line); err != nil {
		return c.fail(err, "")
	}
	cols := c.cp.Columns
	if len(cols) > 0 && len(r.fields) > len(cols) {
		return c.fail(badCopy("extra data after last expected column"), "")
	}
	start := len(c.out)
	c.idx = c.idx[:0]
	n := min(len(r.fields), len(cols))
	for i := range n {
		col := &cols[i]
		f := r.fields[i]
		v, null := r.value(i), f.null
		if r.csv {
			// FORCE_NOT_NULL reads a NULL as the NULL string, FORCE_NULL
			// a quoted NULL string as NULL (NextCopyFrom).
			if null && col.ForceNotNull {
				v, null = r.null, false
			} else if !null && col.ForceNull && string(v) == string(r.null) {
				null = true
			}
		}
		if i > 0 {
			c.out = append(c.out, '\t')
		}
		switch {
		case col.Column == nil && null:
			c.out = append(c.out, '\\', 'N')
		case col.Column == nil:
			c.out = appendCopyText(c.out, v, '\t')
		default:
			var err error
			if c.out, err = c.value(c.out, col.Column, null, v); err != nil {
				c.out = c.out[:start]
				return c.fail(err, col.Name)
			}
		}
	}
	if n == len(cols) {
		c.out = append(c.out, c.idx...)
	}
	// A short row goes as it is, without its indexes: the server says
	// which column is missing, after reading the values before it, as it
	// would have (its indexes come last).
	c.out = append(c.out, '\n')
	c.sent++
	if d := r.lineno - c.sent; d != c.delta {
		c.delta = d
		c.mu.Lock()
		if len(c.marks) < maxLineMarks {
			c.marks = append(c.marks, lineMark{c.sent, d})
		} else {
			c.lost = true
		}
		c.mu.Unlock()
	}
	return nil
}

// value appends the server's field for a PHI value (NULL, or src in the
// text format of the column's logical type) and adds its blind indexes to
// c.idx.
func (c *copyIn) value(dst []byte, col *policy.Column, null bool, src []byte) ([]byte, error) {
	ixs := col.Indexes()
	if null {
		for range ixs {
			c.idx = append(c.idx, '\t', '\\', 'N')
		}
		return append(dst, '\\', 'N'), nil
	}
	w := c.s.w
	pc := w.cols[col]
	if pc == nil {
		return dst, fmt.Errorf("column %s: no keys", col.QualifiedName())
	}
	var err error
	if w.plain, _, err = w.codec.convert(w.plain[:0], col, 0, true, formatText, src); err != nil {
		return dst, err
	}
	if col.Storage == policy.StorageBytea {
		if w.out, err = pc.transform(w.out[:0], rewrite.ActionEncrypt, nil, w.plain); err != nil {
			return dst, err
		}
		dst = append(dst, '\\', '\\', 'x')
		dst = hex.AppendEncode(dst, w.out)
	} else if dst, err = pc.transform(dst, rewrite.ActionEncrypt, nil, w.plain); err != nil {
		return dst, err
	}
	if len(ixs) > 0 {
		w.key = equalityKey(w.key[:0], col.Type, w.plain)
		for _, ix := range ixs {
			c.idx = append(c.idx, '\t')
			if c.idx, err = pc.transform(c.idx, rewrite.ActionIndex, ix, w.key); err != nil {
				return dst, err
			}
		}
	}
	return dst, nil
}

// matchHeader is HEADER MATCH: the header's fields must be the columns'
// names (NextCopyFromRawFields).
func (c *copyIn) matchHeader(line []byte) error {
	r := c.r
	if err := r.split(line); err != nil {
		return err
	}
	cols := c.cp.Columns
	if len(r.fields) != len(cols) {
		return badCopy(fmt.Sprintf("wrong number of fields in header line: got %d, expected %d", len(r.fields), len(cols)))
	}
	for i, col := range cols {
		switch f := r.fields[i]; {
		case f.null:
			return badCopy(fmt.Sprintf("column name mismatch in header line field %d: got null value (\"%s\"), expected \"%s\"", i+1, r.null, col.Name))
		case string(r.value(i)) != col.Name:
			return badCopy(fmt.Sprintf("column name mismatch in header line field %d: got \"%s\", expected \"%s\"", i+1, r.value(i), col.Name))
		}
	}
	return nil
}

// flush sends the rows written so far upstream in one CopyData.
func (c *copyIn) flush() error {
	if len(c.out) <= 5 || c.done {
		return nil
	}
	binary.BigEndian.PutUint32(c.out[1:5], uint32(len(c.out)-1))
	err := c.forward(c.out)
	c.out = c.out[:5]
	return err
}

// fail ends the COPY for a row the proxy cannot take: nothing more goes
// upstream but a CopyFail, and the client is to get err (on the line
// being read, in column, if known) in place of the server's answer to it.
func (c *copyIn) fail(err error, column string) error {
	ce := newCopyError(err, c.table, c.r.lineno, column)
	c.mu.Lock()
	c.failed = ce
	c.mu.Unlock()
	c.done = true
	c.out = c.out[:5]
	c.s.eng.metrics.statements.WithLabelValues("rejected_" + ce.reason).Inc()
	c.s.c.Logger().Info("COPY refused", "sqlstate", ce.code, "reason", ce.reason, "table", c.cp.Table.QualifiedName(), "column", column, "line", c.r.lineno)
	return c.copyFail()
}

// copyFail sends the proxy's CopyFail upstream.
func (c *copyIn) copyFail() error {
	out, err := (&pgproto3.CopyFail{Message: copyFailMarker}).Encode(nil)
	if err != nil {
		return err
	}
	return c.forward(out)
}

// clientLine maps a line number of the server's (a row the proxy sent)
// to the client's; false when it cannot be told.
func (c *copyIn) clientLine(row int64) (int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lost {
		return 0, false
	}
	d := int64(0)
	for _, m := range c.marks {
		if m.row > row {
			break
		}
		d = m.delta
	}
	return row + d, true
}

// outcome is how the proxy ended the COPY, if it did: its own error, or
// the client's CopyFail message.
func (c *copyIn) outcome() (*copyError, *string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failed, c.clientFail
}

// copyError is the client's error for COPY data the proxy refused:
// PostgreSQL's SQLSTATE and message where it has them, and the context
// PostgreSQL gives (table, line, column), never a value.
type copyError struct {
	code, msg, hint, reason string
	context                 string
}

func newCopyError(err error, table string, line int64, column string) *copyError {
	ce := &copyError{reason: "invalid_value"}
	if re, ok := err.(*copyReadError); ok {
		ce.code, ce.msg, ce.hint, ce.reason = re.code, re.msg, re.hint, "copy_data"
	} else {
		info := proxy.Classify(err)
		ce.code, ce.msg, ce.hint = info.Code, info.Message, info.Hint
		if info.Fatal || info.Code == "" {
			ce.code, ce.msg, ce.hint = pgerrcode.InternalError, "phiproxy: a COPY value could not be encrypted", ""
		}
		if r, ok := err.(interface{ Reason() string }); ok {
			ce.reason = r.Reason()
		}
	}
	ce.context = fmt.Sprintf("COPY %s, line %d", table, line)
	if column != "" {
		ce.context += ", column " + column
	}
	return ce
}

func (e *copyError) Error() string         { return e.msg }
func (e *copyError) SQLState() string      { return e.code }
func (e *copyError) ClientMessage() string { return e.msg }
func (e *copyError) Hint() string          { return e.hint }
func (e *copyError) Reason() string        { return e.reason }
