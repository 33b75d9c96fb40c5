package rewrite

import (
	"strings"

	"github.com/novamind/phiproxy/policy"
	pg "github.com/pganalyze/pg_query_go/v6"
)

type valueKind uint8

const (
	vParam valueKind = iota + 1
	vLiteral
	vNull
	vDefault
	vColumn // a reference to a PHI column (UPDATE SET a = b, EXCLUDED.a)
)

// val is a value written to or compared with a PHI column.
type val struct {
	kind       valueKind
	param      *pg.ParamRef
	lit        string // the literal's value, unquoted
	start, end int    // byte range of the whole value, casts included
	cast       bool   // the range holds a cast to drop
	typ        string // Param.Type or Literal.Type
	loc        int32
	constLoc   int // the byte offset of a literal's constant (Literal.Loc)
}

// valueOf classifies n, which sits where a PHI value goes. Only parameters,
// literals (typed or not), NULL and DEFAULT are accepted: anything else
// would make the server compute on, or receive, plaintext.
func (a *analyzer) valueOf(n *pg.Node, col *policy.Column, what string) (val, error) {
	loc := nodeLocation(n)
	bad := func() (val, error) {
		return val{}, a.errorf(col, loc, "%s: only a parameter, a literal, NULL or DEFAULT can be used with PHI column %s", what, col.QualifiedName()).hint(supported)
	}
	ts, err := a.tokens()
	if err != nil {
		return val{}, err
	}
	inner, casts := n, 0
	var castType *pg.TypeName
	for inner.GetTypeCast() != nil {
		castType = inner.GetTypeCast().TypeName
		inner, casts = inner.GetTypeCast().Arg, casts+1
	}
	v := val{loc: loc, cast: casts > 0}
	switch {
	case casts == 1:
		v.typ = castTypeName(castType)
	case casts > 1:
		v.typ = TypeUnknown
	}
	switch x := inner.Node.(type) {
	case *pg.Node_ParamRef:
		v.kind, v.param = vParam, x.ParamRef
	case *pg.Node_AConst:
		c := x.AConst
		v.constLoc = int(c.Location)
		switch {
		case c.Isnull:
			v.kind = vNull
		case c.GetSval() != nil:
			v.kind, v.lit = vLiteral, c.GetSval().Sval
		case c.GetBoolval() != nil:
			v.kind, v.lit = vLiteral, "false"
			if c.GetBoolval().Boolval {
				v.lit = "true"
			}
			v.typ = literalType(LiteralBool, casts)
		case c.GetIval() != nil, c.GetFval() != nil:
			v.kind = vLiteral // text taken from the source below
			v.typ = literalType(LiteralNumber, casts)
		default:
			return bad()
		}
	case *pg.Node_SetToDefault:
		if casts > 0 {
			return bad()
		}
		v.kind = vDefault
	default:
		return bad()
	}
	var ok bool
	v.start, v.end, ok = a.span(ts, n)
	if !ok {
		return val{}, a.errorf(col, loc, "%s: cannot locate the value for PHI column %s", what, col.QualifiedName())
	}
	if v.kind == vLiteral && (inner.GetAConst().GetIval() != nil || inner.GetAConst().GetFval() != nil) {
		s, e, _ := a.span(ts, inner)
		v.lit = strings.Join(strings.Fields(a.sql[s:e]), "")
	}
	return v, nil
}

// literalType is the Type of a number or boolean constant: a cast on one
// is a conversion the proxy does not interpret.
func literalType(kind string, casts int) string {
	if casts > 0 {
		return TypeUnknown
	}
	return kind
}

// castTypeName is the name a cast gives a value's type, when the proxy
// can take it at face value: a built-in type (unqualified or in
// pg_catalog) without type modifier, "[]" appended for an array.
func castTypeName(tn *pg.TypeName) string {
	if tn == nil || len(tn.Typmods) > 0 || len(tn.ArrayBounds) > 1 || tn.PctType || tn.Setof {
		return TypeUnknown
	}
	suffix := ""
	if len(tn.ArrayBounds) == 1 {
		if b := tn.ArrayBounds[0].GetInteger(); b == nil || b.Ival != -1 {
			return TypeUnknown
		}
		suffix = "[]"
	}
	var names []string
	for _, n := range tn.Names {
		s := n.GetString_()
		if s == nil {
			return TypeUnknown
		}
		names = append(names, s.Sval)
	}
	switch {
	case len(names) == 1:
		return names[0] + suffix
	case len(names) == 2 && names[0] == "pg_catalog":
		return names[1] + suffix
	}
	return TypeUnknown
}

// bind applies v in role r at its place: a parameter is recorded (and its
// cast dropped), a literal becomes a slot, a typed NULL an untyped one.
// at says where a stored value goes (zero for a compared one).
func (a *analyzer) bind(v val, r role, at assignAt) {
	a.noteUse(r.col, r.action)
	r.typ = v.typ
	if r.action == ActionEncrypt {
		r.assign = true
	}
	switch v.kind {
	case vParam:
		a.useParam(v.param, r, v.start, v.end, v.cast, at)
	case vLiteral:
		if r.array {
			// A literal slot holds one value; an array literal would be
			// indexed whole. Refused in value() before it gets here.
			return
		}
		a.addEdit(v.start, v.end, piece{lit: &Literal{Value: v.lit, Action: r.action, Column: r.col, Index: r.index, Type: r.typ, Assign: r.assign, Loc: v.constLoc, Row: at.row}, target: at.target})
	case vNull:
		if v.cast {
			a.addEdit(v.start, v.end, text("NULL"))
		}
	}
}

// noteUse records in the statement that it writes or compares col. A
// comparison through a normalized index is a search like any other
// (ActionIndex), whether the value is normalized by the proxy or not.
func (a *analyzer) noteUse(col *policy.Column, action Action) {
	if col == nil || action == ActionNone {
		return
	}
	if action == ActionIndexNormalized {
		action = ActionIndex
	}
	u := ColumnUse{Column: col, Action: action}
	for _, x := range a.stmt.Uses {
		if x == u {
			return
		}
	}
	a.stmt.Uses = append(a.stmt.Uses, u)
}

// added returns the piece that carries v's blind index ix in an added
// column.
func (a *analyzer) added(v val, col *policy.Column, ix *policy.BlindIndex) piece {
	r := role{action: ActionIndex, col: col, index: ix, typ: v.typ, assign: true}
	switch v.kind {
	case vParam:
		return piece{param: &addedParam{source: int(v.param.Number) - 1, role: r}}
	case vLiteral:
		return piece{lit: &Literal{Value: v.lit, Action: ActionIndex, Column: col, Index: ix, Type: v.typ, Assign: true, Loc: v.constLoc}}
	case vDefault:
		return text("DEFAULT")
	}
	return text("NULL")
}

// value binds n, found where a PHI value goes, in role r.
func (a *analyzer) value(n *pg.Node, r role, what string) error {
	v, err := a.valueOf(n, r.col, what)
	if err != nil {
		return err
	}
	if v.kind == vDefault {
		return a.errorf(r.col, v.loc, "%s: DEFAULT is not a value to compare", what)
	}
	if v.kind == vLiteral && r.array {
		return a.errorf(r.col, v.loc, "%s with an array literal on PHI column %s is not supported: write col IN ('a', 'b') or bind the array as a parameter (= ANY($1))", what, r.col.QualifiedName())
	}
	a.bind(v, r, assignAt{})
	return nil
}

func nodeLocation(n *pg.Node) int32 {
	switch x := n.Node.(type) {
	case *pg.Node_ParamRef:
		return x.ParamRef.Location
	case *pg.Node_AConst:
		return x.AConst.Location
	case *pg.Node_TypeCast:
		if x.TypeCast.Location >= 0 {
			return x.TypeCast.Location
		}
		return nodeLocation(x.TypeCast.Arg)
	case *pg.Node_ColumnRef:
		return x.ColumnRef.Location
	case *pg.Node_FuncCall:
		return x.FuncCall.Location
	case *pg.Node_AExpr:
		return x.AExpr.Location
	case *pg.Node_SetToDefault:
		return x.SetToDefault.Location
	case *pg.Node_SubLink:
		return x.SubLink.Location
	}
	return -1
}

// span returns the byte range of a parameter, constant, DEFAULT or a cast
// of those, from the tokens.
func (a *analyzer) span(ts tokens, n *pg.Node) (start, end int, ok bool) {
	switch x := n.Node.(type) {
	case *pg.Node_ParamRef, *pg.Node_SetToDefault:
		i := ts.at(int(nodeLocation(n)))
		if i < 0 {
			return 0, 0, false
		}
		return ts[i].start, ts[i].end, true
	case *pg.Node_AConst:
		i := ts.at(int(x.AConst.Location))
		if i < 0 {
			return 0, 0, false
		}
		start = ts[i].start
		if ts[i].kind == pg.Token_ASCII_45 || ts[i].kind == pg.Token_ASCII_43 { // -5: the location is the sign's
			i++
		}
		if i < len(ts) && ts[i].kind == pg.Token_USCONST && i+2 < len(ts) && ts[i+1].kind == pg.Token_UESCAPE {
			i += 2
		}
		if i >= len(ts) {
			return 0, 0, false
		}
		return start, ts[i].end, true
	case *pg.Node_TypeCast:
		tc := x.TypeCast
		if tc.Location < 0 { // prefix form: text 'x'
			if tc.TypeName == nil {
				return 0, 0, false
			}
			_, e, ok := a.span(ts, tc.Arg)
			return int(tc.TypeName.Location), e, ok
		}
		i := ts.at(int(tc.Location))
		if i < 0 {
			return 0, 0, false
		}
		if ts[i].kind == pg.Token_CAST { // CAST(x AS t)
			j := ts.matching(i + 1)
			if j < 0 {
				return 0, 0, false
			}
			return ts[i].start, ts[j].end, true
		}
		s, e, ok := a.span(ts, tc.Arg)
		if !ok || ts[i].kind != pg.Token_TYPECAST {
			return 0, 0, false
		}
		// A parenthesized operand, ('x')::text: the range takes in its
		// parentheses, the same number on each side, or the value is not
		// located.
		si := ts.at(s)
		for k := i - 1; k >= 0 && ts[k].start >= e; k-- {
			if si--; ts[k].kind != pg.Token_ASCII_41 || si < 0 || ts[si].kind != pg.Token_ASCII_40 {
				return 0, 0, false
			}
			s = ts[si].start
		}
		j := typeNameEnd(a.sql, ts, i+1)
		if j < 0 {
			return 0, 0, false
		}
		return s, ts[j].end, true
	}
	return 0, 0, false
}

// typeNameEnd returns the index of the last token of the type name that
// starts at index i (after ::).
func typeNameEnd(sql string, ts tokens, i int) int {
	if i >= len(ts) || !ts[i].word() {
		return -1
	}
	last := i
	i++
	for i+1 < len(ts) && ts[i].kind == pg.Token_ASCII_46 && ts[i+1].word() { // schema.type
		last, i = i+1, i+2
	}
	for i < len(ts) && ts[i].word() && typeWords[lowerWord(sql, ts, i)] {
		last, i = i, i+1
	}
	if i < len(ts) && ts[i].kind == pg.Token_ASCII_40 { // (n[, m])
		j := ts.matching(i)
		if j < 0 {
			return -1
		}
		last, i = j, j+1
	}
	for i < len(ts) && ts[i].word() && typeWords[lowerWord(sql, ts, i)] {
		last, i = i, i+1
	}
	for i < len(ts) && ts[i].kind == pg.Token_ASCII_91 { // [] or [n]
		j := ts.matching(i)
		if j < 0 {
			return -1
		}
		last, i = j, j+1
	}
	return last
}

// typeWords continue a multi-word type name (double precision, character
// varying, timestamp with time zone).
var typeWords = map[string]bool{"precision": true, "varying": true, "with": true, "without": true, "time": true, "zone": true}

func lowerWord(sql string, ts tokens, i int) string {
	return strings.ToLower(sql[ts[i].start:ts[i].end])
}
