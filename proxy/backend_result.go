package proxy

// handleParameterDescription: the first answer to Describe(statement).
func (s *Session) handleParameterDescription(msg []byte) error {
	r, to, _, err := s.head('t', kindsStatement)
	if err != nil {
		return err
	}
	if r == nil {
		return s.send(to, msg)
	}
	if s.out, err = r.ParameterDescription(s.out[:0], msg); err != nil {
		return err
	}
	return s.send(to, s.out)
}

// handleRowDescription: the answer to Describe, or the start of a result of
// a simple Query (whose DataRows follow).
func (s *Session) handleRowDescription(msg []byte) error {
	r, to, kind, err := s.head('T', kindsRowDesc)
	if err != nil {
		return err
	}
	if kind != KindQuery {
		if r, to, err = s.pop('T', kindsDescribe); err != nil {
			return err
		}
	} else if s.own(r) {
		s.setState(s2cRows)
		s.rows, s.rowsTo = nil, toProxyOnly
		return nil
	}
	var rows RowTransformer
	out := msg
	if r != nil {
		s.out, rows, err = r.RowDescription(s.out[:0], msg)
		if kind != KindQuery {
			r.Answered('T')
		}
		if err != nil {
			if Classify(err).Fatal {
				return err
			}
			// Refused by the interceptor: the client gets its error in
			// place of the description and nothing more of this cycle.
			s.rows, s.rowsTo = nil, to
			return s.resultFailed(err)
		}
		out = s.out
	}
	if kind == KindQuery {
		s.setState(s2cRows)
		s.rows, s.rowsTo = rows, to
	}
	return s.send(to, out)
}

// handleDataRow: one row of the current result. The hot path: no lock
// unless the result just started.
func (s *Session) handleDataRow(msg []byte) error {
	switch s.state {
	case s2cMuted:
		return nil
	case s2cBetween:
		// The first row of an Execute's result.
		r, to, _, err := s.head('D', kindsResult)
		if err != nil {
			return err
		}
		s.rows, s.rowsTo = nil, to
		if r != nil {
			if s.rows, err = r.Rows(); err != nil {
				return s.resultFailed(err)
			}
		}
		s.setState(s2cRows)
	}
	if s.rows == nil {
		return s.send(s.rowsTo, msg)
	}
	out, err := s.rows.DataRow(s.out[:0], msg)
	if err != nil {
		return s.resultFailed(err)
	}
	s.out = out
	return s.send(s.rowsTo, out)
}

// handleCommandComplete ends an Execute, or one statement of a simple
// Query (CommandComplete or EmptyQueryResponse).
func (s *Session) handleCommandComplete(typ byte, msg []byte) error {
	r, to, kind, err := s.head(typ, kindsResult)
	if err != nil {
		return err
	}
	if kind == KindQuery {
		own := s.own(r)
		s.stmt++
		if own {
			s.setState(s2cBetween)
			return nil
		}
	}
	if typ == 'C' && r != nil {
		if cc, ok := r.(CommandCompleter); ok {
			tag, _, ok := CString(msg[5:])
			if !ok {
				return serverProtocolErrorf("invalid CommandComplete")
			}
			cc.CommandComplete(tag)
		}
	}
	if kind == KindExecute {
		return s.complete(typ, msg, kindsExecute)
	}
	s.setState(s2cBetween)
	return s.send(to, msg)
}

// resultFailed ends a result whose row the proxy could not rewrite with a
// non-fatal error (a value that failed to decrypt): the client gets the
// error and none of the server's messages up to ReadyForQuery, as if the
// server had failed the statement there. A fatal error ends the session.
func (s *Session) resultFailed(err error) error {
	info := Classify(err)
	if info.Fatal {
		return err
	}
	s.log.Warn("result failed", "sqlstate", info.Code, "error", info.Message)
	s.out = appendErrorResponse(s.out[:0], info)
	if err := s.send(s.rowsTo, s.out); err != nil {
		return err
	}
	s.setState(s2cMuted)
	return nil
}

// own reports whether the statement of a simple Query the server answers
// now is one the proxy added (OwnStatements).
func (s *Session) own(r Responder) bool {
	o, ok := r.(OwnStatements)
	return ok && o.Own(s.stmt)
}
