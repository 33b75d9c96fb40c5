package proxy

import (
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"
)

// A statement the proxy refuses must fail on the server too: inside a
// transaction block the server's transaction has to end up aborted exactly
// as if the server had raised the error, so that a later COMMIT cannot
// commit half the work. So instead of answering the client itself, the
// proxy sends PostgreSQL a statement that raises the proxy's error, and the
// server's ErrorResponse (with the proxy's SQLSTATE and message) and
// ReadyForQuery flow back through the ordinary path. The messages name
// tables, columns and SQLSTATEs, never values: they reach the server log.

// raiseStatement is the name of the prepared statement the extended
// protocol uses to raise an error. Clients never see it.
const raiseStatement = "phiproxy_raise"

// raiseSQL returns a statement that fails with the given SQLSTATE and
// message.
func raiseSQL(code, message string) string {
	var b strings.Builder
	b.WriteString("DO $phiproxy$BEGIN RAISE EXCEPTION USING ERRCODE = '")
	b.WriteString(code)
	b.WriteString("', MESSAGE = ")
	b.WriteString(quoteLiteral(strings.ReplaceAll(message, "$phiproxy$", "")))
	b.WriteString("; END$phiproxy$")
	return b.String()
}

// raiseMessages returns the extended-protocol messages that make the server
// fail with the given error in place of a client's Parse or Bind: the
// server then discards the client's messages up to Sync, as it would after
// its own error. Their CloseComplete, ParseComplete and BindComplete are
// swallowed by the proxy; the ErrorResponse goes to the client.
func raiseMessages(code, message string) []pgproto3.FrontendMessage {
	return []pgproto3.FrontendMessage{
		&pgproto3.Close{ObjectType: 'S', Name: raiseStatement},
		&pgproto3.Parse{Name: raiseStatement, Query: raiseSQL(code, message)},
		&pgproto3.Bind{PreparedStatement: raiseStatement},
		&pgproto3.Execute{},
	}
}
