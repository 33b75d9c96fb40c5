package proxy

// handleCopyInResponse: COPY FROM STDIN (or COPY BOTH) starts. The server
// now ignores Sync until the copy ends, so the Syncs already pipelined
// behind the COPY will not be answered.
func (s *Session) handleCopyInResponse(msg []byte) error {
	s.q.mu.Lock()
	e := s.q.peek()
	if e == nil || !kindsResult.has(e.Kind) {
		s.q.mu.Unlock()
		return desync(msg[0], e)
	}
	to, r := e.audience(), e.Responder
	s.q.copyIn = true
	s.q.dropSyncsAfterHead()
	s.q.mu.Unlock()
	if cr, ok := r.(CopyResponder); ok && msg[0] == 'G' {
		out, err := cr.CopyInResponse(s.out[:0], msg)
		if err != nil {
			s.rowsTo = to
			return s.resultFailed(err)
		}
		s.out, msg = out, out
	}
	return s.send(to, msg)
}

// handleCopyOutResponse: COPY TO STDOUT starts; CopyData and CopyDone
// follow, then CommandComplete. Its Responder may rewrite the data.
func (s *Session) handleCopyOutResponse(msg []byte) error {
	r, to, _, err := s.head('H', kindsResult)
	if err != nil {
		return err
	}
	s.copyOut, s.rowsTo = nil, to
	cr, ok := r.(CopyResponder)
	if !ok || s.state == s2cMuted {
		return s.send(to, msg)
	}
	out, t, err := cr.CopyOutResponse(s.out[:0], msg)
	if err != nil {
		return s.resultFailed(err)
	}
	s.out, s.copyOut = out, t
	return s.send(to, out)
}

// handleServerCopyData: one CopyData of COPY TO STDOUT (or of COPY BOTH),
// rewritten when the COPY's Responder asked to.
func (s *Session) handleServerCopyData(msg []byte) error {
	if s.copyOut == nil {
		return s.send(toClient, msg)
	}
	if s.state == s2cMuted {
		return nil
	}
	out, err := s.copyOut.CopyData(s.out[:0], msg)
	if err != nil {
		s.copyOut = nil
		return s.resultFailed(err)
	}
	s.out = out
	return s.send(s.rowsTo, out)
}

// handleServerCopyDone: the server's CopyDone ends COPY TO STDOUT.
func (s *Session) handleServerCopyDone(msg []byte) error {
	t := s.copyOut
	if t == nil {
		return s.send(toClient, msg)
	}
	s.copyOut = nil
	if s.state == s2cMuted {
		return nil
	}
	out, err := t.CopyDone(s.out[:0])
	if err != nil {
		return s.resultFailed(err)
	}
	s.out = append(out, msg...)
	return s.send(s.rowsTo, s.out)
}
