package proxy

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetricsLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := NewMetrics(reg); err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	if _, err := NewMetrics(reg); err == nil {
		t.Error("registering twice succeeded")
	}
}

func TestHealthEndpoints(t *testing.T) {
	up := startFakeUpstream(t, func(t *testing.T, _ *pgproto3.Backend, _ net.Conn) {})
	srv := startServer(t, testConfig(up.addr))
	h := srv.Handler()
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		body, _ := io.ReadAll(rec.Result().Body)
		return rec.Code, string(body)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz %d", code)
	}
	if code, body := get("/readyz"); code != http.StatusOK {
		t.Errorf("/readyz %d %q with the upstream up", code, body)
	}
	if code, body := get("/metrics"); code != http.StatusOK || !strings.Contains(body, "phiproxy_build_info") {
		t.Errorf("/metrics %d, build info missing", code)
	}
	srv.draining.Store(true)
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "draining") {
		t.Errorf("/readyz while draining: %d %q", code, body)
	}

	down := startServer(t, testConfig("127.0.0.1:1"))
	rec := httptest.NewRecorder()
	down.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("/readyz with the upstream down: %d", rec.Code)
	}
}

// TestBuildInfo: phiproxy_build_info carries what WithBuildInfo gives,
// and the binary's build information without it.
func TestBuildInfo(t *testing.T) {
	up := startFakeUpstream(t, func(t *testing.T, _ *pgproto3.Backend, _ net.Conn) {})
	srv := startServer(t, testConfig(up.addr), WithBuildInfo(BuildInfo{Version: "v1.2.3", Commit: "abc123"}))
	want := `
# HELP phiproxy_build_info Build information, value 1: the version and commit the binary was built from (as phiproxy version prints them) and the Go version.
# TYPE phiproxy_build_info gauge
phiproxy_build_info{commit="abc123",goversion="` + runtime.Version() + `",version="v1.2.3"} 1
`
	if err := testutil.GatherAndCompare(srv.gatherer, strings.NewReader(want), "phiproxy_build_info"); err != nil {
		t.Error(err)
	}
	v, rev := BuildVersion()
	plain := startServer(t, testConfig(up.addr))
	if got := testutil.ToFloat64(plain.metrics.BuildInfo.WithLabelValues(v, rev, runtime.Version())); got != 1 {
		t.Errorf("without WithBuildInfo: build info %s %s = %v, want 1", v, rev, got)
	}
}
