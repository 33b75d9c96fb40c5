package phi

import "github.com/novamind/phiproxy/rewrite"

// This file writes COPY fields as PostgreSQL 15 writes them in COPY TO
// (src/backend/commands/copyto.c: CopyAttributeOutText,
// CopyAttributeOutCSV): the rows the proxy sends the server in its
// default text format, and the rows of COPY TO STDOUT in the client's
// format and options.

// appendCopyText appends v escaped for the text format with delimiter
// delim: backslash, the delimiter and control characters are escaped.
func appendCopyText(dst, v []byte, delim byte) []byte {
	start := 0
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c < 0x20:
			var e byte
			switch c {
			case '\b':
				e = 'b'
			case '\f':
				e = 'f'
			case '\n':
				e = 'n'
			case '\r':
				e = 'r'
			case '\t':
				e = 't'
			case '\v':
				e = 'v'
			default:
				if c != delim {
					continue
				}
				e = c
			}
			dst = append(dst, v[start:i]...)
			dst = append(dst, '\\', e)
			start = i + 1
		case c == '\\' || c == delim:
			dst = append(dst, v[start:i]...)
			dst = append(dst, '\\')
			start = i // the byte itself follows
		}
	}
	return append(dst, v[start:]...)
}

// copyWriter writes the fields of one COPY TO STDOUT in the client's
// format.
type copyWriter struct {
	csv                  bool
	delim, quote, escape byte
	null                 []byte
	single               bool // one column: CSV quotes a lone \.
}

func newCopyWriter(o *rewrite.CopyOptions, columns int) *copyWriter {
	return &copyWriter{csv: o.Format == rewrite.CopyCSV, delim: o.Delimiter, quote: o.Quote, escape: o.Escape,
		null: []byte(o.Null), single: columns == 1}
}

// field appends one field (nil: NULL), preceded by the delimiter unless
// it is the row's first.
func (w *copyWriter) field(dst, v []byte, null, first, forceQuote bool) []byte {
	if !first {
		dst = append(dst, w.delim)
	}
	switch {
	case null:
		return append(dst, w.null...)
	case w.csv:
		return w.appendCSV(dst, v, forceQuote)
	}
	return appendCopyText(dst, v, w.delim)
}

// appendCSV is CopyAttributeOutCSV: v is quoted when forced, when it reads
// as the NULL string, when it is a lone \. in a one-column COPY, or when
// it holds the delimiter, the quote or a line ending; inside quotes the
// quote and the escape are escaped.
func (w *copyWriter) appendCSV(dst, v []byte, forceQuote bool) []byte {
	use := forceQuote || string(v) == string(w.null)
	if !use {
		if w.single && string(v) == `\.` {
			use = true
		} else {
			for _, c := range v {
				if c == w.delim || c == w.quote || c == '\n' || c == '\r' {
					use = true
					break
				}
			}
		}
	}
	if !use {
		return append(dst, v...)
	}
	dst = append(dst, w.quote)
	start := 0
	for i, c := range v {
		if c == w.quote || c == w.escape {
			dst = append(dst, v[start:i]...)
			dst = append(dst, w.escape)
			start = i
		}
	}
	dst = append(dst, v[start:]...)
	return append(dst, w.quote)
}
