package phi

import (
	"sync/atomic"

	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/rewrite"
)

// session is one session's PHI layer. Fields are owned by one direction
// each, as commented; objects handed from clientToServer to serverToClient
// through the relay's FIFO (statement, result) are immutable after the
// hand-over, except where a field says otherwise.
type session struct {
	eng *Engine
	c   *proxy.Conn

	// clientToServer.
	db *dbState // the catalog and plans in use
	// batch counts the Syncs (and simple Queries) forwarded.
	batch uint64
	// openBatch: extended-protocol messages went out since the last Sync.
	openBatch bool
	// stale: DDL went through since the catalog was read; it is read again
	// at the next moment nothing is pending (refreshCatalog).
	stale      bool
	w          *writer
	statements map[string]*statement // prepared statements by name
	portals    map[string]*portal    // portals of rewritten statements by name
	buf        []byte                // scratch for encoded messages

	// serverToClient.
	r *reader
	// nonStandardStrings: the server reported standard_conforming_strings
	// off, so backslashes escape in '...' literals and the SQL analysis,
	// which lexes them as PostgreSQL does with it on, cannot be trusted.
	// Written by serverToClient, read by clientToServer.
	nonStandardStrings atomic.Bool
}

var _ proxy.SessionInterceptor = (*session)(nil)

func newSession(eng *Engine, c *proxy.Conn) *session {
	return &session{
		eng:        eng,
		c:          c,
		w:          newWriter(eng.cols),
		r:          newReader(),
		statements: map[string]*statement{},
		portals:    map[string]*portal{},
	}
}

// Frontend implements proxy.SessionInterceptor.
func (s *session) Frontend(typ byte, msg []byte) error {
	var err error
	switch typ {
	case 'Q':
		s.batch++ // a Query ends an extended batch as Sync does
		return s.handleQuery(msg)
	case 'P':
		err = s.handleParse(msg)
	case 'B':
		err = s.handleBind(msg)
	case 'D':
		err = s.handleDescribe(msg)
	case 'E':
		err = s.handleExecute(msg)
	case 'C':
		err = s.handleClose(msg)
	default:
		return s.c.Pass(typ, msg)
	}
	s.openBatch = true
	return err
}

// Sync implements proxy.SessionInterceptor.
func (s *session) Sync() {
	s.batch++
	s.openBatch = false
}

// ParameterStatus implements proxy.SessionInterceptor.
func (s *session) ParameterStatus(name, value string) {
	if name == "standard_conforming_strings" {
		s.nonStandardStrings.Store(value != "on")
	}
}

// plan analyzes a Query's or Parse's text and notes DDL, after which the
// catalog is read again (refreshCatalog).
func (s *session) plan(sql string, simple bool) (*rewrite.Plan, error) {
	p, err := s.db.plan(sql, simple, s.nonStandardStrings.Load())
	if err != nil {
		return nil, err
	}
	for _, st := range p.Statements {
		if st.Kind == rewrite.KindDDL {
			s.stale = true
			break
		}
	}
	return p, nil
}
