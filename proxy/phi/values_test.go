package phi

import (
	"errors"
	"math/big"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy"
)

// testCodec is a codec under the settings a default server reports
// (DateStyle ISO, MDY; TimeZone UTC), or the ones given.
func testCodec(dateStyle, timeZone string) *valueCodec {
	c := newValueCodec(nil)
	st := (&sessionSettings{}).withSetting("DateStyle", dateStyle).withSetting("TimeZone", timeZone).
		withSetting("server_version", "15.18 (Debian 15.18-0+deb12u1)")
	c.settings = func() (*sessionSettings, error) { return st, nil }
	return c
}

func TestValueCodecCanonical(t *testing.T) {
	m := pgtype.NewMap()
	bin := func(oid uint32, v any) []byte {
		b, err := m.Encode(oid, formatBinary, v, nil)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name   string
		typ    policy.LogicalType
		format int16
		in     []byte
		want   string
	}{
		{"text", policy.TypeText, formatText, []byte(" Alice@Example.org "), " Alice@Example.org "},
		{"text binary", policy.TypeText, formatBinary, []byte("héllo"), "héllo"},
		{"varchar", policy.TypeVarchar, formatText, []byte("x"), "x"},
		{"empty text", policy.TypeText, formatText, []byte{}, ""},
		{"date text", policy.TypeDate, formatText, []byte("1990-01-02"), "1990-01-02"},
		{"date binary", policy.TypeDate, formatBinary, bin(pgtype.DateOID, pgtype.Date{Time: time.Date(1990, 1, 2, 0, 0, 0, 0, time.UTC), Valid: true}), "1990-01-02"},
		{"date compact", policy.TypeDate, formatText, []byte("19800512"), "1980-05-12"},
		{"date slashes", policy.TypeDate, formatText, []byte("1980/05/12"), "1980-05-12"},
		{"date unpadded", policy.TypeDate, formatText, []byte("1980-5-2"), "1980-05-02"},
		{"date month name", policy.TypeDate, formatText, []byte("May 12, 1980"), "1980-05-12"},
		{"date day month name", policy.TypeDate, formatText, []byte("12-May-1980"), "1980-05-12"},
		{"date from timestamp", policy.TypeDate, formatText, []byte("1990-01-02 00:00:00Z"), "1990-01-02"},
		{"date infinity", policy.TypeDate, formatText, []byte("infinity"), "infinity"},
		{"date -infinity", policy.TypeDate, formatText, []byte("-infinity"), "-infinity"},
		{"date BC", policy.TypeDate, formatText, []byte("0044-03-15 BC"), "0044-03-15 BC"},
		{"date epoch", policy.TypeDate, formatText, []byte("epoch"), "1970-01-01"},
		{"date spaces", policy.TypeDate, formatText, []byte(" 1985-03-14 "), "1985-03-14"},
		{"date MDY", policy.TypeDate, formatText, []byte("05/12/1980"), "1980-05-12"},
		{"date leap day", policy.TypeDate, formatText, []byte("2000-02-29"), "2000-02-29"},
		{"date day of year", policy.TypeDate, formatText, []byte("1999.008"), "1999-01-08"},
		{"timestamptz offset", policy.TypeTimestamptz, formatText, []byte("2020-01-01 10:00:00+02"), "2020-01-01 08:00:00Z"},
		{"timestamptz session zone", policy.TypeTimestamptz, formatText, []byte("2020-01-01 10:00:00.5"), "2020-01-01 10:00:00.5Z"},
		{"timestamptz ISO T Z", policy.TypeTimestamptz, formatText, []byte("2020-01-01T10:00:00Z"), "2020-01-01 10:00:00Z"},
		{"timestamptz zone name", policy.TypeTimestamptz, formatText, []byte("2020-07-01 10:00 America/New_York"), "2020-07-01 14:00:00Z"},
		{"timestamptz BC", policy.TypeTimestamptz, formatText, []byte("0044-03-15 12:00+00 BC"), "0044-03-15 12:00:00Z BC"},
		{"timestamptz rounds to microseconds", policy.TypeTimestamptz, formatText, []byte("2020-01-01 10:00:00.1234565+00"), "2020-01-01 10:00:00.123456Z"},
		{"timestamptz infinity", policy.TypeTimestamptz, formatText, []byte("infinity"), "infinity"},
		{"timestamptz binary", policy.TypeTimestamptz, formatBinary, []byte{0, 0, 0, 0, 0, 0, 0, 0}, "2000-01-01 00:00:00Z"},
		{"int4 leading zero", policy.TypeInt4, formatText, []byte("042"), "42"},
		{"int4 spaces and plus", policy.TypeInt4, formatText, []byte(" +42 "), "42"},
		{"int4 binary", policy.TypeInt4, formatBinary, []byte{0, 0, 0, 42}, "42"},
		{"int8 min", policy.TypeInt8, formatText, []byte("-9223372036854775808"), "-9223372036854775808"},
		{"numeric keeps scale", policy.TypeNumeric, formatText, []byte("1.50"), "1.50"},
		{"numeric exponent", policy.TypeNumeric, formatText, []byte("1.50e1"), "15.0"},
		{"numeric negative zero", policy.TypeNumeric, formatText, []byte("-0.00"), "0.00"},
		{"numeric NaN", policy.TypeNumeric, formatText, []byte(" nan "), "NaN"},
		{"numeric inf", policy.TypeNumeric, formatText, []byte("-inf"), "-Infinity"},
		{"numeric binary", policy.TypeNumeric, formatBinary, bin(pgtype.NumericOID, pgtype.Numeric{Int: big.NewInt(-1230045), Exp: -4, Valid: true}), "-123.0045"},
		{"bool", policy.TypeBool, formatText, []byte("true"), "t"},
		{"bool prefix", policy.TypeBool, formatText, []byte(" Of "), "f"},
		{"bool binary", policy.TypeBool, formatBinary, []byte{0}, "f"},
		{"uuid upper", policy.TypeUUID, formatText, []byte("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
		{"uuid braces no hyphens", policy.TypeUUID, formatText, []byte("{a0eebc999c0b4ef8bb6d6bb9bd380a11}"), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
		{"jsonb text", policy.TypeJSONB, formatText, []byte(`{"a": 1}`), `{"a": 1}`},
		{"jsonb canonical", policy.TypeJSONB, formatText, []byte(`{"x":"\u00e9","n":1e2,"aa":[1.50,-0],"b":1,"b":2}`), `{"b": 2, "n": 100, "x": "é", "aa": [1.50, 0]}`},
		{"jsonb escapes", policy.TypeJSONB, formatText, []byte(`"\u001f\/\ud83d\ude00"`), `"\u001f/😀"`},
		{"jsonb binary", policy.TypeJSONB, formatBinary, []byte("\x01[1]"), "[1]"},
		{"bytea hex", policy.TypeBytea, formatText, []byte(`\x00ff41`), "\x00\xffA"},
		{"bytea hex spaces", policy.TypeBytea, formatText, []byte(`\x00 FF`), "\x00\xff"},
		{"bytea escape", policy.TypeBytea, formatText, []byte(`a\\b\001`), "a\\b\x01"},
		{"bytea binary", policy.TypeBytea, formatBinary, []byte{0, 1, 2}, "\x00\x01\x02"},
	}
	c := testCodec("ISO, MDY", "UTC")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.canonical(nil, tt.typ, tt.format, tt.in)
			if err != nil {
				t.Fatalf("canonical: %v", err)
			}
			if string(got) != tt.want {
				t.Fatalf("canonical = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestValueCodecRejects: what PostgreSQL rejects fails with its SQLSTATE,
// and what the proxy cannot read exactly is refused with 0A000.
func TestValueCodecRejects(t *testing.T) {
	tests := []struct {
		typ    policy.LogicalType
		format int16
		in     string
		code   string
	}{
		{policy.TypeDate, formatText, "not a date", "22007"},
		{policy.TypeDate, formatText, "1980-02-30", "22008"},
		{policy.TypeDate, formatText, "13/13/1980", "22008"},
		{policy.TypeDate, formatText, "0000-01-01", "22008"},
		{policy.TypeDate, formatText, "5874898-01-01", "22008"},
		{policy.TypeDate, formatText, "today", "0A000"},
		{policy.TypeDate, formatText, "2020-01-02 Nowhere/Zone", "22023"},
		{policy.TypeTimestamptz, formatText, "2020-01-01 10:00 EST", "0A000"},
		{policy.TypeTimestamptz, formatText, "2020-01-01 10:00 +16", "22009"},
		{policy.TypeTimestamptz, formatText, "now", "0A000"},
		{policy.TypeTimestamptz, formatText, "294277-01-01 00:00+00", "22008"},
		{policy.TypeTimestamptz, formatBinary, "\x7f\xff\xff\xff\xff\xff\xff\xfe", "22008"},
		{policy.TypeInt4, formatText, "99999999999", "22003"},
		{policy.TypeInt4, formatText, "4.2", "22P02"},
		{policy.TypeInt4, formatText, "", "22P02"},
		{policy.TypeInt4, formatBinary, "\x00\x01", "08P01"},
		{policy.TypeInt4, formatBinary, "\x00\x00\x00\x00\x00", "22P03"},
		{policy.TypeInt8, formatText, "9223372036854775808", "22003"},
		{policy.TypeNumeric, formatText, "1e131072", "22003"},
		{policy.TypeNumeric, formatText, "1_000", "22P02"},
		{policy.TypeNumeric, formatBinary, "\x00\x01\x00\x00\x00\x00\x00\x00\x27\x10", "22P03"},
		{policy.TypeUUID, formatText, "xyz", "22P02"},
		{policy.TypeUUID, formatText, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-", "22P02"},
		{policy.TypeBool, formatText, "maybe", "22P02"},
		{policy.TypeBool, formatText, "o", "22P02"},
		{policy.TypeJSONB, formatText, "", "22P02"},
		{policy.TypeJSONB, formatText, "{bad json", "22P02"},
		{policy.TypeJSONB, formatText, "NaN", "22P02"},
		{policy.TypeJSONB, formatText, "n/a", "22P02"},
		{policy.TypeJSONB, formatText, `{"t": "\u0000"}`, "22P05"},
		{policy.TypeJSONB, formatText, `[1e99999999999]`, "22003"},
		{policy.TypeJSONB, formatText, `"\ud83d"`, "22P02"},
		{policy.TypeJSONB, formatBinary, "\x02{}", "XX000"},
		{policy.TypeBytea, formatText, `\xzz`, "22023"},
		{policy.TypeBytea, formatText, `\x0`, "22023"},
		{policy.TypeBytea, formatText, `\9`, "22P02"},
		{policy.TypeText, formatText, "a\x00b", "22021"},
		{policy.TypeDate, formatText, "\xff", "22021"},
	}
	c := testCodec("ISO, MDY", "UTC")
	for _, tt := range tests {
		t.Run(string(tt.typ)+" "+tt.in, func(t *testing.T) {
			_, err := c.canonical(nil, tt.typ, tt.format, []byte(tt.in))
			var ve *ValueError
			if !errors.As(err, &ve) {
				t.Fatalf("canonical error = %v, want a ValueError", err)
			}
			if got := proxy.Classify(err); got.Code != tt.code || got.Fatal || len(tt.in) > 5 && strings.Contains(got.Message, tt.in) {
				t.Fatalf("Classify = %+v, want a non-fatal %s without the value", got, tt.code)
			}
		})
	}
}

// TestValueCodecSettings: input and output that depend on DateStyle and
// TimeZone follow the settings, and are refused when they are unknown.
func TestValueCodecSettings(t *testing.T) {
	dmy := testCodec("SQL, DMY", "America/New_York")
	got, err := dmy.canonical(nil, policy.TypeDate, formatText, []byte("05/12/1980"))
	if err != nil || string(got) != "1980-12-05" {
		t.Errorf("DMY input: %q %v", got, err)
	}
	got, err = dmy.canonical(nil, policy.TypeTimestamptz, formatText, []byte("2020-07-01 10:00"))
	if err != nil || string(got) != "2020-07-01 14:00:00Z" {
		t.Errorf("session zone input: %q %v", got, err)
	}
	out, err := dmy.present(nil, policy.TypeTimestamptz, formatText, []byte("2020-07-01 14:00:00.5Z"))
	if err != nil || string(out) != "01/07/2020 10:00:00.5 EDT" {
		t.Errorf("SQL, DMY output: %q %v", out, err)
	}
	out, err = testCodec("ISO, MDY", "<+05:30>-05:30").present(nil, policy.TypeTimestamptz, formatText, []byte("2020-07-01 14:00:00Z"))
	if err != nil || string(out) != "2020-07-01 19:30:00+05:30" {
		t.Errorf("fixed zone output: %q %v", out, err)
	}
	out, err = testCodec("German, DMY", "UTC").present(nil, policy.TypeDate, formatText, []byte("0044-03-15 BC"))
	if err != nil || string(out) != "15.03.0044 BC" {
		t.Errorf("German date: %q %v", out, err)
	}
	// PostgreSQL 16 reads 1_000 and 0x1F as integers; the proxy reads as
	// PostgreSQL 15 does, so it refuses them there.
	pg16 := newValueCodec(nil)
	st16 := (&sessionSettings{}).withSetting("server_version", "16.4")
	pg16.settings = func() (*sessionSettings, error) { return st16, nil }
	for _, in := range []string{"1_000", " -0x1F", "0b101"} {
		if _, err := pg16.canonical(nil, policy.TypeInt4, formatText, []byte(in)); proxy.Classify(err).Code != "0A000" {
			t.Errorf("%q for PostgreSQL 16: %v, want 0A000", in, err)
		}
	}
	if _, err := pg16.canonical(nil, policy.TypeInt4, formatText, []byte("x1")); proxy.Classify(err).Code != "22P02" {
		t.Errorf("x1 for PostgreSQL 16: %v, want 22P02", err)
	}
	// Unknown settings: only what depends on them is refused.
	unknown := newValueCodec(nil)
	unknown.settings = func() (*sessionSettings, error) { return nil, errSettingsMoved }
	if _, err := unknown.canonical(nil, policy.TypeDate, formatText, []byte("1980-05-12")); err != nil {
		t.Errorf("ISO date under unknown settings: %v", err)
	}
	for _, in := range []string{"05/12/1980"} {
		if _, err := unknown.canonical(nil, policy.TypeDate, formatText, []byte(in)); proxy.Classify(err).Code != "0A000" {
			t.Errorf("%q under unknown settings: %v, want 0A000", in, err)
		}
	}
	if _, err := unknown.canonical(nil, policy.TypeTimestamptz, formatText, []byte("2020-01-01 10:00")); proxy.Classify(err).Code != "0A000" {
		t.Errorf("timestamptz without offset under unknown settings: %v, want 0A000", err)
	}
	if _, err := unknown.canonical(nil, policy.TypeTimestamptz, formatText, []byte("2020-01-01 10:00+01")); err != nil {
		t.Errorf("timestamptz with offset under unknown settings: %v", err)
	}
	if _, err := unknown.present(nil, policy.TypeDate, formatText, []byte("1980-05-12")); proxy.Classify(err).Code != "0A000" {
		t.Errorf("date output under unknown settings: %v, want 0A000", err)
	}
	if _, err := unknown.present(nil, policy.TypeDate, formatBinary, []byte("1980-05-12")); err != nil {
		t.Errorf("binary date output under unknown settings: %v", err)
	}
}

// TestValueCodecRoundTrip checks that present inverts canonical in both
// formats: what a client sends is what it reads back.
func TestValueCodecRoundTrip(t *testing.T) {
	values := map[policy.LogicalType][]string{
		policy.TypeText:        {"", "Alice", "O'Brien \\ ünïcode"},
		policy.TypeInt4:        {"0", "-2147483648", "2147483647"},
		policy.TypeInt8:        {"9223372036854775807"},
		policy.TypeNumeric:     {"0", "1.50", "-99999999999999999999.123456789", "NaN", "Infinity", "-Infinity", "0.0001", "10000", "123456789.000000001"},
		policy.TypeBool:        {"t", "f"},
		policy.TypeDate:        {"1990-01-02", "infinity", "-infinity", "2000-02-29", "0044-03-15 BC", "4714-11-24 BC", "5874897-12-31"},
		policy.TypeTimestamptz: {"2020-01-01 08:00:00Z", "1999-12-31 23:59:59.999999Z", "0044-03-15 12:00:00Z BC", "infinity"},
		policy.TypeUUID:        {"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
		policy.TypeJSONB:       {`{"diagnosis": "F32.1"}`, "[]"},
		policy.TypeBytea:       {"", "\x00\x01\xfe\xff"},
	}
	c := testCodec("ISO, MDY", "UTC")
	for typ, vs := range values {
		for _, v := range vs {
			for _, format := range []int16{formatText, formatBinary} {
				wire, err := c.present(nil, typ, format, []byte(v))
				if err != nil {
					t.Fatalf("present(%s, %d, %q): %v", typ, format, v, err)
				}
				back, err := c.canonical(nil, typ, format, wire)
				if err != nil {
					t.Fatalf("canonical(%s, %d, %q): %v", typ, format, wire, err)
				}
				if string(back) != v {
					t.Errorf("%s format %d: %q -> %q -> %q", typ, format, v, wire, back)
				}
			}
		}
	}
}

func TestTypeOIDs(t *testing.T) {
	for _, typ := range []policy.LogicalType{policy.TypeText, policy.TypeVarchar, policy.TypeInt4, policy.TypeInt8,
		policy.TypeNumeric, policy.TypeBool, policy.TypeDate, policy.TypeTimestamptz, policy.TypeUUID, policy.TypeJSONB, policy.TypeBytea} {
		if typeOID(typ, false) == 0 || typeOID(typ, true) == 0 {
			t.Errorf("no OID for %s", typ)
		}
	}
	if storageOID(policy.StorageBytea) != pgtype.ByteaOID || storageOID(policy.StorageText) != pgtype.TextOID {
		t.Error("storage OIDs")
	}
}

func BenchmarkValueCodecDate(b *testing.B) {
	c := newValueCodec(nil)
	in := []byte("1990-01-02")
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		var err error
		buf, err = c.canonical(buf[:0], policy.TypeDate, formatText, in)
		if err != nil {
			b.Fatal(err)
		}
	}
}

// TestValueCodecCharacters: text-like values are checked as PostgreSQL
// checks them (valid UTF-8, no NUL), and beyond ASCII they are refused in
// both directions while client_encoding is not UTF8.
func TestValueCodecCharacters(t *testing.T) {
	var nonUTF8 atomic.Bool
	c := newValueCodec(&nonUTF8)
	for _, tc := range []struct {
		in      string
		latin1  bool
		wantErr string // SQLSTATE, "" for none
	}{
		{"plain", false, ""},
		{"José", false, ""},
		{"Jos\xe9", false, "22021"},
		{"a\x00b", false, "22021"},
		{"plain", true, ""},
		{"José", true, "0A000"},
	} {
		nonUTF8.Store(tc.latin1)
		_, err := c.canonical(nil, policy.TypeText, formatText, []byte(tc.in))
		got := ""
		if err != nil {
			got = proxy.Classify(err).Code
		}
		if got != tc.wantErr {
			t.Errorf("canonical(%q, latin1=%v): SQLSTATE %q, want %q (%v)", tc.in, tc.latin1, got, tc.wantErr, err)
		}
		if tc.wantErr == "" {
			if _, err := c.present(nil, policy.TypeText, formatText, []byte(tc.in)); err != nil {
				t.Errorf("present(%q, latin1=%v): %v", tc.in, tc.latin1, err)
			}
		}
	}
	nonUTF8.Store(true)
	if _, err := c.present(nil, policy.TypeJSONB, formatText, []byte(`{"a": "é"}`)); !errors.Is(err, errNonUTF8) {
		t.Errorf("present of a non-ASCII jsonb under LATIN1: %v, want errNonUTF8", err)
	}
}

// TestEqualityKey: values PostgreSQL's = finds equal share a blind-index
// key, others do not.
func TestEqualityKey(t *testing.T) {
	c := testCodec("ISO, MDY", "UTC")
	key := func(typ policy.LogicalType, in string) string {
		plain, err := c.canonical(nil, typ, formatText, []byte(in))
		if err != nil {
			t.Fatalf("canonical(%s, %q): %v", typ, in, err)
		}
		return string(equalityKey(nil, typ, plain))
	}
	for _, eq := range [][3]string{
		{"numeric", "1.50", "1.5"}, {"numeric", "-0.00", "0"}, {"numeric", "1e2", "100.000"}, {"numeric", "NaN", "nan"},
		{"jsonb", `{"a": 1.0}`, `{"a":1}`}, {"jsonb", `[1e2, "\u00e9"]`, `[100, "é"]`}, {"jsonb", `{"b":1,"a":2,"b":3}`, `{"a":2,"b":3}`},
		{"date", "05/12/1980", "1980-05-12"}, {"timestamptz", "2020-01-01 10:00+02", "2020-01-01 08:00Z"},
	} {
		if a, b := key(policy.LogicalType(eq[0]), eq[1]), key(policy.LogicalType(eq[0]), eq[2]); a != b {
			t.Errorf("%s %q and %q: keys %q and %q differ", eq[0], eq[1], eq[2], a, b)
		}
	}
	for _, ne := range [][3]string{
		{"numeric", "1.5", "1.05"}, {"numeric", "Infinity", "NaN"}, {"jsonb", "1", "[1]"}, {"jsonb", `"1"`, "1"},
		{"text", "a", "a "}, {"numeric", "10", "1"},
	} {
		if a, b := key(policy.LogicalType(ne[0]), ne[1]), key(policy.LogicalType(ne[0]), ne[2]); a == b {
			t.Errorf("%s %q and %q share key %q", ne[0], ne[1], ne[2], a)
		}
	}
}

// FuzzCanonical: no input makes the readers panic, and what they accept
// is a fixed point: presented and read again, it is the same plaintext.
func FuzzCanonical(f *testing.F) {
	for _, s := range []string{"1990-01-02", "0044-03-15 BC", "05/12/1980", "2020-01-01 10:00 America/New_York", "J2451187 04:05",
		"1.50e1", " -Infinity ", `{"a":[1e2,"\u00e9"]}`, "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}", `\x00ff`, " tRuE ", "+42"} {
		f.Add(s, uint8(0))
	}
	types := []policy.LogicalType{policy.TypeDate, policy.TypeTimestamptz, policy.TypeNumeric, policy.TypeJSONB,
		policy.TypeUUID, policy.TypeBytea, policy.TypeBool, policy.TypeInt4, policy.TypeInt8, policy.TypeText}
	// ISO output reads back; other styles print zone abbreviations, which
	// the proxy refuses on input.
	c := testCodec("ISO, DMY", "America/New_York")
	f.Fuzz(func(t *testing.T, in string, which uint8) {
		typ := types[int(which)%len(types)]
		for _, format := range []int16{formatText, formatBinary} {
			plain, err := c.canonical(nil, typ, format, []byte(in))
			if err != nil {
				continue
			}
			for _, out := range []int16{formatText, formatBinary} {
				wire, err := c.present(nil, typ, out, plain)
				if err != nil {
					t.Fatalf("present(%s, %d, %q): %v", typ, out, plain, err)
				}
				back, err := c.canonical(nil, typ, out, wire)
				if err != nil || string(back) != string(plain) {
					t.Fatalf("%s %q: %q -> %q -> %q (%v)", typ, in, plain, wire, back, err)
				}
			}
		}
	})
}
