package phi

import (
	"unicode/utf8"

	"github.com/jackc/pgerrcode"

	"github.com/novamind/phiproxy/rewrite"
)

// This file reads the rows of COPY FROM STDIN data in text or CSV format
// exactly as PostgreSQL 15 does (src/backend/commands/copyfromparse.c:
// CopyReadLineText, CopyReadAttributesText, CopyReadAttributesCSV): where
// lines end (and which line endings are mixed), the \. end-of-data marker,
// quoting and escapes, NULL, and the line numbers its errors name. The
// input is untrusted: any byte sequence either reads as PostgreSQL reads
// it or fails with PostgreSQL's error (FuzzCopyReader).

// eolType is the line ending of the data, fixed by its first line.
type eolType uint8

const (
	eolUnknown eolType = iota
	eolNL
	eolCR
	eolCRNL
)

// copyField is one field of a row: its de-escaped value is
// attr[start:end]; null when it reads as NULL.
type copyField struct {
	start, end int
	null       bool
	quoted     bool // CSV: some of it was quoted
}

// copyReader splits a COPY's data into lines and lines into fields. Data
// arrives in pieces (feed) whose bounds have nothing to do with lines.
type copyReader struct {
	csv                  bool
	delim, quote, escape byte // escape is 0 when it is the quote (CSV)
	null                 []byte
	special              [256]bool // bytes the line scan stops at

	in    []byte // input; in[base:] is not consumed yet
	base  int    // where the line being read starts
	pos   int    // where the scan of that line resumes
	inQ   bool   // CSV: inside quotes at pos
	esc   bool   // CSV: the byte before pos was an escape inside quotes
	first bool   // pos is the first byte of the line
	begun bool   // the line was counted in lineno
	eol   eolType
	// lineno is PostgreSQL's cur_lineno: lines read (the header
	// included), plus, in CSV, the line endings inside quoted values.
	lineno int64
	// ended: the \. marker ended the data; the rest is ignored.
	ended bool
	// nonASCII, when set, is the error for a byte beyond ASCII: the proxy
	// cannot know the data's encoding to be UTF-8.
	nonASCII error

	fields []copyField
	attr   []byte
}

func newCopyReader(o *rewrite.CopyOptions) *copyReader {
	r := &copyReader{csv: o.Format == rewrite.CopyCSV, delim: o.Delimiter, null: []byte(o.Null), first: true, attr: make([]byte, 0, 256)}
	r.special['\n'], r.special['\r'], r.special['\\'], r.special[0] = true, true, true, true
	for c := 0x80; c < 0x100; c++ {
		r.special[c] = true
	}
	if r.csv {
		r.quote, r.escape = o.Quote, o.Escape
		if r.escape == r.quote {
			r.escape = 0 // as CopyReadLineText: the quote alone toggles
		}
		r.special[r.quote] = true
		if r.escape != 0 {
			r.special[r.escape] = true
		}
	}
	return r
}

// copyReadError is a PostgreSQL error in the data: SQLSTATE, message, hint
// (never a value).
type copyReadError struct {
	code, msg, hint string
}

func (e *copyReadError) Error() string { return e.msg }

func badCopy(msg string) *copyReadError {
	return &copyReadError{code: pgerrcode.BadCopyFileFormat, msg: msg}
}

// errInvalidUTF8Data is PostgreSQL's error for bytes that are not UTF-8
// (or a NUL), without the bytes it quotes: they are data.
var errInvalidUTF8Data = &copyReadError{code: pgerrcode.CharacterNotInRepertoire, msg: `invalid byte sequence for encoding "UTF8"`}

// feed appends a piece of data after what is left of the line being read
// (lines next returned before are no longer valid).
func (r *copyReader) feed(data []byte) {
	if r.base > 0 {
		n := copy(r.in, r.in[r.base:])
		r.in, r.pos, r.base = r.in[:n], r.pos-r.base, 0
	}
	r.in = append(r.in, data...)
}

// lineResult says what next found.
type lineResult uint8

const (
	lineMore lineResult = iota // the line goes on beyond the data fed so far
	lineFull                   // a line and its ending
	lineLast                   // the data ended (eof) or the \. marker did: line, if not empty, is the last
)

// next returns the next line (without its ending): valid until the next
// feed. eof says that no more data will come.
func (r *copyReader) next(eof bool) ([]byte, lineResult, error) {
	if r.ended {
		return nil, lineLast, nil
	}
	if !r.begun {
		r.begun = true
		r.lineno++
	}
	end, next, res, err := r.scan(eof)
	if err != nil || res == lineMore {
		return nil, res, err
	}
	line := r.in[r.base:end]
	if res == lineLast {
		r.ended = true
		return line, lineLast, nil
	}
	// The next line starts after this one's ending.
	r.base, r.pos, r.inQ, r.esc, r.first, r.begun = next, next, false, false, true, false
	return line, lineFull, nil
}

// scan finds the end of the line at r.in[r.base:], resuming at r.pos;
// see CopyReadLineText. It returns the end of the line's content and where
// the next line starts.
func (r *copyReader) scan(eof bool) (end, next int, res lineResult, err error) {
	in := r.in
	i := r.pos
	for {
		if j := r.skip(in, i); j > i {
			i, r.first, r.esc = j, false, false
		}
		if i >= len(in) {
			if !eof {
				r.pos = i
				return 0, 0, lineMore, nil
			}
			return i, i, lineLast, nil
		}
		prev := i
		c := in[i]
		i++
		if c >= utf8.RuneSelf || c == 0 {
			// CopyConvertBuf verifies the data as it loads it.
			if c == 0 {
				return 0, 0, 0, errInvalidUTF8Data
			}
			if r.nonASCII != nil {
				return 0, 0, 0, r.nonASCII
			}
			if !utf8.FullRune(in[prev:]) && !eof {
				r.pos = prev
				return 0, 0, lineMore, nil
			}
			ch, size := utf8.DecodeRune(in[prev:])
			if ch == utf8.RuneError && size <= 1 {
				return 0, 0, 0, errInvalidUTF8Data
			}
			i, r.first, r.esc = prev+size, false, false
			continue
		}
		if r.csv {
			if (c == '\\' || c == '\r') && i >= len(in) && !eof {
				r.pos = prev
				return 0, 0, lineMore, nil
			}
			if r.inQ && c == r.escape && r.escape != 0 {
				r.esc = !r.esc
			}
			if c == r.quote && !r.esc {
				r.inQ = !r.inQ
			}
			if c != r.escape || r.escape == 0 {
				r.esc = false
			}
			if r.inQ && (c == '\n' && r.eol == eolNL || c == '\r' && r.eol != eolNL) {
				r.lineno++
			}
		}
		if c == '\r' && (!r.csv || !r.inQ) {
			if r.eol == eolUnknown || r.eol == eolCRNL {
				if i >= len(in) && !eof {
					r.pos = prev
					return 0, 0, lineMore, nil
				}
				if i < len(in) && in[i] == '\n' {
					i++
					r.eol = eolCRNL
				} else {
					if r.eol == eolCRNL {
						return 0, 0, 0, r.crError()
					}
					r.eol = eolCR
				}
			} else if r.eol == eolNL {
				return 0, 0, 0, r.crError()
			}
			return prev, i, lineFull, nil
		}
		if c == '\n' && (!r.csv || !r.inQ) {
			if r.eol == eolCR || r.eol == eolCRNL {
				if r.csv {
					return 0, 0, 0, &copyReadError{pgerrcode.BadCopyFileFormat, "unquoted newline found in data", "Use quoted CSV field to represent newline."}
				}
				return 0, 0, 0, &copyReadError{pgerrcode.BadCopyFileFormat, "literal newline found in data", `Use "\n" to represent newline.`}
			}
			r.eol = eolNL
			return prev, i, lineFull, nil
		}
		if c == '\\' && (!r.csv || r.first) {
			if i >= len(in) {
				if !eof {
					r.pos = prev
					return 0, 0, lineMore, nil
				}
				return i, i, lineLast, nil // IF_NEED_REFILL_AND_EOF_BREAK: the backslash ends the data
			}
			if in[i] == '.' {
				end, res, err := r.marker(in, prev, i+1, eof)
				if err != nil || res != lineFull {
					return end, end, res, err
				}
				// CSV: \. not alone on its line is data; go on after the
				// backslash.
			} else if !r.csv && in[i] != 0 && in[i] < utf8.RuneSelf {
				// The byte after a backslash is never special. (One beyond
				// ASCII is not either, and is left to be checked as UTF-8.)
				i++
			}
		}
		r.first = false
	}
}

// marker reads what follows \. at in[at-2:at]: the end-of-data marker
// (lineLast, with the line ending before the backslash at bs), lineMore,
// or, in CSV, lineFull meaning "not a marker".
func (r *copyReader) marker(in []byte, bs, at int, eof bool) (int, lineResult, error) {
	notMarker := func(msg string) (int, lineResult, error) {
		if r.csv {
			return 0, lineFull, nil
		}
		return 0, 0, badCopy(msg)
	}
	get := func() (byte, bool) {
		if at >= len(in) {
			if !eof {
				return 0, false
			}
			at++
			return 0, true // PostgreSQL reads the buffer's NUL pad at EOF
		}
		at++
		return in[at-1], true
	}
	if r.eol == eolCRNL {
		c2, ok := get()
		if !ok {
			r.pos = bs
			return 0, lineMore, nil
		}
		if c2 == '\n' {
			if r.csv {
				return 0, lineFull, nil
			}
			return 0, 0, badCopy("end-of-copy marker does not match previous newline style")
		}
		if c2 != '\r' {
			return notMarker("end-of-copy marker corrupt")
		}
	}
	c2, ok := get()
	if !ok {
		r.pos = bs
		return 0, lineMore, nil
	}
	if c2 != '\r' && c2 != '\n' {
		return notMarker("end-of-copy marker corrupt")
	}
	if r.eol == eolNL && c2 != '\n' || r.eol == eolCRNL && c2 != '\n' || r.eol == eolCR && c2 != '\r' {
		return 0, 0, badCopy("end-of-copy marker does not match previous newline style")
	}
	return bs, lineLast, nil
}

func (r *copyReader) crError() error {
	if r.csv {
		return &copyReadError{pgerrcode.BadCopyFileFormat, "unquoted carriage return found in data", "Use quoted CSV field to represent carriage return."}
	}
	return &copyReadError{pgerrcode.BadCopyFileFormat, "literal carriage return found in data", `Use "\r" to represent carriage return.`}
}

// skip returns the index of the first byte at or after i that the scan
// must look at.
func (r *copyReader) skip(in []byte, i int) int {
	sp := &r.special
	for i < len(in) && !sp[in[i]] {
		i++
	}
	return i
}
