package phi

import "github.com/jackc/pgerrcode"

// Date/time literals of prepared statements.
//
// A Parse's date/time literals are read once by the proxy, which stores
// their ciphertext in the statement it sends, and once by PostgreSQL on
// the plaintext schema; but PostgreSQL analyzes a prepared statement's
// text again whenever its plan is invalidated (DDL on a table it names,
// ANALYZE, autovacuum's included, a new search_path), and then reads the
// literal under the DateStyle and TimeZone in effect: '01/02/2020',
// prepared under MDY and executed after SET datestyle = 'DMY' and an
// ANALYZE, is 1 February on the plaintext schema and 2 January in the
// proxy's ciphertext. The proxy cannot see the invalidation, so a
// statement whose literals depended on the settings is refused at Bind
// once the settings they were read under changed.

// literalSettings are the settings a Parse's literals were read under,
// as far as they depend on them: DateStyle's field order and TimeZone.
type literalSettings struct {
	order dateOrder
	zone  string
}

// errLiteralSettings refuses to bind such a statement.
var errLiteralSettings error = &refusal{pgerrcode.FeatureNotSupported, "settings",
	"a date/time value written in this prepared statement's text was read under the DateStyle or TimeZone in effect when it was prepared, which changed since, and PostgreSQL reads it again under the new settings whenever it plans the statement again: prepare it again, or pass the value as a parameter"}

// startLiteralRead starts recording the settings the writer reads values
// under (writerSettings), for a Parse. clientToServer.
func (s *session) startLiteralRead() { s.literalRead, s.literalReadOn = nil, true }

// endLiteralRead stops the recording and returns the settings the Parse's
// literals were read under, nil when none depended on them.
func (s *session) endLiteralRead() *literalSettings {
	st := s.literalRead
	s.literalRead, s.literalReadOn = nil, false
	if st == nil {
		return nil
	}
	return &literalSettings{order: st.dateStyle.order, zone: st.zoneName}
}

// checkLiteralSettings refuses to bind st when its literals were read
// under settings other than those the server may read them under now.
func (s *session) checkLiteralSettings(st *statement) error {
	if st.literals == nil {
		return nil
	}
	cur, err := s.writerSettings()
	if err != nil || cur == nil || !cur.dateStyleOK || cur.dateStyle.order != st.literals.order || cur.zoneName != st.literals.zone {
		return errLiteralSettings
	}
	return nil
}
