package phi

import "github.com/jackc/pgerrcode"

// Statements prepared with SQL PREPARE outlive the catalog they were
// checked with: PREPARE p AS INSERT INTO v … of a view v over another
// table passes (v is no second name), and once another connection points
// v at a policy table, EXECUTE p — which names no relation, so the proxy
// finds nothing to refuse in it — makes PostgreSQL plan p again, on the
// policy table, and store its values in plaintext. So when the session
// may have prepared statements with SQL (sqlPrepared) and a catalog read
// finds that the policy tables' second names changed (epoch.go's
// SecondNamesSQL hash), every statement that may run one (the word
// EXECUTE, a Bind of a statement the proxy does not know) is refused
// until the client drops them all: DEALLOCATE ALL or DISCARD ALL sent on
// its own outside a transaction block, where it cannot fail. A Bind of
// a statement the proxy does not know, in such a session, is guarded:
// the guard fails first when second names changed since the catalog read.

// errStaleSQLPrepared refuses a statement that may run a statement
// prepared with SQL PREPARE before second names changed.
var errStaleSQLPrepared error = &refusal{pgerrcode.FeatureNotSupported, "catalog",
	"statements prepared with SQL PREPARE in this session may now write through a second name of a PHI table made since (DDL by another connection): run DEALLOCATE ALL (or DISCARD ALL) on its own, outside a transaction block, and prepare them again"}

// noteSecondNames marks the session's SQL-prepared statements stale when
// a catalog read found the policy tables' second names other than before.
func (s *session) noteSecondNames(old, cur *catalog) {
	if s.sqlPrepared && old != nil && cur != nil && old.secondNames != cur.secondNames {
		s.sqlStale = true
	}
}

// checkSQLPrepared refuses sql when it may run a stale SQL-prepared
// statement, and forgets them when sql drops them all (on its own, with
// nothing pending and no transaction block open).
func (s *session) checkSQLPrepared(sql string) error {
	if !s.sqlPrepared {
		return nil
	}
	if words := leadingWords(sql, 3); !guardsText(sql) && len(words) == 2 &&
		(words[0] == "deallocate" || words[0] == "discard") && words[1] == "all" {
		if idle, status, ok := s.canQuery(); idle && ok && status == 'I' {
			s.sqlStale, s.sqlPrepared = false, false
		}
		return nil
	}
	if s.sqlStale && hasWordFold(sql, "execute") {
		return errStaleSQLPrepared
	}
	return nil
}
