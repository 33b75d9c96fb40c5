package phi

import "unicode/utf8"

// The fields of one line of COPY data, as PostgreSQL 15 reads them
// (CopyReadAttributesText, CopyReadAttributesCSV in copyfromparse.c).

// split reads a line's fields into r.fields (values in r.attr, valid until
// the next split).
func (r *copyReader) split(line []byte) error {
	r.fields, r.attr = r.fields[:0], r.attr[:0]
	if r.csv {
		return r.splitCSV(line)
	}
	return r.splitText(line)
}

// splitText is CopyReadAttributesText: fields end at the delimiter, a
// backslash escapes (\n, \t, octal \NNN, hex \xHH, or the byte itself),
// and a field whose raw text is the NULL string is NULL.
func (r *copyReader) splitText(line []byte) error {
	delim := r.delim
	i := 0
	for {
		start, out := i, len(r.attr)
		nonASCII, found := false, false
		end := i
		for {
			j := i
			for j < len(line) && line[j] != delim && line[j] != '\\' {
				j++
			}
			r.attr = append(r.attr, line[i:j]...)
			i, end = j, j
			if i >= len(line) {
				break
			}
			c := line[i]
			i++
			if c == delim {
				found = true
				break
			}
			if i >= len(line) {
				break // a backslash at the end of the line is dropped
			}
			c = line[i]
			i++
			switch c {
			case '0', '1', '2', '3', '4', '5', '6', '7':
				v := int(c - '0')
				for k := 0; k < 2 && i < len(line) && line[i] >= '0' && line[i] <= '7'; k++ {
					v = v<<3 + int(line[i]-'0')
					i++
				}
				c = byte(v)
				nonASCII = nonASCII || c == 0 || c >= utf8.RuneSelf
			case 'x':
				if i < len(line) && isHexDigit(line[i]) {
					v := hexVal(line[i])
					i++
					if i < len(line) && isHexDigit(line[i]) {
						v = v<<4 + hexVal(line[i])
						i++
					}
					c = v
					nonASCII = nonASCII || c == 0 || c >= utf8.RuneSelf
				}
			case 'b':
				c = '\b'
			case 'f':
				c = '\f'
			case 'n':
				c = '\n'
			case 'r':
				c = '\r'
			case 't':
				c = '\t'
			case 'v':
				c = '\v'
			}
			r.attr = append(r.attr, c)
		}
		f := copyField{start: out, end: len(r.attr)}
		if string(line[start:end]) == string(r.null) {
			f.null = true
		} else if nonASCII && !validText(r.attr[out:]) {
			return errInvalidUTF8Data
		}
		r.fields = append(r.fields, f)
		if !found {
			return nil
		}
	}
}

// splitCSV is CopyReadAttributesCSV: quotes may open and close anywhere in
// a field, the escape byte escapes a quote or itself inside quotes, and an
// unquoted field whose raw text is the NULL string is NULL.
func (r *copyReader) splitCSV(line []byte) error {
	delim, quote, escape := r.delim, r.quote, r.escape
	if escape == 0 {
		escape = quote
	}
	i := 0
	for {
		start, out := i, len(r.attr)
		quoted, found := false, false
		end := i
	field:
		for {
			// Not in quotes.
			for {
				end = i
				if i >= len(line) {
					break field
				}
				c := line[i]
				i++
				if c == delim {
					found = true
					break field
				}
				if c == quote {
					quoted = true
					break
				}
				r.attr = append(r.attr, c)
			}
			// In quotes.
			for {
				end = i
				if i >= len(line) {
					return badCopy("unterminated CSV quoted field")
				}
				c := line[i]
				i++
				if c == escape && i < len(line) && (line[i] == escape || line[i] == quote) {
					r.attr = append(r.attr, line[i])
					i++
					continue
				}
				if c == quote {
					break
				}
				r.attr = append(r.attr, c)
			}
		}
		f := copyField{start: out, end: len(r.attr), quoted: quoted}
		if !quoted && string(line[start:end]) == string(r.null) {
			f.null = true
		}
		r.fields = append(r.fields, f)
		if !found {
			return nil
		}
	}
}

// value is the de-escaped value of field i.
func (r *copyReader) value(i int) []byte {
	f := &r.fields[i]
	return r.attr[f.start:f.end:f.end]
}

// validText reports whether b is UTF-8 without NUL, as pg_verifymbstr
// checks what escapes made.
func validText(b []byte) bool {
	for _, c := range b {
		if c == 0 {
			return false
		}
	}
	return utf8.Valid(b)
}

func isHexDigit(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func hexVal(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}
