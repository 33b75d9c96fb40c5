package phi

import (
	"strings"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgproto3"
)

// The settings check.
//
// The proxy reads and shows date/time values under the DateStyle and
// TimeZone the server last reported, which PostgreSQL 14 and later report
// only at ReadyForQuery. A statement known to change them (movesSettings)
// makes the values after it, in the same text or pipeline, refused; but a
// function or trigger may change them by itself (set_config in its body),
// and the statements after it would be read under settings the server no
// longer has: SELECT f(); INSERT … VALUES ('01/02/2020') stored 2 January
// where PostgreSQL stores 1 February. So the checks the proxy already puts
// in front of statements (the guard, and the catalog checks inside a text
// of several statements) also compare the two settings with those the
// proxy used, and fail the batch when they differ: nothing after the
// change runs, and the client is told why.
//
// The failure is current_setting of a name no one can set (it has no
// dot), chosen by a CASE the planner cannot fold: SQLSTATE 42704 with
// that name in the message, which tells it from the catalog's failures.
// A function that changes them in the middle of the statement whose
// values the proxy shows is not seen (README, "Assumed, not checked").

// settingsChanged is the name whose lookup fails the check.
const settingsChanged = "phiproxy_settings_changed"

// settingsTest is a condition that holds when DateStyle is ds, TimeZone
// is tz and client_encoding is enc (SQL expressions). client_encoding
// too: a function that sets it makes the server send later rows, and read
// later values, in another encoding than the proxy's decrypted text
// (attack13 finding 3: UTF-8 sent where PostgreSQL sends LATIN1).
// enc "" leaves client_encoding unchecked.
func settingsTest(ds, tz, enc string) string {
	t := "pg_catalog.current_setting('DateStyle') OPERATOR(pg_catalog.=) " + ds +
		" AND pg_catalog.current_setting('TimeZone') OPERATOR(pg_catalog.=) " + tz
	if enc != "" {
		t += " AND pg_catalog.current_setting('client_encoding') OPERATOR(pg_catalog.=) " + enc
	}
	return t
}

// settingsFailure is an expression that fails unless cond holds.
func settingsFailure(cond string) string {
	return "pg_catalog.current_setting(CASE WHEN " + cond + " THEN 'DateStyle' ELSE '" + settingsChanged + "' END) AS phiproxy_settings"
}

// guardSettings is the guard's settings check: its parameters $1, $2 and
// $3 are DateStyle, TimeZone and client_encoding, NULL when the proxy
// holds no values to check (guardSettingsParams; $3 alone when the server
// never reported client_encoding).
const guardSettings = "pg_catalog.current_setting(CASE WHEN $1::pg_catalog.text IS NULL OR " +
	"pg_catalog.current_setting('DateStyle') OPERATOR(pg_catalog.=) $1 AND pg_catalog.current_setting('TimeZone') OPERATOR(pg_catalog.=) $2::pg_catalog.text" +
	" AND ($3::pg_catalog.text IS NULL OR pg_catalog.current_setting('client_encoding') OPERATOR(pg_catalog.=) $3)" +
	" THEN 'DateStyle' ELSE '" + settingsChanged + "' END) AS phiproxy_settings"

// checkedSettings returns the DateStyle and TimeZone that values sent now
// are read and shown under; ok false when there is nothing to check: a
// statement that changes them is in flight (the values after it are
// refused: settingsMoved), or the server has not reported them.
func (s *session) checkedSettings() (ds, tz, enc string, ok bool) {
	if s.settingsMoved {
		return "", "", "", false
	}
	st := s.settings.Load()
	if st == nil || st.dateStyleName == "" || st.zoneName == "" {
		return "", "", "", false
	}
	return st.dateStyleName, st.zoneName, st.encodingName, true
}

// guardSettingsParams are the guard's Bind parameters.
func (s *session) guardSettingsParams() [][]byte {
	ds, tz, enc, ok := s.checkedSettings()
	if !ok {
		return [][]byte{nil, nil, nil}
	}
	params := [][]byte{[]byte(ds), []byte(tz), nil}
	if enc != "" {
		params[2] = []byte(enc)
	}
	return params
}

// inlineCheck is the check put in front of the statements of a text after
// its first: the catalog's, with the settings' when there are any to check.
func (s *session) inlineCheck() string {
	ds, tz, enc, ok := s.checkedSettings()
	if !ok || s.db.checkSQL == "" {
		return s.db.checkSQL
	}
	if enc != "" {
		enc = quoteLiteral(enc)
	}
	return s.db.checkSQL + ", " + settingsFailure(settingsTest(quoteLiteral(ds), quoteLiteral(tz), enc))
}

// isSettingsChanged reports whether er is the settings check failing.
func isSettingsChanged(er *pgproto3.ErrorResponse) bool {
	return er.Code == pgerrcode.UndefinedObject && strings.Contains(er.Message, settingsChanged)
}

// errSettingsChanged: a statement before this one changed DateStyle or
// TimeZone by itself.
var errSettingsChanged error = &refusal{pgerrcode.ObjectNotInPrerequisiteState, "settings",
	"DateStyle, TimeZone or client_encoding changed while this query or pipeline ran (a function or trigger set it), so phiproxy would read or show values under settings the server no longer has; the statements from there on were not run: send them again"}
