package proxy

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// readyFreshness is how long a successful upstream connection counts as
// proof that the upstream is reachable; after that /readyz probes again.
const readyFreshness = 10 * time.Second

// probeTimeout bounds a readiness probe's TCP connect.
const probeTimeout = 2 * time.Second

// health remembers when the upstream last accepted a TCP connection.
type health struct {
	lastOK  atomic.Int64 // unix nanoseconds; 0 = never
	probeMu sync.Mutex   // one probe at a time
}

// reachable records a successful TCP connection to the upstream.
func (h *health) reachable() { h.lastOK.Store(time.Now().UnixNano()) }

func (h *health) fresh() bool {
	last := h.lastOK.Load()
	return last != 0 && time.Since(time.Unix(0, last)) < readyFreshness
}

// upstreamReachable reports whether the upstream accepted a TCP connection
// recently, probing it when the last success is stale. A probe that sends
// nothing leaves no trace in PostgreSQL's log.
func (srv *Server) upstreamReachable(ctx context.Context) error {
	h := &srv.health
	if h.fresh() {
		return nil
	}
	h.probeMu.Lock()
	defer h.probeMu.Unlock()
	if h.fresh() {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", srv.cfg.Upstream.Address)
	if err != nil {
		return err
	}
	conn.Close()
	h.reachable()
	return nil
}

// interceptorReady asks the Interceptor, when it is a ReadinessChecker,
// whether it can serve.
func (srv *Server) interceptorReady() error {
	if rc, ok := srv.interceptor().(ReadinessChecker); ok {
		return rc.Ready()
	}
	return nil
}
