package rewrite

import (
	"errors"
	"strings"

	"github.com/pganalyze/pg_query_go/v6/parser"
)

// A text that pg_query cannot parse is one PostgreSQL's own parser refuses
// (pg_query is that parser), so the client is answered as PostgreSQL
// answers it: the same message word for word, its position and, where the
// grammar gives one, its SQLSTATE and hint (issue 10 item 7). The proxy
// never forwards such a text when it names a policy table: PostgreSQL
// would not run it, but it would write the text, and any PHI value in it,
// to its log (log_statement = all, log_min_error_statement).
//
// PostgreSQL's message quotes the client's text near the error (`syntax
// error at or near "'123-45-6789'"`), which may be a value. It goes to the
// client who sent the text and nowhere else: Error.Exact holds it,
// Error.Message the same without the quote, for logs and the raise the
// server sees.

// syntaxError is the rejection of a text the parser refused with err.
func syntaxError(err error) *Error {
	e := &Error{Code: CodeSyntaxError, Message: "syntax error", parser: true}
	var perr *parser.Error
	if !errors.As(err, &perr) || perr.Message == "" {
		return e
	}
	e.Exact = perr.Message
	e.Message = safeParserMessage(perr.Message)
	e.Position = perr.Cursorpos
	if m, ok := lookupParserMessage(perr.Message, perr.Filename); ok {
		e.Code, e.HintText = m.code, m.hint
	}
	return e
}

// safeParserMessage is msg without what it quotes of the input: the part
// before " at or near ", or a plain "syntax error" for a message that
// names something of the text elsewhere.
func safeParserMessage(msg string) string {
	if i := strings.Index(msg, " at or near "); i >= 0 {
		msg = msg[:i]
	}
	if msg == "" || strings.ContainsAny(msg, `"'$:`) {
		return "syntax error"
	}
	return msg
}

// parserMessage is what PostgreSQL's raw parser reports with one message
// besides 42601 syntax_error: format is the message as written in the
// source (%s and %d stand for what it quotes), file the source file when
// the same message comes from two places.
type parserMessage struct {
	format, file, code, hint string
}

// parserMessages are the ereport calls of PostgreSQL 17's gram.y, scan.l
// and parser.c (as compiled into pg_query v6) whose SQLSTATE is not 42601
// or that carry a hint. Every other parser error is 42601 without one.
// The DETAIL of "invalid publication object list" is not given.
var parserMessages = []parserMessage{
	// scan.l and parser.c: Unicode escapes.
	{"invalid Unicode escape", "scan.l", "22025", `Unicode escapes must be \uXXXX or \UXXXXXXXX.`},
	{"invalid Unicode escape", "parser.c", "42601", `Unicode escapes must be \XXXX or \+XXXXXX.`},
	{"unsafe use of string constant with Unicode escapes", "", "0A000", ""},
	{`unsafe use of \' in a string literal`, "", "22P06", `Use '' to write quotes in strings. \' is insecure in client-only encodings.`},
	// gram.y: 42601 with a hint.
	{"LIMIT #,# syntax is not supported", "", "42601", "Use separate LIMIT and OFFSET clauses."},
	{"missing argument", "", "42601", "Use NONE to denote the missing argument of a unary operator."},
	{`unrecognized row security option "%s"`, "", "42601", "Only PERMISSIVE or RESTRICTIVE policies are supported currently."},
	// gram.y: 0A000 feature_not_supported.
	{"%s constraints cannot be marked DEFERRABLE", "", "0A000", ""},
	{"%s constraints cannot be marked NO INHERIT", "", "0A000", ""},
	{"%s constraints cannot be marked NOT VALID", "", "0A000", ""},
	{"CREATE ASSERTION is not yet implemented", "", "0A000", ""},
	{"CREATE EXTENSION ... FROM is no longer supported", "", "0A000", ""},
	{"CREATE OR REPLACE CONSTRAINT TRIGGER is not supported", "", "0A000", ""},
	{"CREATE SCHEMA IF NOT EXISTS cannot include schema elements", "", "0A000", ""},
	{"MATCH PARTIAL not yet implemented", "", "0A000", ""},
	{"UNENCRYPTED PASSWORD is no longer supported", "", "0A000", "Remove UNENCRYPTED to store the password in encrypted form instead."},
	{"UNIQUE predicate is not yet implemented", "", "0A000", ""},
	{"WITH CHECK OPTION not supported on recursive views", "", "0A000", ""},
	{"a column list with %s is only supported for ON DELETE actions", "", "0A000", ""},
	{"aggregates cannot have output arguments", "", "0A000", ""},
	{"an ordered-set aggregate with a VARIADIC direct argument must have one VARIADIC aggregated argument of the same data type", "", "0A000", ""},
	{"current database cannot be changed", "", "0A000", ""},
	{"dropping an enum value is not implemented", "", "0A000", ""},
	{"only string constants are supported in JSON_TABLE path specification", "", "0A000", ""},
	// gram.y: 22023 invalid_parameter_value.
	{"column number must be in range from 1 to %d", "", "22023", ""},
	{"precision for type float must be at least 1 bit", "", "22023", ""},
	{"precision for type float must be less than 54 bits", "", "22023", ""},
	{`unrecognized partitioning strategy "%s"`, "", "22023", ""},
	{"unrecognized JSON encoding: %s", "", "22023", ""},
	// gram.y: 42710 duplicate_object.
	{"modulus for hash partition provided more than once", "", "42710", ""},
	{"remainder for hash partition provided more than once", "", "42710", ""},
	// gram.y: 42P20 windowing_error.
	{"frame start cannot be UNBOUNDED FOLLOWING", "", "42P20", ""},
	{"frame end cannot be UNBOUNDED PRECEDING", "", "42P20", ""},
	{"frame starting from current row cannot have preceding rows", "", "42P20", ""},
	{"frame starting from following row cannot have preceding rows", "", "42P20", ""},
	{"frame starting from following row cannot end with current row", "", "42P20", ""},
	// gram.y: 42939 reserved_name.
	{"%s cannot be used as a role name here", "", "42939", ""},
	{`role name "%s" is reserved`, "", "42939", ""},
	// check_stack_depth: an expression nested too deeply.
	{"stack depth limit exceeded", "", "54001", ""},
}

// lookupParserMessage finds the entry of parserMessages for msg, reported
// from source file file.
func lookupParserMessage(msg, file string) (parserMessage, bool) {
	for _, m := range parserMessages {
		if (m.file == "" || strings.HasSuffix(file, m.file)) && formatMatches(m.format, msg) {
			return m, true
		}
	}
	return parserMessage{}, false
}

// formatMatches reports whether msg is format with each %s or %d
// replaced by some text.
func formatMatches(format, msg string) bool {
	parts := splitFormat(format)
	if !strings.HasPrefix(msg, parts[0]) {
		return false
	}
	msg = msg[len(parts[0]):]
	if len(parts) == 1 {
		return msg == ""
	}
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(msg, p)
		if i < 0 {
			return false
		}
		msg = msg[i+len(p):]
	}
	return strings.HasSuffix(msg, parts[len(parts)-1])
}

// splitFormat splits format at its %s and %d verbs.
func splitFormat(format string) []string {
	var parts []string
	for {
		i := strings.Index(format, "%")
		if i < 0 || i+1 >= len(format) || (format[i+1] != 's' && format[i+1] != 'd') {
			return append(parts, format)
		}
		parts = append(parts, format[:i])
		format = format[i+2:]
	}
}
