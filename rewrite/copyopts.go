package rewrite

import (
	"fmt"
	"strconv"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// The options of COPY, read and checked as PostgreSQL 15 reads them
// (ProcessCopyOptions in src/backend/commands/copy.c): the proxy parses the
// client's rows itself, so it must know exactly what they mean, and the
// server never sees them (it gets the rows in its default text format).

// CopyFormat is the format of COPY rows.
type CopyFormat uint8

// COPY formats.
const (
	CopyText CopyFormat = iota
	CopyCSV
	CopyBinary
)

// CopyHeader is the HEADER option.
type CopyHeader uint8

// HEADER choices.
const (
	HeaderNone  CopyHeader = iota
	HeaderTrue             // a header line: written by COPY TO, skipped by COPY FROM
	HeaderMatch            // COPY FROM: the header's names must be the columns'
)

// CopyOptions are a COPY's options with PostgreSQL's defaults filled in.
type CopyOptions struct {
	Format    CopyFormat
	Delimiter byte   // default tab (text), comma (CSV)
	Null      string // default \N (text), "" (CSV)
	Header    CopyHeader
	// Quote and Escape are CSV's (default both '"'); 0 in text format.
	Quote, Escape byte
	// ForceQuoteAll is FORCE_QUOTE *; ForceQuote, ForceNotNull and
	// ForceNull name columns as written (Copy.Columns carries them
	// resolved, for a table).
	ForceQuoteAll                       bool
	ForceQuote, ForceNotNull, ForceNull []string
	// Freeze and EncodingUTF8 are passed on to the server: FREEZE true,
	// and ENCODING 'UTF8' (the only encoding accepted).
	Freeze, EncodingUTF8 bool
}

// copyOptions reads the options of a COPY, with PostgreSQL's errors for
// options it would refuse, and a refusal (0A000) for those the proxy does
// not support on a PHI table. what names the table for messages.
func (a *analyzer) copyOptions(opts []*pg.Node, from bool, what string) (CopyOptions, error) {
	var o CopyOptions
	var seen = map[string]bool{}
	var delim, null, quote, escape *string
	var forceQuote bool
	for _, n := range opts {
		d := n.GetDefElem()
		if d == nil {
			return o, a.errorf(nil, int32(a.stmtStart), "COPY on %s: an option phiproxy cannot read", what)
		}
		name := d.Defname
		switch name {
		case "format", "freeze", "delimiter", "null", "header", "quote", "escape", "force_quote", "force_not_null", "force_null", "encoding":
		default:
			// PostgreSQL 16 and later know more (DEFAULT, ON_ERROR,
			// LOG_VERBOSITY): refused, whatever the server.
			return o, a.errorf(nil, d.Location, "COPY option %q is not supported on PHI table %s", name, what)
		}
		if seen[name] {
			return o, a.pgError("42601", d.Location, "conflicting or redundant options")
		}
		seen[name] = true
		switch name {
		case "format":
			s, err := a.defString(d)
			if err != nil {
				return o, err
			}
			switch s {
			case "text":
			case "csv":
				o.Format = CopyCSV
			case "binary":
				o.Format = CopyBinary
			default:
				return o, a.pgError("22023", d.Location, "COPY format %q not recognized", s)
			}
		case "freeze":
			v, err := a.defBool(d, false)
			if err != nil {
				return o, err
			}
			o.Freeze = v == 1
		case "delimiter", "null", "quote", "escape", "encoding":
			s, err := a.defString(d)
			if err != nil {
				return o, err
			}
			switch name {
			case "delimiter":
				delim = &s
			case "null":
				null = &s
			case "quote":
				quote = &s
			case "escape":
				escape = &s
			case "encoding":
				if enc := strings.Map(encodingChar, strings.ToLower(s)); enc != "utf8" && enc != "unicode" {
					return o, a.errorf(nil, d.Location, "COPY ENCODING other than UTF8 is not supported on PHI table %s: phiproxy reads and writes the rows as UTF-8", what)
				}
				o.EncodingUTF8 = true
			}
		case "header":
			v, err := a.defBool(d, true)
			if err != nil {
				return o, err
			}
			switch v {
			case 1:
				o.Header = HeaderTrue
			case 2:
				if !from {
					return o, a.pgError("0A000", -1, "cannot use \"match\" with HEADER in COPY TO")
				}
				o.Header = HeaderMatch
			}
		case "force_quote":
			forceQuote = true
			switch {
			case d.Arg.GetAStar() != nil:
				o.ForceQuoteAll = true
			case d.Arg.GetList() != nil:
				o.ForceQuote = stringList(d.Arg.GetList())
			default:
				return o, a.pgError("22023", d.Location, "argument to option %q must be a list of column names", name)
			}
		case "force_not_null", "force_null":
			l := d.Arg.GetList()
			if l == nil {
				if d.Arg.GetAStar() != nil {
					return o, a.errorf(nil, d.Location, "COPY %s * is not supported on PHI table %s: list the columns", strings.ToUpper(name), what)
				}
				return o, a.pgError("22023", d.Location, "argument to option %q must be a list of column names", name)
			}
			if name == "force_not_null" {
				o.ForceNotNull = stringList(l)
			} else {
				o.ForceNull = stringList(l)
			}
		}
	}
	csv := o.Format == CopyCSV
	if o.Format == CopyBinary {
		switch {
		case delim != nil:
			return o, a.pgError("42601", -1, "cannot specify DELIMITER in BINARY mode")
		case null != nil:
			return o, a.pgError("42601", -1, "cannot specify NULL in BINARY mode")
		}
	}
	o.Delimiter, o.Null = '\t', `\N`
	if csv {
		o.Delimiter, o.Null = ',', ""
	}
	if null != nil {
		o.Null = *null
	}
	if csv {
		if quote == nil {
			quote = new(string)
			*quote = `"`
		}
		if escape == nil {
			escape = quote
		}
	}
	if delim != nil {
		if len(*delim) != 1 {
			return o, a.pgError("0A000", -1, "COPY delimiter must be a single one-byte character")
		}
		o.Delimiter = (*delim)[0]
	}
	switch {
	case o.Delimiter == '\r' || o.Delimiter == '\n':
		return o, a.pgError("22023", -1, "COPY delimiter cannot be newline or carriage return")
	case strings.ContainsAny(o.Null, "\r\n"):
		return o, a.pgError("22023", -1, "COPY null representation cannot use newline or carriage return")
	case !csv && strings.IndexByte("\\.abcdefghijklmnopqrstuvwxyz0123456789", o.Delimiter) >= 0:
		return o, a.pgError("22023", -1, "COPY delimiter cannot be \"%s\"", string(o.Delimiter))
	case o.Format == CopyBinary && o.Header != HeaderNone:
		return o, a.pgError("0A000", -1, "cannot specify HEADER in BINARY mode")
	case !csv && quote != nil:
		return o, a.pgError("0A000", -1, "COPY quote available only in CSV mode")
	case csv && len(*quote) != 1:
		return o, a.pgError("0A000", -1, "COPY quote must be a single one-byte character")
	case csv && o.Delimiter == (*quote)[0]:
		return o, a.pgError("22023", -1, "COPY delimiter and quote must be different")
	case !csv && escape != nil:
		return o, a.pgError("0A000", -1, "COPY escape available only in CSV mode")
	case csv && len(*escape) != 1:
		return o, a.pgError("0A000", -1, "COPY escape must be a single one-byte character")
	case !csv && forceQuote:
		return o, a.pgError("0A000", -1, "COPY force quote available only in CSV mode")
	case forceQuote && from:
		return o, a.pgError("0A000", -1, "COPY force quote only available using COPY TO")
	case !csv && seen["force_not_null"]:
		return o, a.pgError("0A000", -1, "COPY force not null available only in CSV mode")
	case seen["force_not_null"] && !from:
		return o, a.pgError("0A000", -1, "COPY force not null only available using COPY FROM")
	case !csv && seen["force_null"]:
		return o, a.pgError("0A000", -1, "COPY force null available only in CSV mode")
	case seen["force_null"] && !from:
		return o, a.pgError("0A000", -1, "COPY force null only available using COPY FROM")
	case strings.IndexByte(o.Null, o.Delimiter) >= 0:
		return o, a.pgError("22023", -1, "COPY delimiter must not appear in the NULL specification")
	case csv && strings.IndexByte(o.Null, (*quote)[0]) >= 0:
		return o, a.pgError("22023", -1, "CSV quote character must not appear in the NULL specification")
	}
	if csv {
		o.Quote, o.Escape = (*quote)[0], (*escape)[0]
	}
	return o, nil
}

// encodingChar keeps the characters pg_char_to_encoding compares (it
// ignores the others: "UTF-8" is utf8).
func encodingChar(r rune) rune {
	if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
		return r
	}
	return -1
}

// pgError is an error PostgreSQL itself would raise for the statement, with
// its SQLSTATE and message.
func (a *analyzer) pgError(code string, loc int32, format string, args ...any) *Error {
	e := a.errorf(nil, loc, format, args...)
	e.Code = code
	return e
}

// defString is defGetString: the option's argument as text.
func (a *analyzer) defString(d *pg.DefElem) (string, error) {
	switch x := d.Arg.GetNode().(type) {
	case nil:
		return "", a.pgError("42601", d.Location, "%s requires a parameter", d.Defname)
	case *pg.Node_String_:
		return x.String_.Sval, nil
	case *pg.Node_Integer:
		return strconv.Itoa(int(x.Integer.Ival)), nil
	case *pg.Node_Boolean:
		if x.Boolean.Boolval {
			return "true", nil
		}
		return "false", nil
	}
	return "", a.errorf(nil, d.Location, "COPY option %q: an argument phiproxy cannot read", d.Defname)
}

// defBool is defGetBoolean (and, with match, defGetCopyHeaderChoice): 0
// false, 1 true, 2 "match".
func (a *analyzer) defBool(d *pg.DefElem, match bool) (int, error) {
	if d.Arg == nil {
		return 1, nil
	}
	if i := d.Arg.GetInteger(); i != nil {
		switch i.Ival {
		case 0:
			return 0, nil
		case 1:
			return 1, nil
		}
	} else {
		s, err := a.defString(d)
		if err != nil {
			return 0, err
		}
		switch strings.ToLower(s) {
		case "true", "on":
			return 1, nil
		case "false", "off":
			return 0, nil
		case "match":
			if match {
				return 2, nil
			}
		}
	}
	if match {
		return 0, a.pgError("42601", -1, "%s requires a Boolean value or \"match\"", d.Defname)
	}
	return 0, a.pgError("42601", -1, "%s requires a Boolean value", d.Defname)
}

// stringList is a list of names (String nodes).
func stringList(l *pg.List) []string {
	out := make([]string, 0, len(l.Items))
	for _, n := range l.Items {
		out = append(out, n.GetString_().GetSval())
	}
	return out
}

// String renders the options for goldens and logs (no values: options are
// part of the statement's text, never PHI).
func (o CopyOptions) String() string {
	var b strings.Builder
	b.WriteString([...]string{"text", "csv", "binary"}[o.Format])
	fmt.Fprintf(&b, " delimiter=%q null=%q", string(o.Delimiter), o.Null)
	if o.Format == CopyCSV {
		fmt.Fprintf(&b, " quote=%q escape=%q", string(o.Quote), string(o.Escape))
	}
	if o.Header != HeaderNone {
		b.WriteString([...]string{"", " header", " header=match"}[o.Header])
	}
	if o.ForceQuoteAll {
		b.WriteString(" force_quote=*")
	}
	for _, l := range []struct {
		name  string
		names []string
	}{{"force_quote", o.ForceQuote}, {"force_not_null", o.ForceNotNull}, {"force_null", o.ForceNull}} {
		if len(l.names) > 0 {
			fmt.Fprintf(&b, " %s=%s", l.name, strings.Join(l.names, ","))
		}
	}
	if o.Freeze {
		b.WriteString(" freeze")
	}
	if o.EncodingUTF8 {
		b.WriteString(" encoding=utf8")
	}
	return b.String()
}
