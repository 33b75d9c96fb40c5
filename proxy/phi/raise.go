package phi

import (
	"errors"
	"strings"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/rewrite"
)

// A statement the proxy refuses must fail on the server too: inside a
// transaction block the server's transaction has to end up aborted exactly
// as if the server had raised the error, so that a later COMMIT cannot
// commit half the work. So instead of answering the client itself, the
// proxy sends PostgreSQL a statement that raises the proxy's error, and the
// server's ErrorResponse (with the proxy's SQLSTATE and message) and
// ReadyForQuery flow back through the ordinary path. The messages name
// tables, columns and SQLSTATEs, never values: they reach the server log.
// What only the client may see (PostgreSQL's own message for a syntax
// error, which quotes the client's text) and the error's position are put
// into the server's ErrorResponse on its way back (raiseAnswer).

// raiseStatement is the name of the prepared statement the extended
// protocol uses to raise an error. Clients never see it.
const raiseStatement = "phiproxy_raise"

// raised is what a raise makes the server report: the client-facing
// SQLSTATE, message and hint of the refusal, and the table and column it
// concerns, if any.
type raised struct {
	proxy.ErrorInfo
	schema, table, column string
}

// refuse classifies err for a raise, counts and logs it (never with a
// value), and returns what to raise.
func (s *session) refuse(err error) raised {
	r := raised{ErrorInfo: proxy.Classify(err)}
	if r.Fatal {
		// Not one of ours: refused all the same, with nothing said of it.
		r.ErrorInfo = proxy.ErrorInfo{Code: pgerrcode.InternalError,
			Message: "phiproxy: the statement could not be prepared for encryption", Reason: "other"}
	}
	var re *rewrite.Error
	if errors.As(err, &re) {
		if i := strings.IndexByte(re.Table, '.'); i > 0 {
			r.schema, r.table = re.Table[:i], re.Table[i+1:]
		}
		r.column = re.Column
	}
	var ae *AccessError
	if errors.As(err, &ae) {
		r.schema, r.table, r.column = ae.Column.Table.Schema, ae.Column.Table.Name, ae.Column.Name
	}
	s.auditRefusal(r, err)
	s.eng.metrics.statements.WithLabelValues("rejected_" + r.Reason).Inc()
	s.c.Logger().Info("statement refused", "sqlstate", r.Code, "reason", r.Reason, "schema", r.schema, "table", r.table, "column", r.column)
	return r
}

// raiseQuery makes the server fail a simple Query with err.
func (s *session) raiseQuery(err error) error {
	s.copyDiscard = true // COPY data for the refused statement, if any, is dropped
	r := s.refuse(err)
	out, encErr := (&pgproto3.Query{String: raiseSQL(r)}).Encode(s.buf[:0])
	if encErr != nil {
		return encErr
	}
	s.buf = out
	return s.c.Send(proxy.Expectation{Kind: proxy.KindQuery, Responder: r.answer()}, out)
}

// raiseExtended makes the server fail the current extended-protocol
// message with err: the server answers it with the error and then skips
// the client's messages up to Sync, as after its own errors.
func (s *session) raiseExtended(err error) error {
	r := s.refuse(err)
	delete(s.portals, "") // the raise binds the unnamed portal
	s.skipping = true
	s.copyDiscard = true
	for _, m := range raiseMessages(r) {
		out, err := m.msg.Encode(s.buf[:0])
		if err != nil {
			return err
		}
		s.buf = out
		if err := s.c.Send(proxy.Expectation{Kind: m.kind, Hidden: m.kind != proxy.KindExecute, Responder: r.answer()}, out); err != nil {
			return err
		}
	}
	return nil
}

// raiseAnswer removes from the ErrorResponse of a raise the fields that
// describe the DO block rather than the refused statement, and adds what
// only the client may see: the exact message, if any (it may quote the
// client's text, so it never went upstream), and the position in the
// client's text.
type raiseAnswer struct {
	proxy.PassResponder
	info proxy.ErrorInfo
}

// answer is the Responder of r's raise.
func (r raised) answer() raiseAnswer { return raiseAnswer{info: r.ErrorInfo} }

// ErrorResponse implements proxy.Responder.
func (a raiseAnswer) ErrorResponse(dst, msg []byte) []byte {
	var er pgproto3.ErrorResponse
	if err := er.Decode(msg[5:]); err != nil {
		return append(dst, msg...)
	}
	er.Where, er.File, er.Line, er.Routine = "", "", 0, ""
	switch {
	case er.Code == a.info.Code:
		// The raise's own error.
	case a.info.Exact != "" && er.Code == pgerrcode.InFailedSQLTransaction:
		// A text the parser refuses: PostgreSQL parses before it checks
		// for an aborted transaction, so it reports the syntax error
		// (and the transaction stays aborted, as it does here).
		er = pgproto3.ErrorResponse{Severity: er.Severity, SeverityUnlocalized: er.SeverityUnlocalized,
			Code: a.info.Code, Hint: a.info.Hint}
	default:
		// Another error of the server's (a cancel): it stands as is.
		return a.encode(dst, msg, &er)
	}
	if a.info.Exact != "" {
		er.Message = a.info.Exact
	}
	if a.info.Position > 0 {
		er.Position = a.info.Position
	}
	return a.encode(dst, msg, &er)
}

func (raiseAnswer) encode(dst, msg []byte, er *pgproto3.ErrorResponse) []byte {
	out, err := er.Encode(dst)
	if err != nil {
		return append(dst, msg...)
	}
	return out
}

// raiseSQL returns a statement that fails with r's SQLSTATE, message,
// hint, and table and column names.
func raiseSQL(r raised) string {
	var b strings.Builder
	b.WriteString("DO $phiproxy$BEGIN RAISE EXCEPTION USING ERRCODE = '")
	b.WriteString(r.Code)
	b.WriteString("', MESSAGE = ")
	b.WriteString(quoteLiteral(strings.ReplaceAll(r.Message, "$phiproxy$", "")))
	for _, opt := range [...]struct{ name, value string }{
		{"HINT", r.Hint}, {"SCHEMA", r.schema}, {"TABLE", r.table}, {"COLUMN", r.column},
	} {
		if opt.value != "" {
			b.WriteString(", ")
			b.WriteString(opt.name)
			b.WriteString(" = ")
			b.WriteString(quoteLiteral(strings.ReplaceAll(opt.value, "$phiproxy$", "")))
		}
	}
	b.WriteString("; END$phiproxy$")
	return b.String()
}

// raiseMessages returns the extended-protocol messages that make the server
// fail with r in place of a client's Parse or Bind: the server then
// discards the client's messages up to Sync, as it would after its own
// error. Their CloseComplete, ParseComplete and BindComplete are swallowed
// by the proxy; the ErrorResponse goes to the client.
func raiseMessages(r raised) []struct {
	kind proxy.Kind
	msg  pgproto3.FrontendMessage
} {
	return []struct {
		kind proxy.Kind
		msg  pgproto3.FrontendMessage
	}{
		{proxy.KindClose, &pgproto3.Close{ObjectType: 'S', Name: raiseStatement}},
		{proxy.KindParse, &pgproto3.Parse{Name: raiseStatement, Query: raiseSQL(r)}},
		{proxy.KindBind, &pgproto3.Bind{PreparedStatement: raiseStatement}},
		{proxy.KindExecute, &pgproto3.Execute{}},
	}
}

// quoteLiteral quotes s as an escape string literal, which reads the same
// whatever standard_conforming_strings says.
func quoteLiteral(s string) string {
	return "E'" + strings.NewReplacer("'", "''", `\`, `\\`).Replace(s) + "'"
}
