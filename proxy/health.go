package proxy

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// readyFreshness is how long the last answer about the upstream stands: a
// successful connection (a probe's or a session's) proves it reachable,
// and a failed probe proves it not, for this long; after that /readyz and
// phiproxy_upstream_up probe again. So both follow the upstream within
// readyFreshness plus one probe (a stopped server refuses the connect at
// once; an unreachable host takes up to probeTimeout).
const readyFreshness = time.Second

// probeTimeout bounds a readiness probe's TCP connect.
const probeTimeout = time.Second

// errUpstreamDown is the cached answer of a failed probe.
var errUpstreamDown = errors.New("upstream did not accept a TCP connection")

// health remembers what the upstream last answered.
type health struct {
	lastOK   atomic.Int64 // unix nanoseconds of the last success; 0 = never
	lastFail atomic.Int64 // unix nanoseconds of the last failed probe; 0 = none
	probeMu  sync.Mutex   // one probe at a time
}

// reachable records a successful TCP connection to the upstream.
func (h *health) reachable() { h.lastOK.Store(time.Now().UnixNano()) }

// recent reports whether t (unix nanoseconds) is within readyFreshness.
func recent(t int64) bool { return t != 0 && time.Since(time.Unix(0, t)) < readyFreshness }

// answer is the standing answer; known is false when a probe is due. A
// success newer than the last failure wins.
func (h *health) answer() (known bool, err error) {
	okAt, failAt := h.lastOK.Load(), h.lastFail.Load()
	switch {
	case recent(okAt) && okAt >= failAt:
		return true, nil
	case recent(failAt):
		return true, errUpstreamDown
	}
	return false, nil
}

// upstreamReachable reports whether the upstream accepts TCP connections,
// probing it when the last answer is older than readyFreshness. A probe
// that sends nothing leaves no trace in PostgreSQL's log.
func (srv *Server) upstreamReachable(ctx context.Context) error {
	h := &srv.health
	if known, err := h.answer(); known {
		return err
	}
	h.probeMu.Lock()
	defer h.probeMu.Unlock()
	if known, err := h.answer(); known {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(pctx, "tcp", srv.cfg.Upstream.Address)
	if err != nil {
		if ctx.Err() == nil { // not the asker giving up
			h.lastFail.Store(time.Now().UnixNano())
		}
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
