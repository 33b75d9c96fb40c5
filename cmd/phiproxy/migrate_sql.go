package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/novamind/phiproxy/policy"
)

// The statements of a migration. Rows are read by keyset pagination on the
// primary key (never OFFSET: each batch starts where the last one ended,
// through the primary key's index) and written back by one compare-and-set
// UPDATE per batch: a row is changed only if each column it changes still
// holds the value that was read, so a concurrent write (through the proxy
// or not) is never overwritten; such rows are read again and retried.

// migrateRow is one row as read: its primary key in text form, and per
// migrated column the stored value and blind index (nil for NULL).
type migrateRow struct {
	key  []string
	vals [][]byte
	bidx [][][]byte // per column, its blind indexes
}

// change is what one column of one row becomes.
type change struct {
	setValue, setIndex bool
	value              []byte   // nil writes NULL
	index              [][]byte // one per blind index; nil (or a nil entry) writes NULL
}

// migrateSQL holds a migration's statements, built once from the catalog.
type migrateSQL struct {
	last, first, next, refetch, update string
	nkey                               int
}

// buildMigrateSQL builds the statements for table t (live: its catalog
// entry, pk: its primary key's columns) and the migrated columns cols.
func buildMigrateSQL(t *policy.Table, live *policy.LiveTable, pk []string, cols []*migrateColumn) migrateSQL {
	table := policy.QuoteQualified(t.Schema, t.Name)
	var (
		keys, keyTypes, keyCasts, params []string
		sel                              []string
	)
	for i, k := range pk {
		typ := live.Column(k).Type
		// Qualified: in ORDER BY an unqualified name would mean the
		// output column k::text, sorting keys as text.
		keys = append(keys, "phi_t."+policy.QuoteIdent(k))
		keyTypes = append(keyTypes, typ)
		keyCasts = append(keyCasts, fmt.Sprintf("$%d::%s", i+1, typ))
		params = append(params, fmt.Sprintf("phi_v.k%d::%s", i+1, typ))
		sel = append(sel, fmt.Sprintf("phi_t.%s::text AS phi_k%d", policy.QuoteIdent(k), i+1))
	}
	for _, c := range cols {
		sel = append(sel, "phi_t."+policy.QuoteIdent(c.col.Name))
		for k := range c.indexes {
			sel = append(sel, "phi_t."+policy.QuoteIdent(c.col.Indexes()[k].Column))
		}
	}
	keyList := strings.Join(keys, ", ")
	s := migrateSQL{nkey: len(pk)}
	head := fmt.Sprintf("SELECT %s FROM %s AS phi_t", strings.Join(sel, ", "), table)
	// The scan ends at the greatest key present when it starts (s.last):
	// rows inserted since are someone else's writes, which a later run
	// covers; without the bound, a scan could chase an inserting
	// application forever.
	upper := make([]string, len(pk))
	for i, typ := range keyTypes {
		upper[i] = fmt.Sprintf("$%d::%s", len(pk)+i+1, typ)
	}
	s.last = fmt.Sprintf("SELECT %s FROM %s AS phi_t ORDER BY %s LIMIT 1", strings.Join(sel[:len(pk)], ", "), table, descending(keys))
	s.first = fmt.Sprintf("%s WHERE (%s) <= (%s) ORDER BY %s LIMIT $%d", head, keyList,
		strings.Join(renumber(keyCasts, 0), ", "), keyList, len(pk)+1)
	s.next = fmt.Sprintf("%s WHERE (%s) > (%s) AND (%s) <= (%s) ORDER BY %s LIMIT $%d", head, keyList, strings.Join(keyCasts, ", "),
		keyList, strings.Join(upper, ", "), keyList, 2*len(pk)+1)

	var unnestArgs, unnestCols []string
	for i := range pk {
		unnestArgs = append(unnestArgs, fmt.Sprintf("$%d::text[]", i+1))
		unnestCols = append(unnestCols, fmt.Sprintf("k%d", i+1))
	}
	s.refetch = fmt.Sprintf("%s WHERE (%s) IN (SELECT %s FROM unnest(%s) AS phi_v(%s)) ORDER BY %s",
		head, keyList, strings.Join(params, ", "), strings.Join(unnestArgs, ", "), strings.Join(unnestCols, ", "), keyList)

	// UPDATE ... FROM unnest(keys..., per column: set value, set index,
	// old value, new value, new index) WITH ORDINALITY.
	var sets, conds []string
	n := len(pk)
	for i, k := range keys {
		conds = append(conds, fmt.Sprintf("%s = phi_v.k%d::%s", k, i+1, keyTypes[i]))
	}
	for i, c := range cols {
		name := policy.QuoteIdent(c.col.Name)
		arr := "text[]"
		if c.bytea {
			arr = "bytea[]"
		}
		j := i + 1
		unnestArgs = append(unnestArgs, fmt.Sprintf("$%d::bool[]", n+1), fmt.Sprintf("$%d::bool[]", n+2),
			fmt.Sprintf("$%d::%s", n+3, arr), fmt.Sprintf("$%d::%s", n+4, arr))
		n += 4
		unnestCols = append(unnestCols, fmt.Sprintf("sv%d", j), fmt.Sprintf("sb%d", j), fmt.Sprintf("o%d", j), fmt.Sprintf("n%d", j))
		for _, b := range indexParams(j, len(c.indexes)) {
			unnestArgs = append(unnestArgs, fmt.Sprintf("$%d::text[]", n+1))
			n++
			unnestCols = append(unnestCols, b)
		}
		sets = append(sets, fmt.Sprintf("%s = CASE WHEN phi_v.sv%d THEN phi_v.n%d ELSE phi_t.%s END", name, j, j, name))
		for k, b := range indexParams(j, len(c.indexes))[:len(c.indexes)] {
			bi := policy.QuoteIdent(c.col.Indexes()[k].Column)
			sets = append(sets, fmt.Sprintf("%s = CASE WHEN phi_v.sb%d THEN phi_v.%s ELSE phi_t.%s END", bi, j, b, bi))
		}
		conds = append(conds, fmt.Sprintf("(NOT (phi_v.sv%d OR phi_v.sb%d) OR phi_t.%s IS NOT DISTINCT FROM phi_v.o%d)", j, j, name, j))
	}
	s.update = fmt.Sprintf("UPDATE %s AS phi_t SET %s FROM unnest(%s) WITH ORDINALITY AS phi_v(%s, ord) WHERE %s RETURNING phi_v.ord",
		table, strings.Join(sets, ", "), strings.Join(unnestArgs, ", "), strings.Join(unnestCols, ", "), strings.Join(conds, " AND "))
	return s
}

// indexParams names the unnest columns of the blind indexes of column j:
// b<j> for the first (also when the column has none, so that every column
// has one), b<j>_2, b<j>_3 … for the others.
func indexParams(j, n int) []string {
	out := []string{fmt.Sprintf("b%d", j)}
	for k := 2; k <= n; k++ {
		out = append(out, fmt.Sprintf("b%d_%d", j, k))
	}
	return out
}

// readRows runs a SELECT of migrateSQL and copies the rows out; ncols
// holds, per column, how many blind indexes follow it.
func readRows(ctx context.Context, q pgxQuerier, sql string, ncols []int, nkey int, args ...any) ([]migrateRow, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []migrateRow
	for rows.Next() {
		raw := rows.RawValues()
		r := migrateRow{key: make([]string, nkey), vals: make([][]byte, len(ncols)), bidx: make([][][]byte, len(ncols))}
		for i := range nkey {
			r.key[i] = string(raw[i])
		}
		j := nkey
		for i, nidx := range ncols {
			r.vals[i] = bytes.Clone(raw[j])
			j++
			for range nidx {
				r.bidx[i] = append(r.bidx[i], bytes.Clone(raw[j]))
				j++
			}
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// pgxQuerier is what readRows needs of a connection or transaction.
type pgxQuerier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// updateArgs are the parameters of migrateSQL.update for the rows to
// change, in order.
func updateArgs(rows []migrateRow, changes [][]change, cols []*migrateColumn, nkey int) []any {
	args := make([]any, 0, nkey+5*len(cols))
	for k := range nkey {
		keys := make([]string, len(rows))
		for i, r := range rows {
			keys[i] = r.key[k]
		}
		args = append(args, keys)
	}
	for j, c := range cols {
		nidx := len(indexParams(j+1, len(c.indexes)))
		sv, sb := make([]bool, len(rows)), make([]bool, len(rows))
		old, nv := make([][]byte, len(rows)), make([][]byte, len(rows))
		nb := make([][][]byte, nidx)
		for k := range nb {
			nb[k] = make([][]byte, len(rows))
		}
		for i, r := range rows {
			ch := changes[i][j]
			sv[i], sb[i] = ch.setValue, ch.setIndex
			old[i], nv[i] = r.vals[j], ch.value
			for k := range ch.index {
				nb[k][i] = ch.index[k]
			}
		}
		if c.bytea {
			args = append(args, sv, sb, old, nv)
		} else {
			args = append(args, sv, sb, textArray(old), textArray(nv))
		}
		for _, b := range nb {
			args = append(args, textArray(b))
		}
	}
	return args
}

// textArray makes a text[] parameter, nil entries NULL.
func textArray(vs [][]byte) []*string {
	out := make([]*string, len(vs))
	for i, v := range vs {
		if v != nil {
			s := string(v)
			out[i] = &s
		}
	}
	return out
}

// descending orders by each key column descending.
func descending(keys []string) string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k + " DESC"
	}
	return strings.Join(out, ", ")
}

// renumber returns the casts "$i::type" numbered from base+1.
func renumber(casts []string, base int) []string {
	out := make([]string, len(casts))
	for i, c := range casts {
		_, typ, _ := strings.Cut(c, "::")
		out[i] = fmt.Sprintf("$%d::%s", base+i+1, typ)
	}
	return out
}
