package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/proxy/phi"
)

// reloader applies a changed configuration file to a running proxy on
// SIGHUP: certificates and CA bundles of both legs, the keyring (so a
// `keys rotate` takes effect: new writes use the new active key), the
// policy, and the log level. Sessions that start afterwards use the new
// state; sessions in flight keep the state they started with, so each
// statement runs on one consistent snapshot. A file that does not load,
// or a change that needs a restart (addresses, adding or removing the
// policy), is logged and the running configuration kept: the process
// never dies on SIGHUP.
type reloader struct {
	path   string
	logger *slog.Logger
	level  *slog.LevelVar
	srv    *proxy.Server
	eng    *phi.Engine  // nil without a policy
	audit  phi.AuditLog // the audit log new engines write to (it reopens on SIGHUP itself)
	// activeKey is what phiproxy_active_key_id shows.
	activeKey *atomic.Uint32
}

// notifyHangup starts catching SIGHUP, whose default is to end the
// process: call it before anything that can take time.
func notifyHangup() (hup chan os.Signal, stop func()) {
	hup = make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	return hup, func() { signal.Stop(hup) }
}

// run reloads on every signal from hup until ctx ends.
func (r *reloader) run(ctx context.Context, hup <-chan os.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if err := r.reload(ctx); err != nil {
				r.logger.Error("reload failed: the running configuration is kept", "config", r.path, "error", err.Error())
			}
		}
	}
}

// reload reads the configuration file again and applies it.
func (r *reloader) reload(ctx context.Context) error {
	cfg, err := loadConfig(r.path)
	if err != nil {
		return err
	}
	cfg.file.Log.setDefaults()
	if err := cfg.file.Log.validate(); err != nil {
		return err
	}
	level, _ := parseLevel(cfg.file.Log.Level)
	var (
		next   *phi.Engine
		active uint32
	)
	switch {
	case r.eng == nil && !cfg.policy.Empty():
		return errors.New("adding a policy takes effect only at a restart")
	case r.eng != nil && cfg.policy.Empty():
		return errors.New("removing the policy takes effect only at a restart")
	case r.eng != nil:
		kr, err := openKeyring(ctx, cfg.file.Keys)
		if err != nil {
			return fmt.Errorf("keyring: %w", err)
		}
		// The keyring stays open: sessions of the engine it replaces may
		// still decrypt with its keys.
		if next, err = r.eng.Reload(cfg.policy, phi.KeyringKeys(kr), phi.Config{PlanCacheSize: cfg.file.Proxy.Limits.PlanCacheSize, Audit: r.audit}); err != nil {
			return err
		}
		defer r.logger.Info("keyring reloaded", "keyring", kr, "active_key", kr.ActiveKeyID())
		active = kr.ActiveKeyID()
	}
	var icpt proxy.Interceptor
	if next != nil {
		icpt = next
	}
	if err := r.srv.Reload(cfg.file.Proxy, icpt); err != nil {
		return err
	}
	if next != nil {
		r.eng = next
		if r.activeKey != nil {
			r.activeKey.Store(active)
		}
	}
	r.level.Set(level)
	r.logger.Info("configuration reloaded", "config", r.path, "policy_tables", len(cfg.policy.Tables()))
	return nil
}
