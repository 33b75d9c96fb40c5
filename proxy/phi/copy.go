package phi

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/rewrite"
)

// A COPY statement on a policy table (rewrite.Copy): what goes with the
// statement when it is sent (copyIn for FROM STDIN, the description of the
// query of COPY (query) TO), and the Responder of its answers.

// copyStatement names the proxy's prepared statement that describes the
// query of a COPY (query) TO; clients may not use it.
const copyStatement = "phiproxy_copy"

var (
	// errCopyNonUTF8 refuses COPY data beyond ASCII while client_encoding
	// is not UTF8.
	errCopyNonUTF8 error = &refusal{pgerrcode.FeatureNotSupported, "encoding",
		"COPY data with characters beyond ASCII on a PHI table needs client_encoding UTF8 (or the option ENCODING 'UTF8')"}
	// errCopyInFlight refuses COPY data beyond ASCII when the COPY went
	// out behind unanswered statements that may change client_encoding
	// (session.settingsMoved).
	errCopyInFlight error = &refusal{pgerrcode.FeatureNotSupported, "settings",
		"COPY data with characters beyond ASCII on a PHI table must follow the answers to the statements before the COPY (send it after ReadyForQuery), or the COPY must say ENCODING 'UTF8'"}
	// errCopyOutEncoding refuses COPY TO data beyond ASCII under a
	// client_encoding whose characters may hold a backslash byte, or one
	// the proxy cannot know (copyOut.checkASCII).
	errCopyOutEncoding error = &refusal{pgerrcode.FeatureNotSupported, "encoding",
		"COPY TO of data with characters beyond ASCII on a PHI table is not supported under client_encoding SJIS, SHIFT_JIS_2004, BIG5, GBK, UHC, GB18030 or JOHAB, nor behind a statement in flight that may change client_encoding: their characters may end in the byte of a backslash, which phiproxy cannot tell from an escape; use client_encoding UTF8 or the option ENCODING 'UTF8'"}
)

// copyResult is the Responder of a COPY on a policy table: the Query or
// the Execute that runs it. serverToClient, once sent.
type copyResult struct {
	proxy.PassResponder
	s     *session
	plan  *rewrite.Plan
	cp    *rewrite.Copy
	in    *copyIn  // FROM: the data the client sends
	out   *copyOut // TO a table: prepared at once; of a query: once described
	rd    *pgproto3.RowDescription
	db    *dbState
	audit *audited // nil without an audit log
	// unsure: the COPY went out behind statements that may change
	// settings (session.settingsMoved, then).
	unsure bool
}

var (
	_ proxy.CopyResponder    = (*copyResult)(nil)
	_ proxy.CommandCompleter = (*copyResult)(nil)
)

// newCopyResult prepares a COPY about to go upstream. simple: it is a
// Query's.
func (s *session) newCopyResult(plan *rewrite.Plan, simple bool) (*copyResult, error) {
	cp := plan.Copy
	c := &copyResult{s: s, plan: plan, cp: cp, db: s.db, unsure: s.settingsMoved}
	r := s.newResult(s.db, nil)
	if s.who != nil {
		c.audit = &audited{result: r, plan: plan, query: simple}
	}
	switch {
	case cp.From:
		var ascii error
		if !cp.Options.EncodingUTF8 {
			if s.nonUTF8.Load() {
				ascii = errCopyNonUTF8
			} else if s.settingsMoved {
				ascii = errCopyInFlight
			}
		}
		c.in = s.newCopyIn(cp, ascii)
	case cp.Table != nil:
		t := &resultTransform{cols: make([]resultCol, len(cp.Columns))}
		names := make([]string, len(cp.Columns))
		force := make([]bool, len(cp.Columns))
		for i, col := range cp.Columns {
			names[i], force[i] = col.Name, col.ForceQuote
			if col.Column == nil {
				continue
			}
			pc := s.eng.cols[col.Column]
			t.cols[i].pc = pc
			switch a := s.accessOf(col.Column); a.read {
			case policy.ReadDenied:
				return nil, &AccessError{Column: col.Column}
			case policy.ReadMasked:
				t.cols[i].mask = a.mask
			}
		}
		c.out = s.newCopyOut(t, len(cp.Columns), names, force, &cp.Options, c.unsure)
		r.t, r.ready = t, true
		if c.audit != nil {
			c.audit.described = true
		}
	}
	return c, nil
}

// describeQuery sends, ahead of a COPY (query) TO, the description of its
// query (text is the COPY's text as it goes upstream): the server says
// where each column comes from, as for a SELECT.
func (s *session) describeQuery(c *copyResult, text []byte) error {
	tail := len(c.plan.SQL) - c.cp.QueryEnd
	query := string(text[c.cp.QueryStart : len(text)-tail])
	d := copyDescription{c: c}
	if err := s.sendHidden(proxy.KindClose, &pgproto3.Close{ObjectType: 'S', Name: copyStatement}, d); err != nil {
		return err
	}
	if err := s.sendHidden(proxy.KindParse, &pgproto3.Parse{Name: copyStatement, Query: query}, d); err != nil {
		return err
	}
	return s.sendHidden(proxy.KindDescribeStatement, &pgproto3.Describe{ObjectType: 'S', Name: copyStatement}, d)
}

// copyDescription keeps the description of a COPY's query.
type copyDescription struct {
	proxy.PassResponder
	c *copyResult
}

// RowDescription implements proxy.Responder.
func (d copyDescription) RowDescription(dst, msg []byte) ([]byte, proxy.RowTransformer, error) {
	var rd pgproto3.RowDescription
	if err := rd.Decode(msg[5:]); err != nil {
		return nil, nil, errors.New("invalid RowDescription from the server")
	}
	keep := rd
	keep.Fields = append([]pgproto3.FieldDescription(nil), rd.Fields...)
	for i := range keep.Fields {
		keep.Fields[i].Name = append([]byte(nil), keep.Fields[i].Name...)
		keep.Fields[i].Format = formatText
	}
	d.c.rd = &keep
	return dst, nil, nil
}

// CopyInResponse implements proxy.CopyResponder: the client's columns, in
// text format (the server's count the blind indexes too).
func (c *copyResult) CopyInResponse(dst, msg []byte) ([]byte, error) {
	if c.in == nil {
		return append(dst, msg...), nil
	}
	return appendCopyResponse(dst, 'G', len(c.cp.Columns)), nil
}

// CopyOutResponse implements proxy.CopyResponder.
func (c *copyResult) CopyOutResponse(dst, msg []byte) ([]byte, proxy.CopyTransformer, error) {
	if c.out == nil && c.cp.Table == nil && !c.cp.From {
		if err := c.describedOut(); err != nil {
			if c.audit != nil {
				c.audit.failed(err)
			}
			return nil, nil, err
		}
	}
	if c.out == nil {
		return append(dst, msg...), nil, nil
	}
	out, err := c.out.copyOutResponse(dst, msg)
	return out, c, err
}

// describedOut prepares the rewriting of COPY (query) TO from its query's
// description: PHI columns decrypted (or masked), blind-index columns
// dropped, FORCE_QUOTE resolved against the columns the client sees.
func (c *copyResult) describedOut() error {
	if c.rd == nil {
		return errors.New("the query of a COPY arrived undescribed")
	}
	s := c.s
	rd := c.rd
	t, err := s.resultTransform(c.db.cat, rd, nil, true)
	if err != nil {
		return err
	}
	var names []string
	for i, f := range rd.Fields {
		if t == nil || !t.cols[i].drop {
			names = append(names, string(f.Name))
		}
	}
	force := make([]bool, len(names))
	o := &c.cp.Options
	for i := range force {
		force[i] = o.ForceQuoteAll
	}
	for _, name := range o.ForceQuote {
		i := 0
		for i < len(names) && names[i] != name {
			i++
		}
		if i == len(names) {
			return &copyError{code: pgerrcode.UndefinedColumn, msg: fmt.Sprintf("phiproxy: column %q does not exist", name), reason: "copy_data"}
		}
		force[i] = true
	}
	c.out = s.newCopyOut(t, len(rd.Fields), names, force, o, c.unsure)
	if c.audit != nil {
		c.audit.result.t, c.audit.result.ready, c.audit.described = t, true, true
	}
	return nil
}

// CopyData implements proxy.CopyTransformer for the COPY's data.
func (c *copyResult) CopyData(dst, msg []byte) ([]byte, error) {
	out, err := c.out.CopyData(dst, msg)
	if err != nil && c.audit != nil {
		c.audit.failed(err)
	}
	return out, err
}

// CopyDone implements proxy.CopyTransformer.
func (c *copyResult) CopyDone(dst []byte) ([]byte, error) { return c.out.CopyDone(dst) }

// CommandComplete implements proxy.CommandCompleter.
func (c *copyResult) CommandComplete(tag []byte) {
	if c.audit != nil {
		c.audit.CommandComplete(tag)
	}
}

// Answered implements proxy.Responder.
func (c *copyResult) Answered(typ byte) {
	if c.audit != nil {
		c.audit.Answered(typ)
	}
}

// ErrorResponse implements proxy.Responder: the server's answer to the
// proxy's CopyFail becomes the client's error (the proxy's, or the
// client's own CopyFail); the server's own errors keep their code and
// message, their context names the client's line and no value of a PHI
// column.
func (c *copyResult) ErrorResponse(dst, msg []byte) []byte {
	out := c.errorResponse(dst, msg)
	if c.audit != nil {
		return c.audit.ErrorResponse(dst, out[len(dst):])
	}
	return out
}

func (c *copyResult) errorResponse(dst, msg []byte) []byte {
	if c.in == nil {
		return append(dst, msg...)
	}
	var er pgproto3.ErrorResponse
	if err := er.Decode(msg[5:]); err != nil {
		return append(dst, msg...)
	}
	failed, clientFail := c.in.outcome()
	ours := er.Code == pgerrcode.QueryCanceled && er.Message == "COPY from stdin failed: "+copyFailMarker
	switch {
	case ours && failed != nil:
		er = pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: failed.code,
			Message: "phiproxy: " + strings.TrimPrefix(failed.msg, "phiproxy: "), Hint: failed.hint, Where: failed.context}
	case ours && clientFail != nil:
		er.Message = "COPY from stdin failed: " + *clientFail
		er.Where = c.where(er.Where)
	default:
		er.Where = c.where(er.Where)
	}
	out, err := er.Encode(dst)
	if err != nil {
		return append(dst, msg...)
	}
	return out
}

// where rewrites the context of a server error about a COPY FROM row:
// "COPY t, line N" names the server's line, a row the proxy sent, which is
// mapped to the client's line; the text of the row (ciphertext) is left
// out, as is the value of a PHI or blind-index column.
func (c *copyResult) where(w string) string {
	if w == "" {
		return w
	}
	lines := strings.Split(w, "\n")
	prefix := "COPY " + c.in.table + ", line "
	for i, l := range lines {
		if !strings.HasPrefix(l, prefix) {
			continue
		}
		rest := l[len(prefix):]
		n := 0
		for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
			n++
		}
		row, err := strconv.ParseInt(rest[:n], 10, 64)
		if err != nil {
			continue
		}
		out := "COPY " + c.in.table
		if line, ok := c.in.clientLine(row); ok {
			out += ", line " + strconv.FormatInt(line, 10)
		}
		rest = rest[n:]
		if col, ok := strings.CutPrefix(rest, ", column "); ok {
			name, _, _ := strings.Cut(col, ": ")
			out += ", column " + name
			if t := c.cp.Table; t.Column(name) == nil && !t.IsIndexColumn(name) {
				out += rest[len(", column ")+len(name):]
			}
		}
		lines[i] = out
	}
	return strings.Join(lines, "\n")
}

// executeCopy handles the Execute of a portal of a COPY on a policy table
// (the extended protocol's way to run one).
func (s *session) executeCopy(p *portal, msg []byte) error {
	plan := p.stmt.plan
	c, err := s.newCopyResult(plan, false)
	if err != nil {
		return s.raiseExtended(err)
	}
	if err := s.guard(); err != nil {
		return err
	}
	if c.cp.Table == nil {
		text, err := s.w.renderQuery(s.buf[:0], plan)
		if err != nil {
			return s.raiseExtended(err)
		}
		s.buf = text
		if err := s.describeQuery(c, text); err != nil {
			return err
		}
	}
	if err := s.c.Send(proxy.Expectation{Kind: proxy.KindExecute, Responder: c}, msg); err != nil {
		return err
	}
	s.copying = c.in
	return nil
}

// noteCopyBehind treats the settings as moved for a COPY FROM STDIN sent
// as a simple Query behind statements not yet answered. No guard goes in
// front of it (handleQuery), so none checks DateStyle, TimeZone or
// client_encoding, which a function run by an earlier statement of the
// pipeline may have set: its data's dates and times that depend on them,
// and characters beyond ASCII, are refused (errSettingsMoved,
// errCopyInFlight) rather than read under settings the server may no
// longer have. Clients that wait for ReadyForQuery before a COPY (pgx,
// psycopg, psql, pgjdbc's CopyManager) are not concerned. Inside the
// client's open extended batch too, its earlier messages answered or not:
// the server reports the settings a function of the batch changed only
// with the Sync's ReadyForQuery (attack13 finding 2).
func (s *session) noteCopyBehind(cp *rewrite.Copy) {
	if !cp.From {
		return // COPY TO goes behind the guard
	}
	if idle, _ := s.idle(); !idle || s.openBatch {
		s.noteSettings(true)
	}
}
