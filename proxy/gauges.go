package proxy

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// registerGauges registers the gauges an operator alerts on: whether the
// upstream accepts connections, and when the listening certificate
// expires. Both are read at scrape time.
func (srv *Server) registerGauges(reg prometheus.Registerer) error {
	up := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "phiproxy_upstream_up",
		Help: "1 when the upstream accepts TCP connections, else 0: probed at scrape time unless a connection or probe answered within the last second (as /readyz).",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
		defer cancel()
		if srv.upstreamReachable(ctx) != nil {
			return 0
		}
		return 1
	})
	expiry := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "phiproxy_listen_certificate_expiry_timestamp_seconds",
		Help: "When the certificate the proxy presents to clients expires (Unix time; 0 without client TLS). It follows reloads.",
	}, func() float64 {
		if c := srv.tls.Load().client; c != nil && len(c.Certificates) > 0 && c.Certificates[0].Leaf != nil {
			return float64(c.Certificates[0].Leaf.NotAfter.Unix())
		}
		return 0
	})
	for _, c := range []prometheus.Collector{up, expiry} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// durationSeconds is how logs carry durations: seconds, as a number.
func durationSeconds(d time.Duration) float64 { return d.Round(time.Microsecond).Seconds() }
