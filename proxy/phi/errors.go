package phi

import (
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgerrcode"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy"
)

// The errors a client may see from this package. Each implements
// proxy.ClientError (SQLSTATE and a client-safe message naming tables,
// columns and types, never values) and a Reason, the label of
// phiproxy_statements_total's rejected_<reason> outcome; proxy.Classify
// turns them into ErrorResponses.

var (
	_ proxy.ClientError = (*ValueError)(nil)
	_ proxy.ClientError = (*TypeError)(nil)
	_ proxy.ClientError = (*CatalogError)(nil)
	_ proxy.ClientError = (*ParamCountError)(nil)
	_ proxy.ClientError = (*unreadableError)(nil)
	_ proxy.ClientError = (*refusal)(nil)
)

// ValueError reports a PHI value that the proxy could not convert: the
// client sent something that is not valid for the column's logical type,
// or whose meaning the proxy cannot know for certain (0A000).
type ValueError struct {
	Type policy.LogicalType
	// Code is the SQLSTATE PostgreSQL gives for the same input (22P02
	// when empty); Msg says what is wrong, never with the value, in
	// PostgreSQL's words where it has some; Hnt is an optional hint.
	Code, Msg, Hnt string
	// Where names the value and its column, once known ("parameter $1
	// for public.patients.email"); never the value.
	Where string
	// Converted: the value was read, and its conversion to the column's
	// type failed (an int8 too large for an int4 column), which
	// PostgreSQL finds when it plans the statement, not when it reads the
	// value (marker.go).
	Converted bool
}

func (e *ValueError) Error() string { return e.ClientMessage() }
func (e *ValueError) SQLState() string {
	if e.Code != "" {
		return e.Code
	}
	return pgerrcode.InvalidTextRepresentation
}
func (e *ValueError) Reason() string { return "invalid_value" }
func (e *ValueError) ClientMessage() string {
	msg := e.Msg
	if msg == "" {
		msg = fmt.Sprintf("invalid input for type %s", e.Type)
	}
	if e.Where != "" {
		msg += " (" + e.Where + ")"
	}
	return msg
}

// Hint implements the optional hint of proxy.ClientError.
func (e *ValueError) Hint() string { return e.Hnt }

// TypeError reports a PHI value whose type (declared in Parse, given by a
// cast, or a literal's) PostgreSQL would not accept for the column
// (42883 for a comparison, 42804 for a stored value, with its message),
// or that the proxy cannot convert exactly as PostgreSQL would (0A000).
type TypeError struct {
	Code, Msg, Hnt string
	Where          string // as ValueError.Where
}

func (e *TypeError) Error() string    { return e.ClientMessage() }
func (e *TypeError) SQLState() string { return e.Code }
func (e *TypeError) Reason() string   { return "value_type" }
func (e *TypeError) Hint() string     { return e.Hnt }
func (e *TypeError) ClientMessage() string {
	if e.Where != "" {
		return e.Msg + " (" + e.Where + ")"
	}
	return e.Msg
}

// locate names where a failed value was in the ValueError or TypeError
// inside err.
func locate(err error, format string, args ...any) error {
	var ve *ValueError
	if errors.As(err, &ve) && ve.Where == "" {
		ve.Where = fmt.Sprintf(format, args...)
		return ve
	}
	var te *TypeError
	if errors.As(err, &te) && te.Where == "" {
		te.Where = fmt.Sprintf(format, args...)
		return te
	}
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), err)
}

// CatalogError refuses statements on a policy table that the database does
// not hold the way phiproxy needs (a missing blind-index column, a PHI
// column of a non-storage type). Msg says which DDL fixes it.
type CatalogError struct{ Msg, Hnt string }

func (e *CatalogError) Error() string         { return e.Msg }
func (e *CatalogError) SQLState() string      { return pgerrcode.ObjectNotInPrerequisiteState }
func (e *CatalogError) Reason() string        { return "catalog" }
func (e *CatalogError) ClientMessage() string { return e.Msg }
func (e *CatalogError) Hint() string          { return e.Hnt }

// ParamCountError reports a Bind whose parameter count does not match the
// statement the client prepared.
type ParamCountError struct{ Got, Want int }

func (e *ParamCountError) Error() string {
	return fmt.Sprintf("bind message supplies %d parameters, but prepared statement requires %d", e.Got, e.Want)
}
func (e *ParamCountError) SQLState() string      { return pgerrcode.ProtocolViolation }
func (e *ParamCountError) Reason() string        { return "protocol" }
func (e *ParamCountError) ClientMessage() string { return e.Error() }

// unreadableError is what the client learns of a stored PHI value that
// did not decrypt (tampered, an unknown key, or plaintext where ciphertext
// belongs) or did not decode as its type. It names the column, never the
// value; Err is the cause, often a *crypto.DecryptError.
type unreadableError struct {
	Column string // schema.table.column
	KeyID  uint32 // the data key the envelope names, 0 when it names none
	Err    error
}

// Class says why, for logs and metrics: unknown_key (the keyring lacks
// the envelope's key: retired or never here), not_ciphertext (plaintext or
// garbage where ciphertext belongs) or tampered (an envelope that fails
// authentication: altered, moved from another column, or a wrong key).
func (e *unreadableError) Class() string {
	switch {
	case errors.Is(e.Err, crypto.ErrUnknownKey):
		return "unknown_key"
	case e.KeyID == 0:
		return "not_ciphertext"
	}
	return "tampered"
}

func (e *unreadableError) Error() string         { return "decryption failed for column " + e.Column }
func (e *unreadableError) Unwrap() error         { return e.Err }
func (e *unreadableError) SQLState() string      { return pgerrcode.DataCorrupted }
func (e *unreadableError) Reason() string        { return "decrypt" }
func (e *unreadableError) ClientMessage() string { return e.Error() }

// refusal is a statement refused for a reason of the protocol or the
// session rather than of its SQL.
type refusal struct {
	code, reason, msg string
}

func (e *refusal) Error() string         { return e.msg }
func (e *refusal) SQLState() string      { return e.code }
func (e *refusal) Reason() string        { return e.reason }
func (e *refusal) ClientMessage() string { return e.msg }

var (
	// ErrAmbiguousStatement refuses a Bind whose statement the proxy cannot
	// tell: see session.ambiguous.
	ErrAmbiguousStatement error = &refusal{pgerrcode.ObjectNotInPrerequisiteState, "protocol",
		"the prepared statement was redefined in an earlier, still unanswered batch; wait for its ParseComplete before binding it"}
	// errNonStandardStrings refuses statements on policy tables while the
	// session has standard_conforming_strings off.
	errNonStandardStrings error = &refusal{pgerrcode.FeatureNotSupported, "settings",
		"standard_conforming_strings must be on for statements on PHI tables with backslashes: SET standard_conforming_strings = on"}
	// errInvalidUTF8Text is PostgreSQL's answer to a statement text that
	// is not valid UTF-8 under client_encoding UTF8.
	errInvalidUTF8Text error = &refusal{pgerrcode.CharacterNotInRepertoire, "encoding",
		`invalid byte sequence for encoding "UTF8"`}
	// errNonUTF8Text refuses a statement text on PHI tables that is not
	// ASCII while client_encoding is not UTF8.
	errNonUTF8Text error = &refusal{pgerrcode.FeatureNotSupported, "encoding",
		"statements on PHI tables with characters beyond ASCII need client_encoding UTF8"}
	// errNonUTF8 refuses a PHI value that is not ASCII while the session's
	// client_encoding is not UTF8: the server would convert it, the proxy
	// does not guess how.
	errNonUTF8 error = &refusal{pgerrcode.FeatureNotSupported, "encoding",
		"PHI values that are not ASCII need client_encoding UTF8"}
	// errEncodingMoved refuses a PHI value that is not ASCII in a result
	// of a statement sent behind one that may change client_encoding
	// (SET, set_config...; session.settingsMoved): the server reports the
	// change only at ReadyForQuery, and converts the rows after it to the
	// new encoding, which the proxy does not (attack14 finding 2: UTF-8
	// sent where PostgreSQL sends LATIN1).
	errEncodingMoved error = &refusal{pgerrcode.FeatureNotSupported, "settings",
		"PHI values that are not ASCII cannot be shown after a statement of the same query or pipeline that may change client_encoding: send it after the ReadyForQuery that follows the change"}
	// errSettingsInFlight refuses a text whose meaning depends on
	// standard_conforming_strings or client_encoding (a backslash, a
	// character beyond ASCII) while earlier statements, which may change
	// them, are still unanswered: the proxy cannot know how the server will
	// read it.
	errSettingsInFlight error = &refusal{pgerrcode.FeatureNotSupported, "settings",
		"a statement on PHI tables with backslashes or non-ASCII characters must wait for the answers to the statements before it (send it after ReadyForQuery), as they may change standard_conforming_strings or client_encoding"}
	// errBackslashLiteral refuses a statement on PHI tables that would go
	// upstream with a backslash in a standard '...' literal: the server
	// reads it differently if standard_conforming_strings changes without
	// the proxy knowing (ALTER SYSTEM and a reload reach a session at its
	// next statement, and are reported only after it).
	errBackslashLiteral error = &refusal{pgerrcode.FeatureNotSupported, "settings",
		"statements on PHI tables may not keep a backslash in a '...' literal: write it as E'...' or pass it as a parameter"}
	// errSQLPrepared refuses a Bind with values of a statement the proxy
	// did not see prepared, in a session that may have prepared it with
	// SQL PREPARE (sqlPrepared).
	errSQLPrepared error = &refusal{pgerrcode.FeatureNotSupported, "protocol",
		"binding values to a statement prepared with SQL PREPARE is not supported while a PHI policy is active: phiproxy cannot check where they go (a table may have become a second name for a PHI table since); prepare it with the extended protocol (Parse)"}
	// errReservedName refuses the name of one of the proxy's own prepared
	// statements and portals (reservedName).
	errReservedName error = &refusal{pgerrcode.ReservedName, "protocol",
		"prepared statement and portal names starting with " + reservedPrefix + " are reserved by phiproxy"}
	// errNoIndex means a plan asked to index a column without a blind
	// index: a rewriter bug, refused rather than sending anything.
	errNoIndex = errors.New("column has no blind index")
)

// reservedPrefix starts the names of the proxy's own prepared statements
// and portals (the guard's, the raise's, COPY's, Conn.Query's).
const reservedPrefix = "phiproxy_"

// reservedName reports whether a client's statement or portal name is one
// the proxy keeps for itself: a client that closed the guard's statement
// and prepared its own under that name would have every later guard pass.
func reservedName(name string) bool { return strings.HasPrefix(name, reservedPrefix) }
