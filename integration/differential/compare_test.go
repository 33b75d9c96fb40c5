package differential

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// outcome is how one statement's two answers compare.
type outcome int

const (
	matched   outcome = iota
	refused           // the proxy refused it: counted, not a difference
	different         // the proxy answered differently from PostgreSQL
)

// The kinds of difference, in report order.
const (
	kindSQLSTATE = "sqlstate" // one side failed, or both with different SQLSTATEs
	kindTypes    = "types"    // RowDescription: names, type OIDs or formats
	kindTag      = "tag"      // the command tag (rows affected)
	kindRows     = "rows"     // the rows, sorted
	kindState    = "state"    // a write answered alike but left the tables different
)

var diffKinds = []string{kindSQLSTATE, kindTypes, kindTag, kindRows, kindState}

// refusalCodes are the SQLSTATEs of a refusal by design (fail closed):
// 0A000 feature not supported, 42601 syntax error (pg_query could not
// parse), 55000 object not in prerequisite state (the catalog).
var refusalCodes = map[string]bool{"0A000": true, "42601": true, "55000": true}

// isRefusal reports whether r is the proxy refusing a statement.
func isRefusal(r result) bool {
	return refusalCodes[r.code] && strings.HasPrefix(r.msg, "phiproxy")
}

// verdict is the comparison of one statement.
type verdict struct {
	outcome outcome
	kinds   []string // for different
	detail  string   // what differs, for the report
}

// compare compares the proxy side's answer a with PostgreSQL's b for st
// (nil: compare exactly).
func compare(st *statement, a, b result) verdict {
	if isRefusal(a) {
		return verdict{outcome: refused}
	}
	if a.code != b.code {
		return verdict{outcome: different, kinds: []string{kindSQLSTATE},
			detail: fmt.Sprintf("proxy: %s; postgres: %s", describeErr(a), describeErr(b))}
	}
	if a.failed() {
		return verdict{outcome: matched}
	}
	var v verdict
	var details []string
	if !slices.Equal(a.fields, b.fields) {
		v.kinds = append(v.kinds, kindTypes)
		details = append(details, fmt.Sprintf("columns: proxy %s; postgres %s", fieldsString(a.fields), fieldsString(b.fields)))
	}
	if a.tag != b.tag {
		v.kinds = append(v.kinds, kindTag)
		details = append(details, fmt.Sprintf("tag: proxy %q; postgres %q", a.tag, b.tag))
	}
	if d := diffRows(a.rows, b.rows); d != "" && !(dedups(st) && diffRows(numericValues(a), numericValues(b)) == "") {
		v.kinds = append(v.kinds, kindRows)
		details = append(details, d)
	}
	if len(v.kinds) > 0 {
		v.outcome = different
		v.detail = strings.Join(details, "\n")
	}
	return v
}

func describeErr(r result) string {
	if !r.failed() {
		return "ok " + r.tag
	}
	return r.code + " " + r.msg
}

func fieldsString(fs []field) string {
	parts := make([]string, len(fs))
	for i, f := range fs {
		parts[i] = fmt.Sprintf("%s:%d", f.name, f.oid)
		if f.format != 0 {
			parts[i] += ":bin"
		}
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

// dedups reports whether st makes the server keep one of several equal
// values (a set operation, a grouping): of numerics equal in value but not
// in scale (1.5 and 1.50), which one it keeps depends on the plan, on
// PostgreSQL alone as well (the self-check saw it).
func dedups(st *statement) bool {
	if st == nil {
		return false
	}
	for _, t := range st.tags {
		if strings.HasPrefix(t, "setop") || strings.HasPrefix(t, "agg.group") || strings.HasPrefix(t, "agg.count_distinct") {
			return true
		}
	}
	return false
}

// numericValues returns r's rows with each numeric value written without
// trailing fractional zeros, so that values equal as numerics compare
// equal.
func numericValues(r result) [][]string {
	rows := make([][]string, len(r.rows))
	for i, row := range r.rows {
		rows[i] = slices.Clone(row)
		for j, f := range r.fields {
			if f.oid != 1700 || j >= len(row) || !strings.Contains(row[j], ".") || strings.ContainsAny(row[j], "eE") {
				continue
			}
			rows[i][j] = strings.TrimSuffix(strings.TrimRight(row[j], "0"), ".")
		}
	}
	return rows
}

// diffRows compares two row sets as sorted multisets and describes the
// rows only one side has (a few of them), or returns "".
func diffRows(a, b [][]string) string {
	ka, kb := rowKeys(a), rowKeys(b)
	if slices.Equal(ka, kb) {
		return ""
	}
	onlyA, onlyB := multisetDiff(ka, kb)
	return fmt.Sprintf("rows: proxy %d, postgres %d; only proxy: %s; only postgres: %s",
		len(a), len(b), sample(onlyA), sample(onlyB))
}

// rowKeys renders each row as one string and sorts them.
func rowKeys(rows [][]string) []string {
	keys := make([]string, len(rows))
	for i, r := range rows {
		keys[i] = strings.Join(r, "\x1f")
	}
	slices.Sort(keys)
	return keys
}

// multisetDiff returns the elements of sorted a not in sorted b, and of b
// not in a.
func multisetDiff(a, b []string) (onlyA, onlyB []string) {
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || (i < len(a) && a[i] < b[j]):
			onlyA = append(onlyA, a[i])
			i++
		case i == len(a) || b[j] < a[i]:
			onlyB = append(onlyB, b[j])
			j++
		default:
			i++
			j++
		}
	}
	return onlyA, onlyB
}

// sample renders up to three rows.
func sample(rows []string) string {
	if len(rows) == 0 {
		return "none"
	}
	var parts []string
	for i, r := range rows {
		if i == 3 {
			parts = append(parts, fmt.Sprintf("… %d more", len(rows)-3))
			break
		}
		vals := strings.Split(r, "\x1f")
		for k, v := range vals {
			if v == nullText {
				vals[k] = "NULL"
			} else {
				vals[k] = strconv.Quote(v)
			}
		}
		parts = append(parts, "("+strings.Join(vals, ", ")+")")
	}
	return strings.Join(parts, " ")
}

// runner runs statements on two sides in step: a is the side under test
// (the proxy, or a plaintext copy in the self-check), b is PostgreSQL on
// plaintext.
type runner struct {
	a, b  *side
	stats *stats
	// sent holds every PHI value sent to a, for the leak check, with the
	// known-leaking tags (leaky) that every statement sending it carried.
	sent  map[string]map[string]bool
	leaky map[string]bool
}

// newRunner returns a runner of a against b whose stats know the
// known-different tags (none in the self-check).
func newRunner(a, b *side, known []knownEntry) *runner {
	r := &runner{a: a, b: b, stats: newStats(known), sent: map[string]map[string]bool{}, leaky: map[string]bool{}}
	for _, k := range known {
		if k.leaks {
			r.leaky[k.tag] = true
		}
	}
	return r
}

// recordPHI records the PHI values st sends.
func (r *runner) recordPHI(st *statement) {
	for _, v := range st.phi {
		tags := map[string]bool{}
		for _, t := range st.tags {
			if r.leaky[t] {
				tags[t] = true
			}
		}
		prev, seen := r.sent[v]
		if seen {
			for t := range tags {
				if !prev[t] {
					delete(tags, t)
				}
			}
		}
		r.sent[v] = tags
	}
}

// run runs one statement on both sides, each in its own transaction, and
// records and returns the verdict. Both commit only when everything
// agreed.
func (r *runner) run(ctx context.Context, st *statement) (verdict, error) {
	if err := r.begin(ctx); err != nil {
		return verdict{}, err
	}
	r.recordPHI(st)
	ra := r.a.exec(ctx, st)
	rb := r.b.exec(ctx, st)
	v := compare(st, ra, rb)
	if v.outcome == matched && !ra.failed() && st.kind != kindRead {
		v = r.readBack(ctx, st)
	}
	r.stats.add(st, v, ra, rb)
	end := "ROLLBACK"
	if v.outcome == matched && !ra.failed() {
		end = "COMMIT"
	}
	for _, sd := range []*side{r.a, r.b} {
		if res := sd.simple(ctx, end); res.failed() {
			return v, r.recover(ctx)
		}
	}
	return v, nil
}

// readBack compares the rows a write left in its table: the written ids
// of an INSERT, the whole table otherwise.
func (r *runner) readBack(ctx context.Context, st *statement) verdict {
	q := "SELECT * FROM " + st.table.name
	if len(st.ids) > 0 {
		ids := make([]string, len(st.ids))
		for i, id := range st.ids {
			ids[i] = strconv.FormatInt(id, 10)
		}
		q += " WHERE id IN (" + strings.Join(ids, ", ") + ")"
	}
	rs := &statement{sql: q}
	v := compare(nil, r.a.exec(ctx, rs), r.b.exec(ctx, rs))
	if v.outcome == matched {
		return v
	}
	return verdict{outcome: different, kinds: []string{kindState}, detail: q + ": " + v.detail}
}

// begin opens a transaction on both sides, recovering once from a broken
// connection.
func (r *runner) begin(ctx context.Context) error {
	var last result
	for range 2 {
		failed := false
		for _, sd := range []*side{r.a, r.b} {
			if last = sd.simple(ctx, "BEGIN"); last.failed() {
				failed = true
				break
			}
		}
		if !failed {
			return nil
		}
		if err := r.recover(ctx); err != nil {
			return err
		}
	}
	return fmt.Errorf("BEGIN: %s %s", last.code, last.msg)
}

// recover reconnects a side whose connection broke (both transactions are
// then rolled back).
func (r *runner) recover(ctx context.Context) error {
	for _, sd := range []*side{r.a, r.b} {
		if sd.conn.IsClosed() {
			if err := sd.connect(ctx); err != nil {
				return err
			}
			continue
		}
		if res := sd.simple(ctx, "ROLLBACK"); res.failed() {
			if err := sd.connect(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}
