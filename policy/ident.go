package policy

import "strings"

// QuoteIdent quotes an SQL identifier as PostgreSQL's quote_ident does:
// unchanged when it is made of lower-case letters, digits and _, does not
// start with a digit and is not a keyword that would be read otherwise;
// else in double quotes, embedded quotes doubled.
func QuoteIdent(s string) string {
	if plainIdent(s) && !reservedKeywords[s] {
		return s
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// QuoteQualified quotes schema.name.
func QuoteQualified(schema, name string) string {
	return QuoteIdent(schema) + "." + QuoteIdent(name)
}

// QuoteLiteral quotes s as a standard SQL string literal (with
// standard_conforming_strings on, the default since PostgreSQL 9.1).
func QuoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

func plainIdent(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z' || c == '_':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// maxIdentLen is NAMEDATALEN-1: PostgreSQL truncates longer names.
const maxIdentLen = 63

// truncateIdent cuts a generated name to what PostgreSQL keeps, so that
// the name found in the catalog is the name looked for. Policy identifiers
// are ASCII (checkIdent), so a byte cut is a character cut.
func truncateIdent(s string) string {
	if len(s) > maxIdentLen {
		return s[:maxIdentLen]
	}
	return s
}

// checkIdent accepts names PostgreSQL stores as written: letters, digits,
// underscores and dollars, not starting with a digit or dollar, at most 63
// bytes (NAMEDATALEN-1). Upper-case letters are allowed and mean a quoted
// identifier.
func checkIdent(s string) string {
	if s == "" {
		return "empty identifier"
	}
	if len(s) > 63 {
		return "identifier longer than 63 bytes"
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
		case (c >= '0' && c <= '9' || c == '$') && i > 0:
		default:
			return "identifiers may hold letters, digits, _ and $ and must not start with a digit or $"
		}
	}
	return ""
}

// reservedKeywords are PostgreSQL's keywords other than the unreserved ones
// (kwlist.h of PostgreSQL 17, as vendored by pg_query_go): quote_ident
// quotes them.
var reservedKeywords = map[string]bool{}

func init() {
	for _, k := range strings.Fields(keywordList) {
		reservedKeywords[k] = true
	}
}

const keywordList = `
	all analyse analyze and any array as asc asymmetric authorization
	between bigint binary bit boolean both case cast char character check
	coalesce collate collation column concurrently constraint create
	cross current_catalog current_date current_role current_schema
	current_time current_timestamp current_user dec decimal default
	deferrable desc distinct do else end except exists extract false
	fetch float for foreign freeze from full grant greatest group
	grouping having ilike in initially inner inout int integer intersect
	interval into is isnull join json json_array json_arrayagg
	json_exists json_object json_objectagg json_query json_scalar
	json_serialize json_table json_value lateral leading least left like
	limit localtime localtimestamp merge_action national natural nchar
	none normalize not notnull null nullif numeric offset on only or
	order out outer overlaps overlay placing position precision primary
	real references returning right row select session_user setof similar
	smallint some substring symmetric system_user table tablesample then
	time timestamp to trailing treat trim true union unique user using
	values varchar variadic verbose when where window with xmlattributes
	xmlconcat xmlelement xmlexists xmlforest xmlnamespaces xmlparse xmlpi
	xmlroot xmlserialize xmltable
`
