package differential

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/internal/pgcluster"
	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/proxy/phi"
)

// This file is the tester's only contact with the proxy package's API, so
// that a change of that API is a change here only.

// upstreamServerName is a name in the enc cluster's certificate other than
// the address the proxy dials, so verify-full exercises server_name.
const upstreamServerName = "db.internal"

// startProxy starts a phiproxy in front of upstream that enforces pol with
// the keys of kr, terminating TLS with certFile and keyFile and logging
// (at debug level, so the leak check sees everything) to logs. It returns
// the proxy's port and a function that stops it.
func startProxy(ctx context.Context, upstream *pgcluster.Cluster, certFile, keyFile string,
	pol *policy.Policy, kr *crypto.Keyring, logs io.Writer) (port int, stop func(), err error) {
	cfg := proxy.Config{
		Listen: proxy.ListenConfig{
			Address: "127.0.0.1:0",
			TLS:     proxy.ListenTLSConfig{CertFile: certFile, KeyFile: keyFile, MinVersion: "1.3"},
		},
		Upstream: proxy.UpstreamConfig{
			Address: upstream.Addr(),
			TLS: proxy.UpstreamTLSConfig{
				Mode:       proxy.TLSModeVerifyFull,
				CAFile:     upstream.CAFile(),
				ServerName: upstreamServerName,
			},
			ConnectTimeout: 5 * time.Second,
		},
	}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := prometheus.NewRegistry()
	eng, err := phi.New(pol, phi.KeyringKeys(kr), reg, phi.Config{})
	if err != nil {
		return 0, nil, fmt.Errorf("phi.New: %w", err)
	}
	srv, err := proxy.New(cfg, logger, reg, proxy.WithInterceptor(eng))
	if err != nil {
		return 0, nil, fmt.Errorf("proxy.New: %w", err)
	}
	if err := srv.Start(ctx); err != nil {
		return 0, nil, fmt.Errorf("proxy Start: %w", err)
	}
	stop = func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		_ = srv.Close()
	}
	_, p, err := net.SplitHostPort(srv.Addr().String())
	if err != nil {
		stop()
		return 0, nil, err
	}
	port, _ = strconv.Atoi(p)
	return port, stop, nil
}
