package phi

import (
	"encoding/binary"
	"math"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/rewrite"
)

// TestConversionOf: the types PostgreSQL 15 accepts for a column of each
// logical type, in a comparison and stored (the matrix was read from the
// server with PREPARE ... ($1 declared) for `col = $1` and INSERT).
func TestConversionOf(t *testing.T) {
	type row struct {
		typ        policy.LogicalType
		src        uint32
		cmp, store conversion
	}
	for _, r := range []row{
		{policy.TypeText, pgtype.VarcharOID, convSame, convSame},
		{policy.TypeText, pgtype.BPCharOID, convCast, convCast},
		{policy.TypeVarchar, pgtype.BPCharOID, convRefusedProxy, convCast}, // bpchar comparison ignores trailing spaces
		{policy.TypeText, pgtype.NameOID, convCast, convCast},
		{policy.TypeText, pgtype.Int4OID, convRefusedPG, convCast}, // text = integer: 42883; stored via int4out
		{policy.TypeText, pgtype.BoolOID, convRefusedPG, convCast},
		{policy.TypeText, pgtype.Float8OID, convRefusedPG, convRefusedProxy}, // extra_float_digits is not reported
		{policy.TypeText, pgtype.ByteaOID, convRefusedPG, convRefusedProxy},  // nor is bytea_output
		{policy.TypeInt4, pgtype.Int8OID, convCast, convCast},
		{policy.TypeInt4, pgtype.Float8OID, convCast, convCast},
		{policy.TypeInt4, pgtype.TextOID, convRefusedPG, convRefusedPG},
		{policy.TypeInt4, pgtype.OIDOID, convRefusedProxy, convRefusedProxy},
		{policy.TypeNumeric, pgtype.Float8OID, convRefusedProxy, convCast}, // numeric = float8 compares as float8
		{policy.TypeNumeric, 790, convRefusedPG, convRefusedProxy},         // money
		{policy.TypeDate, pgtype.TimestampOID, convCast, convCast},
		{policy.TypeDate, pgtype.TimestamptzOID, convCast, convCast},
		{policy.TypeDate, pgtype.TextOID, convRefusedPG, convRefusedPG},
		{policy.TypeTimestamptz, pgtype.TimestampOID, convCast, convCast},
		{policy.TypeTimestamptz, pgtype.DateOID, convCast, convCast},
		{policy.TypeJSONB, pgtype.JSONOID, convRefusedPG, convCast},
		{policy.TypeUUID, pgtype.TextOID, convRefusedPG, convRefusedPG},
		{policy.TypeBool, pgtype.Int4OID, convRefusedPG, convRefusedPG},
		{policy.TypeBytea, pgtype.TextOID, convRefusedPG, convRefusedPG},
		{policy.TypeInt4, 99999, convRefusedProxy, convRefusedProxy}, // a type the proxy does not know
	} {
		if got := conversionOf(r.typ, r.src, false); got != r.cmp {
			t.Errorf("%s = %s: %d, want %d", r.typ, pgTypeNames[r.src], got, r.cmp)
		}
		if got := conversionOf(r.typ, r.src, true); got != r.store {
			t.Errorf("%s := %s: %d, want %d", r.typ, pgTypeNames[r.src], got, r.store)
		}
	}
}

// TestConvert: values of other types become the column's canonical
// plaintext exactly as PostgreSQL's casts and cross-type operators make
// them, a compared value no stored value can equal matches nothing, and
// errors carry the server's SQLSTATEs.
func TestConvert(t *testing.T) {
	f8 := func(f float64) []byte { return binary.BigEndian.AppendUint64(nil, math.Float64bits(f)) }
	f4 := func(f float32) []byte { return binary.BigEndian.AppendUint32(nil, math.Float32bits(f)) }
	i8 := func(v int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(v)) }
	col := func(t policy.LogicalType) *policy.Column { return &policy.Column{Name: "c", Type: t} }
	const noMatch = "<no match>"
	tests := []struct {
		name   string
		typ    policy.LogicalType
		src    uint32
		assign bool
		format int16
		in     []byte
		want   string // canonical, noMatch, or a SQLSTATE
	}{
		{"varchar for text", policy.TypeText, pgtype.VarcharOID, false, formatText, []byte("a "), "a "},
		{"bpchar loses trailing spaces", policy.TypeText, pgtype.BPCharOID, true, formatText, []byte("ab  "), "ab"},
		{"name is clipped to 63 bytes", policy.TypeText, pgtype.NameOID, false, formatText, []byte("é" + strings.Repeat("1", 62)), "é" + strings.Repeat("1", 61)},
		{"binary name of 63 bytes", policy.TypeText, pgtype.NameOID, true, formatBinary, []byte(strings.Repeat("1", 63)), strings.Repeat("1", 63)},
		{"binary name of 64 bytes is too long", policy.TypeText, pgtype.NameOID, true, formatBinary, []byte(strings.Repeat("1", 64)), "42622"},
		{"int stored in text", policy.TypeText, pgtype.Int4OID, true, formatBinary, []byte{0, 0, 0, 42}, "42"},
		{"bool stored in text says true", policy.TypeText, pgtype.BoolOID, true, formatText, []byte("t"), "true"},
		{"date stored in text follows DateStyle", policy.TypeText, pgtype.DateOID, true, formatText, []byte("2020-01-02"), "01/02/2020"},
		{"int compared with text", policy.TypeText, pgtype.Int4OID, false, formatText, []byte("42"), "42883"},
		{"int8 in range", policy.TypeInt4, pgtype.Int8OID, false, formatBinary, i8(42), "42"},
		{"int8 out of range compared", policy.TypeInt4, pgtype.Int8OID, false, formatBinary, i8(3000000000), noMatch},
		{"int8 out of range stored", policy.TypeInt4, pgtype.Int8OID, true, formatBinary, i8(3000000000), "22003"},
		{"float8 rounds half to even: 42.5", policy.TypeInt4, pgtype.Float8OID, true, formatBinary, f8(42.5), "42"},
		{"float8 rounds half to even: 43.5", policy.TypeInt4, pgtype.Float8OID, true, formatBinary, f8(43.5), "44"},
		{"float8 text", policy.TypeInt4, pgtype.Float8OID, true, formatText, []byte(" -2.5e0 "), "-2"},
		{"float8 NaN stored", policy.TypeInt4, pgtype.Float8OID, true, formatBinary, f8(math.NaN()), "22003"},
		{"float8 fraction compared", policy.TypeInt4, pgtype.Float8OID, false, formatBinary, f8(42.5), noMatch},
		{"float8 integer compared", policy.TypeInt4, pgtype.Float8OID, false, formatBinary, f8(42), "42"},
		{"float4 compared", policy.TypeInt8, pgtype.Float4OID, false, formatBinary, f4(16777216), "16777216"},
		{"float8 beyond 2^53 against bigint", policy.TypeInt8, pgtype.Float8OID, false, formatBinary, f8(1 << 60), "0A000"},
		{"numeric rounds half away from zero", policy.TypeInt4, pgtype.NumericOID, true, formatText, []byte("-42.5"), "-43"},
		{"numeric NaN stored", policy.TypeInt8, pgtype.NumericOID, true, formatText, []byte("NaN"), "0A000"},
		{"numeric 42.000 equals 42", policy.TypeInt4, pgtype.NumericOID, false, formatText, []byte("42.000"), "42"},
		{"numeric 42.5 equals no integer", policy.TypeInt4, pgtype.NumericOID, false, formatText, []byte("42.5"), noMatch},
		{"int into numeric", policy.TypeNumeric, pgtype.Int8OID, false, formatText, []byte("-7"), "-7"},
		{"float8 into numeric keeps 15 digits", policy.TypeNumeric, pgtype.Float8OID, true, formatBinary, f8(1.0 / 3), "0.333333333333333"},
		{"float4 into numeric keeps 6 digits", policy.TypeNumeric, pgtype.Float4OID, true, formatBinary, f4(0.1), "0.1"},
		{"timestamp at midnight equals its date", policy.TypeDate, pgtype.TimestampOID, false, formatText, []byte("2020-01-02 00:00"), "2020-01-02"},
		{"timestamp with a time equals no date", policy.TypeDate, pgtype.TimestampOID, false, formatText, []byte("2020-01-02 10:00"), noMatch},
		{"timestamp stored as its date", policy.TypeDate, pgtype.TimestampOID, true, formatText, []byte("2020-01-02 10:00"), "2020-01-02"},
		{"timestamptz stored as the session's date", policy.TypeDate, pgtype.TimestamptzOID, true, formatText, []byte("2020-01-02 03:00+00"), "2020-01-01"},
		{"timestamptz at the session's midnight", policy.TypeDate, pgtype.TimestamptzOID, false, formatText, []byte("2020-01-02 05:00+00"), "2020-01-02"},
		{"timestamp in the session's zone", policy.TypeTimestamptz, pgtype.TimestampOID, true, formatText, []byte("2020-07-01 10:00"), "2020-07-01 14:00:00Z"},
		{"timestamp in a spring-forward gap", policy.TypeTimestamptz, pgtype.TimestampOID, true, formatText, []byte("2020-03-08 02:30"), "2020-03-08 07:30:00Z"},
		{"date at the session's midnight", policy.TypeTimestamptz, pgtype.DateOID, false, formatText, []byte("2020-01-02"), "2020-01-02 05:00:00Z"},
		{"json stored as jsonb", policy.TypeJSONB, pgtype.JSONOID, true, formatText, []byte(`{"b":1,"a":[1.0]}`), `{"a": [1.0], "b": 1}`},
		{"json compared with jsonb", policy.TypeJSONB, pgtype.JSONOID, false, formatText, []byte(`{}`), "42883"},
		{"uuid stored in date", policy.TypeDate, pgtype.UUIDOID, true, formatText, []byte("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), "42804"},
		{"invalid float8", policy.TypeInt4, pgtype.Float8OID, true, formatText, []byte("4x"), "22P02"},
		{"float8 overflow", policy.TypeInt4, pgtype.Float8OID, true, formatText, []byte("1e400"), "22003"},
	}
	c := testCodec("SQL, MDY", "America/New_York")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, match, err := c.convert(nil, col(tt.typ), tt.src, tt.assign, tt.format, tt.in)
			got := string(out)
			switch {
			case err != nil:
				got = proxy.Classify(err).Code
			case !match:
				got = noMatch
			}
			if got != tt.want {
				t.Errorf("convert = %q (%v), want %q", got, err, tt.want)
			}
		})
	}
}

// TestScriptDeclaredTypes replays pgjdbc's batch: Parse with varchar
// declared for a text column, Describe of the statement (the client must
// see varchar again, or it fails with "Can't change resolved type"), then
// Bind; a declared type PostgreSQL would refuse fails at Parse with its
// SQLSTATE; a float8 stored in an integer column is rounded as the
// server's assignment cast rounds it.
func TestScriptDeclaredTypes(t *testing.T) {
	c, _ := scripted(t, func(f *fakeServer) {
		f.expect(`Parse "b" INSERT INTO patients (email, email_bidx, visits) VALUES ($1, $3, $2) [25 25 25]`, `Describe S "b"`, "Sync")
		f.send(&pgproto3.ParseComplete{}, &pgproto3.ParameterDescription{ParameterOIDs: []uint32{25, 25, 25}}, &pgproto3.NoData{})
		f.ready()
		f.expect(`Bind "" "b" [0 0 0] ["ENC(public.patients.email:A@x.org)" "ENC(public.patients.visits:42)" "IDX-public.patients.email-a@x.org"] []`,
			`Describe P ""`, `Execute ""`, "Sync")
		f.send(&pgproto3.BindComplete{}, &pgproto3.NoData{}, &pgproto3.CommandComplete{CommandTag: []byte("INSERT 0 1")})
		f.ready()
		f.expect(`Close S "phiproxy_raise"`, `Parse "phiproxy_raise" DO $phiproxy$BEGIN RAISE EXCEPTION USING ERRCODE = '42883'…`,
			`Bind "" "phiproxy_raise" [] [] []`, `Execute ""`, "Sync")
		f.send(&pgproto3.CloseComplete{}, &pgproto3.ParseComplete{}, &pgproto3.BindComplete{},
			&pgproto3.ErrorResponse{Severity: "ERROR", Code: "42883", Message: "phiproxy: …"})
		f.ready()
	})
	c.send(&pgproto3.Parse{Name: "b", Query: "INSERT INTO patients (email, visits) VALUES ($1, $2)",
		ParameterOIDs: []uint32{pgtype.VarcharOID, pgtype.Float8OID}},
		&pgproto3.Describe{ObjectType: 'S', Name: "b"}, &pgproto3.Sync{})
	c.expect("ParseComplete", "ParameterDescription [1043 701]", "NoData", "ReadyForQuery I")
	c.send(&pgproto3.Bind{PreparedStatement: "b", ParameterFormatCodes: []int16{0, 1},
		Parameters: [][]byte{[]byte("A@x.org"), binary.BigEndian.AppendUint64(nil, math.Float64bits(42.4))}},
		&pgproto3.Execute{}, &pgproto3.Sync{})
	c.expect("BindComplete", "CommandComplete INSERT 0 1", "ReadyForQuery I")
	c.send(&pgproto3.Parse{Query: "SELECT id FROM patients WHERE email = $1", ParameterOIDs: []uint32{pgtype.UUIDOID}},
		&pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
	c.expect("ErrorResponse ERROR 42883 phiproxy: …", "ReadyForQuery I")
}

// TestScriptSettingsMoved: a timestamp read or written in text format
// while an earlier, unanswered statement may change the settings it
// depends on is refused; once the server has answered and reported the
// new setting, it is read under it.
func TestScriptSettingsMoved(t *testing.T) {
	dobRD := &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{field("date_of_birth", 3, 25)}}
	c, _ := scripted(t, func(f *fakeServer) {
		// Pipelined behind the SET: a date in text format cannot be shown
		// for certain; the result ends with 0A000.
		f.expect("Query SET DateStyle = 'SQL, DMY'", "Query SELECT date_of_birth FROM patients")
		f.send(&pgproto3.CommandComplete{CommandTag: []byte("SET")},
			&pgproto3.ParameterStatus{Name: "DateStyle", Value: "SQL, DMY"})
		f.ready()
		f.rows(dobRD, []string{"ENC(public.patients.date_of_birth:1990-01-02)"})
		f.ready()
		// After ReadyForQuery, the reported DateStyle applies both ways.
		f.expect("Query SELECT date_of_birth FROM patients")
		f.rows(dobRD, []string{"ENC(public.patients.date_of_birth:1990-01-02)"})
		f.ready()
		f.expect("Query INSERT INTO patients (date_of_birth) VALUES ('ENC(public.patients.date_of_birth:1980-12-05)')")
		f.send(&pgproto3.CommandComplete{CommandTag: []byte("INSERT 0 1")})
		f.ready()
		// In one text with the SET, an input that depends on it is refused.
		f.expect("Query DO $phiproxy$BEGIN RAISE EXCEPTION USING ERRCODE = '0A000'…")
		f.send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "0A000", Message: "phiproxy: …"})
		f.ready()
	})
	c.send(&pgproto3.Query{String: "SET DateStyle = 'SQL, DMY'"}, &pgproto3.Query{String: "SELECT date_of_birth FROM patients"})
	c.expect("CommandComplete SET", "ParameterStatus", "ReadyForQuery I")
	c.expect("RowDescription date_of_birth:1082/0", "ErrorResponse ERROR 0A000 phiproxy: this date/time value depends on DateStyle or TimeZone, which a statement sent earlier and not yet answered may change (column public.patients.date_of_birth)", "ReadyForQuery I")
	c.send(&pgproto3.Query{String: "SELECT date_of_birth FROM patients"})
	c.expect("RowDescription date_of_birth:1082/0", `DataRow "02/01/1990"`, "CommandComplete SELECT 1", "ReadyForQuery I")
	c.send(&pgproto3.Query{String: "INSERT INTO patients (date_of_birth) VALUES ('05/12/1980')"})
	c.expect("CommandComplete INSERT 0 1", "ReadyForQuery I")
	c.send(&pgproto3.Query{String: "SET DateStyle = ISO; INSERT INTO patients (date_of_birth) VALUES ('05/12/1980')"})
	c.expect("ErrorResponse ERROR 0A000 phiproxy: …", "ReadyForQuery I")
}

// TestValueType: a PHI parameter's type, from its declaration and its
// cast, as PostgreSQL resolves it; what the proxy cannot take at face
// value is refused.
func TestValueType(t *testing.T) {
	tests := []struct {
		declared uint32
		cast     string
		want     uint32 // 0 with refused: a 0A000 refusal
		refused  bool
	}{
		{0, "", 0, false},
		{pgtype.UnknownOID, "", 0, false},
		{pgtype.Int4OID, "", pgtype.Int4OID, false},
		{0, "timestamp", pgtype.TimestampOID, false},
		{pgtype.UnknownOID, "date", pgtype.DateOID, false},
		{0, "text[]", pgtype.TextArrayOID, false},
		{0, "timestamptz[]", pgtype.TimestamptzArrayOID, false},
		{pgtype.TimestampOID, "timestamp", pgtype.TimestampOID, false},
		{pgtype.VarcharOID, "jsonb", pgtype.JSONBOID, false}, // pgjdbc's setString with ?::jsonb
		{pgtype.TextOID, "text[]", 0, true},
		{pgtype.Int4OID, "int8", 0, true},
		{0, "point", 0, true},
		{0, "point[]", 0, true},
		{0, rewrite.TypeUnknown, 0, true},
	}
	for _, tt := range tests {
		got, err := valueType(tt.declared, tt.cast)
		if tt.refused {
			if proxy.Classify(err).Code != "0A000" {
				t.Errorf("valueType(%d, %q) = %d, %v; want a 0A000 refusal", tt.declared, tt.cast, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("valueType(%d, %q) = %d, %v; want %d", tt.declared, tt.cast, got, err, tt.want)
		}
	}
}

// TestLiteralType: a literal's type as PostgreSQL's make_const gives it
// (checked with pg_typeof on PostgreSQL 15.18: 42 integer, 3000000000
// and -2147483649 bigint, -2147483648 integer, 9223372036854775808, 4.5
// and 1e3 numeric).
func TestLiteralType(t *testing.T) {
	tests := []struct {
		lit  rewrite.Literal
		want uint32
	}{
		{rewrite.Literal{Value: "x"}, 0},
		{rewrite.Literal{Type: rewrite.LiteralBool, Value: "true"}, pgtype.BoolOID},
		{rewrite.Literal{Type: rewrite.LiteralNumber, Value: "42"}, pgtype.Int4OID},
		{rewrite.Literal{Type: rewrite.LiteralNumber, Value: "-0"}, pgtype.Int4OID},
		{rewrite.Literal{Type: rewrite.LiteralNumber, Value: "3000000000"}, pgtype.Int8OID},
		{rewrite.Literal{Type: rewrite.LiteralNumber, Value: "-2147483648"}, pgtype.Int4OID},
		{rewrite.Literal{Type: rewrite.LiteralNumber, Value: "-2147483649"}, pgtype.Int8OID},
		{rewrite.Literal{Type: rewrite.LiteralNumber, Value: "9223372036854775807"}, pgtype.Int8OID},
		{rewrite.Literal{Type: rewrite.LiteralNumber, Value: "9223372036854775808"}, pgtype.NumericOID},
		{rewrite.Literal{Type: rewrite.LiteralNumber, Value: "4.5"}, pgtype.NumericOID},
		{rewrite.Literal{Type: rewrite.LiteralNumber, Value: "1e3"}, pgtype.NumericOID},
		{rewrite.Literal{Type: "date", Value: "2020-01-02"}, pgtype.DateOID},
	}
	for _, tt := range tests {
		if got, err := literalType(&tt.lit); err != nil || got != tt.want {
			t.Errorf("literalType(%+v) = %d, %v; want %d", tt.lit, got, err, tt.want)
		}
	}
	if _, err := literalType(&rewrite.Literal{Type: "point", Value: "(1,2)"}); proxy.Classify(err).Code != "0A000" {
		t.Errorf("literalType of a point: %v, want a 0A000 refusal", err)
	}
}

// TestCheckParamArray: = ANY($n) needs an array of a type the column
// accepts.
func TestCheckParamArray(t *testing.T) {
	p := &rewrite.Param{Column: testColumn(policy.TypeText), Array: true, Action: rewrite.ActionIndex}
	tests := []struct {
		declared uint32
		code     string
	}{
		{0, ""},
		{pgtype.TextArrayOID, ""},
		{pgtype.VarcharArrayOID, ""},
		{pgtype.Int4ArrayOID, "42883"}, // text = integer does not exist
		{pgtype.TextOID, "0A000"},      // not an array
		{pgtype.PointArrayOID, "0A000"},
	}
	for _, tt := range tests {
		code := ""
		if err := checkParam(p, tt.declared); err != nil {
			code = proxy.Classify(err).Code
		}
		if code != tt.code {
			t.Errorf("checkParam(text = ANY($1) declared %d): SQLSTATE %q, want %q", tt.declared, code, tt.code)
		}
	}
}
