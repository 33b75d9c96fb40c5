package differential

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// side is one connection the tester compares: through the proxy to enc,
// or directly to a plaintext database.
type side struct {
	name string
	dsn  string
	conn *pgconn.PgConn
	m    *pgtype.Map // renders binary results
}

// statementTimeout bounds one round trip; a hang is reported as a
// difference, never waited out.
const statementTimeout = 30 * time.Second

// sessionParams are the settings of every session, the same on both
// sides: values print the same way whatever the server's defaults.
var sessionParams = map[string]string{"TimeZone": "UTC", "DateStyle": "ISO, MDY", "IntervalStyle": "postgres"}

// connect opens (or reopens) the side's connection.
func (sd *side) connect(ctx context.Context) error {
	if sd.conn != nil {
		sd.conn.Close(ctx)
	}
	cfg, err := pgconn.ParseConfig(sd.dsn)
	if err != nil {
		return fmt.Errorf("%s: %w", sd.name, err)
	}
	for k, v := range sessionParams {
		cfg.RuntimeParams[k] = v
	}
	ctx, cancel := context.WithTimeout(ctx, statementTimeout)
	defer cancel()
	if sd.conn, err = pgconn.ConnectConfig(ctx, cfg); err != nil {
		return fmt.Errorf("connect %s: %w", sd.name, err)
	}
	if sd.m == nil {
		sd.m = pgtype.NewMap()
	}
	return nil
}

// field is what the tester compares of one RowDescription field.
type field struct {
	name   string
	oid    uint32
	format int16
}

// result is one side's answer to a statement.
type result struct {
	fields []field
	rows   [][]string // each value rendered as text; nullText for NULL
	tag    string
	code   string // SQLSTATE, "" on success, "client" for a client-side failure
	msg    string
}

// nullText renders SQL NULL; no text value holds a NUL byte.
const nullText = "\x00NULL"

func (r result) failed() bool { return r.code != "" }

// exec runs st on the side.
func (sd *side) exec(ctx context.Context, st *statement) result {
	ctx, cancel := context.WithTimeout(ctx, statementTimeout)
	defer cancel()
	if !st.extended {
		return sd.simple(ctx, st.sql)
	}
	vals := make([][]byte, len(st.params))
	oids := make([]uint32, len(st.params))
	formats := make([]int16, len(st.params))
	for i, p := range st.params {
		vals[i], oids[i] = p.val, p.oid
		if p.binary {
			formats[i] = pgtype.BinaryFormatCode
		}
	}
	var resultFormats []int16
	if st.binaryResults {
		resultFormats = []int16{pgtype.BinaryFormatCode}
	}
	rr := sd.conn.ExecParams(ctx, st.sql, vals, oids, formats, resultFormats)
	return sd.read(rr)
}

// simple runs sql as a simple Query. A text of several statements (never
// generated) would have its results merged.
func (sd *side) simple(ctx context.Context, sql string) result {
	mrr := sd.conn.Exec(ctx, sql)
	var res result
	for mrr.NextResult() {
		r := sd.read(mrr.ResultReader())
		res.fields, res.rows = r.fields, append(res.rows, r.rows...)
		res.tag = strings.TrimPrefix(res.tag+";"+r.tag, ";")
		if r.failed() {
			res.code, res.msg = r.code, r.msg
		}
	}
	if err := mrr.Close(); err != nil && !res.failed() {
		res.code, res.msg = errCode(err)
	}
	return res
}

// read collects one result, rendering every value as text.
func (sd *side) read(rr *pgconn.ResultReader) result {
	var res result
	for rr.NextRow() {
		fds := rr.FieldDescriptions()
		row := make([]string, len(fds))
		for i, v := range rr.Values() {
			row[i] = sd.render(fds[i], v)
		}
		res.rows = append(res.rows, row)
	}
	for _, fd := range rr.FieldDescriptions() {
		res.fields = append(res.fields, field{name: fd.Name, oid: fd.DataTypeOID, format: fd.Format})
	}
	tag, err := rr.Close()
	res.tag = tag.String()
	if err != nil {
		res.code, res.msg = errCode(err)
	}
	return res
}

// errCode returns the SQLSTATE and message of err, or "client" for a
// failure that is not the server's.
func errCode(err error) (code, msg string) {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code, pgErr.Message
	}
	return "client", err.Error()
}

// render turns one value into text, decoding a binary value with the type
// of its column. Text values are kept byte for byte: they are what the
// client sees.
func (sd *side) render(fd pgconn.FieldDescription, v []byte) string {
	if v == nil {
		return nullText
	}
	if fd.Format == pgtype.TextFormatCode {
		return string(v)
	}
	switch fd.DataTypeOID {
	case pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID, pgtype.NameOID, pgtype.JSONOID, 705: // 705: unknown
		return string(v)
	case pgtype.JSONBOID:
		if len(v) > 0 && v[0] == 1 {
			return string(v[1:])
		}
	case pgtype.ByteaOID:
		return `\x` + hex.EncodeToString(v)
	case pgtype.NumericOID:
		if s, ok := numericText(v); ok {
			return s
		}
	case pgtype.DateOID:
		var d pgtype.Date
		if err := sd.m.Scan(fd.DataTypeOID, pgtype.BinaryFormatCode, v, &d); err == nil {
			if b, err := sd.m.Encode(fd.DataTypeOID, pgtype.TextFormatCode, d, nil); err == nil {
				return string(b)
			}
		}
	case pgtype.TimestamptzOID:
		var ts pgtype.Timestamptz
		if err := sd.m.Scan(fd.DataTypeOID, pgtype.BinaryFormatCode, v, &ts); err == nil {
			if b, err := sd.m.Encode(fd.DataTypeOID, pgtype.TextFormatCode, ts, nil); err == nil {
				return string(b)
			}
		}
	default:
		if t, ok := sd.m.TypeForOID(fd.DataTypeOID); ok {
			if val, err := t.Codec.DecodeValue(sd.m, fd.DataTypeOID, pgtype.BinaryFormatCode, v); err == nil {
				if b, err := sd.m.Encode(fd.DataTypeOID, pgtype.TextFormatCode, val, nil); err == nil && b != nil {
					return string(b)
				}
			}
		}
	}
	// Not decodable as its column's type: the bytes themselves.
	return fmt.Sprintf("binary(%d):%x", fd.DataTypeOID, v)
}

// numericText renders a numeric in binary format as PostgreSQL's
// numeric_out does, keeping its display scale (pgtype drops the scale of
// a zero: 0.0 would read as 0). The format: ndigits, weight, sign, dscale
// (uint16 each), then ndigits base-10000 digits.
func numericText(b []byte) (string, bool) {
	if len(b) < 8 {
		return "", false
	}
	u16 := func(i int) int { return int(binary.BigEndian.Uint16(b[2*i:])) }
	ndigits, weight, sign, dscale := u16(0), int(int16(u16(1))), u16(2), u16(3)
	if len(b) != 8+2*ndigits {
		return "", false
	}
	switch sign {
	case 0xC000:
		return "NaN", true
	case 0xD000:
		return "Infinity", true
	case 0xF000:
		return "-Infinity", true
	}
	digit := func(i int) int {
		if i < 0 || i >= ndigits {
			return 0
		}
		return u16(4 + i)
	}
	var sb strings.Builder
	if sign == 0x4000 {
		sb.WriteByte('-')
	}
	if weight < 0 {
		sb.WriteByte('0')
	}
	for i := 0; i <= weight; i++ {
		if i == 0 {
			fmt.Fprintf(&sb, "%d", digit(i))
		} else {
			fmt.Fprintf(&sb, "%04d", digit(i))
		}
	}
	if dscale > 0 {
		var frac strings.Builder
		for i := weight + 1; frac.Len() < dscale; i++ {
			fmt.Fprintf(&frac, "%04d", digit(i))
		}
		sb.WriteByte('.')
		sb.WriteString(frac.String()[:dscale])
	}
	return sb.String(), true
}
