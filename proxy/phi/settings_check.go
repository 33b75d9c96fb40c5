package phi

import (
	"strconv"
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
// of several statements) also compare the settings (checkedNames) with those the
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

// checkedNames are the settings the check compares, in the order of the
// guard's parameters: DateStyle and TimeZone, under which the proxy reads
// and shows date/time values; client_encoding, in which it sends
// decrypted text and reads the client's (attack13 finding 3: UTF-8 sent
// where PostgreSQL sends LATIN1); standard_conforming_strings, under which
// it read the client's literals.
var checkedNames = [...]string{"DateStyle", "TimeZone", "client_encoding", "standard_conforming_strings"}

// checkedList names checkedNames in messages and logs.
const checkedList = "DateStyle, TimeZone, client_encoding or standard_conforming_strings"

// settingsTest is a condition that holds when each setting of
// checkedNames whose value (an SQL expression) is not "" has it.
func settingsTest(values [len(checkedNames)]string) string {
	var conds []string
	for i, v := range values {
		if v != "" {
			conds = append(conds, "pg_catalog.current_setting('"+checkedNames[i]+"') OPERATOR(pg_catalog.=) "+v)
		}
	}
	if len(conds) == 0 {
		return "true"
	}
	return strings.Join(conds, " AND ")
}

// settingsFailure is an expression that fails unless cond holds.
func settingsFailure(cond string) string {
	return "pg_catalog.current_setting(CASE WHEN " + cond + " THEN 'DateStyle' ELSE '" + settingsChanged + "' END) AS phiproxy_settings"
}

// guardSettings is the guard's settings check: its parameters $1 … $4 are
// the values of checkedNames, NULL for one the proxy holds no value of to
// check (guardSettingsParams).
var guardSettings = func() string {
	var conds []string
	for i, name := range checkedNames {
		p := "$" + strconv.Itoa(i+1) + "::pg_catalog.text"
		conds = append(conds, "("+p+" IS NULL OR pg_catalog.current_setting('"+name+"') OPERATOR(pg_catalog.=) "+p+")")
	}
	return settingsFailure(strings.Join(conds, " AND "))
}()

// checked returns st's values of checkedNames ("" where not reported).
func (st *sessionSettings) checked() [len(checkedNames)]string {
	return [len(checkedNames)]string{st.dateStyleName, st.zoneName, st.encodingName, st.stringsName}
}

// settingsParams are the guard's Bind parameters for values: NULL for "".
// Made once per reported change (withSetting), not per guard, as is
// settingsSQL.
func settingsParams(values [len(checkedNames)]string) [][]byte {
	params := make([][]byte, len(values))
	for i, v := range values {
		if v != "" {
			params[i] = []byte(v)
		}
	}
	return params
}

// settingsSQL is the inline check's condition on values, "" when there
// is nothing to check.
func settingsSQL(values [len(checkedNames)]string) string {
	if values == ([len(checkedNames)]string{}) {
		return ""
	}
	for i, v := range values {
		if v != "" {
			values[i] = quoteLiteral(v)
		}
	}
	return settingsFailure(settingsTest(values))
}

// noSettingsParams are the guard's parameters when there is nothing to
// check. Read only.
var noSettingsParams = make([][]byte, len(checkedNames))

// guardSettingsParams are the guard's Bind parameters.
func (s *session) guardSettingsParams() [][]byte {
	st := s.settings.Load()
	if s.settingsMoved || st == nil || st.guardParams == nil {
		return noSettingsParams
	}
	return st.guardParams
}

// inlineCheck is the check put in front of the statements of a text after
// its first: the catalog's, with the settings' when there are any to check
// (none while a statement that changes them is in flight: the values
// after it are refused, settingsMoved).
func (s *session) inlineCheck() string {
	st := s.settings.Load()
	if s.settingsMoved || st == nil || st.settingsSQL == "" || s.db.checkSQL == "" {
		return s.db.checkSQL
	}
	return s.db.checkSQL + ", " + st.settingsSQL
}

// isSettingsChanged reports whether er is the settings check failing.
func isSettingsChanged(er *pgproto3.ErrorResponse) bool {
	return er.Code == pgerrcode.UndefinedObject && strings.Contains(er.Message, settingsChanged)
}

// errSettingsChanged: a statement before this one changed a setting of
// checkedNames by itself.
var errSettingsChanged error = &refusal{pgerrcode.ObjectNotInPrerequisiteState, "settings",
	checkedList + " changed while this query or pipeline ran (a function or trigger set it), so phiproxy would read or show values under settings the server no longer has; the statements from there on were not run: send them again"}
