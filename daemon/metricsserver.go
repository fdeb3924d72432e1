package daemon

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// The metrics listener ([metrics] listen): plain HTTP on TCP for a stock
// Prometheus, serving GET /metrics and nothing else, to anyone who can
// connect. It changes nothing and tells nothing the metrics do not: the
// status (paths, detections) and the reload stay on the root-only control
// socket, as containerd, Docker and CrowdSec keep their metrics apart
// from their APIs. A scrape reads the daemon's atomic counters and
// /proc/self on the listener's own goroutines; at most
// metricsMaxInFlight run at once (more are answered 503), so a flood of
// scrapes costs a bounded amount of CPU and never takes a lock of the
// event path.

// Bounds of the metrics listener.
const (
	metricsMaxInFlight = 4                // scrapes served at once
	metricsTimeout     = 10 * time.Second // to gather and write one scrape
	metricsMaxHeader   = 8 << 10          // request header bytes
)

// listenMetrics opens the metrics listener's TCP socket on addr.
func listenMetrics(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("creating metrics listener on %s: %w", addr, err)
	}
	return ln, nil
}

// metricsHandler serves reg at GET (and HEAD) /metrics; every other path
// is 404, every other method on /metrics 405.
func metricsHandler(reg prometheus.Gatherer, errLog promhttp.Logger) http.Handler {
	scrape := promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:            errLog,
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: metricsMaxInFlight,
		Timeout:             metricsTimeout,
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path != "/metrics":
			http.NotFound(w, r)
		case r.Method != http.MethodGet && r.Method != http.MethodHead:
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "the metrics listener is read-only: GET /metrics", http.StatusMethodNotAllowed)
		default:
			scrape.ServeHTTP(w, r)
		}
	})
}

// serveMetrics serves the metrics listener ln until ctx is done.
func (d *Daemon) serveMetrics(ctx context.Context, ln net.Listener, reg prometheus.Gatherer) {
	errLog := zap.NewStdLog(d.log)
	srv := &http.Server{
		Handler: metricsHandler(reg, errLog),
		// A client that connects and says nothing, reads slowly or keeps
		// an idle connection must not hold a goroutine and an fd for long.
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      metricsTimeout + 5*time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    metricsMaxHeader,
		ErrorLog:          errLog,
	}
	d.serveUntil(ctx, srv, ln, "metrics listener")
}
