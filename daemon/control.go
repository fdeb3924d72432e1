package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// The control socket: HTTP over a Unix socket that only root may use
// (mode 0600, and every connection's peer checked with SO_PEERCRED).
//
//	POST /reload   read the configuration file again and compile the rules
//	               again, and put both in force; answers when they are,
//	               with a ReloadResult (its config names the keys applied
//	               and those that need a restart), or with the error
//	POST /allowlist read the allow list again and put it in force (the
//	               command line asks after changing it); answers when it
//	               is, with {"entries": n}, or with the error
//	GET  /status   health, rules, rates, latency, cache, counters and the
//	               last detections, as JSON (a Status)
//	GET  /metrics  the same measures in the Prometheus text format (also
//	               on the metrics listener, metricsserver.go)

type peerKey struct{}

// listenControl creates the socket at path, replacing a stale one.
func listenControl(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating control socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("creating control socket: %s exists and is not a socket", path)
		}
		os.Remove(path) // a stale socket of an earlier run
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("creating control socket: %w", err)
	}
	// Root only, by mode; every request is checked with SO_PEERCRED as well,
	// which also covers the moment before this chmod.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("creating control socket: %w", err)
	}
	return ln, nil
}

// peerUID returns the uid of the process at the other end of c.
func peerUID(c net.Conn) (uint32, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return 0, errors.New("not a Unix connection")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if credErr != nil {
		return 0, fmt.Errorf("reading peer credentials: %w", credErr)
	}
	return cred.Uid, nil
}

// serveControl serves the control socket until ctx is done.
func (d *Daemon) serveControl(ctx context.Context, ln net.Listener, reg prometheus.Gatherer) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /reload", func(w http.ResponseWriter, r *http.Request) {
		res, err := d.Reload()
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, res)
	})
	mux.HandleFunc("POST /allowlist", func(w http.ResponseWriter, r *http.Request) {
		n, err := d.refreshAllowList(r.Context(), true)
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]int{"entries": n})
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, d.status())
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog: zap.NewStdLog(d.log), ErrorHandling: promhttp.ContinueOnError}))
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		d.sampleRates(ctx)
	}()
	defer func() { <-sampled }()
	srv := &http.Server{
		Handler: rootOnly(mux),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			uid, err := peerUID(c)
			if err != nil {
				return context.WithValue(ctx, peerKey{}, int64(-1))
			}
			return context.WithValue(ctx, peerKey{}, int64(uid))
		},
		// A client that connects and says nothing, or keeps an idle
		// connection, must not hold a goroutine and an fd for ever.
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          zap.NewStdLog(d.log),
	}
	d.serveUntil(ctx, srv, ln, "control socket")
}

// rootOnly refuses every request whose peer is not uid 0.
func rootOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if uid, _ := r.Context().Value(peerKey{}).(int64); uid != 0 {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "the control socket is for root only"})
			return
		}
		h.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// serveUntil serves ln with srv until ctx is done, then shuts srv down
// (waiting at most a second for requests in progress). what names the
// server in the log when serving fails.
func (d *Daemon) serveUntil(ctx context.Context, srv *http.Server, ln net.Listener, what string) {
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(shut)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		d.log.Error(what+" failed: "+err.Error(), zap.String("address", ln.Addr().String()), zap.Error(err))
	}
}
