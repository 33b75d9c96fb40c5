package proxy

import (
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Session outcomes, the label values of phiproxy_connections_total.
const (
	outcomeOK            = "ok"             // the client ended the session (Terminate or EOF)
	outcomeAuthFailed    = "auth_failed"    // the server refused the login
	outcomeRefused       = "refused"        // refused before login: plaintext, bad TLS, unsupported
	outcomeProtocolError = "protocol_error" // malformed or oversized message
	outcomeUpstreamError = "upstream_error" // upstream unreachable or lost
	outcomeClientError   = "client_error"   // client I/O failure mid-session
	outcomeShutdown      = "shutdown"       // closed by Shutdown after the drain timeout
	outcomePanic         = "panic"          // recovered panic
	outcomeCancel        = "cancel_request" // a CancelRequest connection
	outcomeInternal      = "internal_error"
)

var allOutcomes = []string{outcomeOK, outcomeAuthFailed, outcomeRefused, outcomeProtocolError,
	outcomeUpstreamError, outcomeClientError, outcomeShutdown, outcomePanic, outcomeCancel, outcomeInternal}

// Directions, the label values of the byte and message counters.
const (
	dirClientToServer = "client_to_server"
	dirServerToClient = "server_to_client"
)

// Metrics are the proxy's Prometheus collectors. Create them once per
// registry with NewMetrics.
type Metrics struct {
	ActiveConnections   prometheus.Gauge
	Connections         *prometheus.CounterVec // outcome
	TLSHandshakeFailure *prometheus.CounterVec // side: client | upstream
	Bytes               *prometheus.CounterVec // direction
	Messages            *prometheus.CounterVec // direction
	Queries             *prometheus.CounterVec // protocol: simple | extended | function_call
	UpstreamConnect     prometheus.Histogram
	SessionPanics       prometheus.Counter
	BuildInfo           *prometheus.GaugeVec

	// Resolved children for the hot path (WithLabelValues allocates).
	bytesC2S, bytesS2C       prometheus.Counter
	messagesC2S, messagesS2C prometheus.Counter
	querySimple, queryExt    prometheus.Counter
	queryFunc                prometheus.Counter
}

// NewMetrics creates the collectors and registers them with reg (which may be
// nil: unregistered, for tests). It fails if reg already holds them.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		ActiveConnections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "phiproxy_connections_active",
			Help: "Client sessions currently open.",
		}),
		Connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phiproxy_connections_total",
			Help: "Client connections accepted, by how they ended.",
		}, []string{"outcome"}),
		TLSHandshakeFailure: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phiproxy_tls_handshake_failures_total",
			Help: "TLS handshakes that failed, by side (client or upstream).",
		}, []string{"side"}),
		Bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phiproxy_relayed_bytes_total",
			Help: "Protocol bytes relayed after startup, by direction.",
		}, []string{"direction"}),
		Messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phiproxy_relayed_messages_total",
			Help: "Protocol messages relayed after startup, by direction.",
		}, []string{"direction"}),
		Queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phiproxy_queries_total",
			Help: "Statements executed, by protocol (simple Query, extended Execute, FunctionCall).",
		}, []string{"protocol"}),
		UpstreamConnect: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "phiproxy_upstream_connect_duration_seconds",
			Help:    "Time to connect to the upstream, TLS included, until the startup message is sent.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		SessionPanics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "phiproxy_session_panics_total",
			Help: "Panics recovered in a session (the session was closed, the process kept serving).",
		}),
		BuildInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "phiproxy_build_info",
			Help: "Build information, value 1: the version and commit the binary was built from (as phiproxy version prints them) and the Go version.",
		}, []string{"version", "commit", "goversion"}),
	}
	for _, o := range allOutcomes {
		m.Connections.WithLabelValues(o)
	}
	m.TLSHandshakeFailure.WithLabelValues("client")
	m.TLSHandshakeFailure.WithLabelValues("upstream")
	m.bytesC2S = m.Bytes.WithLabelValues(dirClientToServer)
	m.bytesS2C = m.Bytes.WithLabelValues(dirServerToClient)
	m.messagesC2S = m.Messages.WithLabelValues(dirClientToServer)
	m.messagesS2C = m.Messages.WithLabelValues(dirServerToClient)
	m.querySimple = m.Queries.WithLabelValues("simple")
	m.queryExt = m.Queries.WithLabelValues("extended")
	m.queryFunc = m.Queries.WithLabelValues("function_call")
	if reg != nil {
		for _, c := range []prometheus.Collector{m.ActiveConnections, m.Connections, m.TLSHandshakeFailure,
			m.Bytes, m.Messages, m.Queries, m.UpstreamConnect, m.SessionPanics, m.BuildInfo} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// BuildInfo identifies the binary in phiproxy_build_info.
type BuildInfo struct {
	Version, Commit string
}

// WithBuildInfo sets the version and commit that phiproxy_build_info
// reports (cmd passes what the Makefile stamped); without it they come
// from the binary's build information (BuildVersion).
func WithBuildInfo(b BuildInfo) Option {
	return func(srv *Server) error {
		srv.build = b
		return nil
	}
}

// setBuildInfo sets phiproxy_build_info's one series.
func (m *Metrics) setBuildInfo(b BuildInfo) {
	if b == (BuildInfo{}) {
		b.Version, b.Commit = BuildVersion()
	}
	m.BuildInfo.WithLabelValues(b.Version, b.Commit, runtime.Version()).Set(1)
}

// BuildVersion returns the main module's version and VCS revision (with a
// "+dirty" mark) from the binary's build information.
func BuildVersion() (version, revision string) {
	version, revision = "devel", "unknown"
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return version, revision
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		version = v
	}
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty {
		revision += "+dirty"
	}
	return version, revision
}

// relayCounts is a session's local tally for one direction, added to the
// shared counters at each flush rather than per message (the counters are
// shared by every session; one atomic add per batch keeps them off the
// per-message path).
type relayCounts struct {
	bytes, messages uint64
	queries         uint64 // extended-protocol Execute
	simpleQueries   uint64 // simple Query
	functionCalls   uint64
}
