package differential

import "strings"

// Predicates: atoms on one column combined with AND, OR and NOT. An atom
// used in a WHERE clause is tagged "pred.<op>.<class>", one used as an
// output column "out.<op>.<class>".

// atomFunc writes one predicate on column c, referenced as ref, or
// returns false when it does not apply to c.
type atomFunc func(b *builder, c *column, ref string) (string, bool)

// atomProductions are the predicate forms.
var atomProductions = []production{
	{name: "pred.eq", weight: 20, atom: atomCmp("=")},
	{name: "pred.ne", weight: 8, atom: atomCmp("<>")},
	{name: "pred.in", weight: 8, atom: atomList("IN")},
	{name: "pred.not_in", weight: 5, atom: atomList("NOT IN")},
	{name: "pred.any", weight: 6, atom: atomArray("=", "ANY")},
	{name: "pred.ne_all", weight: 4, atom: atomArray("<>", "ALL")},
	{name: "pred.is_null", weight: 6, atom: atomIsNull},
	{name: "pred.distinct", weight: 4, atom: atomCmp("IS DISTINCT FROM")},
	{name: "pred.not_distinct", weight: 4, atom: atomCmp("IS NOT DISTINCT FROM")},
	{name: "pred.range", weight: 3, atom: atomRange},
	{name: "pred.like", weight: 2, atom: atomLike},
	{name: "pred.norm", weight: 6, atom: atomNorm},
}

// tagCmpNorm marks a statement that compares a column that has a
// normalizing blind index with a value or another such column, in any
// position (WHERE, output column, join, IN subquery): the statements
// whose answers depend on exact equality (issue 10 item 4).
const tagCmpNorm = "cmp.norm"

// valueComparisons are the atoms that compare a column with values.
var valueComparisons = map[string]bool{
	"eq": true, "ne": true, "in": true, "not_in": true, "any": true, "ne_all": true,
	"distinct": true, "not_distinct": true,
}

// atomCmp is ref op value; = and <> are sometimes written the other way
// round or as !=.
func atomCmp(op string) atomFunc {
	return func(b *builder, c *column, ref string) (string, bool) {
		v := b.val(c, b.pick(c, true))
		switch {
		case op == "<>" && b.r.IntN(4) == 0:
			return ref + " != " + v, true
		case (op == "=" || op == "<>") && b.r.IntN(5) == 0:
			return v + " " + op + " " + ref, true
		}
		return ref + " " + op + " " + v, true
	}
}

// atomList is ref [NOT] IN (v1, …).
func atomList(op string) atomFunc {
	return func(b *builder, c *column, ref string) (string, bool) {
		vs := make([]string, 1+b.r.IntN(4))
		for i := range vs {
			vs[i] = b.val(c, b.pick(c, true))
		}
		return ref + " " + op + " (" + strings.Join(vs, ", ") + ")", true
	}
}

// atomArray is ref op ANY/ALL (array).
func atomArray(op, quant string) atomFunc {
	return func(b *builder, c *column, ref string) (string, bool) {
		vs := make([]value, 1+b.r.IntN(4))
		for i := range vs {
			vs[i] = b.pick(c, true)
		}
		if !c.phi() {
			lits := make([]string, len(vs))
			for i, v := range vs {
				lits[i] = v.text
			}
			return ref + " " + op + " " + quant + " (ARRAY[" + strings.Join(lits, ", ") + "])", true
		}
		return ref + " " + op + " " + quant + " (" + b.array(c, vs) + ")", true
	}
}

func atomIsNull(b *builder, c *column, ref string) (string, bool) {
	if b.r.IntN(2) == 0 {
		return ref + " IS NULL", true
	}
	return ref + " IS NOT NULL", true
}

// atomRange is an ordering comparison: fine on ids, refused on PHI.
func atomRange(b *builder, c *column, ref string) (string, bool) {
	if b.r.IntN(3) == 0 {
		return ref + " BETWEEN " + b.val(c, b.pick(c, false)) + " AND " + b.val(c, b.pick(c, false)), true
	}
	ops := []string{"<", "<=", ">", ">="}
	return ref + " " + ops[b.r.IntN(len(ops))] + " " + b.val(c, b.pick(c, false)), true
}

// atomLike is a pattern match on a text column: refused on PHI.
func atomLike(b *builder, c *column, ref string) (string, bool) {
	if c.typ != "text" && c.typ != "varchar" {
		return "", false
	}
	v := b.pick(c, false)
	if !v.null {
		r := []rune(v.text)
		if len(r) > 3 {
			r = r[:3]
		}
		v.text = string(r) + "%"
	}
	return ref + " LIKE " + b.val(c, v), true
}

// classWeights is how often each class of column is the subject of an
// atom: the indexed PHI columns are the interesting ones.
var classWeights = []struct {
	class  class
	weight int
}{{classNorm, 35}, {classExact, 25}, {classPlain, 10}, {classNonPHI, 30}}

// predColumn picks the column of an atom among cols.
func (b *builder) predColumn(cols []*column) *column {
	for {
		n := b.r.IntN(100)
		var cl class
		for _, w := range classWeights {
			if n -= w.weight; n < 0 {
				cl = w.class
				break
			}
		}
		var cands []*column
		for _, c := range cols {
			if c.class == cl && c.name != "created_at" {
				cands = append(cands, c)
			}
		}
		if len(cands) > 0 {
			return cands[b.r.IntN(len(cands))]
		}
	}
}

// atom writes one atom on one of cols (qualified by alias when set),
// tagged with prefix ("pred" or "out"). cols must hold a column other
// than created_at.
func (b *builder) atom(cols []*column, alias, prefix string) string {
	for {
		p := b.g.choose(b.g.atoms)
		c := b.predColumn(cols)
		ref := c.name
		if alias != "" {
			ref = alias + "." + c.name
		}
		if s, ok := p.atom(b, c, ref); ok {
			op := strings.TrimPrefix(p.name, "pred.")
			b.tag(prefix + "." + op + "." + string(c.class))
			if c.class == classNorm && valueComparisons[op] {
				b.tag(tagCmpNorm)
			}
			return s
		}
	}
}

// pred writes a WHERE condition on t: an atom, or up to two levels of
// AND, OR and NOT.
func (b *builder) pred(t *table, alias string) string { return b.predDepth(t, alias, 0) }

func (b *builder) predDepth(t *table, alias string, depth int) string {
	if depth < 2 {
		switch n := b.r.IntN(12); {
		case n < 2:
			b.tag("bool.and")
			return "(" + b.predDepth(t, alias, depth+1) + " AND " + b.predDepth(t, alias, depth+1) + ")"
		case n < 4:
			b.tag("bool.or")
			return "(" + b.predDepth(t, alias, depth+1) + " OR " + b.predDepth(t, alias, depth+1) + ")"
		case n == 4:
			b.tag("bool.not")
			return "NOT (" + b.predDepth(t, alias, depth+1) + ")"
		}
	}
	return b.atom(t.cols, alias, "pred")
}
