package proxy

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/rewrite"
)

// Option configures a Server beyond its YAML configuration.
type Option func(*Server) error

// WithPHI makes the server enforce pol: PHI values are encrypted and indexed
// with keys on their way to PostgreSQL and decrypted on their way back.
// Without it the server is a transparent proxy.
func WithPHI(pol *policy.Policy, keys Keys) Option {
	return func(srv *Server) error {
		if pol.Empty() {
			return nil
		}
		cols, err := newPHIColumns(pol, keys)
		if err != nil {
			return err
		}
		e := &phiEngine{
			policy:     pol,
			cols:       cols,
			catalogSQL: catalogQuery(pol),
			cacheSize:  srv.cfg.Limits.PlanCacheSize,
			dbs:        map[[32]byte]*dbState{},
		}
		if e.metrics, err = newPHIMetrics(srv.reg, e); err != nil {
			return fmt.Errorf("register PHI metrics: %w", err)
		}
		srv.phi = e
		return nil
	}
}

// KeyringKeys adapts a crypto.Keyring to Keys.
func KeyringKeys(k *crypto.Keyring) Keys { return keyringKeys{k} }

type keyringKeys struct{ k *crypto.Keyring }

func (kk keyringKeys) ColumnCipher(ad string) (ColumnCipher, error) { return kk.k.Cipher(ad) }
func (kk keyringKeys) BlindIndexer(group string, normalize []string, bits int) (BlindIndexer, error) {
	return kk.k.Indexer(group, normalize, bits)
}

// phiEngine is the server-wide PHI state: the policy, every column's keys,
// and a catalog and plan cache per distinct database catalog. Safe for
// concurrent use.
type phiEngine struct {
	policy     *policy.Policy
	cols       phiColumns
	catalogSQL string
	cacheSize  int
	metrics    *phiMetrics

	mu sync.Mutex
	// dbs holds one state per distinct catalog (by the hash of the catalog
	// query's rows): sessions on the same database share its plans, and a
	// session that sees other rows (another database, or after DDL) gets
	// plans made with what it sees.
	dbs map[[32]byte]*dbState
	// retired sums the counters of the plan caches forgotten from dbs, so
	// the exported counters never go down.
	retired rewrite.CacheStats
}

// cacheStats sums the plan cache counters of every catalog, past and
// present.
func (e *phiEngine) cacheStats() rewrite.CacheStats {
	e.mu.Lock()
	defer e.mu.Unlock()
	sum := e.retired
	for _, st := range e.dbs {
		c := st.plans.Stats()
		sum.Hits, sum.Misses, sum.Bypass = sum.Hits+c.Hits, sum.Misses+c.Misses, sum.Bypass+c.Bypass
	}
	return sum
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
func (e *phiEngine) state(rows [][][]byte) (*dbState, error) {
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
			c := old.plans.Stats()
			e.retired.Hits, e.retired.Misses, e.retired.Bypass = e.retired.Hits+c.Hits, e.retired.Misses+c.Misses, e.retired.Bypass+c.Bypass
			delete(e.dbs, k)
			break
		}
	}
	st := &dbState{cat: cat, plans: rewrite.NewCache(e.cacheSize, e.policy, cat)}
	e.dbs[key] = st
	return st, nil
}

// errNonStandardStrings refuses statements on policy tables while the
// session has standard_conforming_strings off.
var errNonStandardStrings = &rewrite.Error{Code: "0A000", Message: "standard_conforming_strings must be on for statements on PHI tables: SET standard_conforming_strings = on"}

// CatalogError refuses statements on a policy table that the database does
// not hold the way phiproxy needs (a missing blind-index column, a PHI
// column of a non-storage type). Msg says which DDL fixes it.
type CatalogError struct{ Msg string }

func (e *CatalogError) Error() string { return e.Msg }

// plan analyzes sql against the state's catalog and checks that the
// tables it touches are ready. simple says the text comes from a simple
// Query, whose literals change from text to text: its plan is made from
// the cached plan of its shape (rewrite.Cache.AnalyzeSimple).
func (st *dbState) plan(sql string, simple, nonStandardStrings bool) (*rewrite.Plan, error) {
	analyze := st.plans.Analyze
	if simple {
		analyze = st.plans.AnalyzeSimple
	}
	p, err := analyze(sql)
	if err != nil {
		return nil, err
	}
	if nonStandardStrings && (!p.Passthrough || len(p.Statements) > 0) {
		// The text names a policy table (it was parsed) and its literals
		// may not be what the analysis read.
		return nil, errNonStandardStrings
	}
	for _, s := range p.Statements {
		switch s.Kind {
		case rewrite.KindSelect, rewrite.KindInsert, rewrite.KindUpdate, rewrite.KindDelete:
		default:
			continue // DDL must go through: it is how the table gets ready
		}
		for _, t := range s.Tables {
			if msg := st.cat.problem(t); msg != "" {
				return nil, &CatalogError{Msg: fmt.Sprintf("phiproxy: table %s is not ready for encryption: %s", t.QualifiedName(), msg)}
			}
		}
	}
	return p, nil
}

// phiMetrics are the PHI collectors. Per-column counters are resolved once
// (labels bounded by the policy) so the value path only adds.
type phiMetrics struct {
	statements     *prometheus.CounterVec // outcome: passthrough | rewritten | rejected_<class>
	passthrough    prometheus.Counter
	rewritten      prometheus.Counter
	values         *prometheus.CounterVec // table, column, operation
	decryptFailure prometheus.Counter
	added          prometheus.Histogram
}

// columnCounters are one column's value counters.
type columnCounters struct {
	encrypted, indexed, decrypted prometheus.Counter
}

func newPHIMetrics(reg prometheus.Registerer, e *phiEngine) (*phiMetrics, error) {
	m := &phiMetrics{
		statements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phiproxy_statements_total",
			Help: "SQL texts analyzed (each simple Query and each Parse; executions of a prepared statement are not counted again), by outcome: passthrough, rewritten, or rejected_<reason> (unsupported, syntax, invalid_value, catalog, protocol).",
		}, []string{"outcome"}),
		values: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phiproxy_phi_values_total",
			Help: "PHI values transformed, by policy table, column and operation (encrypt, index, decrypt).",
		}, []string{"table", "column", "operation"}),
		decryptFailure: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "phiproxy_decryption_failures_total",
			Help: "Stored values that failed to decrypt (tampered, unknown key, or plaintext).",
		}),
		added: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "phiproxy_statement_added_seconds",
			Help:    "Time the proxy itself spends on a statement's messages (analysis, encryption, rewriting), client to server.",
			Buckets: []float64{5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2},
		}),
	}
	m.passthrough = m.statements.WithLabelValues("passthrough")
	m.rewritten = m.statements.WithLabelValues("rewritten")
	cache := func(name, help string, get func(rewrite.CacheStats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(get(e.cacheStats())) })
	}
	for _, t := range e.policy.Tables() {
		for _, c := range t.Columns {
			pc := e.cols[c]
			pc.counters = columnCounters{
				encrypted: m.values.WithLabelValues(t.QualifiedName(), c.Name, "encrypt"),
				indexed:   m.values.WithLabelValues(t.QualifiedName(), c.Name, "index"),
				decrypted: m.values.WithLabelValues(t.QualifiedName(), c.Name, "decrypt"),
			}
		}
	}
	for _, c := range []prometheus.Collector{m.statements, m.values, m.decryptFailure, m.added,
		cache("phiproxy_plan_cache_hits_total", "Statements whose plan was found in the plan cache.",
			func(s rewrite.CacheStats) uint64 { return s.Hits }),
		cache("phiproxy_plan_cache_misses_total", "Statements parsed and analyzed because their plan was not cached.",
			func(s rewrite.CacheStats) uint64 { return s.Misses }),
		cache("phiproxy_plan_cache_bypass_total", "Statements passed through without parsing: they name no policy table.",
			func(s rewrite.CacheStats) uint64 { return s.Bypass }),
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// rejectOutcome is the statements_total outcome of a refused statement.
func rejectOutcome(err error) string {
	var (
		re *rewrite.Error
		ve *ValueError
		ce *CatalogError
		pe *ParamCountError
	)
	switch {
	case errors.Is(err, rewrite.ErrSyntax):
		return "rejected_syntax"
	case errors.As(err, &re):
		return "rejected_unsupported"
	case errors.As(err, &ve), errors.Is(err, errValue):
		return "rejected_invalid_value"
	case errors.As(err, &ce):
		return "rejected_catalog"
	case errors.As(err, &pe), errors.Is(err, ErrAmbiguousStatement):
		return "rejected_protocol"
	}
	return "rejected_other"
}
