package phi

import (
	"github.com/jackc/pgerrcode"

	"github.com/novamind/phiproxy/rewrite"
)

// DDL and the session's catalog. The catalog is read again after DDL
// has run (stale, reload.go), not after it was planned: a client may
// prepare a statement in one batch and execute it in a later one (pgx's
// statement cache), and a catalog read in between would predate it.
//
// A statement that creates, replaces, renames or moves a view over policy
// tables (rewrite.Statement.ChangesViews) changes what the proxy must do
// with statements that name the view: until the catalog has been read
// again, a statement planned with the old one may take a PHI column of
// the view for one that is not PHI (or a new view for a relation that
// holds no PHI) and send its values in plaintext. A later statement of the
// same text is refused by the rewriter; one sent behind it before its
// answer (a pipeline) is refused here, but for transaction control, which
// carries no value and may be needed to end a failed transaction.

// errViewsInFlight refuses a statement sent before the catalog could be
// read again after a statement that changed a view over policy tables.
var errViewsInFlight error = &refusal{pgerrcode.FeatureNotSupported, "catalog",
	"a statement sent after one that creates, replaces, renames or moves a view over PHI tables must wait for its answer (send it after ReadyForQuery): phiproxy reads what the view's columns are once that statement has run"}

// ranDDL notes the statements of plan about to run: after DDL the catalog
// is read again before the next batch, and after a change to a view over
// policy tables nothing but transaction control is planned or bound
// until then. clientToServer.
func (s *session) ranDDL(plan *rewrite.Plan) {
	for _, st := range plan.Statements {
		if st.Kind == rewrite.KindDDL {
			s.stale = true
		}
		if st.ChangesViews {
			s.viewsChanging = true
		}
	}
}

// viewsUnsettled refuses a text (a Query's or a Parse's, or the statement
// a Bind binds: its plan, if known, and its text, if kept) while a change
// to a view over policy tables has not been read back (ranDDL).
func (s *session) viewsUnsettled(sql string, plan *rewrite.Plan) error {
	if !s.viewsChanging {
		return nil
	}
	if plan != nil && len(plan.Statements) > 0 {
		only := true
		for _, st := range plan.Statements {
			only = only && st.Kind == rewrite.KindTransaction
		}
		if only {
			return nil
		}
	}
	if sql != "" && rewrite.TransactionControl(sql) {
		return nil
	}
	return errViewsInFlight
}
