package integration

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/novamind/phiproxy/internal/pgcluster"
)

// The differential test of issue 10 (items 1 and 3) and issue 14 (dates,
// jsonb): every input below goes into phi_types (encrypted) through the
// proxy and into values_plain (the same columns with their logical types)
// directly, in the extended protocol as an untyped text parameter and in
// the simple protocol as a literal; both are read back in text and binary
// format, and compared with a spelling of another value for the columns
// with a blind index. Proxy and server must give the same value, the same
// SQLSTATE, the same rows, or the proxy refuses (0A000, counted). The same
// runs under DateStyle ISO, MDY and TimeZone UTC, and under SQL, DMY with
// America/New_York, and others.

const valuesPlainSchema = `
CREATE TABLE IF NOT EXISTS values_plain (
  id int PRIMARY KEY,
  v_text text, v_varchar varchar, v_int4 int4, v_int8 int8, v_numeric numeric, v_bool bool,
  v_date date, v_timestamptz timestamptz, v_uuid uuid, v_jsonb jsonb, v_bytea bytea)`

// valueRowID is the row both tables use for this test.
const valueRowID = 1000001

// valueInputs are, per column, inputs PostgreSQL accepts, rejects, or
// reads only under some settings. The first is the value stored before
// the comparisons of an indexed column.
var valueInputs = map[string][]string{
	"v_text":    {"Alice", "", " padded ", "O'Brien", "ünïcödé", "tab\there", `back\slash`, "a\x00b", "\xff\xfe"},
	"v_varchar": {"x", "trailing  ", "ß"},
	"v_int4": {"42", "0", " 42 ", "+42", "-42", "042", "2147483647", "2147483648", "-2147483648", "-2147483649",
		"", " ", "4.2", "1e3", "0x1F", "1_000", "- 1", "+-1", "99999999999x", "2147483648x", "\t7\n", "٣"},
	"v_int8": {"9223372036854775807", "0", "9223372036854775808", "-9223372036854775808", "-9223372036854775809", " -5 ", "abc", "1.0"},
	"v_numeric": {"1.50", "0", "1.5", "-0.00", "+1.5", " 1.5 ", ".5", "5.", "1e2", "1.5e1", "1.50e1", "1e-2", "NaN", "nan",
		" -Infinity ", "inf", "+inf", "-inf", "1e", "1e+", "1e 5", "00012.3400", "1e1000", "1e131072", "0e-16383", "0e-16384",
		"1e1073741823x", "abc", "", "1.2.3", "-nan", "123456789012345678901234567890.123456789012345678901234567890"},
	"v_bool": {"t", "f", "true", "FALSE", "yes", "no", "on", "off", "o", "of", "1", "0", " TRUE ", "tru", "y", "n", "2", "", "truex", "oN "},
	"v_uuid": {"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
		"a0eebc999c0b4ef8bb6d6bb9bd380a11", "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11", "{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}",
		"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-", " a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
		"{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "xyz"},
	"v_jsonb": {`{"a": 1}`, `{"x":"\u00e9"}`, `{"n": 1e2}`, `{"b":1,"a":2,"aa":3,"a":4}`, `[1, 2.50, -0, 1E+2, 0.1e1]`, `""`,
		`"\u0000"`, `{"t": "\u0000"}`, ``, `{bad json`, `NaN`, `n/a`, `null`, `true`, `  [ ]  `, `{}`, `"\ud83d\ude00"`,
		`"\ud83d"`, `"\ude00"`, `"a\/b\b\f\n\r\t\"\\"`, `"\u001f\u007f"`, `01`, `-`, `1.`, `.5`, `[1,]`, `{"a":1,}`,
		`[1 2]`, "\"tab\tin\"", `1e99999999999`, `[1e99999999999, "\u0000"]`, `["\u0000", 1e99999999999]`, `{"é": "ü"}`,
		`{"a":{"b":[1,{"c":null}]}}`, `[1e-5, 123.4500]`, `"\x"`},
	"v_bytea": {`\x00ff41`, `\x`, `\xDEADbeef`, `\x de ad`, `\x0`, `\xzz`, `\X00`, `abc`, `a\\b`, `\001\377`, `\400`, `\9`, `\`},
	"v_date": {"1990-01-02", "2000-02-29", "1999-02-29", "1980-02-30", "0044-03-15 BC", "44-03-15 BC", "0000-01-01", "epoch",
		"infinity", "-infinity", " 1985-03-14 ", "05/12/1980", "12/05/1980", "13/05/1980", "05-12-1980", "05.12.1980",
		"1980.05.12", "19800512", "800512", "May 12, 1980", "12 May 1980", "12-May-1980", "1980-May-12", "Jan 8 99",
		"8 Jan 99", "99-Jan-08", "January 8, 1999", "Friday January 8 1999", "1999.008", "1999.366", "J2451187", "today",
		"not a date", "", "1990-01-02 10:00:00", "1990-01-02T10:00:00Z", "1990-01-02 10:00+05", "1990-01-02 EST",
		"1990-01-02 America/New_York", "1990-01-02 Nowhere/Zone", "4714-11-24 BC", "4714-11-23 BC", "5874897-12-31",
		"5874898-01-01", "01/02/03", "1999-01-08 04:05:06 PM", "y1999m01d08", "2020-1-2", "13-13-13", "32/01/2000"},
	"v_timestamptz": {"2020-01-01 10:00:00+02", "2020-01-01 10:00:00", "2020-01-01T10:00:00Z", "2020-01-01 10:00:00.123456789+00",
		"2020-01-01 10:00:00.5", "2020-03-08 02:30", "2020-11-01 01:30", "2020-03-29 01:30", "2020-10-25 01:30", "epoch",
		"infinity", "-infinity", "now", "2020-01-01 10:00 America/New_York", "2020-01-01 10:00 EST", "2020-01-01 10:00 UTC",
		"2020-01-01 10:00 Z", "2020-01-01 10:00 +05:30", "2020-01-01 10:00 +0530", "2020-01-01 10:00 -08",
		"2020-01-01 10:00 +16", "2020-01-01 24:00:00", "2020-01-01 24:00:01", "2020-01-01 23:59:60",
		"2020-01-01 23:59:59.9999999", "1800-01-01 00:00", "0044-03-15 12:00 BC", "294276-12-31 23:59:59.999999+00",
		"294277-01-01 00:00+00", "12/05/1980 10:00", "May 12 1980 10:00 PM", "1980-05-12 12:00 AM", "1980-05-12 13:00 PM",
		"1980-05-12 allballs", "1980-05-12 10:00 gmt-8", "not a time", "", "1999-01-08 04:05:06 -8:00", "19990108T040506-08",
		"2020-01-01 10:61", "1990-01-02 10:00 MET DST"},
}

// comparedWith are the stored values of the indexed columns that each
// input is compared with (a different spelling matches the same value).
var comparedWith = map[string]string{
	"v_text": "Alice", "v_int4": "42", "v_date": "1990-01-02", "v_uuid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
	"v_numeric": "1.50", "v_jsonb": `{"n": 1e2}`,
}

var valueSettings = []struct{ dateStyle, timeZone string }{
	{"ISO, MDY", "UTC"},
	{"SQL, DMY", "America/New_York"},
	{"Postgres, YMD", "Asia/Kolkata"},
	{"German, DMY", "Europe/Dublin"},
}

// outcome is what one side made of one statement.
type outcome struct {
	code       string // SQLSTATE, "" on success
	text, bin  string // the value read back in text and binary format
	null       bool
	rows       int64
	paramTypes []uint32
}

func (o outcome) String() string {
	if o.code != "" {
		return "error " + o.code
	}
	if o.paramTypes != nil {
		return fmt.Sprintf("params %v", o.paramTypes)
	}
	if o.null {
		return "NULL"
	}
	return fmt.Sprintf("%q / %x (rows %d)", o.text, o.bin, o.rows)
}

func sqlstate(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	if err != nil {
		return "client: " + err.Error()
	}
	return ""
}

// differ runs the same statements on both sides and tallies.
type differ struct {
	t              *testing.T
	proxied, plain *pgconn.PgConn
	checked        int
	refused        map[string]int // by column
	diffs          []string
}

func (d *differ) side(proxied bool) (*pgconn.PgConn, string) {
	if proxied {
		return d.proxied, "phi_types"
	}
	return d.plain, "values_plain"
}

// store writes input into the column through an untyped text parameter
// (extended) or a literal (simple), then reads it back in both formats.
func (d *differ) store(proxied bool, col, input string, simple bool) outcome {
	return d.storeFormat(proxied, col, []byte(input), simple, 0)
}

// storeFormat is store for a parameter in the given format.
func (d *differ) storeFormat(proxied bool, col string, input []byte, simple bool, format int16) outcome {
	ctx := context.Background()
	conn, table := d.side(proxied)
	if err := conn.Exec(ctx, fmt.Sprintf("DELETE FROM %s WHERE id = %d", table, valueRowID)).Close(); err != nil {
		d.t.Fatalf("delete: %v", err)
	}
	var err error
	if simple {
		sql := fmt.Sprintf("INSERT INTO %s (id, %s) VALUES (%d, '%s')", table, col, valueRowID, strings.ReplaceAll(string(input), "'", "''"))
		_, err = conn.Exec(ctx, sql).ReadAll()
	} else {
		sql := fmt.Sprintf("INSERT INTO %s (id, %s) VALUES (%d, $1)", table, col, valueRowID)
		err = conn.ExecParams(ctx, sql, [][]byte{input}, nil, []int16{format}, nil).Read().Err
	}
	if err != nil {
		return outcome{code: sqlstate(err)}
	}
	var o outcome
	for _, format := range []int16{0, 1} {
		sql := fmt.Sprintf("SELECT %s FROM %s WHERE id = %d", col, table, valueRowID)
		r := conn.ExecParams(ctx, sql, nil, nil, nil, []int16{format}).Read()
		if r.Err != nil {
			return outcome{code: sqlstate(r.Err)}
		}
		if len(r.Rows) != 1 {
			d.t.Fatalf("%s: %d rows", sql, len(r.Rows))
		}
		v := r.Rows[0][0]
		o.null = v == nil
		if format == 0 {
			o.text = string(v)
		} else {
			o.bin = string(v)
		}
	}
	return o
}

// compare counts the rows whose column equals input (an untyped text
// parameter), with the row holding stored.
func (d *differ) compare(proxied bool, col, input string) outcome {
	ctx := context.Background()
	conn, table := d.side(proxied)
	sql := fmt.Sprintf("SELECT count(*) FROM %s WHERE id = %d AND %s = $1", table, valueRowID, col)
	r := conn.ExecParams(ctx, sql, [][]byte{[]byte(input)}, nil, []int16{0}, nil).Read()
	if r.Err != nil {
		return outcome{code: sqlstate(r.Err)}
	}
	var n int64
	fmt.Sscan(string(r.Rows[0][0]), &n)
	return outcome{rows: n}
}

// check compares the two outcomes of one case.
func (d *differ) check(what, col string, proxied, plain outcome) {
	d.checked++
	switch {
	case proxied.code == "0A000" && plain.code != "0A000":
		d.refused[col]++
		d.t.Logf("refused: %s (server: %v)", what, plain)
	case proxied.code != plain.code || proxied.code == "" && (proxied.text != plain.text || proxied.bin != plain.bin ||
		proxied.null != plain.null || proxied.rows != plain.rows || fmt.Sprint(proxied.paramTypes) != fmt.Sprint(plain.paramTypes)):
		d.diffs = append(d.diffs, fmt.Sprintf("%s: proxy %v, server %v", what, proxied, plain))
	}
}

func TestValuesDifferential(t *testing.T) {
	p := startPHIProxy(t)
	ctx := context.Background()
	if _, err := phiDirect(t).Exec(ctx, valuesPlainSchema); err != nil {
		t.Fatal(err)
	}
	cols := make([]string, 0, len(valueInputs))
	for col := range valueInputs {
		cols = append(cols, col)
	}
	sort.Strings(cols)
	for _, st := range valueSettings {
		t.Run(st.dateStyle+" "+st.timeZone, func(t *testing.T) {
			d := &differ{t: t, proxied: phiConn(t, p).PgConn(), plain: phiDirect(t).PgConn(), refused: map[string]int{}}
			for _, conn := range []*pgconn.PgConn{d.proxied, d.plain} {
				// Separate statements: the proxy learns each setting from the
				// ParameterStatus before the next ReadyForQuery.
				for _, set := range []string{"SET DateStyle = '" + st.dateStyle + "'", "SET TimeZone = '" + st.timeZone + "'"} {
					if _, err := conn.Exec(ctx, set).ReadAll(); err != nil {
						t.Fatal(err)
					}
				}
			}
			for _, col := range cols {
				for _, in := range valueInputs[col] {
					for _, simple := range []bool{false, true} {
						if simple && strings.ContainsRune(in, 0) {
							continue // a query text cannot hold NUL
						}
						mode := "parameter"
						if simple {
							mode = "literal"
						}
						d.check(fmt.Sprintf("%s %s %q", col, mode, in), col, d.store(true, col, in, simple), d.store(false, col, in, simple))
					}
				}
				if stored, ok := comparedWith[col]; ok {
					if a, b := d.store(true, col, stored, false), d.store(false, col, stored, false); a.code != "" || b.code != "" {
						t.Fatalf("storing %q in %s: proxy %v, server %v", stored, col, a, b)
					}
					for _, in := range valueInputs[col] {
						d.check(fmt.Sprintf("%s = %q (stored %q)", col, in, stored), col, d.compare(true, col, in), d.compare(false, col, in))
					}
				}
			}
			for _, col := range cols {
				for _, in := range binaryInputs[col] {
					d.check(fmt.Sprintf("%s binary %x", col, in), col, d.storeFormat(true, col, in, false, 1), d.storeFormat(false, col, in, false, 1))
				}
			}
			t.Logf("%d cases, %d refused %v, %d differences", d.checked, sum(d.refused), d.refused, len(d.diffs))
			for _, diff := range d.diffs {
				t.Error(diff)
			}
		})
	}
}

// binaryInputs are values in binary format, as drivers such as pgx send
// them, valid and not.
var binaryInputs = func() map[string][][]byte {
	be32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	be64 := func(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	be16 := func(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
	numeric := func(ndigits, weight, sign, dscale uint16, digits ...uint16) []byte {
		b := cat(be16(ndigits), be16(weight), be16(sign), be16(dscale))
		for _, d := range digits {
			b = append(b, be16(d)...)
		}
		return b
	}
	return map[string][][]byte{
		"v_text":    {[]byte("héllo"), []byte("a\x00b"), []byte("\xff")},
		"v_int4":    {be32(42), be32(0xffffffff), {0, 1}, {0, 0, 0, 0, 0}},
		"v_int8":    {be64(1 << 62), be32(1)},
		"v_numeric": {numeric(2, 0, 0, 2, 1, 5000), numeric(0, 0, 0xC000, 0), numeric(0, 0, 0xD000, 0), numeric(0, 0, 0xF000, 0), numeric(1, 0, 0x4000, 0, 7), numeric(2, 0, 0, 1, 1, 5555), numeric(1, 0, 0, 0, 10000), numeric(1, 0, 0x1234, 0, 1), numeric(1, 0, 0, 0x4000, 1), numeric(0, 0, 0, 5), numeric(2, 0xffff, 0, 8, 0, 1)},
		"v_bool":    {{1}, {0}, {2}, {}, {1, 1}},
		"v_date":    {be32(0), be32(0x7fffffff), be32(0x80000000), be32(uint32(0xfffffff0)), be32(0x7ffffff0)},
		"v_timestamptz": {be64(0), be64(0x7fffffffffffffff), be64(0x8000000000000000), be64(0x7ffffffffffffff0),
			be64(uint64(1) << 40)},
		"v_uuid":  {bytes.Repeat([]byte{0xab}, 16), bytes.Repeat([]byte{1}, 15)},
		"v_jsonb": {[]byte("\x01{\"b\":1,\"a\":2}"), []byte("\x02{}"), []byte("\x01{bad"), []byte("\x01\"\\u0000\"")},
		"v_bytea": {{0, 1, 2, 0xff}, {}},
	}
}()

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// TestValuesDeclaredTypes replays what drivers declare (pgjdbc's varchar,
// int8 and float8, psycopg's numeric, a timestamp for a timestamptz): the
// same value with the same declared type in the same context, through the
// proxy and directly. ParameterDescription must show the declared types
// (pgjdbc fails with "Can't change resolved type" otherwise), and
// conversions, rounding and errors must be the server's.
func TestValuesDeclaredTypes(t *testing.T) {
	p := startPHIProxy(t)
	ctx := context.Background()
	if _, err := phiDirect(t).Exec(ctx, valuesPlainSchema); err != nil {
		t.Fatal(err)
	}
	f8 := func(f float64) []byte { return binary.BigEndian.AppendUint64(nil, math.Float64bits(f)) }
	i8 := func(v int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(v)) }
	type tcase struct {
		col    string
		oid    uint32
		format int16
		value  []byte
	}
	cases := []tcase{
		{"v_text", pgtype.VarcharOID, 0, []byte("Alice")},
		{"v_text", pgtype.BPCharOID, 0, []byte("Alice  ")},
		{"v_text", pgtype.NameOID, 0, []byte(strings.Repeat("n", 70))},
		{"v_text", pgtype.Int4OID, 0, []byte("42")},
		{"v_text", pgtype.BoolOID, 0, []byte("yes")},
		{"v_text", pgtype.DateOID, 0, []byte("2020-01-02")},
		{"v_text", pgtype.TimestamptzOID, 0, []byte("2020-01-02 10:00+00")},
		{"v_text", pgtype.UUIDOID, 0, []byte("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11")},
		{"v_varchar", pgtype.BPCharOID, 0, []byte("x ")},
		{"v_int4", pgtype.Int8OID, 1, i8(42)},
		{"v_int4", pgtype.Int8OID, 1, i8(3000000000)},
		{"v_int4", pgtype.Float8OID, 1, f8(42.5)},
		{"v_int4", pgtype.Float8OID, 1, f8(43.5)},
		{"v_int4", pgtype.Float8OID, 1, f8(42)},
		{"v_int4", pgtype.Float8OID, 0, []byte(" -2.5 ")},
		{"v_int4", pgtype.Float8OID, 1, f8(math.NaN())},
		{"v_int4", pgtype.Float4OID, 0, []byte("42.5")},
		{"v_int4", pgtype.NumericOID, 0, []byte("42.5")},
		{"v_int4", pgtype.NumericOID, 0, []byte("-42.5")},
		{"v_int4", pgtype.NumericOID, 0, []byte("42.000")},
		{"v_int4", pgtype.NumericOID, 0, []byte("NaN")},
		{"v_int4", pgtype.Int2OID, 0, []byte("42")},
		{"v_int4", pgtype.TextOID, 0, []byte("42")},
		{"v_int8", pgtype.Float8OID, 1, f8(1 << 40)},
		{"v_int8", pgtype.Int4OID, 1, []byte{0, 0, 0, 7}},
		{"v_numeric", pgtype.Int8OID, 0, []byte("-7")},
		{"v_numeric", pgtype.Float8OID, 1, f8(1.0 / 3)},
		{"v_numeric", pgtype.Float8OID, 0, []byte("1e300")},
		{"v_date", pgtype.TimestampOID, 0, []byte("2020-01-02 00:00")},
		{"v_date", pgtype.TimestampOID, 0, []byte("2020-01-02 10:00")},
		{"v_date", pgtype.TimestamptzOID, 0, []byte("2020-01-02 03:00+00")},
		{"v_date", pgtype.TimestamptzOID, 0, []byte("2020-01-02 05:00+00")},
		{"v_date", pgtype.TextOID, 0, []byte("2020-01-02")},
		{"v_date", pgtype.VarcharOID, 0, []byte("2020-01-02")},
		{"v_timestamptz", pgtype.TimestampOID, 0, []byte("2020-07-01 10:00")},
		{"v_timestamptz", pgtype.TimestampOID, 0, []byte("2020-03-08 02:30")},
		{"v_timestamptz", pgtype.DateOID, 0, []byte("2020-01-02")},
		{"v_jsonb", pgtype.JSONOID, 0, []byte(`{"b":1,"a":[1.0]}`)},
		{"v_jsonb", pgtype.JSONOID, 0, []byte(`{"t":"\u0000"}`)},
		{"v_uuid", pgtype.TextOID, 0, []byte("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")},
		{"v_bool", pgtype.Int4OID, 0, []byte("1")},
		{"v_bytea", pgtype.TextOID, 0, []byte(`\x00`)},
	}
	for _, st := range valueSettings[:2] {
		t.Run(st.dateStyle+" "+st.timeZone, func(t *testing.T) {
			d := &differ{t: t, proxied: phiConn(t, p).PgConn(), plain: phiDirect(t).PgConn(), refused: map[string]int{}}
			for _, conn := range []*pgconn.PgConn{d.proxied, d.plain} {
				for _, set := range []string{"SET DateStyle = '" + st.dateStyle + "'", "SET TimeZone = '" + st.timeZone + "'"} {
					if _, err := conn.Exec(ctx, set).ReadAll(); err != nil {
						t.Fatal(err)
					}
				}
			}
			for _, c := range cases {
				what := fmt.Sprintf("%s declared %d format %d %q", c.col, c.oid, c.format, c.value)
				// Stored.
				run := func(proxied bool) outcome {
					conn, table := d.side(proxied)
					if err := conn.Exec(ctx, fmt.Sprintf("DELETE FROM %s WHERE id = %d", table, valueRowID)).Close(); err != nil {
						t.Fatal(err)
					}
					sql := fmt.Sprintf("INSERT INTO %s (id, %s) VALUES (%d, $1)", table, c.col, valueRowID)
					sd, err := conn.Prepare(ctx, "", sql, []uint32{c.oid})
					if err != nil {
						return outcome{code: sqlstate(err)}
					}
					if r := conn.ExecPrepared(ctx, "", [][]byte{c.value}, []int16{c.format}, nil).Read(); r.Err != nil {
						return outcome{code: sqlstate(r.Err)}
					}
					o := outcome{paramTypes: sd.ParamOIDs}
					for _, format := range []int16{0, 1} {
						r := conn.ExecParams(ctx, fmt.Sprintf("SELECT %s FROM %s WHERE id = %d", c.col, table, valueRowID), nil, nil, nil, []int16{format}).Read()
						if r.Err != nil {
							return outcome{code: sqlstate(r.Err)}
						}
						if format == 0 {
							o.text = string(r.Rows[0][0])
						} else {
							o.bin = string(r.Rows[0][0])
						}
					}
					return o
				}
				d.check("stored: "+what, c.col, run(true), run(false))
				// Compared, with the row from above (where it stored).
				cmpRun := func(proxied bool) outcome {
					conn, table := d.side(proxied)
					sql := fmt.Sprintf("SELECT count(*) FROM %s WHERE id = %d AND %s = $1", table, valueRowID, c.col)
					sd, err := conn.Prepare(ctx, "", sql, []uint32{c.oid})
					if err != nil {
						return outcome{code: sqlstate(err)}
					}
					r := conn.ExecPrepared(ctx, "", [][]byte{c.value}, []int16{c.format}, nil).Read()
					if r.Err != nil {
						return outcome{code: sqlstate(r.Err)}
					}
					var n int64
					fmt.Sscan(string(r.Rows[0][0]), &n)
					return outcome{rows: n, paramTypes: sd.ParamOIDs}
				}
				if _, indexed := comparedWith[c.col]; indexed {
					d.check("compared: "+what, c.col, cmpRun(true), cmpRun(false))
				}
			}
			t.Logf("%d cases, %d refused %v, %d differences", d.checked, sum(d.refused), d.refused, len(d.diffs))
			for _, diff := range d.diffs {
				t.Error(diff)
			}
		})
	}
}

// TestValuesLiteralTypes: a literal's own type (a number, a boolean, a
// cast) meets the column as on the server: 42.5 stored in an integer is
// rounded, compared it matches nothing; 1e2 stored in text is '100'; a
// text compared with a number is 42883.
func TestValuesLiteralTypes(t *testing.T) {
	p := startPHIProxy(t)
	ctx := context.Background()
	if _, err := phiDirect(t).Exec(ctx, valuesPlainSchema); err != nil {
		t.Fatal(err)
	}
	d := &differ{t: t, proxied: phiConn(t, p).PgConn(), plain: phiDirect(t).PgConn(), refused: map[string]int{}}
	for _, c := range []struct{ col, literal string }{
		{"v_int4", "42.5"}, {"v_int4", "-42.5"}, {"v_int4", "3000000000"}, {"v_int4", "42"}, {"v_int4", "TRUE"},
		{"v_text", "1e2"}, {"v_text", "0042"}, {"v_text", "42"}, {"v_text", "TRUE"}, {"v_text", "'x'::bpchar"},
		{"v_numeric", "1.50"}, {"v_numeric", "3000000000"}, {"v_numeric", "-0.0"},
		{"v_date", "'2020-01-02 10:00'::timestamp"}, {"v_date", "'2020-01-02'::date"}, {"v_date", "date '2020-01-02'"},
		{"v_date", "'2020-01-02'::text"}, {"v_timestamptz", "'2020-07-01 10:00'::timestamp"},
		{"v_jsonb", `'{"b":1,"a":2}'::json`}, {"v_bool", "TRUE"}, {"v_bool", "'yes'::bool"}, {"v_uuid", "'x'::text"},
	} {
		for _, stored := range []bool{true, false} {
			run := func(proxied bool) outcome {
				conn, table := d.side(proxied)
				if stored {
					if err := conn.Exec(ctx, fmt.Sprintf("DELETE FROM %s WHERE id = %d", table, valueRowID)).Close(); err != nil {
						t.Fatal(err)
					}
					if _, err := conn.Exec(ctx, fmt.Sprintf("INSERT INTO %s (id, %s) VALUES (%d, %s)", table, c.col, valueRowID, c.literal)).ReadAll(); err != nil {
						return outcome{code: sqlstate(err)}
					}
					r := conn.ExecParams(ctx, fmt.Sprintf("SELECT %s FROM %s WHERE id = %d", c.col, table, valueRowID), nil, nil, nil, nil).Read()
					if r.Err != nil {
						return outcome{code: sqlstate(r.Err)}
					}
					return outcome{text: string(r.Rows[0][0])}
				}
				if _, indexed := comparedWith[c.col]; !indexed {
					return outcome{}
				}
				res, err := conn.Exec(ctx, fmt.Sprintf("SELECT count(*) FROM %s WHERE id = %d AND %s = %s", table, valueRowID, c.col, c.literal)).ReadAll()
				if err != nil {
					return outcome{code: sqlstate(err)}
				}
				var n int64
				fmt.Sscan(string(res[0].Rows[0][0]), &n)
				return outcome{rows: n}
			}
			d.check(fmt.Sprintf("%s literal %s stored=%v", c.col, c.literal, stored), c.col, run(true), run(false))
		}
	}
	t.Logf("%d cases, %d refused %v, %d differences", d.checked, sum(d.refused), d.refused, len(d.diffs))
	for _, diff := range d.diffs {
		t.Error(diff)
	}
}

// TestValuesParameterDescription: the types a Describe of a statement
// reports for PHI parameters are those the server reports for the
// plaintext schema: declared, cast, or the column's.
func TestValuesParameterDescription(t *testing.T) {
	p := startPHIProxy(t)
	ctx := context.Background()
	if _, err := phiDirect(t).Exec(ctx, valuesPlainSchema); err != nil {
		t.Fatal(err)
	}
	proxied, plain := phiConn(t, p).PgConn(), phiDirect(t).PgConn()
	for _, c := range []struct {
		sql  string
		oids []uint32
	}{
		{"SELECT id FROM %s WHERE v_text = $1", nil},
		{"SELECT id FROM %s WHERE v_text = $1", []uint32{pgtype.VarcharOID}},
		{"SELECT id FROM %s WHERE v_text = $1", []uint32{pgtype.UnknownOID}},
		{"SELECT id FROM %s WHERE v_date = $1::timestamp", nil},
		{"SELECT id FROM %s WHERE v_int4 = ANY($1)", nil},
		{"SELECT id FROM %s WHERE v_int4 = ANY($1)", []uint32{pgtype.Int8ArrayOID}},
		{"SELECT id FROM %s WHERE v_uuid = $1::uuid", nil},
		{"INSERT INTO %s (id, v_int4, v_text) VALUES ($1, $2, $3)", []uint32{0, pgtype.Float8OID, pgtype.VarcharOID}},
		{"INSERT INTO %s (id, v_jsonb) VALUES ($1, $2::jsonb)", []uint32{0, pgtype.VarcharOID}},
		{"UPDATE %s SET v_date = $1 WHERE v_date = $2", []uint32{pgtype.TimestampOID, pgtype.TimestamptzOID}},
	} {
		run := func(conn *pgconn.PgConn, table string) outcome {
			sd, err := conn.Prepare(ctx, "", fmt.Sprintf(c.sql, table), c.oids)
			if err != nil {
				return outcome{code: sqlstate(err)}
			}
			return outcome{paramTypes: sd.ParamOIDs}
		}
		a, b := run(proxied, "phi_types"), run(plain, "values_plain")
		if a.code != b.code || fmt.Sprint(a.paramTypes) != fmt.Sprint(b.paramTypes) {
			t.Errorf("%s %v: proxy %v, server %v", c.sql, c.oids, a, b)
		}
	}
}

// TestValuesPgjdbcBatch replays pgjdbc's executeBatch of issue 10: Parse
// with varchar declared for setString (and int4 for setInt), a Describe of
// the statement before the batch, then Bind/Execute pairs and one Sync.
// Through the proxy the client must see exactly what the server sends for
// the plaintext table: ParameterDescription [23 1043 23], not the column
// type that made pgjdbc fail with "Can't change resolved type".
func TestValuesPgjdbcBatch(t *testing.T) {
	p := startPHIProxy(t)
	ctx := context.Background()
	if _, err := phiDirect(t).Exec(ctx, valuesPlainSchema); err != nil {
		t.Fatal(err)
	}
	run := func(hc *pgconn.HijackedConn, table string) []string {
		out := exchange(t, hc, &pgproto3.Query{String: fmt.Sprintf("DELETE FROM %s WHERE id BETWEEN %d AND %d", table, valueRowID, valueRowID+2)})
		out = append(out, exchange(t, hc,
			&pgproto3.Parse{Name: "S_1", Query: fmt.Sprintf("INSERT INTO %s (id, v_text, v_int4) VALUES ($1, $2, $3)", table),
				ParameterOIDs: []uint32{pgtype.Int4OID, pgtype.VarcharOID, pgtype.Int4OID}},
			&pgproto3.Describe{ObjectType: 'S', Name: "S_1"}, &pgproto3.Sync{})...)
		var batch []pgproto3.FrontendMessage
		for i, v := range []string{"Ann", "Bob  ", "Émile"} {
			batch = append(batch, &pgproto3.Bind{PreparedStatement: "S_1", ParameterFormatCodes: []int16{1, 0, 1},
				Parameters: [][]byte{binary.BigEndian.AppendUint32(nil, uint32(valueRowID+i)), []byte(v), binary.BigEndian.AppendUint32(nil, uint32(40+i))}},
				&pgproto3.Execute{})
		}
		out = append(out, exchange(t, hc, append(batch, &pgproto3.Sync{})...)...)
		return append(out, exchange(t, hc, &pgproto3.Query{String: fmt.Sprintf(
			"SELECT v_text, v_int4 FROM %s WHERE id BETWEEN %d AND %d ORDER BY id", table, valueRowID, valueRowID+2)})...)
	}
	proxied := run(rawSession(t, p.dsn(pgcluster.ScramUser, phiDatabase)), "phi_types")
	direct := run(rawSession(t, directDSN(pgcluster.ScramUser, phiDatabase)), "values_plain")
	// RowDescription names the table's OID and the storage type's size;
	// compare what pgjdbc reads.
	norm := func(msgs []string) []string {
		out := make([]string, len(msgs))
		for i, m := range msgs {
			if strings.Contains(m, `"Type":"RowDescription"`) {
				m = "RowDescription"
			}
			out[i] = m
		}
		return out
	}
	if d := cmp.Diff(norm(direct), norm(proxied)); d != "" {
		t.Errorf("pgjdbc batch (-direct +proxy):\n%s", d)
	}
	if !slices.ContainsFunc(proxied, func(m string) bool { return strings.Contains(m, `"ParameterOIDs":[23,1043,23]`) }) {
		t.Errorf("no ParameterDescription [23 1043 23] through the proxy: %v", proxied)
	}
}

// arrayCase is an array parameter of a declared type (0: none).
type arrayCase struct {
	oid   uint32
	value string
}

// TestValuesAnyArray: `col = ANY($1)` reads each element as the server
// does (array_in's quoting, NULL, spaces; array_recv in binary), also for
// an array type the client declares.
func TestValuesAnyArray(t *testing.T) {
	p := startPHIProxy(t)
	ctx := context.Background()
	if _, err := phiDirect(t).Exec(ctx, valuesPlainSchema); err != nil {
		t.Fatal(err)
	}
	d := &differ{t: t, proxied: phiConn(t, p).PgConn(), plain: phiDirect(t).PgConn(), refused: map[string]int{}}
	for col, stored := range comparedWith {
		if a, b := d.store(true, col, stored, false), d.store(false, col, stored, false); a.code != "" || b.code != "" {
			t.Fatalf("storing %q in %s: proxy %v, server %v", stored, col, a, b)
		}
		arrays := []arrayCase{
			{0, "{}"}, {0, "{NULL}"}, {0, `{"` + stored + `"}`}, {0, `{ "x" , "` + stored + `" }`}, {0, "{x,y"}, {0, "{{a},{b,c}}"},
			{0, `{"a"b}`}, {0, "[1:1]={x}"}, {0, `{null, NULL ,"NULL"}`}, {0, "{a b , c}"}, {0, `{a\,b}`},
			{0, "{{x,y},{z,w}}"}, {0, `{{"x"},{"` + stored + `"}}`}, {0, `{{{"` + stored + `", x}}}`},
		}
		switch col {
		case "v_int4":
			arrays = append(arrays, arrayCase{pgtype.Int8ArrayOID, "{3000000000, 42}"}, arrayCase{pgtype.NumericArrayOID, "{42.0, 42.5}"}, arrayCase{pgtype.TextArrayOID, "{42}"})
		case "v_date":
			arrays = append(arrays, arrayCase{0, "{05/12/1980, 01/02/1990, 1990-01-02}"}, arrayCase{pgtype.TimestampArrayOID, "{1990-01-02 00:00, 1990-01-02 10:00}"})
		case "v_text":
			arrays = append(arrays, arrayCase{pgtype.VarcharArrayOID, `{"Alice "}`}, arrayCase{pgtype.BPCharArrayOID, `{"Alice "}`})
		}
		for _, a := range arrays {
			run := func(proxied bool) outcome {
				conn, table := d.side(proxied)
				sql := fmt.Sprintf("SELECT count(*) FROM %s WHERE id = %d AND %s = ANY($1)", table, valueRowID, col)
				var oids []uint32
				if a.oid != 0 {
					oids = []uint32{a.oid}
				}
				r := conn.ExecParams(ctx, sql, [][]byte{[]byte(a.value)}, oids, []int16{0}, nil).Read()
				if r.Err != nil {
					return outcome{code: sqlstate(r.Err)}
				}
				var n int64
				fmt.Sscan(string(r.Rows[0][0]), &n)
				return outcome{rows: n}
			}
			d.check(fmt.Sprintf("%s = ANY(%q::%d)", col, a.value, a.oid), col, run(true), run(false))
		}
	}
	t.Logf("%d cases, %d refused %v, %d differences", d.checked, sum(d.refused), d.refused, len(d.diffs))
	for _, diff := range d.diffs {
		t.Error(diff)
	}
}
