package test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// controlGet sends GET path to the control socket and returns the status
// code and the body.
func controlGet(t *testing.T, socket, path string) (int, []byte) {
	t.Helper()
	code, body, err := controlDo(socket, "GET", path)
	if err != nil {
		t.Fatal(err)
	}
	return code, body
}

// statusDoc is the part of GET /status the tests check.
type statusDoc struct {
	TopTalkers struct {
		Executables []struct {
			Name  string `json:"name"`
			Scans int64  `json:"scans"`
		} `json:"executables"`
		Directories []struct {
			Name  string `json:"name"`
			Scans int64  `json:"scans"`
		} `json:"directories"`
	} `json:"top_talkers"`
	Version       string  `json:"version"`
	UptimeSeconds float64 `json:"uptime_seconds"`
	Health        struct {
		Healthy bool   `json:"healthy"`
		Reason  string `json:"reason"`
	} `json:"health"`
	Rules struct {
		Count      int    `json:"count"`
		Files      int    `json:"files"`
		Generation string `json:"generation"`
	} `json:"rules"`
	Protected struct {
		Filesystems int `json:"filesystems"`
	} `json:"protected"`
	Rates struct {
		WindowSeconds float64 `json:"window_seconds"`
		EventsPerSec  float64 `json:"events_per_second"`
	} `json:"rates"`
	Latency struct {
		P50us int64  `json:"p50_us"`
		P99us int64  `json:"p99_us"`
		MaxUs int64  `json:"max_us"`
		Count uint64 `json:"count"`
	} `json:"latency"`
	ScanLatency struct {
		Count uint64 `json:"count"`
	} `json:"scan_latency"`
	Cache struct {
		Hits, Misses uint64
		HitRatio     float64 `json:"hit_ratio"`
	} `json:"cache"`
	Counters       map[string]float64 `json:"counters"`
	LastDetections []struct {
		Path    string    `json:"path"`
		Rules   []string  `json:"rules"`
		Action  string    `json:"action"`
		Record  int64     `json:"record"`
		Time    time.Time `json:"time"`
		OnClose bool      `json:"on_close"`
	} `json:"last_detections"`
	OnClose struct {
		Enabled bool `json:"enabled"`
		Waiting int  `json:"waiting"`
		Bound   int  `json:"bound"`
	} `json:"on_close"`
}

func getStatus(t *testing.T, d *daemon) statusDoc {
	t.Helper()
	code, body := controlGet(t, d.Control, "/status")
	if code != http.StatusOK {
		t.Fatalf("GET /status: HTTP %d: %s", code, body)
	}
	var st statusDoc
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("decoding /status: %v\n%s", err, body)
	}
	return st
}

// TestStatusAndMetrics runs a known workload against one daemon and checks
// /status, /metrics and `fanguard status` against it.
func TestStatusAndMetrics(t *testing.T) {
	d := startDaemon(t, options{})
	const n = 20
	files := make(map[string]string, n)
	for i := range n {
		files[fmt.Sprintf("f%02d", i)] = fmt.Sprintf("clean file %d\n", i)
	}
	writeSettled(t, d, files)

	s0 := getStatus(t, d)
	for name := range files {
		if err := read(t, filepath.Join(d.Dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	sMid := getStatus(t, d)
	sigusr1 := d.counters() // nothing opened meanwhile: the same counters
	// A detection, for the last detections.
	bad := filepath.Join(d.Dir, "eicar.com")
	writeSettled(t, d, map[string]string{"eicar.com": eicar})
	if err := read(t, bad); err == nil {
		t.Fatal("reading EICAR: allowed")
	}
	var s1 statusDoc
	for deadline := time.Now().Add(5 * time.Second); ; {
		s1 = getStatus(t, d)
		if len(s1.LastDetections) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}

	t.Run("status", func(t *testing.T) {
		if !s1.Health.Healthy || s1.Health.Reason != "" {
			t.Errorf("health = %+v, want healthy", s1.Health)
		}
		if s1.Rules.Count == 0 || s1.Rules.Files == 0 || len(s1.Rules.Generation) != 64 {
			t.Errorf("rules = %+v", s1.Rules)
		}
		if s1.Protected.Filesystems != 1 {
			t.Errorf("protected filesystems = %d, want 1", s1.Protected.Filesystems)
		}
		if s1.Version == "" || s1.UptimeSeconds <= 0 {
			t.Errorf("version %q, uptime %v", s1.Version, s1.UptimeSeconds)
		}
		dl := delta(s0.Counters, sMid.Counters)
		if dl["events"] != n || dl["scans"] != n {
			t.Errorf("after %d opens: %v events, %v scans; want %d each", n, dl["events"], dl["scans"], n)
		}
		for _, name := range []string{"events", "scans", "detections", "cache_misses"} {
			if sMid.Counters[name] != sigusr1[name] {
				t.Errorf("%s: /status %v, SIGUSR1 %v", name, sMid.Counters[name], sigusr1[name])
			}
		}
		if dl := delta(sMid.Counters, s1.Counters); dl["detections"] != 1 {
			t.Errorf("%v detections, want 1", dl["detections"])
		}
		if s1.Latency.Count == 0 {
			t.Error("decision latency: no count")
		}
		// This test binary opened every file: it tops the talkers.
		self, _ := os.Executable()
		if tt := s1.TopTalkers; len(tt.Executables) == 0 || tt.Executables[0].Name != self || tt.Executables[0].Scans < n ||
			len(tt.Directories) == 0 || tt.Directories[0].Name != d.Dir {
			t.Errorf("top talkers %+v, want %s with at least %d scans, in %s", tt, self, n, d.Dir)
		}
		if s1.ScanLatency.Count != uint64(s1.Counters["scans"]) {
			t.Errorf("scan latency count %d, scans %v", s1.ScanLatency.Count, s1.Counters["scans"])
		}
		if s1.Latency.P50us > s1.Latency.P99us || s1.Latency.P99us > s1.Latency.MaxUs || s1.Latency.MaxUs == 0 {
			t.Errorf("latency %+v: want 0 < p50 ≤ p99 ≤ max", s1.Latency)
		}
		if s1.Rates.WindowSeconds <= 0 || s1.Rates.EventsPerSec <= 0 {
			t.Errorf("rates %+v", s1.Rates)
		}
		if h, m := s1.Counters["cache_hits"], s1.Counters["cache_misses"]; h+m > 0 && (s1.Cache.HitRatio < 0 || s1.Cache.HitRatio > 1) {
			t.Errorf("cache hit ratio %v", s1.Cache.HitRatio)
		}
		if len(s1.LastDetections) != 1 {
			t.Fatalf("last detections: %+v, want the EICAR one", s1.LastDetections)
		}
		ld := s1.LastDetections[0]
		if ld.Path != bad || len(ld.Rules) == 0 || ld.Action != "deny" || ld.Record < 1 || ld.Time.IsZero() {
			t.Errorf("last detection %+v", ld)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		code, body := controlGet(t, d.Control, "/metrics")
		if code != http.StatusOK {
			t.Fatalf("GET /metrics: HTTP %d: %s", code, body)
		}
		p := expfmt.NewTextParser(model.LegacyValidation)
		mfs, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
		if err != nil {
			t.Fatalf("parsing /metrics: %v\n%s", err, body)
		}
		value := func(name string) float64 {
			mf := mfs[name]
			if mf == nil || len(mf.GetMetric()) != 1 {
				t.Errorf("%s: missing", name)
				return -1
			}
			m := mf.GetMetric()[0]
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
			t.Errorf("%s: neither counter nor gauge", name)
			return -1
		}
		// The events by outcome add up to the events read.
		var events float64
		outcomes := map[string]bool{}
		for _, m := range mfs["fanguard_events_total"].GetMetric() {
			events += m.GetCounter().GetValue()
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" {
					outcomes[l.GetValue()] = true
				}
			}
		}
		if events < s1.Counters["events"] {
			t.Errorf("fanguard_events_total adds up to %v, /status said %v events before", events, s1.Counters["events"])
		}
		for _, o := range []string{"clean", "detected", "cached", "timed_out", "overloaded", "error", "excluded"} {
			if !outcomes[o] {
				t.Errorf("fanguard_events_total has no outcome %q (has %v)", o, outcomes)
			}
		}
		if v := value("fanguard_denials_total"); v < s1.Counters["denials"] {
			t.Errorf("fanguard_denials_total = %v, /status said %v before", v, s1.Counters["denials"])
		}
		if v := value("fanguard_scans_total"); v < s1.Counters["scans"] {
			t.Errorf("fanguard_scans_total = %v, /status said %v before", v, s1.Counters["scans"])
		}
		if mfs["fanguard_cache_entries"].GetType().String() != "GAUGE" {
			t.Errorf("fanguard_cache_entries is a %v, want a gauge", mfs["fanguard_cache_entries"].GetType())
		}
		if v := value("fanguard_protected_filesystems"); v != 1 {
			t.Errorf("fanguard_protected_filesystems = %v", v)
		}
		if v := value("fanguard_rules"); v != float64(s1.Rules.Count) {
			t.Errorf("fanguard_rules = %v, want %d", v, s1.Rules.Count)
		}
		if v := value("process_open_fds"); v <= 0 {
			t.Errorf("process_open_fds = %v", v)
		}
		if v := value("fanguard_healthy"); v != 1 {
			t.Errorf("fanguard_healthy = %v", v)
		}
		for _, name := range []string{"fanguard_queue_depth", "fanguard_inflight", "fanguard_workers_busy", "process_start_time_seconds", "go_goroutines"} {
			value(name)
		}
		if l := mfs["fanguard_rules_info"].GetMetric(); len(l) != 1 || l[0].GetLabel()[0].GetValue() != s1.Rules.Generation {
			t.Errorf("fanguard_rules_info: %v, want generation %s", l, s1.Rules.Generation)
		}
		if l := mfs["fanguard_build_info"].GetMetric(); len(l) != 1 || l[0].GetLabel()[0].GetName() != "version" {
			t.Errorf("fanguard_build_info: %v", l)
		}
		for _, name := range []string{"fanguard_decision_latency_seconds", "fanguard_scan_latency_seconds"} {
			mf := mfs[name]
			if mf == nil || mf.GetType().String() != "HISTOGRAM" || len(mf.GetMetric()) != 1 {
				t.Errorf("%s: %v, want a histogram", name, mf)
				continue
			}
			h := mf.GetMetric()[0].GetHistogram()
			bs := h.GetBucket()
			if len(bs) < 10 || len(bs) > 40 {
				t.Errorf("%s: %d buckets", name, len(bs))
			}
			var last uint64
			for _, b := range bs {
				if b.GetCumulativeCount() < last {
					t.Errorf("%s: buckets not cumulative: %v", name, bs)
				}
				last = b.GetCumulativeCount()
			}
			if h.GetSampleCount() < last || h.GetSampleCount() == 0 || h.GetSampleSum() <= 0 {
				t.Errorf("%s: count %d, sum %v, last bucket %d", name, h.GetSampleCount(), h.GetSampleSum(), last)
			}
			if name == "fanguard_scan_latency_seconds" && h.GetSampleCount() < uint64(s1.Counters["scans"]) {
				t.Errorf("%s_count = %d, fewer than the %v scans", name, h.GetSampleCount(), s1.Counters["scans"])
			}
		}
	})

	t.Run("cli", func(t *testing.T) {
		code, out, errOut := run(t, "status", "--socket", d.Control)
		if code != 0 {
			t.Fatalf("fanguard status: exit %d\n%s%s", code, out, errOut)
		}
		t.Logf("fanguard status:\n%s", out)
		for _, want := range []string{"● fanguard", "protecting", "Rules:", "Protecting: 1 filesystem", "Events:",
			"Latency:", "Cache:", "Uptime:", "Version:", "Last detections:", bad} {
			if !strings.Contains(out, want) {
				t.Errorf("fanguard status: no %q in\n%s", want, out)
			}
		}
		code, out, errOut = run(t, "status", "--json", "--socket", d.Control)
		if code != 0 {
			t.Fatalf("fanguard status --json: exit %d\n%s%s", code, out, errOut)
		}
		var st statusDoc
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("fanguard status --json: %v\n%s", err, out)
		}
		if !st.Health.Healthy || st.Rules.Generation != s1.Rules.Generation || st.Counters["events"] < s1.Counters["events"] {
			t.Errorf("fanguard status --json: %+v", st)
		}
	})

	t.Run("nobody", func(t *testing.T) {
		nobody := asNobody(t, d)
		os.Chmod(d.Control, 0o666) // the daemon's peer check is what refuses
		defer os.Chmod(d.Control, 0o600)
		out, err := exec.Command(nobody[0], append(nobody[1:], binary, "status", "--socket", d.Control)...).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 4 || !strings.Contains(string(out), "root only") {
			t.Errorf("fanguard status as nobody: %v, %s; want exit 4 and a refusal", err, out)
		}
		for _, path := range []string{"/metrics", "/status"} {
			if code := getAsNobody(t, d, path); code != "403" {
				t.Errorf("GET %s as nobody: %s, want 403", path, code)
			}
		}
	})
}

// TestStatusNoDaemon: exit 3 when nothing listens on the socket.
func TestStatusNoDaemon(t *testing.T) {
	dir := t.TempDir()
	code, out, errOut := run(t, "status", "--socket", filepath.Join(dir, "missing.sock"))
	if code != 3 || !strings.Contains(out, "not running") {
		t.Errorf("no socket: exit %d, %s%s; want 3, not running", code, out, errOut)
	}
	// A stale socket: it exists, nobody listens.
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	code, out, errOut = run(t, "status", "--json", "--socket", stale)
	if code != 3 {
		t.Errorf("stale socket: exit %d, %s%s; want 3", code, out, errOut)
	}
}
