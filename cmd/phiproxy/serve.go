package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/novamind/phiproxy/internal/auditlog"
	"github.com/novamind/phiproxy/internal/procs"
	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/proxy/phi"
)

const serveUsage = `Usage: phiproxy serve --config FILE [--check]

Runs the proxy: listens for clients (listen:), relays each session to
PostgreSQL (upstream:), encrypts and decrypts the policy's PHI columns with
the keyring unwrapped once at startup, and serves /metrics, /healthz and
/readyz (metrics:). SIGHUP reloads the certificates, the keyring, the
policy and the log level (sessions in flight keep theirs; a file that does
not load is logged and the running configuration kept). SIGINT or SIGTERM
drains the sessions for up to limits.drain_timeout; a second signal closes
them at once.

  --config FILE  the configuration (default $PHIPROXY_CONFIG)
  --check        check the configuration as phiproxy check does, and exit
`

// runServe runs the proxy until SIGINT or SIGTERM, then drains: it stops
// accepting, fails readiness, waits up to limits.drain_timeout for the
// sessions to end and closes the rest. A second signal closes at once.
func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve")
	path := fs.String("config", os.Getenv(envConfig), "")
	checkOnly := fs.Bool("check", false, "")
	pos, err := parseArgs(fs, args, serveUsage)
	if err != nil {
		return err
	}
	if err := noArgs("serve", pos); err != nil {
		return err
	}
	if *path == "" {
		return fmt.Errorf("%w: phiproxy serve --config FILE", errUsage)
	}
	if *checkOnly {
		return checkConfig(ctx, *path, checkOptions{}, stdout)
	}
	hup, stopHangup := notifyHangup()
	defer stopHangup()
	cfg, err := loadConfig(*path)
	if err != nil {
		return logFatal(startupLogger(*path, stderr), err)
	}
	logger, level, err := newLogger(cfg.file.Log, stderr)
	if err != nil {
		return logFatal(startupLogger(*path, stderr), err)
	}
	return serve(ctx, cfg, logger, level, hup)
}

// serve runs the proxy of a loaded configuration. Every error it returns
// has been logged (a *loggedError): a fatal startup error (keyring,
// audit log, certificates, the listening port), a failed shutdown, or the
// signal that stopped it.
func serve(ctx context.Context, cfg *config, logger *slog.Logger, level *slog.LevelVar, hup <-chan os.Signal) error {
	if n := cfg.file.Proxy.Limits.MaxProcs; n > 0 {
		runtime.GOMAXPROCS(n)
	} else {
		pctx, stop := context.WithCancel(ctx)
		defer stop()
		go procs.Run(pctx, time.Second, logger)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// The data key new values are sealed with; 0 without a policy. It
	// follows reloads (a `keys rotate` then a SIGHUP).
	activeKey := new(atomic.Uint32)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "phiproxy_active_key_id",
		Help: "The id of the data key the proxy encrypts new values with (0 without a policy); it follows reloads.",
	}, func() float64 { return float64(activeKey.Load()) }))
	var (
		opts     = []proxy.Option{proxy.WithBuildInfo(buildInfo())}
		eng      *phi.Engine
		auditLog phi.AuditLog
	)
	if !cfg.policy.Empty() {
		// Keys are unwrapped once, here: KMS being down later does not
		// stop traffic, and nothing on the per-value path calls it.
		kr, err := openKeyring(ctx, cfg.file.Keys)
		if err != nil {
			return logFatal(logger, fmt.Errorf("keyring: %w", err))
		}
		defer kr.Close()
		logger.Info("keyring loaded", "keyring", kr, "active_key", kr.ActiveKeyID())
		activeKey.Store(kr.ActiveKeyID())
		phiCfg := phi.Config{PlanCacheSize: cfg.file.Proxy.Limits.PlanCacheSize}
		if cfg.file.Audit.Enabled() {
			audit, closeAudit, err := openAudit(cfg.file.Audit, logger, reg)
			if err != nil {
				return logFatal(logger, err)
			}
			// Closed when serve returns, after the drain: the last
			// sessions' records are written.
			defer closeAudit()
			phiCfg.Audit = audit
		}
		eng, err = phi.New(cfg.policy, phi.KeyringKeys(kr), reg, phiCfg)
		auditLog = phiCfg.Audit
		if err != nil {
			return logFatal(logger, err)
		}
		opts = append(opts, proxy.WithInterceptor(eng))
	} else if cfg.file.Audit.Enabled() {
		logger.Warn("audit log not opened: the policy protects no table, so there is nothing to audit", "audit_file", cfg.file.Audit.File)
	}
	srv, err := proxy.New(cfg.file.Proxy, logger, reg, opts...)
	if err != nil {
		return logFatal(logger, err)
	}
	logger.Info("configuration loaded", "config", cfg.path, "policy_tables", len(cfg.policy.Tables()))

	if err := srv.Start(ctx); err != nil {
		return logFatal(logger, err)
	}
	rl := &reloader{path: cfg.path, logger: logger, level: level, srv: srv, eng: eng, audit: auditLog, activeKey: activeKey}
	go rl.run(ctx, hup)
	<-ctx.Done()

	drain := srv.Config().Limits.DrainTimeout
	logger.Info("shutting down", "cause", context.Cause(ctx).Error(), "drain_timeout", drain.Seconds())
	sctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	// A second signal cuts the drain short.
	again := make(chan os.Signal, 1)
	signal.Notify(again, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(again)
	go func() {
		select {
		case <-again:
			logger.Warn("second signal: closing all sessions now")
			cancel()
		case <-sctx.Done():
		}
	}()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Error("shutdown failed", "error", err.Error())
		return &loggedError{fmt.Errorf("shutdown: %w", err)}
	}
	logger.Info("stopped", "cause", context.Cause(ctx).Error())
	return &loggedError{fmt.Errorf("stopped: %w", context.Cause(ctx))}
}

// openAudit opens the audit log and reopens it on each SIGHUP (log
// rotation: move the file away, then send SIGHUP), also while sessions
// drain, until the returned function closes it.
func openAudit(cfg auditlog.Config, logger *slog.Logger, reg prometheus.Registerer) (*auditlog.Log, func(), error) {
	audit, err := auditlog.Open(cfg, logger, reg)
	if err != nil {
		return nil, nil, err
	}
	logger.Info("audit log opened", "audit_file", cfg.File, "on_failure", cfg.OnFailure, "refusing", audit.Refusing())
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-hup:
				if err := audit.Reopen(); err != nil {
					logger.Error("audit log reopen failed", "error", err.Error())
				}
			case <-done:
				return
			}
		}
	}()
	return audit, func() {
		close(done)
		<-stopped
		audit.Close()
		signal.Stop(hup)
	}, nil
}

// interruptedCode is the exit code after a signal: 143 for SIGTERM, 129
// for SIGHUP (the demo stops on it), 130 for SIGINT (128 + the signal
// number, as shells and cloud-sql-proxy report).
func interruptedCode(ctx context.Context) int {
	// os/signal's cause has no exported type; its text names the signal.
	cause := context.Cause(ctx)
	if cause == nil || !errors.Is(cause, context.Canceled) {
		return 130
	}
	switch cause.Error() {
	case syscall.SIGTERM.String() + " signal received":
		return 143
	case syscall.SIGHUP.String() + " signal received": // the demo's
		return 129
	}
	return 130
}
