package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/jackc/pgx/v5"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/policy"
)

// The key id of a stored value is in its envelope header (crypto/FORMAT.md:
// version, then the key id as 4 big-endian bytes). keys usage reads it in
// SQL, so that only counts leave the database: the first 8 base64
// characters after "phi1:" decode to the version, the key id and a nonce
// byte; a raw (bytea) envelope has them in its first 5 bytes.

// Special key ids of the usage counts.
const (
	kidPlaintext  = -1 // not an envelope
	kidUnreadable = -2 // an envelope prefix with another version
)

// keyIDExpr is the SQL expression of the key id of the value x.
func keyIDExpr(x string, storage policy.Storage) string {
	be := func(b string) string {
		return fmt.Sprintf("(get_byte(%[1]s, 1)::bigint << 24) | (get_byte(%[1]s, 2)::bigint << 16) | (get_byte(%[1]s, 3)::bigint << 8) | get_byte(%[1]s, 4)::bigint", b)
	}
	if storage == policy.StorageBytea {
		return fmt.Sprintf("CASE WHEN %[1]s IS NULL THEN NULL WHEN length(%[1]s) < %[2]d OR get_byte(%[1]s, 0) <> %[3]d THEN %[4]d ELSE %[5]s END",
			x, policy.CiphertextOverhead, policy.CiphertextVersion, kidPlaintext, be(x))
	}
	return fmt.Sprintf("CASE WHEN %[1]s IS NULL THEN NULL WHEN NOT starts_with(%[1]s, '%[2]s') OR length(%[1]s) < %[3]d OR substr(%[1]s, %[4]d, 8) ~ '[^A-Za-z0-9+/]' THEN %[5]d "+
		"ELSE (SELECT CASE WHEN get_byte(b, 0) <> %[6]d THEN %[7]d ELSE %[8]s END FROM (SELECT decode(substr(%[1]s, %[4]d, 8), 'base64') AS b) AS d) END",
		x, policy.CiphertextPrefix, len(policy.CiphertextPrefix)+8, len(policy.CiphertextPrefix)+1, kidPlaintext, policy.CiphertextVersion, kidUnreadable, be("b"))
}

// usageChunkSQL returns the statements that count, for one chunk of rows
// in primary-key order, the values of each column by key id: rows (c, kid,
// n, NULL) per column c (1-based) and key id, and one row (0, NULL, rows
// in the chunk, its last key as text). first has the chunk size as $1;
// next the last key and then the size.
func usageChunkSQL(t *policy.Table, lt *policy.LiveTable, pk []string, cols []*policy.Column) (first, next string) {
	var sel, order, keys, casts, last, orderDesc, values []string
	for i, k := range pk {
		q := "phi_t." + policy.QuoteIdent(k)
		sel = append(sel, fmt.Sprintf("%s AS phi_o%d, %s::text AS phi_k%d", q, i+1, q, i+1))
		keys = append(keys, q)
		order = append(order, q)
		casts = append(casts, fmt.Sprintf("$%d::%s", i+1, lt.Column(k).Type))
		last = append(last, fmt.Sprintf("s2.phi_k%d", i+1))
		orderDesc = append(orderDesc, fmt.Sprintf("s2.phi_o%d DESC", i+1))
	}
	for j, c := range cols {
		sel = append(sel, fmt.Sprintf("%s AS phi_c%d", keyIDExpr("phi_t."+policy.QuoteIdent(c.Name), c.Storage), j+1))
		values = append(values, fmt.Sprintf("(%d, s.phi_c%d)", j+1, j+1))
	}
	table := policy.QuoteQualified(t.Schema, t.Name)
	chunk := func(where string, limit int) string {
		return fmt.Sprintf(`WITH s AS MATERIALIZED (SELECT %s FROM %s AS phi_t%s ORDER BY %s LIMIT $%d) `+
			`SELECT v.c, v.kid, count(*)::bigint, NULL::text[] FROM s CROSS JOIN LATERAL (VALUES %s) AS v(c, kid) WHERE v.kid IS NOT NULL GROUP BY v.c, v.kid `+
			`UNION ALL SELECT 0, NULL, count(*)::bigint, (SELECT ARRAY[%s] FROM s AS s2 ORDER BY %s LIMIT 1) FROM s`,
			strings.Join(sel, ", "), table, where, strings.Join(order, ", "), limit,
			strings.Join(values, ", "), strings.Join(last, ", "), strings.Join(orderDesc, ", "))
	}
	first = chunk("", 1)
	next = chunk(fmt.Sprintf(" WHERE (%s) > (%s)", strings.Join(keys, ", "), strings.Join(casts, ", ")), len(pk)+1)
	return first, next
}

// keyUsage counts, for one database, the values of each policy column by
// key id ("schema.table.column" -> key id -> count; kidPlaintext and
// kidUnreadable for the rest), reporting progress to w. Tables or columns
// the database lacks are skipped and named in the returned notes.
func keyUsage(ctx context.Context, conn *pgx.Conn, pol *policy.Policy, w io.Writer) (map[string]map[int64]int64, []string, error) {
	live, err := readCatalog(ctx, conn, pol)
	if err != nil {
		return nil, nil, err
	}
	var total int64
	for _, lt := range live {
		total += max(int64(lt.Rows), 0)
	}
	prog := newProgress(w, "keys usage: database "+conn.Config().Database, total)
	out := map[string]map[int64]int64{}
	var notes []string
	var done int64
	for _, t := range pol.Tables() {
		lt := live[t.QualifiedName()]
		if lt == nil {
			notes = append(notes, t.QualifiedName()+": no such table")
			continue
		}
		pk := lt.PrimaryKey()
		if len(pk) == 0 {
			notes = append(notes, t.QualifiedName()+": no primary key, not scanned (its values are not counted)")
			continue
		}
		var cols []*policy.Column
		for _, c := range t.Columns {
			if lc := lt.Column(c.Name); lc != nil && lc.Type == string(c.Storage) {
				cols = append(cols, c)
				out[c.QualifiedName()] = map[int64]int64{}
			}
		}
		if len(cols) == 0 {
			continue
		}
		first, next := usageChunkSQL(t, lt, pk, cols)
		var last []string
		for {
			args := []any{}
			sql := first
			if last != nil {
				sql = next
				for _, k := range last {
					args = append(args, k)
				}
			}
			rows, err := conn.Query(ctx, sql, append(args, 10000)...)
			if err != nil {
				return nil, nil, fmt.Errorf("count values of %s: %w", t.QualifiedName(), dbError(err))
			}
			var n int64
			for rows.Next() {
				var c int
				var kid *int64
				var count int64
				var key []string
				if err := rows.Scan(&c, &kid, &count, &key); err != nil {
					rows.Close()
					return nil, nil, fmt.Errorf("count values of %s: %w", t.QualifiedName(), err)
				}
				if c == 0 {
					n, last = count, key
					continue
				}
				out[cols[c-1].QualifiedName()][*kid] += count
			}
			if err := rows.Err(); err != nil {
				return nil, nil, fmt.Errorf("count values of %s: %w", t.QualifiedName(), dbError(err))
			}
			done += n
			prog.update(done)
			if n < 10000 {
				break
			}
		}
	}
	prog.finish(done)
	return out, notes, nil
}

// keysUsageCmd implements `phiproxy keys usage`.
func keysUsageCmd(ctx context.Context, kcfg crypto.Config, f keysFlags, stdout, stderr io.Writer) error {
	cfg, err := keysDBConfig("usage", f)
	if err != nil {
		return err
	}
	kf, err := crypto.ReadKeyringFile(kcfg.KeyringFile)
	if err != nil {
		return fmt.Errorf("keys usage: %w", err)
	}
	type dbUsage struct {
		Database string                      `json:"database"`
		Columns  map[string]map[string]int64 `json:"columns"` // column -> key id (or "plaintext", "unreadable") -> count
		Notes    []string                    `json:"notes,omitempty"`
	}
	var all []dbUsage
	for _, db := range f.db.databases(cfg.policy) {
		conn, err := connectDB(ctx, cfg, f.db, db, "keys usage")
		if err != nil {
			return fmt.Errorf("keys usage: %w", err)
		}
		counts, notes, err := keyUsage(ctx, conn, cfg.policy, stderr)
		name := conn.Config().Database
		conn.Close(context.Background())
		if err != nil {
			return fmt.Errorf("keys usage: database %s: %w", name, err)
		}
		u := dbUsage{Database: name, Columns: map[string]map[string]int64{}, Notes: notes}
		for col, byKey := range counts {
			u.Columns[col] = map[string]int64{}
			for kid, n := range byKey {
				u.Columns[col][kidName(kid)] = n
			}
		}
		all = append(all, u)
		if !f.json {
			printUsage(stdout, name, kf, cfg.policy, counts, notes)
		}
	}
	if f.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"keyring_id": kf.ID, "databases": all})
	}
	return nil
}

// kidName names a usage key id in JSON.
func kidName(kid int64) string {
	switch kid {
	case kidPlaintext:
		return "plaintext"
	case kidUnreadable:
		return "unreadable"
	}
	return strconv.FormatInt(kid, 10)
}

// printUsage prints one database's counts as a table: a column per data
// key of the keyring (and per unknown key id found), then plaintext and
// unreadable values.
func printUsage(w io.Writer, db string, kf *crypto.KeyringFile, pol *policy.Policy, counts map[string]map[int64]int64, notes []string) {
	states := map[int64]string{}
	for _, k := range kf.DataKeys {
		states[int64(k.ID)] = string(k.State)
	}
	for _, byKey := range counts {
		for kid := range byKey {
			if _, ok := states[kid]; !ok && kid > 0 {
				states[kid] = "not in this keyring"
			}
		}
	}
	kids := slices.Sorted(maps.Keys(states))
	fmt.Fprintf(w, "database %s (keyring %s): stored values per data key\n", db, kf.ID)
	width := len("COLUMN")
	for col := range counts {
		width = max(width, len(col))
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	header := fmt.Sprintf("%-*s\t", width, "COLUMN")
	for _, kid := range kids {
		header += fmt.Sprintf("KEY %d (%s)\t", kid, states[kid])
	}
	fmt.Fprintln(tw, header+"PLAINTEXT\tUNREADABLE\t")
	totals := map[int64]int64{}
	for _, t := range pol.Tables() {
		for _, c := range t.Columns {
			byKey, ok := counts[c.QualifiedName()]
			if !ok {
				continue
			}
			line := fmt.Sprintf("%-*s\t", width, c.QualifiedName())
			for _, kid := range append(kids, kidPlaintext, kidUnreadable) {
				line += fmt.Sprintf("%d\t", byKey[kid])
				totals[kid] += byKey[kid]
			}
			fmt.Fprintln(tw, line)
		}
	}
	line := fmt.Sprintf("%-*s\t", width, "total")
	for _, kid := range append(kids, kidPlaintext, kidUnreadable) {
		line += fmt.Sprintf("%d\t", totals[kid])
	}
	fmt.Fprintln(tw, line)
	tw.Flush()
	for _, n := range notes {
		fmt.Fprintln(w, "  note:", n)
	}
}

// keysDBConfig loads the full configuration for the keys subcommands that
// read the governed databases: they need the policy and the upstream.
func keysDBConfig(sub string, f keysFlags) (*config, error) {
	if f.config == "" {
		return nil, fmt.Errorf("%w: keys %s reads the governed databases: it needs --config FILE with the policy and the upstream", errUsage, sub)
	}
	cfg, err := loadConfig(f.config)
	if err != nil {
		return nil, err
	}
	if cfg.policy.Empty() {
		return nil, fmt.Errorf("%w: keys %s: the configuration's policy names no table", errUsage, sub)
	}
	return cfg, nil
}

// keysRetire implements `phiproxy keys retire ID`: unless forced, it
// counts the values under the key in every governed database and refuses
// while there are any, naming the columns.
func keysRetire(ctx context.Context, kcfg crypto.Config, f keysFlags, id uint32, stdout, stderr io.Writer) error {
	kf, err := crypto.ReadKeyringFile(kcfg.KeyringFile)
	if err != nil {
		return fmt.Errorf("keys retire: %w", err)
	}
	if err := kf.Retire(id); err != nil { // checks the id and the state first
		return fmt.Errorf("keys retire: %w", err)
	}
	if f.force {
		fmt.Fprintf(stderr, "phiproxy: keys retire --force: not checking the databases. Every value still encrypted under data key %d becomes unreadable: no proxy will decrypt it again, and only a copy of this keyring file from before the retirement (with its master key) can bring it back.\n", id)
	} else {
		cfg, err := keysDBConfig("retire", f)
		if err != nil {
			return fmt.Errorf("%w (or --force, which skips the check and makes any value under key %d unreadable)", err, id)
		}
		var inUse []string
		var total int64
		for _, db := range f.db.databases(cfg.policy) {
			conn, err := connectDB(ctx, cfg, f.db, db, "keys retire")
			if err != nil {
				return fmt.Errorf("keys retire: %w", err)
			}
			counts, notes, err := keyUsage(ctx, conn, cfg.policy, stderr)
			name := conn.Config().Database
			conn.Close(context.Background())
			if err != nil {
				return fmt.Errorf("keys retire: database %s: %w", name, err)
			}
			for _, n := range notes {
				fmt.Fprintf(stderr, "phiproxy: keys retire: database %s: %s\n", name, n)
			}
			for _, col := range slices.Sorted(maps.Keys(counts)) {
				if n := counts[col][int64(id)]; n > 0 {
					inUse = append(inUse, fmt.Sprintf("%s (%d values in database %s)", col, n, name))
					total += n
				}
			}
		}
		if len(inUse) > 0 {
			return fmt.Errorf("keys retire: data key %d still encrypts %d values: %s; run phiproxy migrate reencrypt --table TABLE for each, then retire again (--force retires anyway and makes them unreadable)",
				id, total, strings.Join(inUse, ", "))
		}
	}
	if err := crypto.WriteKeyringFile(kcfg.KeyringFile, kf, false); err != nil {
		return fmt.Errorf("keys retire: %w", err)
	}
	fmt.Fprintf(stdout, "data key %d retired. Reload the proxies (kill -HUP, or restart them) so that they forget it.\n", id)
	return nil
}
