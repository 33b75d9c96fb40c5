package phi

import (
	"strconv"
	"strings"
	"time"
)

// This file holds the session settings that change what a date or a
// timestamp means: DateStyle (the field order of input like 05/12/1980 and
// the form of output) and TimeZone (input without an offset, and all
// timestamptz output). PostgreSQL reports both in ParameterStatus, at
// startup and at the ReadyForQuery after a change; the proxy reads values
// under the settings the server last reported, and only when it is sure
// nothing sent since may have changed them (session.settingsMoved).

// dateStyleKind is DateStyle's output style.
type dateStyleKind uint8

const (
	styleISO dateStyleKind = iota
	styleSQL
	stylePostgres
	styleGerman
)

// dateOrder is DateStyle's field order for input (and for SQL, Postgres
// and German output).
type dateOrder uint8

const (
	orderMDY dateOrder = iota
	orderDMY
	orderYMD
)

type dateStyle struct {
	style dateStyleKind
	order dateOrder
}

// isoDateStyle is the output style of canonical plaintext.
var isoDateStyle = dateStyle{style: styleISO}

// parseDateStyle reads DateStyle as the server reports it ("ISO, MDY").
func parseDateStyle(v string) (dateStyle, bool) {
	style, order, ok := strings.Cut(v, ",")
	if !ok {
		return dateStyle{}, false
	}
	var ds dateStyle
	switch strings.TrimSpace(style) {
	case "ISO":
		ds.style = styleISO
	case "SQL":
		ds.style = styleSQL
	case "Postgres":
		ds.style = stylePostgres
	case "German":
		ds.style = styleGerman
	default:
		return dateStyle{}, false
	}
	switch strings.TrimSpace(order) {
	case "MDY":
		ds.order = orderMDY
	case "DMY":
		ds.order = orderDMY
	case "YMD":
		ds.order = orderYMD
	default:
		return dateStyle{}, false
	}
	return ds, true
}

// sessionSettings are the settings as the server last reported them.
// Immutable; the session swaps in a new one on each change.
type sessionSettings struct {
	dateStyle   dateStyle
	dateStyleOK bool
	// dateStyleName and zoneName are the values as reported (the
	// settings check compares them: settings_check.go).
	dateStyleName string
	zone          *time.Location // nil: not reported, or a zone the proxy cannot read
	zoneName      string
	// encodingName is client_encoding as reported, which the settings
	// check compares too: the proxy sends decrypted text to the client,
	// and encrypts the client's, as the encoding it last learned.
	encodingName string
	// stringsName is standard_conforming_strings as reported, compared
	// too: the proxy read the client's literals under it.
	stringsName string
	// guardParams are the guard's parameters for these values
	// (settingsParams), nil before any is reported; settingsSQL the
	// inline check's condition on them (settingsSQL).
	guardParams [][]byte
	settingsSQL string
	// serverMajor is the server's major version (server_version), 0 when
	// unknown. The value readers are PostgreSQL 15's.
	serverMajor int
}

// settingsError is a value the proxy refuses because what it means
// depends on a setting the proxy does not know for certain.
type settingsError struct{ msg, hint string }

func (e *settingsError) Error() string { return e.msg }

var (
	errDateStyleUnknown = &settingsError{
		msg:  "the session's DateStyle is not known to the proxy, and this date/time value depends on it",
		hint: "Write dates as YYYY-MM-DD (ISO 8601), which read the same under every DateStyle.",
	}
	errTimeZoneUnknown = &settingsError{
		msg:  "the session's TimeZone is not one the proxy can read, and this timestamptz value depends on it",
		hint: "Give timestamps an explicit UTC offset (2024-01-02 10:00:00+01), or SET TimeZone to a zone name such as 'UTC' or 'Europe/Paris'.",
	}
	errSettingsMoved = &settingsError{
		msg:  "this date/time value depends on DateStyle or TimeZone, which a statement sent earlier and not yet answered may change",
		hint: "Send it after the ReadyForQuery that follows the change (not in the same pipeline or multi-statement query), or write dates as YYYY-MM-DD and timestamps with an explicit offset.",
	}
)

// withSetting returns a copy of s with one reported setting applied.
func (s *sessionSettings) withSetting(name, value string) *sessionSettings {
	n := *s
	switch name {
	case "DateStyle":
		n.dateStyle, n.dateStyleOK = parseDateStyle(value)
		n.dateStyleName = value
	case "TimeZone":
		n.zone, n.zoneName = sessionZone(value), value
	case "client_encoding":
		n.encodingName = value
	case "standard_conforming_strings":
		n.stringsName = value
	case "server_version":
		n.serverMajor, _ = strconv.Atoi(strings.SplitN(value, ".", 2)[0])
	}
	n.guardParams = settingsParams(n.checked())
	n.settingsSQL = settingsSQL(n.checked())
	return &n
}

// movesSettings reports whether executing sql may change DateStyle or
// TimeZone for the statements after it: a statement that begins with SET,
// RESET, DISCARD, a transaction end (COMMIT, ROLLBACK, ABORT, END,
// PREPARE TRANSACTION; they undo SET LOCAL and SETs of an aborted
// transaction), DO or CALL, or a text that names set_config or
// pg_reload_conf. It reads words, not SQL: a word in a string literal may
// make it say yes for nothing, which only makes the proxy more careful. A
// function that changes a setting by itself is not seen (see README).
func movesSettings(sql string) bool {
	start := true // at the start of a statement
	for i := 0; i < len(sql); {
		c := sql[i]
		switch {
		case c == ';':
			start = true
			i++
		case isSpace(c):
			i++
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-':
			for i < len(sql) && sql[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			depth := 0
			for i < len(sql) {
				if sql[i] == '/' && i+1 < len(sql) && sql[i+1] == '*' {
					depth++
					i += 2
				} else if sql[i] == '*' && i+1 < len(sql) && sql[i+1] == '/' {
					depth--
					i += 2
					if depth == 0 {
						break
					}
				} else {
					i++
				}
			}
		case isAlpha(c) || c == '_':
			j := i
			for j < len(sql) && (isAlnum(sql[j]) || sql[j] == '_' || sql[j] == '$') {
				j++
			}
			w := sql[i:j]
			if start {
				switch {
				case strings.EqualFold(w, "set"), strings.EqualFold(w, "reset"), strings.EqualFold(w, "discard"),
					strings.EqualFold(w, "commit"), strings.EqualFold(w, "rollback"), strings.EqualFold(w, "abort"),
					strings.EqualFold(w, "end"), strings.EqualFold(w, "prepare"), strings.EqualFold(w, "do"),
					strings.EqualFold(w, "call"):
					return true
				}
			}
			if strings.EqualFold(w, "set_config") || strings.EqualFold(w, "pg_reload_conf") {
				return true
			}
			start = false
			i = j
		default:
			start = false
			i++
		}
	}
	return false
}
