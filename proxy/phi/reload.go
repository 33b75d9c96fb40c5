package phi

import (
	"errors"

	"github.com/novamind/phiproxy/proxy"
)

// refreshCatalog reads the catalog again after DDL went through this
// session, so that a blind-index column just added (or a table just
// created) is used at once. It runs only when nothing is pending and the
// transaction has not failed: the proxy's query must neither interleave
// with the client's pipeline nor be refused. Inside a transaction block
// the new catalog is used but read again once the block ends, since the
// DDL may be rolled back. clientToServer.
func (s *session) refreshCatalog() error {
	if !s.stale {
		return nil
	}
	idle, status := s.c.Idle()
	// Inside an unsynced batch the server may be skipping to Sync (and would
	// ignore the query) or running an implicit transaction (which the query
	// would commit): wait for a cycle boundary.
	if !idle || status == 'E' || s.openBatch {
		return nil
	}
	rows, err := s.c.Query(s.eng.catalogSQL)
	if errors.Is(err, proxy.ErrQueryFailed) {
		return nil // the session keeps the catalog it had
	}
	if err != nil {
		return err
	}
	db, err := s.eng.state(rows)
	if err != nil {
		return err
	}
	s.db = db
	s.stale = status != 'I'
	return nil
}
