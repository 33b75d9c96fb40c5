package phi

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/novamind/phiproxy/rewrite"
)

// metrics are the PHI collectors. Per-column counters are resolved once
// (labels bounded by the policy) so the value path only adds.
type metrics struct {
	statements     *prometheus.CounterVec // outcome: passthrough | rewritten | rejected_<class>
	passthrough    prometheus.Counter
	rewritten      prometheus.Counter
	values         *prometheus.CounterVec // table, column, operation
	decryptFailure *prometheus.CounterVec // reason: unreadableError.Class
	plaintext      *prometheus.CounterVec // table, column
	added          prometheus.Histogram

	// engine is the Engine whose plan caches the cache counters read: the
	// latest of a chain of reloads (Engine.Reload). retired sums the
	// counters of the engines it replaced, so the totals never go down.
	engine  atomic.Pointer[Engine]
	mu      sync.Mutex
	retired rewrite.CacheStats
}

// cacheStats sums the plan cache counters of the current engine and of
// those it replaced.
func (m *metrics) cacheStats() rewrite.CacheStats {
	m.mu.Lock()
	sum := m.retired
	m.mu.Unlock()
	if e := m.engine.Load(); e != nil {
		sum = addStats(sum, e.cacheStats())
	}
	return sum
}

// adopt makes e the engine the cache counters read, and resolves its
// columns' value counters.
func (m *metrics) adopt(e *Engine) {
	for _, t := range e.policy.Tables() {
		for _, c := range t.Columns {
			e.cols[c].counters = columnCounters{
				encrypted: m.values.WithLabelValues(t.QualifiedName(), c.Name, "encrypt"),
				indexed:   m.values.WithLabelValues(t.QualifiedName(), c.Name, "index"),
				decrypted: m.values.WithLabelValues(t.QualifiedName(), c.Name, "decrypt"),
				plaintext: m.plaintext.WithLabelValues(t.QualifiedName(), c.Name),
			}
		}
	}
	if old := m.engine.Swap(e); old != nil {
		m.mu.Lock()
		m.retired = addStats(m.retired, old.cacheStats())
		m.mu.Unlock()
	}
}

// columnCounters are one column's value counters.
type columnCounters struct {
	encrypted, indexed, decrypted prometheus.Counter
	// plaintext counts values read as plaintext in a table in migration.
	plaintext prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, e *Engine) (*metrics, error) {
	m := &metrics{
		statements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phiproxy_statements_total",
			Help: "SQL texts analyzed (each simple Query and each Parse; executions of a prepared statement are not counted again), by outcome: passthrough, rewritten, or rejected_<reason> (unsupported, syntax, invalid_value, catalog, protocol).",
		}, []string{"outcome"}),
		values: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phiproxy_phi_values_total",
			Help: "PHI values transformed, by policy table, column and operation (encrypt, index, decrypt).",
		}, []string{"table", "column", "operation"}),
		decryptFailure: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phiproxy_decryption_failures_total",
			Help: "Stored values that failed to decrypt, by reason: unknown_key, tampered or not_ciphertext.",
		}, []string{"reason"}),
		plaintext: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phiproxy_plaintext_reads_total",
			Help: "Stored PHI values returned as plaintext because their table is in migration (policy migrating: true) and phiproxy migrate encrypt has not reached their row yet, by policy table and column. It stays at 0 once the migration is done: then remove the flag.",
		}, []string{"table", "column"}),
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
			func() float64 { return float64(get(m.cacheStats())) })
	}
	m.adopt(e)
	for _, c := range []prometheus.Collector{m.statements, m.values, m.decryptFailure, m.plaintext, m.added,
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
