package phi

import (
	"context"
	"crypto/sha256"
	"fmt"
	"sync"

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
	policy     *policy.Policy
	cols       keyedColumns
	catalogSQL string
	cacheSize  int
	metrics    *metrics
	audit      AuditLog     // nil: no audit records
	names      auditNames   // qualified names for audit records
	access     *accessRules // nil: no access rule in the policy

	mu sync.Mutex
	// dbs holds one state per distinct catalog (by the hash of the catalog
	// query's rows): sessions on the same database share its plans, and a
	// session that sees other rows (another database, or after DDL) gets
	// plans made with what it sees.
	dbs map[[32]byte]*dbState
	// retired sums the counters of the plan caches forgotten from dbs, so
	// the exported counters never go down.
	retired rewrite.CacheStats

	// onSession, when set (by tests), sees each new session.
	onSession func(*session)
}

var _ proxy.Interceptor = (*Engine)(nil)

// New returns an Engine that enforces pol with keys: PHI values are
// encrypted and indexed on their way to PostgreSQL and decrypted on their
// way back. Its metrics are registered with reg.
func New(pol *policy.Policy, keys Keys, reg prometheus.Registerer, cfg Config) (*Engine, error) {
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
		catalogSQL: catalogQuery(pol),
		cacheSize:  cfg.PlanCacheSize,
		dbs:        map[[32]byte]*dbState{},
		audit:      cfg.Audit,
		names:      newAuditNames(pol),
	}
	if e.access, err = newAccessRules(pol); err != nil {
		return nil, err
	}
	if e.metrics, err = newMetrics(reg, e); err != nil {
		return nil, fmt.Errorf("register PHI metrics: %w", err)
	}
	return e, nil
}

// Reload returns an Engine for pol with keys that shares e's metrics, for
// new sessions after a reload; sessions of e keep e. e's plan caches are
// not carried over: a new policy or key may change every plan.
func (e *Engine) Reload(pol *policy.Policy, keys Keys, cfg Config) (*Engine, error) {
	cols, err := newKeyedColumns(pol, keys)
	if err != nil {
		return nil, err
	}
	if cfg.PlanCacheSize <= 0 {
		cfg.PlanCacheSize = proxy.DefaultPlanCacheSize
	}
	next := &Engine{
		policy:     pol,
		cols:       cols,
		catalogSQL: catalogQuery(pol),
		cacheSize:  cfg.PlanCacheSize,
		dbs:        map[[32]byte]*dbState{},
		metrics:    e.metrics,
	}
	e.metrics.adopt(next)
	return next, nil
}

// NewSession implements proxy.Interceptor: it reads the catalog of the
// policy's tables on the session's own connection, before the client can
// send anything.
func (e *Engine) NewSession(ctx context.Context, c *proxy.Conn) (proxy.SessionInterceptor, error) {
	s := newSession(e, c)
	for _, name := range []string{"standard_conforming_strings", "client_encoding"} {
		if v := c.ServerParameter(name); v != "" {
			s.ParameterStatus(name, v)
		}
	}
	rows, err := c.Query(e.catalogSQL)
	if err != nil {
		return nil, fmt.Errorf("load catalog: %w", err)
	}
	if s.db, err = e.state(rows); err != nil {
		return nil, fmt.Errorf("load catalog: %w", err)
	}
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

// dbState is one database catalog and the plans made against it.
type dbState struct {
	cat   *catalog
	plans *rewrite.Cache
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
	st := &dbState{cat: cat, plans: rewrite.NewCache(e.cacheSize, e.policy, cat)}
	e.dbs[key] = st
	return st, nil
}

// plan analyzes sql against the state's catalog and checks that the
// tables it touches are ready. simple says the text comes from a simple
// Query, whose literals change from text to text: its plan is made from
// the cached plan of its shape (rewrite.Cache.AnalyzeSimpleWith), read
// with the lexer under the session's settings o.
func (st *dbState) plan(sql string, simple bool, o rewrite.LexOptions) (*rewrite.Plan, error) {
	var (
		p   *rewrite.Plan
		err error
	)
	if simple {
		p, err = st.plans.AnalyzeSimpleWith(sql, o)
	} else {
		p, err = st.plans.Analyze(sql)
	}
	if err != nil {
		return nil, err
	}
	for _, s := range p.Statements {
		switch s.Kind {
		case rewrite.KindSelect, rewrite.KindInsert, rewrite.KindUpdate, rewrite.KindDelete:
		default:
			continue // DDL must go through: it is how the table gets ready
		}
		for _, t := range s.Tables {
			if msg := st.cat.problem(t); msg != "" {
				return nil, &CatalogError{Msg: fmt.Sprintf("table %s is not ready for encryption: %s", t.QualifiedName(), msg)}
			}
		}
	}
	return p, nil
}
