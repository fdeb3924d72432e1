package daemon

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/fanguard/fanguard/internal/testutil"
	"github.com/fanguard/fanguard/scanner"
)

// TestMetricsListener serves a daemon's registry on a real TCP listener
// and checks that it answers GET /metrics and nothing else.
func TestMetricsListener(t *testing.T) {
	d, _ := testDaemon(t, time.Hour)
	rules := t.TempDir()
	if err := os.WriteFile(filepath.Join(rules, "t.yar"), []byte(allowTestRule), 0o644); err != nil {
		t.Fatal(err)
	}
	rs, err := scanner.Load(scanner.LoadOptions{Dirs: []string{rules}})
	if err != nil {
		t.Fatalf("loading the rule: %v", err)
	}
	defer rs.Close()
	d.rules.Store(newRuleSet(rs, 1))
	d.stats.Outcomes[outcomeCached].Add(3)
	d.stats.Denials.Add(2)
	d.stats.BytesScanned.Add(4096)
	ln, err := listenMetrics("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { d.serveMetrics(ctx, ln, d.newRegistry()) })
	defer func() {
		cancel()
		wg.Wait()
	}()
	base := "http://" + ln.Addr().String()
	for _, tt := range []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/metrics", http.StatusOK},
		{http.MethodHead, "/metrics", http.StatusOK},
		{http.MethodGet, "/status", http.StatusNotFound},
		{http.MethodPost, "/reload", http.StatusNotFound},
		{http.MethodPost, "/allowlist", http.StatusNotFound},
		{http.MethodGet, "/", http.StatusNotFound},
		{http.MethodGet, "/metrics/", http.StatusNotFound},
		{http.MethodPost, "/metrics", http.StatusMethodNotAllowed},
		{http.MethodDelete, "/metrics", http.StatusMethodNotAllowed},
	} {
		req, err := http.NewRequest(tt.method, base+tt.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", tt.method, tt.path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("%s %s: %s, want %d", tt.method, tt.path, resp.Status, tt.want)
		}
	}

	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	checkMetrics(t, body)
	parser := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	value := func(name string, labels ...string) (float64, bool) {
		for _, m := range mfs[name].GetMetric() {
			ok := true
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					found = found || l.GetName() == labels[i] && l.GetValue() == labels[i+1]
				}
				ok = ok && found
			}
			if ok {
				if c := m.GetCounter(); c != nil {
					return c.GetValue(), true
				}
				return m.GetGauge().GetValue(), true
			}
		}
		return 0, false
	}
	for _, tt := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"fanguard_events_total", []string{"outcome", "cached"}, 3},
		{"fanguard_events_total", []string{"outcome", "clean"}, 0},
		{"fanguard_denials_total", nil, 2},
		{"fanguard_scanned_bytes_total", nil, 4096},
	} {
		if got, ok := value(tt.name, tt.labels...); !ok || got != tt.want {
			t.Errorf("%s%v = %v (present %v), want %v", tt.name, tt.labels, got, ok, tt.want)
		}
	}
	if n := len(mfs["fanguard_events_total"].GetMetric()); n != int(numOutcomes) {
		t.Errorf("fanguard_events_total has %d outcomes, want %d", n, numOutcomes)
	}
	for _, name := range []string{"process_open_fds", "process_start_time_seconds", "go_goroutines"} {
		if mfs[name] == nil {
			t.Errorf("/metrics has no %s", name)
		}
	}
	for name, mf := range mfs {
		switch {
		case strings.HasSuffix(name, "_us"):
			t.Errorf("/metrics has %s: a copy of a histogram in microseconds", name)
		case name == "fanguard_open_fds", name == "fanguard_uptime_seconds", name == "fanguard_goroutines":
			t.Errorf("/metrics has %s: the process_* and go_* collectors tell it", name)
		case mf.GetType().String() == "COUNTER" && !strings.HasSuffix(name, "_total"):
			t.Errorf("counter %s does not end in _total", name)
		}
	}
}

// TestPromCounters: every counter of the stats line is in /metrics, or
// counted there another way.
func TestPromCounters(t *testing.T) {
	elsewhere := map[string]string{
		"events": "fanguard_events_total", "own_pid": "own", "opener_gone": "opener_gone", "not_regular": "not_regular",
		"empty_clean": "empty", "cache_hits": "cached", "excluded": "excluded", "oversize": "oversize",
		"overloaded": "overloaded", "timed_out": "timed_out",
		"latency_p50_us": "histogram", "latency_p99_us": "histogram", "latency_max_us": "histogram",
	}
	var s Stats
	seen := map[string]bool{}
	for _, c := range s.counters() {
		seen[c.name] = true
		_, exported := promCounters[c.name]
		if _, other := elsewhere[c.name]; exported == other {
			t.Errorf("counter %s: exported %v, counted elsewhere %v: want exactly one", c.name, exported, other)
		}
	}
	for name := range promCounters {
		if !seen[name] {
			t.Errorf("promCounters names %s, which Stats.counters does not have", name)
		}
	}
	outcomes := map[string]bool{}
	for o := range numOutcomes {
		outcomes[o.String()] = true
	}
	for name, o := range elsewhere {
		if o != "histogram" && o != "fanguard_events_total" && !outcomes[o] {
			t.Errorf("%s: no outcome %q", name, o)
		}
	}
}

// TestMetricsListenerBusy: the address in use is an error naming it.
func TestMetricsListenerBusy(t *testing.T) {
	ln, err := listenMetrics("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = listenMetrics(ln.Addr().String())
	if err == nil || !strings.Contains(err.Error(), ln.Addr().String()) {
		t.Errorf("listening twice on %s: %v, want an error naming the address", ln.Addr(), err)
	}
}

// checkMetrics runs `promtool check metrics` (Debian's prometheus
// package, see make deps) over a scrape: the Prometheus conventions. A
// missing promtool skips, and fails under CI.
func checkMetrics(t *testing.T, scrape []byte) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if testutil.InCI() {
			t.Fatal("promtool is not installed, and CI=true: run make deps (Debian's prometheus package)")
		}
		t.Log("promtool is not installed: the scrape is not linted (make deps installs it)")
		return
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(scrape)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}
