package phi

import (
	"bytes"
	"encoding/binary"
	"errors"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/rewrite"
)

// COPY TO STDOUT of a policy table, or of a query reading one. The server
// sends its rows in its default text format; each row is read (one field
// per column, as the server's RowDescription of the same columns would
// describe them), decrypted and masked as a DataRow of a SELECT is
// (reader.dataRow), blind-index columns dropped, and written in the
// client's format and options, one CopyData per row as PostgreSQL sends
// them.

// copyOut rewrites the data of one COPY TO STDOUT. serverToClient.
type copyOut struct {
	s      *session
	t      *resultTransform // how the server's columns are decrypted; nil: none is
	width  int              // the server's columns
	w      *copyWriter
	force  []bool // FORCE_QUOTE, by the client's columns
	names  []string
	header bool
	unsure bool
	utf8   bool // ENCODING 'UTF8': the server writes UTF-8 whatever client_encoding says

	srv   *copyReader // reads the fields of the server's lines
	carry []byte      // a line the server has not ended yet
	row   pgproto3.DataRow
}

var _ proxy.CopyTransformer = (*copyOut)(nil)

// newCopyOut prepares the rewriting of a COPY whose server columns are
// described by t (width columns), whose client columns are names, in the
// options o.
func (s *session) newCopyOut(t *resultTransform, width int, names []string, force []bool, o *rewrite.CopyOptions, unsure bool) *copyOut {
	return &copyOut{s: s, t: t, width: width, names: names, force: force, header: o.Header == rewrite.HeaderTrue,
		w: newCopyWriter(o, len(names)), unsure: unsure, utf8: o.EncodingUTF8,
		srv: newCopyReader(&rewrite.CopyOptions{Delimiter: '\t', Null: `\N`})}
}

// copyOutResponse rewrites the server's CopyOutResponse for the client's
// columns (text format), followed by the header line if asked for.
func (c *copyOut) copyOutResponse(dst, msg []byte) ([]byte, error) {
	b := msg[5:]
	if len(b) < 3 || b[0] != 0 || int(binary.BigEndian.Uint16(b[1:])) != c.width {
		return dst, errors.New("unexpected CopyOutResponse from the server")
	}
	dst = appendCopyResponse(dst, 'H', len(c.names))
	if c.header {
		for _, name := range c.names {
			if err := c.checkASCII([]byte(name)); err != nil {
				return dst, err
			}
		}
		start := len(dst)
		dst = append(dst, 'd', 0, 0, 0, 0)
		for i, name := range c.names {
			dst = c.w.field(dst, []byte(name), false, i == 0, false)
		}
		dst = append(dst, '\n')
		binary.BigEndian.PutUint32(dst[start+1:], uint32(len(dst)-start-1))
	}
	return dst, nil
}

// appendCopyResponse appends a CopyInResponse ('G') or CopyOutResponse
// ('H') for n columns in text format.
func appendCopyResponse(dst []byte, typ byte, n int) []byte {
	dst = append(dst, typ)
	dst = binary.BigEndian.AppendUint32(dst, uint32(4+1+2+2*n))
	dst = append(dst, 0)
	dst = binary.BigEndian.AppendUint16(dst, uint16(n))
	for range n {
		dst = append(dst, 0, 0)
	}
	return dst
}

// CopyData implements proxy.CopyTransformer.
func (c *copyOut) CopyData(dst, msg []byte) ([]byte, error) {
	data := msg[5:]
	if len(c.carry) > 0 {
		c.carry = append(c.carry, data...)
		data = c.carry
	}
	var err error
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		if dst, err = c.line(dst, data[:i]); err != nil {
			return dst, err
		}
		data = data[i+1:]
	}
	if len(data) > maxCopyLine {
		return dst, errors.New("COPY row from the server too long")
	}
	c.carry = append(c.carry[:0], data...)
	return dst, nil
}

// CopyDone implements proxy.CopyTransformer.
func (c *copyOut) CopyDone(dst []byte) ([]byte, error) {
	if len(c.carry) > 0 {
		return dst, errors.New("COPY data from the server ends in the middle of a row")
	}
	return dst, nil
}

// checkASCII refuses text beyond ASCII that the server wrote in a client
// encoding whose multibyte characters may end in a backslash byte (SJIS
// 0x95 0x5C): PostgreSQL's COPY TO leaves such a character as it is,
// while the proxy, reading the server's rows byte by byte, would take the
// byte for an escape. So may any encoding, for all the proxy knows, when
// the COPY went out behind a statement that may have changed it.
func (c *copyOut) checkASCII(b []byte) error {
	if c.utf8 || !c.unsure && !c.s.embedsASCII.Load() {
		return nil
	}
	for _, ch := range b {
		if ch >= utf8.RuneSelf {
			return errCopyOutEncoding
		}
	}
	return nil
}

// encodingEmbedsASCII reports whether the client encoding named as
// PostgreSQL reports it is one of its client-only encodings, whose
// multibyte characters may hold ASCII bytes (PG_ENCODING_IS_CLIENT_ONLY;
// COPY TO's encoding_embeds_ascii).
func encodingEmbedsASCII(name string) bool {
	switch name {
	case "SJIS", "SHIFT_JIS_2004", "BIG5", "GBK", "UHC", "GB18030", "JOHAB":
		return true
	}
	return false
}

// line rewrites one row of the server's.
func (c *copyOut) line(dst, line []byte) ([]byte, error) {
	if err := c.checkASCII(line); err != nil {
		return dst, err
	}
	r := c.srv
	if err := r.split(line); err != nil {
		return dst, errors.New("malformed COPY row from the server")
	}
	if len(r.fields) != c.width {
		return dst, errors.New("COPY row from the server does not match its columns")
	}
	vals := c.row.Values[:0]
	for i, f := range r.fields {
		if f.null {
			vals = append(vals, nil)
		} else {
			vals = append(vals, r.value(i))
		}
	}
	c.row.Values = vals
	if c.t != nil {
		c.s.r.unsure = c.unsure
		if err := c.s.r.dataRow(c.t, &c.row); err != nil {
			c.s.decryptFailed(err)
			return dst, err
		}
	}
	start := len(dst)
	dst = append(dst, 'd', 0, 0, 0, 0)
	for i, v := range c.row.Values {
		dst = c.w.field(dst, v, v == nil, i == 0, c.force[i])
	}
	dst = append(dst, '\n')
	binary.BigEndian.PutUint32(dst[start+1:], uint32(len(dst)-start-1))
	return dst, nil
}

// decryptFailed counts and logs a value that did not decrypt (never the
// value).
func (s *session) decryptFailed(err error) {
	var de *unreadableError
	if errors.As(err, &de) {
		s.eng.metrics.decryptFailure.WithLabelValues(de.Class()).Inc()
		s.c.Logger().Warn("decryption failed", "column", de.Column, "key_id", de.KeyID, "reason", de.Class())
	}
}
