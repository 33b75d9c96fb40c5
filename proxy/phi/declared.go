package phi

import (
	"errors"
	"strconv"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/rewrite"
)

// This file is what PostgreSQL does with a PHI value whose type is not the
// column's logical type: a parameter type the client declared in Parse
// (pgjdbc declares varchar for setString, int8 for setLong, float8 for
// setDouble), a cast ($1::timestamp, '2024-01-02'::date), or a literal's
// own type (42 is an integer, 4.5 a numeric). Where PostgreSQL would accept
// the value for the column, in a comparison (col = $1, IN, = ANY) or as a
// stored value (INSERT, UPDATE SET), the proxy converts it exactly as the
// server's operators and assignment casts would; where the server would
// refuse the statement, the proxy answers with its error (42883 for a
// comparison, 42804 for a stored value); where the proxy cannot convert
// exactly, it refuses with 0A000.
//
// A comparison with a value that no stored value can equal (3000000000
// against an integer column, 4.5 against an integer, a timestamp with a
// time of day against a date) matches nothing, as on the server: the
// proxy sends noMatchIndex, which no blind index equals.
//
// This file decides which conversions apply; declared_cast.go performs
// them.

// noMatchIndex is the index text sent for a compared value that cannot
// equal any value of the column. Blind indexes are base64 text, which
// never contains '!'.
const noMatchIndex = "!"

// pgTypeNames are PostgreSQL's names (format_type_be) of the types whose
// acceptance for PHI columns is known (checked against PostgreSQL 15).
var pgTypeNames = map[uint32]string{
	pgtype.TextOID: "text", pgtype.VarcharOID: "character varying", pgtype.BPCharOID: "character",
	pgtype.NameOID: "name", pgtype.QCharOID: `"char"`, pgtype.Int2OID: "smallint", pgtype.Int4OID: "integer",
	pgtype.Int8OID: "bigint", pgtype.NumericOID: "numeric", pgtype.Float4OID: "real",
	pgtype.Float8OID: "double precision", pgtype.OIDOID: "oid", 790: "money", pgtype.BoolOID: "boolean",
	pgtype.DateOID: "date", pgtype.TimestampOID: "timestamp without time zone",
	pgtype.TimestamptzOID: "timestamp with time zone", pgtype.TimeOID: "time without time zone",
	1266: "time with time zone", pgtype.IntervalOID: "interval", pgtype.UUIDOID: "uuid",
	pgtype.JSONOID: "json", pgtype.JSONBOID: "jsonb", pgtype.ByteaOID: "bytea", pgtype.XMLOID: "xml",
	pgtype.BitOID: "bit", pgtype.InetOID: "inet",
}

// pgArrayElems maps the array types of pgTypeNames to their elements.
var pgArrayElems = map[uint32]uint32{
	pgtype.TextArrayOID: pgtype.TextOID, pgtype.VarcharArrayOID: pgtype.VarcharOID,
	pgtype.BPCharArrayOID: pgtype.BPCharOID, pgtype.NameArrayOID: pgtype.NameOID, 1002: pgtype.QCharOID,
	pgtype.Int2ArrayOID: pgtype.Int2OID, pgtype.Int4ArrayOID: pgtype.Int4OID, pgtype.Int8ArrayOID: pgtype.Int8OID,
	pgtype.NumericArrayOID: pgtype.NumericOID, pgtype.Float4ArrayOID: pgtype.Float4OID,
	pgtype.Float8ArrayOID: pgtype.Float8OID, 1028: pgtype.OIDOID, 791: 790, pgtype.BoolArrayOID: pgtype.BoolOID,
	pgtype.DateArrayOID: pgtype.DateOID, pgtype.TimestampArrayOID: pgtype.TimestampOID,
	pgtype.TimestamptzArrayOID: pgtype.TimestamptzOID, pgtype.TimeArrayOID: pgtype.TimeOID, 1270: 1266,
	pgtype.IntervalArrayOID: pgtype.IntervalOID, pgtype.UUIDArrayOID: pgtype.UUIDOID,
	pgtype.JSONArrayOID: pgtype.JSONOID, pgtype.JSONBArrayOID: pgtype.JSONBOID,
	pgtype.ByteaArrayOID: pgtype.ByteaOID, pgtype.XMLArrayOID: pgtype.XMLOID, pgtype.BitArrayOID: pgtype.BitOID,
	pgtype.InetArrayOID: pgtype.InetOID,
}

// castTypeOIDs are the OIDs of the type names rewrite reports for casts.
var castTypeOIDs = map[string]uint32{
	"text": pgtype.TextOID, "varchar": pgtype.VarcharOID, "bpchar": pgtype.BPCharOID, "name": pgtype.NameOID,
	"char": pgtype.QCharOID, "int2": pgtype.Int2OID, "int4": pgtype.Int4OID, "int8": pgtype.Int8OID,
	"numeric": pgtype.NumericOID, "float4": pgtype.Float4OID, "float8": pgtype.Float8OID, "oid": pgtype.OIDOID,
	"money": 790, "bool": pgtype.BoolOID, "date": pgtype.DateOID, "timestamp": pgtype.TimestampOID,
	"timestamptz": pgtype.TimestamptzOID, "time": pgtype.TimeOID, "timetz": 1266, "interval": pgtype.IntervalOID,
	"uuid": pgtype.UUIDOID, "json": pgtype.JSONOID, "jsonb": pgtype.JSONBOID, "bytea": pgtype.ByteaOID,
	"xml": pgtype.XMLOID, "bit": pgtype.BitOID, "inet": pgtype.InetOID, "unknown": pgtype.UnknownOID,
}

// castOID is the OID of a cast type name (arrays as "text[]"); 0 when the
// proxy does not know it.
func castOID(name string) uint32 {
	if len(name) > 2 && name[len(name)-2:] == "[]" {
		elem, ok := castTypeOIDs[name[:len(name)-2]]
		if !ok {
			return 0
		}
		for arr, e := range pgArrayElems {
			if e == elem {
				return arr
			}
		}
		return 0
	}
	return castTypeOIDs[name]
}

// conversion is how a value of one type becomes a value of a column's
// logical type in one context.
type conversion uint8

const (
	convRefusedPG    conversion = iota // PostgreSQL refuses the statement
	convRefusedProxy                   // PostgreSQL accepts it, the proxy cannot be exact
	convSame                           // read as the logical type
	convCast                           // read as its own type, then cast
)

func isTextType(oid uint32) bool {
	return oid == pgtype.TextOID || oid == pgtype.VarcharOID
}

// conversionOf says how a value of type src (never 0 or unknown) meets a
// column of type t: in a comparison, or stored (assign). It follows what
// PostgreSQL 15 accepts for `col = $1` and `INSERT ... VALUES ($1)`.
func conversionOf(t policy.LogicalType, src uint32, assign bool) conversion {
	if src == typeOID(t, false) {
		return convSame
	}
	switch t {
	case policy.TypeText, policy.TypeVarchar:
		switch src {
		case pgtype.TextOID, pgtype.VarcharOID:
			return convSame
		case pgtype.NameOID:
			return convCast
		case pgtype.BPCharOID:
			// varchar = bpchar compares as bpchar, blind to trailing
			// spaces: several stored values would match.
			if t == policy.TypeVarchar && !assign {
				return convRefusedProxy
			}
			return convCast
		case pgtype.QCharOID:
			return convRefusedProxy
		}
		if !assign {
			if _, known := pgTypeNames[src]; known {
				return convRefusedPG
			}
			return convRefusedProxy
		}
		// Stored: any type, by its output function (an assignment cast
		// to a string type).
		switch src {
		case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.NumericOID, pgtype.BoolOID,
			pgtype.UUIDOID, pgtype.JSONOID, pgtype.JSONBOID, pgtype.DateOID, pgtype.TimestampOID,
			pgtype.TimestamptzOID:
			return convCast
		}
		return convRefusedProxy
	case policy.TypeInt4, policy.TypeInt8:
		switch src {
		case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.NumericOID, pgtype.Float4OID, pgtype.Float8OID:
			return convCast
		case pgtype.OIDOID:
			return convRefusedProxy
		}
	case policy.TypeNumeric:
		switch src {
		case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID:
			return convCast
		case pgtype.Float4OID, pgtype.Float8OID:
			// numeric = float8 compares as float8: many numerics would
			// match one float.
			if !assign {
				return convRefusedProxy
			}
			return convCast
		case 790: // money
			if assign {
				return convRefusedProxy
			}
		}
	case policy.TypeDate:
		switch src {
		case pgtype.TimestampOID, pgtype.TimestamptzOID:
			return convCast
		}
	case policy.TypeTimestamptz:
		switch src {
		case pgtype.TimestampOID, pgtype.DateOID:
			return convCast
		}
	case policy.TypeJSONB:
		if src == pgtype.JSONOID && assign {
			return convCast
		}
	}
	if _, known := pgTypeNames[src]; known {
		return convRefusedPG
	}
	return convRefusedProxy
}

// typeMismatch is PostgreSQL's error for a value of type src that it
// does not accept for a column of type t, or the proxy's refusal.
func typeMismatch(conv conversion, col *policy.Column, src uint32, assign bool) error {
	srcName, ok := pgTypeNames[src]
	if !ok {
		srcName = "type " + strconv.FormatUint(uint64(src), 10)
	}
	colName := pgTypeNames[typeOID(col.Type, false)]
	if conv == convRefusedProxy {
		return &TypeError{Code: pgerrcode.FeatureNotSupported,
			Msg: "a value of type " + srcName + " for PHI column " + col.QualifiedName() + " of type " + colName + " is refused: the proxy cannot convert it exactly as PostgreSQL would",
			Hnt: "Send the value as " + colName + " (or undeclared), or cast it in the application."}
	}
	if assign {
		return &TypeError{Code: pgerrcode.DatatypeMismatch,
			Msg: "column \"" + col.Name + "\" is of type " + colName + " but expression is of type " + srcName,
			Hnt: "You will need to rewrite or cast the expression."}
	}
	return &TypeError{Code: pgerrcode.UndefinedFunction,
		Msg: "operator does not exist: " + colName + " = " + srcName,
		Hnt: "No operator matches the given name and argument types. You might need to add explicit type casts."}
}

// valueType is the type of a PHI parameter as PostgreSQL resolves it: the
// type the client declared (0 and unknown: none), else its cast's, else
// the column's (0 here). For `= ANY($n)` it is an array type.
func valueType(declared uint32, cast string) (uint32, error) {
	if declared == pgtype.UnknownOID {
		declared = 0
	}
	if cast == "" {
		return declared, nil
	}
	c := castOID(cast)
	if cast == rewrite.TypeUnknown || c == 0 {
		return 0, &TypeError{Code: pgerrcode.FeatureNotSupported,
			Msg: "a cast on a PHI value to a type with a modifier, an array of several dimensions or a type the proxy does not know is refused",
			Hnt: "Cast to the column's type, or leave the value uncast."}
	}
	switch {
	case declared == 0, declared == c:
		return c, nil
	case (isTextType(declared)) && !isArrayOID(c):
		// pgjdbc's setString with ?::jsonb: the cast reads the text as
		// the cast type's input.
		return c, nil
	}
	return 0, &TypeError{Code: pgerrcode.FeatureNotSupported,
		Msg: "a PHI parameter declared as one type and cast to another is refused",
		Hnt: "Declare the parameter with the type of its cast, or leave it undeclared."}
}

func isArrayOID(oid uint32) bool {
	_, ok := pgArrayElems[oid]
	return ok
}

// checkParam checks, at Parse, that a PHI parameter's type is one
// PostgreSQL accepts for its column and the proxy converts exactly.
func checkParam(p *rewrite.Param, declared uint32) error {
	src, err := valueType(declared, p.Type)
	if err != nil || src == 0 {
		return err
	}
	if p.Array {
		elem, ok := pgArrayElems[src]
		if !ok {
			return &TypeError{Code: pgerrcode.FeatureNotSupported,
				Msg: "= ANY($n) on PHI column " + p.Column.QualifiedName() + " needs an array parameter of a type the proxy knows"}
		}
		src = elem
	}
	if conv := conversionOf(p.Column.Type, src, p.Assign); conv <= convRefusedProxy {
		return typeMismatch(conv, p.Column, src, p.Assign)
	}
	return nil
}

// literalType is the type of a literal (0: unknown, read as the column's
// type) and the OID a number literal has by its text, as PostgreSQL's
// make_const types it.
func literalType(l *rewrite.Literal) (uint32, error) {
	switch l.Type {
	case "":
		return 0, nil
	case rewrite.LiteralBool:
		return pgtype.BoolOID, nil
	case rewrite.LiteralNumber:
		return numberLiteralType(l.Value), nil
	}
	return valueType(0, l.Type)
}

// numberLiteralType: an integer that fits int4 is int4, int8 next, any
// other number numeric.
func numberLiteralType(s string) uint32 {
	integer := len(s) > 0
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) && !(i == 0 && (s[i] == '-' || s[i] == '+')) {
			integer = false
		}
	}
	if integer {
		v, err := strconv.ParseInt(s, 10, 64)
		switch {
		case err != nil:
			return pgtype.NumericOID
		case v == int64(int32(v)):
			return pgtype.Int4OID
		}
		return pgtype.Int8OID
	}
	return pgtype.NumericOID
}

// convert appends the canonical plaintext, for a column of type t, of src
// (a value of type oid in the given format; 0: the column's own type),
// met in a comparison or stored. match is false for a compared value that
// no stored value can equal.
func (c *valueCodec) convert(dst []byte, col *policy.Column, oid uint32, assign bool, format int16, src []byte) ([]byte, bool, error) {
	t := col.Type
	if oid == pgtype.UnknownOID {
		oid = 0
	}
	conv := convSame
	if oid != 0 {
		conv = conversionOf(t, oid, assign)
	}
	switch conv {
	case convSame:
		out, err := c.canonical(dst, t, format, src)
		return out, err == nil, err
	case convCast:
		v, err := c.read(oid, format, src, t)
		if err != nil {
			return dst, false, err
		}
		out, match, err := c.castTo(dst, t, &v, assign)
		var ve *ValueError
		if errors.As(err, &ve) && ve.SQLState() != pgerrcode.FeatureNotSupported {
			converted := *ve // a copy: errors may be shared
			converted.Converted = true
			err = &converted
		}
		return out, match, err
	}
	return dst, false, typeMismatch(conv, col, oid, assign)
}

// checkParams checks, at Parse, every PHI parameter of plan against the
// types the client declared: PostgreSQL's error for a type it would not
// accept, a refusal for one the proxy cannot convert exactly, and a
// refusal when the uses of one parameter disagree on its type.
func checkParams(plan *rewrite.Plan, declared []uint32) error {
	types := map[int]string{}
	for i := range plan.Params {
		p := &plan.Params[i]
		if p.Action == rewrite.ActionNone {
			continue
		}
		if t, ok := types[p.Source]; ok && t != p.Type {
			return locate(&TypeError{Code: pgerrcode.FeatureNotSupported,
				Msg: "a PHI parameter cast to different types in different places is refused",
				Hnt: "Bind the value once per type."}, "parameter $%d for %s", p.Source+1, p.Column.QualifiedName())
		}
		types[p.Source] = p.Type
		var d uint32
		if p.Source < len(declared) {
			d = declared[p.Source]
		}
		if err := checkParam(p, d); err != nil {
			return locate(err, "parameter $%d for %s", p.Source+1, p.Column.QualifiedName())
		}
	}
	return nil
}
