package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/policy"
)

// migrator runs one migration of one table over one connection.
type migrator struct {
	conn     *pgx.Conn
	pol      *policy.Policy
	table    *policy.Table
	dbname   string
	opts     migrateOptions
	pk       []string
	cols     []*migrateColumn
	indexed  []int // per column: how many blind indexes are read
	sql      migrateSQL
	coder    *valueCoder
	estimate int64
	warnings []string
	refusal  error // the first constraint violation of a row, for the summary
	start    time.Time
	stats    migrateStats
}

// newMigrator checks that the table is ready for the mode and prepares
// the statements.
func newMigrator(ctx context.Context, conn *pgx.Conn, kr *crypto.Keyring, pol *policy.Policy, t *policy.Table, o migrateOptions) (*migrator, error) {
	live, err := readCatalog(ctx, conn, pol)
	if err != nil {
		return nil, err
	}
	lt := live[t.QualifiedName()]
	if lt == nil {
		return nil, fmt.Errorf("the table is not in database %s (phiproxy schema prints its CREATE TABLE)", conn.Config().Database)
	}
	m := &migrator{conn: conn, pol: pol, table: t, dbname: conn.Config().Database, opts: o, coder: newValueCoder(o.mode, kr)}
	if m.pk = lt.PrimaryKey(); len(m.pk) == 0 {
		return nil, errors.New("the table has no primary key: migrate pages through a table by its primary key (ALTER TABLE ... ADD PRIMARY KEY (...) first)")
	}
	var notReady []string
	for _, c := range t.Columns {
		if slices.Contains(m.pk, c.Name) {
			return nil, fmt.Errorf("PHI column %s is part of the primary key: encrypting it would change the key", c.Name)
		}
		if o.mode == modeReindex && len(c.Indexes()) == 0 {
			continue
		}
		lc := lt.Column(c.Name)
		switch {
		case lc == nil:
			notReady = append(notReady, fmt.Sprintf("column %s is missing", c.Name))
			continue
		case lc.Type != string(c.Storage):
			notReady = append(notReady, fmt.Sprintf("column %s has type %s, not %s", c.Name, lc.Type, c.Storage))
			continue
		}
		mc := &migrateColumn{col: c, bytea: c.Storage == policy.StorageBytea}
		if mc.cipher, err = kr.Cipher(c.AssociatedData); err != nil {
			return nil, err
		}
		ready := true
		for _, bi := range c.Indexes() { // the exact index, then the normalized ones
			if bc := lt.Column(bi.Column); bc == nil || bc.Type != "text" {
				notReady = append(notReady, fmt.Sprintf("blind-index column %s is missing or not text", bi.Column))
				ready = false
				continue
			}
			var ix *crypto.Indexer
			if bi.GroupKeyed() {
				ix, err = kr.Indexer(bi.Group, bi.Normalize, bi.Bits)
			} else {
				ix, err = kr.NormalizedIndexer(bi.Group, bi.Normalize, bi.Bits)
			}
			if err != nil {
				return nil, err
			}
			mc.indexes = append(mc.indexes, ix)
		}
		if !ready {
			continue
		}
		if o.mode == modeDecrypt {
			if ck := lt.Check(c.CheckName()); ck != nil {
				notReady = append(notReady, fmt.Sprintf("the ciphertext CHECK constraint %s would refuse plaintext: ALTER TABLE %s DROP CONSTRAINT %s;",
					ck.Name, policy.QuoteQualified(t.Schema, t.Name), policy.QuoteIdent(ck.Name)))
			}
		}
		m.cols = append(m.cols, mc)
		m.indexed = append(m.indexed, len(mc.indexes))
	}
	if len(notReady) > 0 {
		return nil, fmt.Errorf("the table is not ready: %s (phiproxy schema prints the DDL)", strings.Join(notReady, "; "))
	}
	if len(m.cols) == 0 {
		return nil, fmt.Errorf("no column to %s: the table has no blind-indexed PHI column", o.mode)
	}
	for _, p := range policy.Diff(pol, live) {
		if p.Table == t.QualifiedName() && p.Step == policy.StepPrepare {
			m.warnings = append(m.warnings, fmt.Sprintf("%s: %s (see phiproxy schema)", p.Column, p.Msg))
		}
	}
	m.sql = buildMigrateSQL(t, lt, m.pk, m.cols)
	m.stats.values = make([][numOutcomes]int64, len(m.cols))
	m.estimate = int64(lt.Rows)
	if lt.Rows < 0 {
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+policy.QuoteQualified(t.Schema, t.Name)).Scan(&m.estimate); err != nil {
			return nil, fmt.Errorf("count rows: %w", dbError(err))
		}
	}
	return m, nil
}

// run migrates the whole table, batch after batch, reporting progress to
// w. On an error (ctx cancelled included) the batch in flight is rolled
// back; what was committed stays, and a new run resumes.
func (m *migrator) run(ctx context.Context, w io.Writer) error {
	m.start = time.Now()
	label := fmt.Sprintf("migrate %s %s", m.opts.mode, m.table.QualifiedName())
	if m.opts.dryRun {
		label += " (dry run)"
	}
	prog := newProgress(w, label, m.estimate)
	defer func() { prog.finish(m.stats.scanned) }()
	upper, err := m.lastKey(ctx)
	if err != nil || upper == nil {
		return err
	}
	var last []string
	for {
		rows, retry, err := m.batch(ctx, last, upper)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			return nil
		}
		last = rows[len(rows)-1].key
		for attempt := 1; len(retry) > 0; attempt++ {
			if attempt >= m.opts.retries {
				m.stats.skipped += int64(len(retry))
				break
			}
			m.stats.retried += int64(len(retry))
			if retry, err = m.again(ctx, retry); err != nil {
				return err
			}
		}
		prog.update(m.stats.scanned)
		if err := m.throttle(ctx); err != nil {
			return err
		}
	}
}

// lastKey returns the greatest primary key of the table (text forms), or
// nil when it is empty.
func (m *migrator) lastKey(ctx context.Context) ([]string, error) {
	rows, err := m.conn.Query(ctx, m.sql.last)
	if err != nil {
		return nil, fmt.Errorf("read the last key: %w", dbError(err))
	}
	defer rows.Close()
	var key []string
	for rows.Next() {
		for _, v := range rows.RawValues() {
			key = append(key, string(v))
		}
	}
	return key, rows.Err()
}

// batch reads the batch after the key last (nil: the first), up to the
// key upper, and writes its changes. It returns the rows read and those
// whose compare-and-set failed (written concurrently).
//
// The read and the write are two statements, each its own transaction
// (two round trips a batch): the compare-and-set makes a transaction
// around them unnecessary, since a row changed in between is simply not
// updated, and the one UPDATE of a batch commits or fails as a whole.
func (m *migrator) batch(ctx context.Context, last, upper []string) (rows []migrateRow, retry []migrateRow, err error) {
	var args []any
	sql := m.sql.first
	if last != nil {
		sql = m.sql.next
		for _, k := range last {
			args = append(args, k)
		}
	}
	for _, k := range upper {
		args = append(args, k)
	}
	rows, err = readRows(ctx, m.conn, sql, m.indexed, len(m.pk), append(args, m.opts.batch)...)
	if err != nil {
		return nil, nil, fmt.Errorf("read batch: %w", dbError(err))
	}
	m.stats.scanned += int64(len(rows))
	retry, err = m.write(ctx, rows, true)
	if err != nil {
		return nil, nil, err
	}
	return rows, retry, nil
}

// again reads the rows whose compare-and-set failed and tries them once
// more. Rows deleted meanwhile are counted and dropped.
func (m *migrator) again(ctx context.Context, retry []migrateRow) ([]migrateRow, error) {
	args := make([]any, len(m.pk))
	for k := range m.pk {
		keys := make([]string, len(retry))
		for i, r := range retry {
			keys[i] = r.key[k]
		}
		args[k] = keys
	}
	rows, err := readRows(ctx, m.conn, m.sql.refetch, m.indexed, len(m.pk), args...)
	if err != nil {
		return nil, fmt.Errorf("read rows again: %w", dbError(err))
	}
	m.stats.gone += int64(len(retry) - len(rows))
	return m.write(ctx, rows, false)
}

// write decides each row's changes and applies them with one
// compare-and-set UPDATE; count says whether the outcomes go into the
// statistics (a retried row's were counted when it was first read). It
// returns the rows the UPDATE did not change.
func (m *migrator) write(ctx context.Context, rows []migrateRow, count bool) ([]migrateRow, error) {
	var todo []migrateRow
	var changes [][]change
	for _, r := range rows {
		chs := make([]change, len(m.cols))
		dirty := false
		for j, c := range m.cols {
			ch, out := m.coder.decide(c, r.vals[j], r.bidx[j])
			if count {
				m.stats.values[j][out]++
			}
			chs[j] = ch
			dirty = dirty || ch.setValue || ch.setIndex
		}
		if dirty {
			todo = append(todo, r)
			changes = append(changes, chs)
		}
	}
	if len(todo) == 0 {
		return nil, nil
	}
	if m.opts.dryRun {
		m.stats.updated += int64(len(todo))
		return nil, nil
	}
	done, err := m.update(ctx, todo, changes)
	if isConstraintError(err) {
		// A constraint refused one of the rows (a CHECK on another column,
		// a unique index on a blind index), and with it the whole
		// statement: find which, row by row, so that the others go
		// through.
		return m.writeEach(ctx, todo, changes)
	}
	if err != nil {
		return nil, err
	}
	m.stats.updated += int64(len(done))
	var left []migrateRow
	for i, r := range todo {
		if !done[i] {
			left = append(left, r)
		}
	}
	return left, nil
}

// update runs the compare-and-set UPDATE and reports which rows it changed.
func (m *migrator) update(ctx context.Context, rows []migrateRow, changes [][]change) ([]bool, error) {
	res, err := m.conn.Query(ctx, m.sql.update, updateArgs(rows, changes, m.cols, len(m.pk))...)
	if err != nil {
		return nil, fmt.Errorf("update batch: %w", dbError(err))
	}
	defer res.Close()
	done := make([]bool, len(rows))
	for res.Next() {
		var ord int64
		if err := res.Scan(&ord); err != nil {
			return nil, fmt.Errorf("update batch: %w", err)
		}
		done[ord-1] = true
	}
	if err := res.Err(); err != nil {
		return nil, fmt.Errorf("update batch: %w", dbError(err))
	}
	return done, nil
}

// writeEach is write's fallback after a constraint violation: one UPDATE
// per row. Refused rows are counted and left.
func (m *migrator) writeEach(ctx context.Context, rows []migrateRow, changes [][]change) ([]migrateRow, error) {
	var left []migrateRow
	for i, r := range rows {
		done, err := m.update(ctx, rows[i:i+1], changes[i:i+1])
		switch {
		case isConstraintError(err):
			if m.refusal == nil {
				m.refusal = err
			}
			m.stats.refused++
		case err != nil:
			return nil, err
		case done[0]:
			m.stats.updated++
		default:
			left = append(left, r)
		}
	}
	return left, nil
}

// throttle sleeps as long as needed to keep the rows read per second at
// or below --rate.
func (m *migrator) throttle(ctx context.Context) error {
	if m.opts.rate <= 0 {
		return nil
	}
	want := time.Duration(float64(m.stats.scanned) / m.opts.rate * float64(time.Second))
	if d := want - time.Since(m.start); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}
