// Temporary: not committed.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
		"os/signal"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/novamind/phiproxy/internal/pgcluster"
	"github.com/novamind/phiproxy/proxy"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	dir, _ := os.MkdirTemp("", "probe")
	ca, _ := pgcluster.NewCA("probe", time.Hour*24)
	caFile, certFile, keyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "proxy.crt"), filepath.Join(dir, "proxy.key")
	ca.WriteServerFiles(caFile, certFile, keyFile, []string{"localhost", "127.0.0.1"}, 24*time.Hour)
	cfg := proxy.Config{
		Listen: proxy.ListenConfig{Address: "127.0.0.1:6544", TLS: proxy.ListenTLSConfig{CertFile: certFile, KeyFile: keyFile, MinVersion: "1.3"}},
		Upstream: proxy.UpstreamConfig{Address: os.Args[1], TLS: proxy.UpstreamTLSConfig{
			Mode: "verify-full", CAFile: os.Args[2], ServerName: "db.internal"}},
	}
	srv, err := proxy.New(cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), prometheus.NewRegistry())
	if err != nil {
		panic(err)
	}
	srv.Start(ctx)
	fmt.Printf("proxy port 6544 pid %d\n", os.Getpid())
	<-ctx.Done()
	srv.Close()
}
