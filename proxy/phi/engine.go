package phi

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/rewrite"
)

// Config tunes an Engine.
type Config struct {
	// PlanCacheSize bounds the plans kept per database catalog
	// (proxy.DefaultPlanCacheSize when 0).
	PlanCacheSize int
	// Audit receives the audit records (audit.go); nil: none are made.
	Audit AuditLog
}

// Engine enforces a policy on every session of a proxy.Server: it is the
// server-wide PHI state (the policy, every column's keys, a catalog and plan
// cache per distinct database catalog) and the proxy.Interceptor that
// starts each session's PHI layer. Safe for concurrent use.
type Engine struct {
	policy *policy.Policy
	cols   keyedColumns
	// catalogSQL reads the catalog, aliases included; columnsSQL reads it
	// without looking for aliases (catalogQuery).
	catalogSQL, columnsSQL string
	cacheSize              int
	metrics                *metrics
	drift                  *driftMetrics
	// recheck is how long a session trusts a catalog it verified before,
	// when idle, it reads the columns again with a query of its own
	// before planning (reload.go); the guard makes that safe, recheck
	// makes a change made long before usually cost no refusal.
	recheck time.Duration
	audit   AuditLog     // nil: no audit records
	names   auditNames   // qualified names for audit records
	access  *accessRules // nil: no access rule in the policy

	mu sync.Mutex
	// dbs holds one state per distinct catalog (by the hash of the catalog
	// query's rows): sessions on the same database share its plans, and a
	// session that sees other rows (another database, or after DDL) gets
	// plans made with what it sees.
	dbs map[[32]byte]*dbState
	// retired sums the counters of the plan caches forgotten from dbs, so
	// the exported counters never go down.
	retired rewrite.CacheStats

	// aliases holds, by database name, the alias rows of the last full
	// catalog read there and when it was made: a session that starts
	// within aliasTTL of it reads only the columns. Guarded by mu; bounded
	// by maxReadyDatabases.
	aliases map[string]aliasScan
	// ready holds, by database name, the catalog the last session that
	// read one outside a transaction block saw there: /readyz reports its
	// problems (Ready). Guarded by mu; bounded by maxReadyDatabases.
	ready map[string]*dbState

	// onSession, when set (by tests), sees each new session.
	onSession func(*session)
	// noGuard and noRecheck, set by tests whose fake server does not
	// script them, leave out the guard and the session's own catalog
	// checks.
	noGuard, noRecheck bool
}

var _ proxy.ReadinessChecker = (*Engine)(nil)

var _ proxy.Interceptor = (*Engine)(nil)

// New returns an Engine that enforces pol with keys: PHI values are
// encrypted and indexed on their way to PostgreSQL and decrypted on their
// way back. Its metrics are registered with reg.
func New(pol *policy.Policy, keys Keys, reg prometheus.Registerer, cfg Config) (*Engine, error) {
	e, err := newEngine(pol, keys, cfg)
	if err != nil {
		return nil, err
	}
	if e.metrics, err = newMetrics(reg, e); err != nil {
		return nil, fmt.Errorf("register PHI metrics: %w", err)
	}
	if e.drift, err = newDriftMetrics(reg, e); err != nil {
		return nil, fmt.Errorf("register PHI metrics: %w", err)
	}
	return e, nil
}

// newEngine builds an Engine without its metrics.
func newEngine(pol *policy.Policy, keys Keys, cfg Config) (*Engine, error) {
	cols, err := newKeyedColumns(pol, keys)
	if err != nil {
		return nil, err
	}
	if cfg.PlanCacheSize <= 0 {
		cfg.PlanCacheSize = proxy.DefaultPlanCacheSize
	}
	e := &Engine{
		policy:     pol,
		cols:       cols,
		catalogSQL: catalogQuery(pol, true),
		columnsSQL: catalogQuery(pol, false),
		cacheSize:  cfg.PlanCacheSize,
		recheck:    defaultRecheck,
		dbs:        map[[32]byte]*dbState{},
		ready:      map[string]*dbState{},
		aliases:    map[string]aliasScan{},
		audit:      cfg.Audit,
		names:      newAuditNames(pol),
	}
	if e.access, err = newAccessRules(pol); err != nil {
		return nil, err
	}
	return e, nil
}

// Reload returns an Engine for pol with keys that shares e's metrics, for
// new sessions after a reload; sessions of e keep e. e's plan caches are
// not carried over: a new policy or key may change every plan.
func (e *Engine) Reload(pol *policy.Policy, keys Keys, cfg Config) (*Engine, error) {
	next, err := newEngine(pol, keys, cfg)
	if err != nil {
		return nil, err
	}
	next.metrics, next.drift = e.metrics, e.drift
	e.metrics.adopt(next)
	return next, nil
}

// NewSession implements proxy.Interceptor: in a database the policy
// governs it reads the catalog of the policy's tables on the session's own
// connection, before the client can send anything. Sessions on other
// databases are left alone: no query, no analysis, raw relay.
func (e *Engine) NewSession(ctx context.Context, c *proxy.Conn) (proxy.SessionInterceptor, error) {
	if !e.policy.Governs(c.Database()) {
		return nil, nil
	}
	s := newSession(e, c)
	for _, name := range []string{"standard_conforming_strings", "client_encoding"} {
		if v := c.ServerParameter(name); v != "" {
			s.ParameterStatus(name, v)
		}
	}
	rows, err := e.readCatalog(c, false)
	if err != nil {
		return nil, fmt.Errorf("load catalog: %w", err)
	}
	if s.db, err = e.state(rows); err != nil {
		return nil, fmt.Errorf("load catalog: %w", err)
	}
	s.verified()
	s.readAt = time.Now()
	e.loaded(c, s.db)
	s.startAudit()
	if err := s.startAccess(); err != nil {
		return nil, err
	}
	if e.onSession != nil {
		e.onSession(s)
	}
	return s, nil
}

// cacheStats sums the plan cache counters of every catalog, past and
// present.
func (e *Engine) cacheStats() rewrite.CacheStats {
	e.mu.Lock()
	defer e.mu.Unlock()
	sum := e.retired
	for _, st := range e.dbs {
		sum = addStats(sum, st.plans.Stats())
	}
	return sum
}

func addStats(a, b rewrite.CacheStats) rewrite.CacheStats {
	return rewrite.CacheStats{Hits: a.Hits + b.Hits, Misses: a.Misses + b.Misses, Bypass: a.Bypass + b.Bypass}
}

// maxDBStates bounds the per-catalog states kept; beyond it the oldest
// unused ones are forgotten (their sessions keep their pointers).
const maxDBStates = 64

// aliasTTL is how long the alias rows of a full catalog read serve new
// sessions on the same database. Looking for second names costs a
// session several times what reading the columns does; an alias created
// outside phiproxy is noticed by sessions that start this long after it,
// by every catalog read again after DDL, a refusal or a change the guard
// found, and by `phiproxy check`.
const aliasTTL = 10 * time.Second

// aliasScan is the alias rows of one full catalog read.
type aliasScan struct {
	rows  [][][]byte
	at    time.Time
	epoch string // the epoch row's value then: another now means another graph
}

// readCatalog runs the catalog query on c's connection: the full one when
// full is set or the database's alias rows are older than aliasTTL, else
// the one without aliases, completed with the remembered alias rows; and
// the views query when views read a policy table (views.go).
func (e *Engine) readCatalog(c *proxy.Conn, full bool) ([][][]byte, error) {
	db := c.Database()
	var cached aliasScan
	if !full {
		e.mu.Lock()
		cached = e.aliases[db]
		e.mu.Unlock()
		full = time.Since(cached.at) >= aliasTTL
	}
	if !full {
		rows, err := c.Query(e.columnsSQL)
		if err != nil {
			return nil, err
		}
		if epochOf(rows) == cached.epoch {
			return readViews(e.policy, append(rows, cached.rows...), c.Query)
		}
		// Second names changed since the alias rows were read.
	}
	rows, err := c.Query(e.catalogSQL)
	if err != nil {
		return nil, err
	}
	if rows, err = readViews(e.policy, rows, c.Query); err != nil {
		return nil, err
	}
	var scan aliasScan
	for _, r := range rows {
		if len(r) > 0 && (string(r[0]) == rowAlias || string(r[0]) == rowRemote) {
			scan.rows = append(scan.rows, r)
		}
	}
	scan.at, scan.epoch = time.Now(), epochOf(rows)
	e.mu.Lock()
	if _, seen := e.aliases[db]; !seen && len(e.aliases) >= maxReadyDatabases {
		for k := range e.aliases {
			delete(e.aliases, k)
			break
		}
	}
	e.aliases[db] = scan
	e.mu.Unlock()
	return rows, nil
}

// loaded notes the catalog a session read outside a transaction block in
// its database, for Ready, and logs the catalog's problems when they
// change.
func (e *Engine) loaded(c *proxy.Conn, st *dbState) {
	db := c.Database()
	e.mu.Lock()
	old, seen := e.ready[db]
	if e.policy.Databases() == nil && len(st.cat.tables) == 0 {
		// Governing every database, the engine cannot tell the
		// application's database from one that merely lacks the policy's
		// tables (postgres, a monitoring login): only a database that has
		// some of them counts for readiness. Statements on the tables are
		// refused all the same.
		delete(e.ready, db)
		e.mu.Unlock()
		return
	}
	if !seen && len(e.ready) >= maxReadyDatabases {
		for k := range e.ready { // any: only readiness detail is lost
			delete(e.ready, k)
			break
		}
	}
	e.ready[db] = st
	e.mu.Unlock()
	if old == st || (old != nil && slices.Equal(old.problems, st.problems)) {
		return
	}
	if len(st.problems) == 0 {
		if old != nil {
			c.Logger().Info("catalog ready: every policy table can be served")
		}
		return
	}
	for _, p := range st.problems {
		c.Logger().Warn("policy table refused", "table", p.Table, "problem", string(p.Kind), "fix", p.String())
	}
}

// maxReadyDatabases bounds the databases Ready remembers (a policy
// without policy.databases governs every name a client may send).
const maxReadyDatabases = 1024

// Ready implements proxy.ReadinessChecker: not ready while the last
// catalog read in some governed database shows a policy table that cannot
// be served (missing, not ready, or with a second name). A database no
// session has opened yet counts as ready: `phiproxy check` is the way to
// learn about it before traffic. Without policy.databases, a database
// with none of the policy's tables does not count either (see loaded).
func (e *Engine) Ready() error {
	e.mu.Lock()
	var msgs []string
	for db, st := range e.ready {
		for _, p := range st.problems {
			msgs = append(msgs, fmt.Sprintf("database %s: table %s: %s", db, p.Table, p))
		}
	}
	e.mu.Unlock()
	if len(msgs) == 0 {
		return nil
	}
	slices.Sort(msgs)
	return errors.New(strings.Join(msgs, "; "))
}

// problemCount counts the problems Ready reports.
func (e *Engine) problemCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, st := range e.ready {
		n += len(st.problems)
	}
	return n
}

// dbState is one database catalog and the plans made against it.
type dbState struct {
	cat   *catalog
	plans *rewrite.Cache
	// problems are cat's problems in policy order.
	problems []Problem
	// guardSQL is the guard for cat (guard.go); checkSQL, its check
	// inside a simple Query (inline.go).
	guardSQL, checkSQL string
}

// state returns the shared state for the catalog whose rows are given.
func (e *Engine) state(rows [][][]byte) (*dbState, error) {
	h := sha256.New()
	for _, r := range rows {
		for _, v := range r {
			fmt.Fprintf(h, "%d:%s;", len(v), v)
		}
	}
	var key [32]byte
	h.Sum(key[:0])
	e.mu.Lock()
	defer e.mu.Unlock()
	if st := e.dbs[key]; st != nil {
		return st, nil
	}
	cat, err := buildCatalog(e.policy, rows)
	if err != nil {
		return nil, err
	}
	if len(e.dbs) >= maxDBStates {
		for k, old := range e.dbs { // any: a cold catalog only costs a re-parse
			e.retired = addStats(e.retired, old.plans.Stats())
			delete(e.dbs, k)
			break
		}
	}
	pol := cat.pol // the policy and the decrypting views (views.go)
	if pol == nil {
		pol = e.policy
	}
	st := &dbState{cat: cat, plans: rewrite.NewCache(e.cacheSize, pol, cat), problems: cat.allProblems(e.policy),
		guardSQL: guardQuery(e.policy, cat), checkSQL: checkQuery(e.policy, cat)}
	e.dbs[key] = st
	return st, nil
}

// plan analyzes sql against the state's catalog and checks that the
// tables it touches are ready. simple says the text comes from a simple
// Query, whose literals change from text to text: its plan is made from
// the cached plan of its shape (rewrite.Cache.AnalyzeSimpleWith), read
// with the lexer under the session's settings o.
func (st *dbState) plan(sql string, simple bool, o rewrite.LexOptions) (*rewrite.Plan, error) {
	return st.planScratch(nil, sql, simple, o)
}

// planScratch is plan with a session's scratch for simple Query texts
// (nil: none): a plan made from its shape's is then the shape's, and
// sc.Render gives the plan to render (rewrite.Cache.AnalyzeSimpleScratch).
func (st *dbState) planScratch(sc *rewrite.SimpleScratch, sql string, simple bool, o rewrite.LexOptions) (*rewrite.Plan, error) {
	var (
		p   *rewrite.Plan
		err error
	)
	switch {
	case simple && sc != nil:
		p, err = st.plans.AnalyzeSimpleScratch(sc, sql, o)
	case simple:
		p, err = st.plans.AnalyzeSimpleWith(sql, o)
	default:
		p, err = st.plans.Analyze(sql)
	}
	if err != nil {
		// A text on a table that cannot be served may fail analysis for
		// that very reason (INSERT without a column list into a missing
		// table): say what is wrong with the table, and how to fix it.
		if cerr := st.problemNamed(sql); cerr != nil {
			return nil, cerr
		}
		return nil, err
	}
	for _, s := range p.Statements {
		switch s.Kind {
		case rewrite.KindSelect, rewrite.KindInsert, rewrite.KindUpdate, rewrite.KindDelete, rewrite.KindCopy:
		default:
			continue // DDL must go through: it is how the table gets ready
		}
		for _, t := range s.Tables {
			if err := st.refusal(t); err != nil {
				return nil, err
			}
		}
	}
	return p, nil
}

// refusal is the error for statements on t, nil when t can be served.
func (st *dbState) refusal(t *policy.Table) error {
	if msg := st.cat.problem(t); msg != "" {
		e := &CatalogError{Msg: fmt.Sprintf("table %s is not ready for encryption: %s", t.QualifiedName(), msg)}
		for _, p := range st.cat.problems[t.QualifiedName()] {
			if p.Kind == ProblemMissing || p.Kind == ProblemColumn {
				e.Hnt = schemaHint
			}
		}
		return e
	}
	return nil
}

// schemaHint goes with a refusal whose DDL comes from policy.DiffTable.
const schemaHint = "phiproxy schema --config FILE prints these changes as one script, with the session settings its casts read, and what else the table needs"

// problemNamed returns the refusal for the first table with problems that
// sql names (as a word, in any case), or nil.
func (st *dbState) problemNamed(sql string) error {
	if len(st.problems) == 0 {
		return nil
	}
	lower := strings.ToLower(sql)
	for _, p := range st.problems {
		schema, name, _ := strings.Cut(p.Table, ".")
		if containsWord(lower, strings.ToLower(name)) {
			return st.refusal(&policy.Table{Schema: schema, Name: name})
		}
	}
	return nil
}
