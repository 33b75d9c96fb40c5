package proxy

import (
	"crypto/tls"
	"sync/atomic"
	"time"
)

// The key exchange group offered to the server.
//
// A Go TLS 1.3 client sends key shares for its first groups only
// (X25519MLKEM768 and X25519). PostgreSQL up to 17 accepts one group by
// default (ssl_ecdh_curve = prime256v1), so every handshake took a
// HelloRetryRequest: a round trip more, and two key pairs computed for
// nothing (about a tenth of the proxy's CPU per connection). The memo keeps
// the group the server chose and offers that group alone, which the server
// accepts in one round trip, for groupMemoTTL; then one handshake offers
// every group again, so a server that starts to prefer another (a hybrid
// post-quantum one, say) is followed within that time. A narrowed handshake
// that fails forgets the group and is retried with every group (dial).
//
// Narrowing never weakens a connection: the server picks its group among
// those the client offers, and it picked this one from all of them.
type groupMemo struct {
	p atomic.Pointer[narrowed]
}

// groupMemoTTL is how long a learned group is offered alone.
const groupMemoTTL = time.Minute

// narrowed is base offering only the group the server chose.
type narrowed struct {
	base, cfg *tls.Config
	expires   time.Time
}

// config returns the configuration to offer for base: its narrowed copy
// while one is fresh (narrow true), else base itself.
func (m *groupMemo) config(base *tls.Config, now time.Time) (cfg *tls.Config, narrow bool) {
	if n := m.p.Load(); n != nil && n.base == base && now.Before(n.expires) {
		return n.cfg, true
	}
	return base, false
}

// learn records the group of a handshake made with base offering every
// group.
func (m *groupMemo) learn(base *tls.Config, cs tls.ConnectionState, now time.Time) {
	if cs.CurveID == 0 || len(base.CurvePreferences) != 0 {
		// No (EC)DHE, or groups the operator chose: nothing to narrow.
		return
	}
	cfg := base.Clone()
	cfg.CurvePreferences = []tls.CurveID{cs.CurveID}
	m.p.Store(&narrowed{base: base, cfg: cfg, expires: now.Add(groupMemoTTL)})
}

// forget drops the learned group after a narrowed handshake failed.
func (m *groupMemo) forget() { m.p.Store(nil) }
