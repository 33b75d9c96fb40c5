package differential

import "strings"

// The values the generator writes and searches for, one pool per kind of
// column. Ordinary values are untagged. Odd values (valid, but in a form a
// naive implementation gets wrong) and bad values (PostgreSQL rejects
// them, with the SQLSTATE noted) carry a tag, "val.<pool>.<kind>", which
// the statements using them carry too, so the report can say which kinds of
// value the proxy gets wrong. Values equal only after a blind index's
// normalization (case, spaces, digits, 'N/A', Unicode case folding and
// normal forms) are ordinary: the predicate tags of the indexed column say
// when they matter.

// value is one input value in its text form.
type value struct {
	text string
	null bool
	tag  string // "" for an ordinary value
	bad  bool   // PostgreSQL rejects it
}

func ok(s string) value       { return value{text: s} }
func odd(tag, s string) value { return value{text: s, tag: tag} }
func bad(tag, s string) value { return value{text: s, tag: tag, bad: true} }
func oddAll(tag string, s ...string) []value {
	out := make([]value, len(s))
	for i, v := range s {
		out[i] = odd(tag, v)
	}
	return out
}

// null is SQL NULL.
var null = value{null: true}

const (
	nfcE = "\u00e9"  // é, one code point
	nfdE = "e\u0301" // é, e and a combining acute accent
)

// pools are the values of each pool. Each bad value's comment gives the
// SQLSTATE PostgreSQL answers.
var pools = map[string][]value{
	"email": {
		ok("ada.quill@example.org"), ok("Ada.Quill@Example.org"), ok("ADA.QUILL@EXAMPLE.ORG"),
		ok(" ada.quill@example.org"), ok("ada.quill@example.org "),
		ok("bram.ol@example.com"), ok("BRAM.OL@example.com"),
		ok("straße@beispiel.de"), ok("STRAẞE@BEISPIEL.DE"), ok("strasse@beispiel.de"), ok("STRASSE@beispiel.de"),
		ok("caf" + nfcE + "@example.fr"), ok("caf" + nfdE + "@example.fr"), ok("CAF\u00c9@example.fr"),
		ok("o'brien@example.ie"), ok("N/A"), ok(""), ok(" "), ok("unknown"),
	},
	"phone": {
		ok("+1 (555) 010-0101"), ok("555-010-0101"), ok("5550100101"), ok("15550100101"), ok("555.010.0101"),
		ok(" 555 010 0101 "), ok("(555) 010-0202"), ok("555-010-0202"),
		ok("+44 20 7946 0958"), ok("ext. 12"), ok("N/A"), ok("unknown"), ok(""),
	},
	"ssn": {
		ok("900-12-3456"), ok("900123456"), ok("900 12 3456"), ok(" 900-12-3456 "),
		ok("900-65-4321"), ok("900654321"), ok("000-00-0000"), ok("N/A"), ok(""),
	},
	"name": {
		ok("Ada"), ok("ada"), ok("ADA"), ok(" Ada"), ok("Ada "), ok("Zo\u00eb"), ok("Zoe\u0308"),
		ok("ß"), ok("ẞ"), ok("SS"), ok("O'Brien"), ok("Jean-Luc"), ok("\u0130stanbul"), ok("istanbul"),
		ok("Ñandú"), ok("N/A"), ok(""), ok("Okonkwo-Lind"), ok("Quill"),
	},
	"address": {
		ok("12 Lantern Way"), ok("12 lantern way"), ok(" 12 Lantern Way"), ok("Apt. 4"), ok("Springfield"),
		ok("SPRINGFIELD"), ok("IL"), ok("il"), ok("62704"), ok("62704-1234"), ok("USA"), ok("usa"),
		ok("Stra\u00dfe 5"), ok(""),
	},
	"note": {
		ok("Seasonal allergic rhinitis"), ok("seasonal allergic rhinitis"), ok("Cetirizine 10 mg daily"),
		ok("Ibuprofen 400 mg as needed"), ok("Review in 3 months; avoid known triggers."),
		ok("line one\nline two"), ok("tab\there"), ok(`back\slash`), ok("quote ' inside"), ok(""),
	},
	"text": {
		ok("Alpha"), ok("alpha"), ok(" Alpha"), ok("ALPHA"), ok("ß"), ok("ẞ"), ok(nfcE), ok(nfdE),
		ok(""), ok("N/A"), ok("quote'd"), ok(`back\slash`),
	},
	"date": append([]value{
		ok("1985-03-14"), ok("1972-11-02"), ok("1999-07-30"), ok("2000-02-29"), ok("1970-01-01"),
		odd("val.date.loose", "1985-3-14"), odd("val.date.spaces", " 1985-03-14 "),
		odd("val.date.special", "epoch"), odd("val.date.special", "infinity"), odd("val.date.special", "-infinity"),
		odd("val.date.bc", "0044-03-15 BC"), odd("val.date.bc", "4713-01-01 BC"),
		odd("val.date.text", "March 14, 1985"), odd("val.date.compact", "19850314"),
		odd("val.date.mdy", "03/14/1985"), odd("val.date.time", "1985-03-14 13:00"),
		odd("val.date.far", "5874897-12-31"),
	},
		bad("val.date.bad", "1985-02-30"),    // 22008
		bad("val.date.bad", "1985-13-01"),    // 22008
		bad("val.date.bad", "5874898-01-01"), // 22008
		bad("val.date.bad", "not a date"),    // 22007
		bad("val.date.bad", ""),              // 22007
	),
	"timestamptz": {
		ok("2024-01-02 03:04:05+00"), ok("2024-06-30 23:59:59.999999+00"), ok("1999-12-31 23:00:00+00"),
		odd("val.tstz.offset", "2024-01-02 03:04:05+02"), odd("val.tstz.offset", "2024-01-02 03:04:05-05:30"),
		odd("val.tstz.iso8601", "2024-01-02T03:04:05Z"),
		odd("val.tstz.zone_name", "2024-01-02 03:04:05 America/New_York"),
		odd("val.tstz.no_zone", "2024-01-02 03:04:05"), odd("val.tstz.date_only", "2024-01-02"),
		odd("val.tstz.special", "epoch"), odd("val.tstz.special", "infinity"), odd("val.tstz.special", "-infinity"),
		odd("val.tstz.bc", "0044-03-15 12:00:00+00 BC"), odd("val.tstz.precision", "2024-01-02 03:04:05.1234567+00"),
		bad("val.tstz.bad", "2024-13-01 00:00:00+00"), // 22008
		bad("val.tstz.bad", "2024-01-02 25:00:00+00"), // 22008
		bad("val.tstz.bad", "garbage"),                // 22007
		bad("val.tstz.bad", ""),                       // 22007
	},
	"int4": {
		ok("1"), ok("42"), ok("-7"), ok("0"), ok("1985"),
		odd("val.int.form", "01"), odd("val.int.form", " 5 "), odd("val.int.form", "+3"), odd("val.int.form", "-0"),
		odd("val.int.limit", "2147483647"), odd("val.int.limit", "-2147483648"),
		bad("val.int.bad", "2147483648"), // 22003
		bad("val.int.bad", "1.5"),        // 22P02
		bad("val.int.bad", "abc"),        // 22P02
		bad("val.int.bad", ""),           // 22P02
	},
	"int8": {
		ok("1"), ok("9000000000"), ok("-5"),
		odd("val.int.form", "007"), odd("val.int.form", " 7 "),
		odd("val.int.limit", "9223372036854775807"), odd("val.int.limit", "-9223372036854775808"),
		bad("val.int.bad", "9223372036854775808"), // 22003
		bad("val.int.bad", "1e3"),                 // 22P02
		bad("val.int.bad", "x"),                   // 22P02
	},
	"numeric": {
		ok("1.5"), ok("10"), ok("-2.25"), ok("123456789012345678901234567890.123456789"),
		odd("val.numeric.scale", "1.50"), odd("val.numeric.scale", "1.500"), odd("val.numeric.scale", "0.000001"),
		odd("val.numeric.exp", "1e3"), odd("val.numeric.exp", "2.5E-3"), odd("val.numeric.form", "-0.0"),
		odd("val.numeric.form", " 2 "), odd("val.numeric.special", "NaN"), odd("val.numeric.special", "Infinity"),
		odd("val.numeric.special", "-Infinity"),
		bad("val.numeric.bad", "1,5"), // 22P02
		bad("val.numeric.bad", "abc"), // 22P02
		bad("val.numeric.bad", ""),    // 22P02
	},
	"bool": append(append([]value{ok("true"), ok("false")},
		oddAll("val.bool.form", "t", "f", "yes", "no", "on", "off", "1", "0", "TRUE", " true ", "y")...),
		bad("val.bool.bad", "maybe"), // 22P02
		bad("val.bool.bad", ""),      // 22P02
	),
	"uuid": {
		ok("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), ok("6ba7b810-9dad-11d1-80b4-00c04fd430c8"),
		odd("val.uuid.form", "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"),
		odd("val.uuid.form", "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}"),
		odd("val.uuid.form", "a0eebc999c0b4ef8bb6d6bb9bd380a11"),
		odd("val.uuid.form", "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11"),
		bad("val.uuid.bad", "not-a-uuid"),                          // 22P02
		bad("val.uuid.bad", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1"), // 22P02
		bad("val.uuid.bad", ""),                                    // 22P02
	},
	"jsonb": {
		ok(`{"allergies": ["penicillin"]}`), ok(`{"preferred_language": "en"}`), ok(`[1, 2, 3]`), ok(`{}`),
		odd("val.jsonb.canon", `{"n": 1e2}`), odd("val.jsonb.canon", `{"x":"\u00e9"}`),
		odd("val.jsonb.canon", `{"b": 1, "a": 2}`), odd("val.jsonb.canon", `{"a": 1, "a": 2}`),
		odd("val.jsonb.canon", `  {"a":1}  `), odd("val.jsonb.canon", `[1.0, 1.00e0]`),
		odd("val.jsonb.scalar", `null`), odd("val.jsonb.scalar", `"text"`), odd("val.jsonb.scalar", `true`),
		bad("val.jsonb.bad", ``),                  // 22P02
		bad("val.jsonb.bad", `{bad json`),         // 22P02
		bad("val.jsonb.bad", `NaN`),               // 22P02
		bad("val.jsonb.bad", `n/a`),               // 22P02
		bad("val.jsonb.nul", `{"t": "\u0000"}`),   // 22P05
		bad("val.jsonb.bad", `{"deep": [1, 2}`),   // 22P02
		bad("val.jsonb.bad", `{"k": 1} trailing`), // 22P02
	},
	"bytea": {
		ok(`\x0102ff`), ok(`\x`), ok(`\xdeadbeef`),
		odd("val.bytea.upper", `\xDEADBEEF`), odd("val.bytea.escape", `abc`), odd("val.bytea.escape", `a\000b`),
		bad("val.bytea.bad", `\x0`),  // 22023
		bad("val.bytea.bad", `\xzz`), // 22023
		bad("val.bytea.bad", `\q`),   // 22P02
	},
}

// leakStopList are values long enough to be searched that occur in any
// data directory by chance.
var leakStopList = map[string]bool{"infinity": true, "-infinity": true, "unknown": true}

// distinctive reports whether v is worth the leak check: long enough not
// to occur by chance in PostgreSQL's files.
func distinctive(v string) bool {
	return len(v) >= 8 && !leakStopList[strings.ToLower(strings.TrimSpace(v))]
}
