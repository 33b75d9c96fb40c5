package phi

import (
	"encoding/binary"
	"math"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy"
)

// testColumn is a PHI column c of type t in public.t.
func testColumn(t policy.LogicalType) *policy.Column {
	return &policy.Column{Name: "c", Type: t, Table: &policy.Table{Schema: "public", Name: "t"}}
}

// TestConvertStoredPG15: values of other types stored in a PHI column
// (assignment casts), under DateStyle 'SQL, MDY' and TimeZone
// America/New_York. The expectations are PostgreSQL 15.18's: INSERT INTO
// t(c) VALUES ('<in>'::<type>) and the stored value read back (c::text,
// timestamptz in UTC).
func TestConvertStoredPG15(t *testing.T) {
	i2 := func(v int16) []byte { return binary.BigEndian.AppendUint16(nil, uint16(v)) }
	f4 := func(f float32) []byte { return binary.BigEndian.AppendUint32(nil, math.Float32bits(f)) }
	txt := func(s string) []byte { return []byte(s) }
	uuid := []byte{0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11}
	tests := []struct {
		name   string
		typ    policy.LogicalType
		src    uint32
		format int16
		in     []byte
		want   string // canonical, or a SQLSTATE
	}{
		{"numeric in text", policy.TypeText, pgtype.NumericOID, formatText, txt("1.50e1"), "15.0"},
		{"jsonb in text", policy.TypeText, pgtype.JSONBOID, formatText, txt(`{"b":1,"a":[1.0,2]}`), `{"a": [1.0, 2], "b": 1}`},
		{"jsonb binary in text", policy.TypeText, pgtype.JSONBOID, formatBinary, txt("\x01{\"b\":1,\"a\":2}"), `{"a": 2, "b": 1}`},
		{"json in text keeps its text", policy.TypeText, pgtype.JSONOID, formatText, txt(`{"b":1 }`), `{"b":1 }`},
		{"uuid in text", policy.TypeText, pgtype.UUIDOID, formatText, txt("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
		{"uuid binary in text", policy.TypeText, pgtype.UUIDOID, formatBinary, uuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
		{"uuid binary too short", policy.TypeText, pgtype.UUIDOID, formatBinary, uuid[:15], "08P01"},
		{"uuid binary too long", policy.TypeText, pgtype.UUIDOID, formatBinary, append(uuid[:16:16], 0), "22P03"},
		{"bool in text", policy.TypeText, pgtype.BoolOID, formatText, txt("no"), "false"},
		{"bool binary in text", policy.TypeText, pgtype.BoolOID, formatBinary, []byte{1}, "true"},
		{"int2 binary in text", policy.TypeText, pgtype.Int2OID, formatBinary, i2(-2), "-2"},
		{"int2 binary too long", policy.TypeText, pgtype.Int2OID, formatBinary, []byte{0, 0, 0}, "22P03"},
		{"timestamptz in text", policy.TypeText, pgtype.TimestamptzOID, formatText, txt("2020-07-01 14:00:00+00"), "07/01/2020 10:00:00 EDT"},
		{"timestamptz binary in text", policy.TypeText, pgtype.TimestamptzOID, formatBinary, make([]byte, 8), "12/31/1999 19:00:00 EST"},
		{"timestamp in text", policy.TypeText, pgtype.TimestampOID, formatText, txt("2020-07-01 14:00:00.25"), "07/01/2020 14:00:00.25"},
		{"timestamptz infinity in text", policy.TypeText, pgtype.TimestamptzOID, formatText, txt("infinity"), "infinity"},
		{"date in text", policy.TypeText, pgtype.DateOID, formatText, txt("2020-07-01"), "07/01/2020"},
		{"date -infinity in text", policy.TypeText, pgtype.DateOID, formatText, txt("-infinity"), "-infinity"},
		// PostgreSQL stores float8_out's text ("1.5"); the proxy does not
		// reproduce float8_out, so it refuses.
		{"float8 in text", policy.TypeText, pgtype.Float8OID, formatText, txt("1.5"), "0A000"},

		{"int2 binary in int4", policy.TypeInt4, pgtype.Int2OID, formatBinary, i2(32767), "32767"},
		{"numeric Infinity in int4", policy.TypeInt4, pgtype.NumericOID, formatText, txt("Infinity"), "0A000"},
		{"numeric -Infinity in int8", policy.TypeInt8, pgtype.NumericOID, formatText, txt("-Infinity"), "0A000"},
		{"numeric beyond int4", policy.TypeInt4, pgtype.NumericOID, formatText, txt("3000000000"), "22003"},
		{"numeric -0.5 rounds away from zero", policy.TypeInt4, pgtype.NumericOID, formatText, txt("-0.5"), "-1"},
		{"float4 2.5 rounds to even", policy.TypeInt4, pgtype.Float4OID, formatBinary, f4(2.5), "2"},
		{"float8 just below the int4 limit", policy.TypeInt4, pgtype.Float8OID, formatText, txt("2147483647.4"), "2147483647"},
		{"float8 rounding past the int4 limit", policy.TypeInt4, pgtype.Float8OID, formatText, txt("2147483647.5"), "22003"},
		{"int8 below int4", policy.TypeInt4, pgtype.Int8OID, formatText, txt("-2147483649"), "22003"},
		{"float8 2^63 in int8", policy.TypeInt8, pgtype.Float8OID, formatText, txt("9223372036854775807"), "22003"},
		{"float8 -2^63 in int8", policy.TypeInt8, pgtype.Float8OID, formatText, txt("-9223372036854775808"), "-9223372036854775808"},

		{"int2 in numeric", policy.TypeNumeric, pgtype.Int2OID, formatText, txt("-32768"), "-32768"},
		{"float8 small in numeric", policy.TypeNumeric, pgtype.Float8OID, formatText, txt("1e-5"), "0.00001"},
		{"float8 NaN in numeric", policy.TypeNumeric, pgtype.Float8OID, formatText, txt("NaN"), "NaN"},
		{"float8 Infinity in numeric", policy.TypeNumeric, pgtype.Float8OID, formatText, txt("Infinity"), "Infinity"},
		{"float4 max in numeric", policy.TypeNumeric, pgtype.Float4OID, formatText, txt("3.4028235e38"), "340282000000000000000000000000000000000"},
		{"float8 keeps 15 digits", policy.TypeNumeric, pgtype.Float8OID, formatText, txt("-1234567.891234567891"), "-1234567.89123457"},

		{"timestamptz infinity in date", policy.TypeDate, pgtype.TimestamptzOID, formatText, txt("infinity"), "infinity"},
		{"timestamp -infinity in date", policy.TypeDate, pgtype.TimestampOID, formatText, txt("-infinity"), "-infinity"},
		{"last timestamp in date", policy.TypeDate, pgtype.TimestampOID, formatText, txt("294276-12-31 23:59:59"), "294276-12-31"},

		{"date infinity in timestamptz", policy.TypeTimestamptz, pgtype.DateOID, formatText, txt("infinity"), "infinity"},
		{"date beyond timestamp", policy.TypeTimestamptz, pgtype.DateOID, formatText, txt("5874897-12-31"), "22008"},
		{"timestamp -infinity in timestamptz", policy.TypeTimestamptz, pgtype.TimestampOID, formatText, txt("-infinity"), "-infinity"},
		{"timestamp pushed past the end by the zone", policy.TypeTimestamptz, pgtype.TimestampOID, formatText, txt("294276-12-31 23:59:59"), "22008"},
		{"date at the session's midnight", policy.TypeTimestamptz, pgtype.DateOID, formatText, txt("2020-07-01"), "2020-07-01 04:00:00Z"},
		{"first date at local mean time", policy.TypeTimestamptz, pgtype.DateOID, formatText, txt("4714-11-24 BC"), "4714-11-24 04:56:02Z BC"},

		{"json in jsonb", policy.TypeJSONB, pgtype.JSONOID, formatText, txt(`[1.0, {"b":2,"a":1}]`), `[1.0, {"a": 1, "b": 2}]`},
	}
	c := testCodec("SQL, MDY", "America/New_York")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, match, err := c.convert(nil, testColumn(tt.typ), tt.src, true, tt.format, tt.in)
			got := string(out)
			if err != nil {
				got = proxy.Classify(err).Code
			} else if !match {
				t.Fatalf("a stored value reported no match")
			}
			if got != tt.want {
				t.Errorf("convert = %q (%v), want %q", got, err, tt.want)
			}
		})
	}
}

// TestConvertCompared: values of other types compared with a PHI
// column: a value no stored value can equal matches nothing (the
// cross-type operators compare in the wider type).
func TestConvertCompared(t *testing.T) {
	f8 := func(f float64) []byte { return binary.BigEndian.AppendUint64(nil, math.Float64bits(f)) }
	tests := []struct {
		name string
		typ  policy.LogicalType
		src  uint32
		in   []byte
		want string // canonical, or "" for no match
	}{
		{"float8 1e19 against bigint", policy.TypeInt8, pgtype.Float8OID, f8(1e19), ""},
		{"float8 2^53 against integer", policy.TypeInt4, pgtype.Float8OID, f8(1 << 53), ""},
		{"float8 infinity against integer", policy.TypeInt4, pgtype.Float8OID, f8(math.Inf(1)), ""},
		{"float8 beyond int4 against integer", policy.TypeInt4, pgtype.Float8OID, f8(1 << 40), ""},
		{"numeric NaN against integer", policy.TypeInt4, pgtype.NumericOID, []byte("NaN"), ""},
		{"numeric beyond int4 against integer", policy.TypeInt4, pgtype.NumericOID, []byte("3000000000"), ""},
		{"int8 beyond int4 against integer", policy.TypeInt4, pgtype.Int8OID, []byte("3000000000"), ""},
		{"int8 in range against integer", policy.TypeInt4, pgtype.Int8OID, []byte("-5"), "-5"},
		{"timestamptz infinity against date", policy.TypeDate, pgtype.TimestamptzOID, []byte("infinity"), "infinity"},
		{"date beyond timestamp against timestamptz", policy.TypeTimestamptz, pgtype.DateOID, []byte("5874897-12-31"), ""},
		{"timestamp against timestamptz", policy.TypeTimestamptz, pgtype.TimestampOID, []byte("2020-01-01 10:00"), "2020-01-01 15:00:00Z"},
	}
	c := testCodec("ISO, MDY", "America/New_York")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			format := formatText
			if tt.src == pgtype.Float8OID {
				format = formatBinary
			}
			out, match, err := c.convert(nil, testColumn(tt.typ), tt.src, false, format, tt.in)
			if err != nil {
				t.Fatalf("convert: %v", err)
			}
			if got := string(out); match != (tt.want != "") || match && got != tt.want {
				t.Errorf("convert = %q, match %v; want %q", got, match, tt.want)
			}
		})
	}
}

// TestConvertSettingsUnknown: a conversion that depends on DateStyle or
// TimeZone is refused while they are unknown.
func TestConvertSettingsUnknown(t *testing.T) {
	c := newValueCodec(nil)
	st := (&sessionSettings{}).withSetting("DateStyle", "ISO, MDY")
	c.settings = func() (*sessionSettings, error) { return st, nil }
	tests := []struct {
		name string
		typ  policy.LogicalType
		src  uint32
		in   string
	}{
		{"timestamptz in text", policy.TypeText, pgtype.TimestamptzOID, "2020-01-01 10:00+00"},
		{"timestamptz in date", policy.TypeDate, pgtype.TimestamptzOID, "2020-01-01 10:00+00"},
		{"date in timestamptz", policy.TypeTimestamptz, pgtype.DateOID, "2020-01-01"},
	}
	for _, tt := range tests {
		_, _, err := c.convert(nil, testColumn(tt.typ), tt.src, true, formatText, []byte(tt.in))
		if proxy.Classify(err).Code != "0A000" {
			t.Errorf("%s without a TimeZone: %v, want 0A000", tt.name, err)
		}
	}
	if got, _, err := c.convert(nil, testColumn(policy.TypeText), pgtype.DateOID, true, formatText, []byte("2020-01-02")); err != nil || string(got) != "2020-01-02" {
		t.Errorf("date in text under a known DateStyle: %q, %v", got, err)
	}
	noStyle := newValueCodec(nil)
	noStyle.settings = func() (*sessionSettings, error) { return &sessionSettings{}, nil }
	if _, _, err := noStyle.convert(nil, testColumn(policy.TypeText), pgtype.DateOID, true, formatText, []byte("2020-01-02")); proxy.Classify(err).Code != "0A000" {
		t.Errorf("date in text without a DateStyle: %v, want 0A000", err)
	}
}
