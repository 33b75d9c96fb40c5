package phi

import (
	"errors"
	"math/big"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy"
)

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
		{"timestamptz offset", policy.TypeTimestamptz, formatText, []byte("2020-01-01 10:00:00+02"), "2020-01-01 08:00:00Z"},
		{"int4 leading zero", policy.TypeInt4, formatText, []byte("042"), "42"},
		{"int4 binary", policy.TypeInt4, formatBinary, []byte{0, 0, 0, 42}, "42"},
		{"int8 min", policy.TypeInt8, formatText, []byte("-9223372036854775808"), "-9223372036854775808"},
		{"numeric keeps scale", policy.TypeNumeric, formatText, []byte("1.50"), "1.50"},
		{"numeric binary", policy.TypeNumeric, formatBinary, bin(pgtype.NumericOID, pgtype.Numeric{Int: big.NewInt(-1230045), Exp: -4, Valid: true}), "-123.0045"},
		{"bool", policy.TypeBool, formatText, []byte("true"), "t"},
		{"bool binary", policy.TypeBool, formatBinary, []byte{0}, "f"},
		{"uuid upper", policy.TypeUUID, formatText, []byte("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
		{"jsonb text", policy.TypeJSONB, formatText, []byte(`{"a": 1}`), `{"a": 1}`},
		{"jsonb binary", policy.TypeJSONB, formatBinary, []byte("\x01[1]"), "[1]"},
		{"bytea hex", policy.TypeBytea, formatText, []byte(`\x00ff41`), "\x00\xffA"},
		{"bytea escape", policy.TypeBytea, formatText, []byte(`a\\b\001`), "a\\b\x01"},
		{"bytea binary", policy.TypeBytea, formatBinary, []byte{0, 1, 2}, "\x00\x01\x02"},
	}
	c := newValueCodec(nil)
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

func TestValueCodecRejects(t *testing.T) {
	tests := []struct {
		name   string
		typ    policy.LogicalType
		format int16
		in     string
	}{
		{"date garbage", policy.TypeDate, formatText, "not a date"},
		{"date order depends on DateStyle", policy.TypeDate, formatText, "05/12/1980"},
		{"date relative to now", policy.TypeDate, formatText, "today"},
		{"date out of range", policy.TypeDate, formatText, "1980-02-30"},
		{"int4 overflow", policy.TypeInt4, formatText, "99999999999"},
		{"int4 short binary", policy.TypeInt4, formatBinary, "\x00\x01"},
		{"uuid", policy.TypeUUID, formatText, "xyz"},
		{"bool", policy.TypeBool, formatText, "maybe"},
		{"jsonb bad version", policy.TypeJSONB, formatBinary, "\x02{}"},
		{"bytea bad hex", policy.TypeBytea, formatText, `\xzz`},
		{"bytea bad escape", policy.TypeBytea, formatText, `\9`},
	}
	c := newValueCodec(nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.canonical(nil, tt.typ, tt.format, []byte(tt.in))
			var ve *ValueError
			if !errors.As(err, &ve) || ve.Type != tt.typ {
				t.Fatalf("canonical error = %v, want a ValueError for %s", err, tt.typ)
			}
			if got := proxy.Classify(err); got.Code != "22P02" || got.Fatal || got.Reason != "invalid_value" {
				t.Fatalf("Classify = %+v, want a non-fatal 22P02 invalid_value", got)
			}
		})
	}
}

// TestValueCodecRoundTrip checks that present inverts canonical in both
// formats: what a client sends is what it reads back.
func TestValueCodecRoundTrip(t *testing.T) {
	values := map[policy.LogicalType][]string{
		policy.TypeText:        {"", "Alice", "O'Brien \\ ünïcode"},
		policy.TypeInt4:        {"0", "-2147483648", "2147483647"},
		policy.TypeInt8:        {"9223372036854775807"},
		policy.TypeNumeric:     {"0", "1.50", "-99999999999999999999.123456789", "NaN"},
		policy.TypeBool:        {"t", "f"},
		policy.TypeDate:        {"1990-01-02", "infinity", "2000-02-29"},
		policy.TypeTimestamptz: {"2020-01-01 08:00:00Z", "1999-12-31 23:59:59.999999Z"},
		policy.TypeUUID:        {"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
		policy.TypeJSONB:       {`{"diagnosis": "F32.1"}`, "[]"},
		policy.TypeBytea:       {"", "\x00\x01\xfe\xff"},
	}
	c := newValueCodec(nil)
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
