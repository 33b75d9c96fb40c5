package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Server accepts client connections and runs one Session per connection.
type Server struct {
	cfg       Config
	log       *slog.Logger
	metrics   *Metrics
	gatherer  prometheus.Gatherer // nil when reg is not a Gatherer
	clientTLS *tls.Config         // nil: plaintext only; a shell over tls (reload.go)
	auth      *authState          // logins: key cache, SCRAM secrets, certificate identities (auth.go)
	health    health
	build     BuildInfo // phiproxy_build_info's labels (WithBuildInfo)
	// tls holds the TLS configurations in force (reload.go).
	tls atomic.Pointer[tlsConfigs]
	// icpt transforms new sessions' traffic; nil: a transparent proxy.
	icpt atomic.Pointer[Interceptor]

	// ctx is the sessions' base context, cancelled by Close.
	ctx    context.Context
	cancel context.CancelCauseFunc
	nextID atomic.Uint64
	// draining fails readiness and refuses new connections.
	draining atomic.Bool

	mu        sync.Mutex
	ln        net.Listener
	metricsLn net.Listener
	httpSrv   *http.Server
	sessions  map[*Session]struct{}
	acceptWG  sync.WaitGroup
	sessionWG sync.WaitGroup
}

// Option configures a Server beyond its YAML configuration.
type Option func(*Server) error

// WithInterceptor makes every session hand its traffic to icpt (proxy/phi
// enforces a PHI policy this way). Without it the server is a transparent
// proxy.
func WithInterceptor(icpt Interceptor) Option {
	return func(srv *Server) error {
		srv.icpt.Store(&icpt)
		return nil
	}
}

// New checks cfg (applying defaults), loads its certificates and registers
// the metrics with reg. Pass a *prometheus.Registry to have Handler serve
// /metrics; a nil reg gets a private registry.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer, opts ...Option) (*Server, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid proxy config: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	cfgs, err := newTLSConfigs(cfg)
	if err != nil {
		return nil, err
	}
	metrics, err := NewMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	srv := &Server{
		cfg:      cfg,
		log:      logger,
		metrics:  metrics,
		sessions: map[*Session]struct{}{},
	}
	srv.tls.Store(cfgs)
	if err := srv.registerGauges(reg); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	srv.clientTLS = srv.listenTLS(cfgs.client)
	for _, o := range opts {
		if err := o(srv); err != nil {
			return nil, err
		}
	}
	metrics.setBuildInfo(srv.build)
	if srv.auth, err = newAuthState(cfg, logger, cfgs, reg); err != nil {
		return nil, err
	}
	srv.gatherer, _ = reg.(prometheus.Gatherer)
	srv.ctx, srv.cancel = context.WithCancelCause(context.Background())
	return srv, nil
}

// Config returns the configuration in use, defaults applied.
func (srv *Server) Config() Config { return srv.cfg }

// Metrics returns the server's collectors.
func (srv *Server) Metrics() *Metrics { return srv.metrics }

// Start binds the client listener and, when configured, the metrics
// listener, and returns once both accept connections. ctx bounds only the
// binding; stop the server with Shutdown or Close.
func (srv *Server) Start(ctx context.Context) error {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.ln != nil {
		return errors.New("server already started")
	}
	if srv.ctx.Err() != nil {
		return errors.New("server closed")
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", srv.cfg.Listen.Address)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if a := srv.cfg.Metrics.Address; a != "" {
		mln, err := lc.Listen(ctx, "tcp", a)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listen metrics: %w", err)
		}
		srv.metricsLn = mln
		srv.httpSrv = &http.Server{
			Handler:           srv.Handler(),
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(srv.log.Handler(), slog.LevelWarn),
		}
		go srv.httpSrv.Serve(mln)
	}
	srv.ln = ln
	srv.acceptWG.Add(1)
	go srv.acceptLoop(ln)
	attrs := []any{"address", ln.Addr().String(), "upstream", srv.cfg.Upstream.Address,
		"upstream_tls", srv.cfg.Upstream.TLS.Mode, "client_tls", srv.clientTLS != nil}
	if srv.metricsLn != nil {
		attrs = append(attrs, "metrics_address", srv.metricsLn.Addr().String())
	}
	srv.log.Info("listening", attrs...)
	return nil
}

// Addr is the client listener's address, nil before Start.
func (srv *Server) Addr() net.Addr {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.ln == nil {
		return nil
	}
	return srv.ln.Addr()
}

// MetricsAddr is the metrics listener's address, nil when there is none.
func (srv *Server) MetricsAddr() net.Addr {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.metricsLn == nil {
		return nil
	}
	return srv.metricsLn.Addr()
}

func (srv *Server) acceptLoop(ln net.Listener) {
	defer srv.acceptWG.Done()
	backoff := 5 * time.Millisecond
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait, do not spin.
			srv.log.Warn("accept", "error", err)
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		conn = withRawIO(conn)
		srv.mu.Lock()
		if srv.draining.Load() {
			srv.mu.Unlock()
			conn.Close()
			continue
		}
		sess := newSession(srv, srv.nextID.Add(1), conn)
		srv.sessions[sess] = struct{}{}
		srv.sessionWG.Add(1)
		srv.mu.Unlock()
		go srv.serveSession(sess)
	}
}

func (srv *Server) serveSession(sess *Session) {
	defer srv.sessionWG.Done()
	defer func() {
		srv.mu.Lock()
		delete(srv.sessions, sess)
		srv.mu.Unlock()
	}()
	sess.run(srv.ctx)
}

// ActiveSessions reports the number of open sessions.
func (srv *Server) ActiveSessions() int {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return len(srv.sessions)
}

// stopAccepting fails readiness and closes the client listener.
func (srv *Server) stopAccepting() {
	srv.draining.Store(true)
	srv.mu.Lock()
	if srv.ln != nil {
		srv.ln.Close()
	}
	srv.mu.Unlock()
	srv.acceptWG.Wait()
}

// Shutdown stops accepting, fails readiness and waits for the sessions to
// end until ctx is done; then it closes the remaining sessions (their
// clients get FATAL 57P01) and reports how many in its error.
func (srv *Server) Shutdown(ctx context.Context) error {
	srv.stopAccepting()
	open := srv.ActiveSessions()
	if open > 0 {
		srv.log.Info("draining sessions", "open", open)
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for srv.ActiveSessions() > 0 && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
	var closed int
	if ctx.Err() != nil {
		srv.mu.Lock()
		closed = len(srv.sessions)
		for sess := range srv.sessions {
			sess.kill(ErrShuttingDown)
		}
		srv.mu.Unlock()
	}
	srv.sessionWG.Wait()
	srv.cancel(ErrShuttingDown)
	srv.closeHTTP()
	srv.auth.close()
	if closed > 0 {
		srv.log.Warn("drain timeout: closed open sessions", "closed", closed)
		return fmt.Errorf("drain timeout: closed %d open sessions: %w", closed, ctx.Err())
	}
	srv.log.Info("all sessions drained")
	return nil
}

// Close stops the server at once, closing every session.
func (srv *Server) Close() error {
	srv.stopAccepting()
	srv.cancel(ErrShuttingDown)
	srv.sessionWG.Wait()
	srv.closeHTTP()
	srv.auth.close()
	return nil
}

func (srv *Server) closeHTTP() {
	srv.mu.Lock()
	h := srv.httpSrv
	srv.httpSrv = nil
	srv.mu.Unlock()
	if h != nil {
		h.Close()
	}
}

// Handler serves /metrics, /healthz (the process is up) and /readyz (the
// upstream was reachable recently, the server is not draining, and the
// Interceptor, if it is a ReadinessChecker, is ready).
func (srv *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	if srv.gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(srv.gatherer, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if srv.draining.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		if err := srv.upstreamReachable(r.Context()); err != nil {
			http.Error(w, "upstream unreachable", http.StatusServiceUnavailable)
			return
		}
		if err := srv.interceptorReady(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}
