package test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/fanguard/fanguard/internal/testutil"
)

// The Prometheus side of fanguard: configs/prometheus/ and a daemon with
// [metrics] listen, scraped by Debian's prometheus for real.

const (
	rulesFile     = "../configs/prometheus/fanguard.rules.yml"
	dashboardFile = "../configs/prometheus/grafana-dashboard.json"
)

// requireTool returns the path of a program of Debian's prometheus
// package (make deps installs it); it skips without it, and fails under
// CI.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if testutil.InCI() {
			t.Fatalf("%s is not installed, and CI=true: run make deps (Debian's prometheus package)", name)
		}
		t.Skipf("%s is not installed (make deps installs Debian's prometheus package)", name)
	}
	return p
}

// freeAddr returns a loopback address with a port free now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// httpOver is what this test binary does when it is re-run (as another
// user, see asNobody) for METHOD URL over TCP: it prints the HTTP status
// code, and for a 200 whether the body holds fanguard_healthy.
func httpOver(method, u string) int {
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Print(resp.StatusCode)
	if resp.StatusCode == http.StatusOK {
		fmt.Print(" healthy:", bytes.Contains(body, []byte("\nfanguard_healthy ")))
	}
	return 0
}

// TestPrometheusRules: the alert rules pass promtool check rules.
func TestPrometheusRules(t *testing.T) {
	promtool := requireTool(t, "promtool")
	out, err := exec.Command(promtool, "check", "rules", rulesFile).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules %s: %v\n%s", rulesFile, err, out)
	}
	if !strings.Contains(string(out), "SUCCESS") {
		t.Errorf("promtool check rules %s:\n%s", rulesFile, out)
	}
}

// TestMetricsListener runs the daemon with [metrics] listen, scrapes it
// as root and as nobody (it serves GET /metrics to anyone, and nothing
// else), lints the scrape with promtool check metrics, then runs Debian's
// prometheus against it with the shipped alert rules: the target is up,
// the daemon's metrics are stored, every rule evaluates, and every query
// of the shipped Grafana dashboard runs.
func TestMetricsListener(t *testing.T) {
	promtool := requireTool(t, "promtool")
	prometheus := requireTool(t, "prometheus")
	addr := freeAddr(t)
	d := startDaemon(t, options{tables: fmt.Sprintf("[metrics]\nlisten = %q\n", addr)})
	d.waitLog(5*time.Second, "serving metrics", "http://"+addr+"/metrics")

	// A clean file and a detected one, for the counters.
	clean, bad := filepath.Join(d.Dir, "clean.txt"), filepath.Join(d.Dir, "eicar.com")
	writeFile(t, clean, "nothing to see\n", 0o644)
	writeFile(t, bad, eicar, 0o644)
	if _, err := os.ReadFile(clean); err != nil {
		t.Fatalf("reading a clean file: %v", err)
	}
	if _, err := os.ReadFile(bad); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("reading the EICAR file: %v, want EPERM", err)
	}

	base := "http://" + addr
	t.Run("root", func(t *testing.T) {
		for _, tt := range []struct {
			method, path string
			want         int
		}{
			{http.MethodGet, "/metrics", http.StatusOK},
			{http.MethodGet, "/status", http.StatusNotFound},
			{http.MethodPost, "/reload", http.StatusNotFound},
			{http.MethodPost, "/allowlist", http.StatusNotFound},
			{http.MethodGet, "/", http.StatusNotFound},
			{http.MethodPost, "/metrics", http.StatusMethodNotAllowed},
		} {
			req, _ := http.NewRequest(tt.method, base+tt.path, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", tt.method, tt.path, err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("%s %s: %s, want %d", tt.method, tt.path, resp.Status, tt.want)
			}
		}
	})
	t.Run("nobody", func(t *testing.T) {
		prefix := asNobody(t, d)
		self, _ := os.Executable()
		for _, tt := range []struct{ method, path, want string }{
			{http.MethodGet, "/metrics", "200 healthy:true"},
			{http.MethodGet, "/status", "404"},
			{http.MethodPost, "/reload", "404"},
			{http.MethodPost, "/metrics", "405"},
		} {
			cmd := exec.Command(prefix[0], append(prefix[1:], self)...)
			cmd.Env = append(os.Environ(), "FANGUARD_TEST_HTTP_METHOD="+tt.method, "FANGUARD_TEST_HTTP_URL="+base+tt.path)
			out, _ := cmd.CombinedOutput()
			if got := strings.TrimSpace(string(out)); got != tt.want {
				t.Errorf("%s %s as nobody: %q, want %q", tt.method, tt.path, got, tt.want)
			}
		}
	})

	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	scrape, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	lint := exec.Command(promtool, "check", "metrics")
	lint.Stdin = bytes.NewReader(scrape)
	if out, err := lint.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := parser.TextToMetricFamilies(bytes.NewReader(scrape))
	if err != nil {
		t.Fatalf("parsing the scrape: %v", err)
	}
	outcomes := map[string]float64{}
	for _, m := range mfs["fanguard_events_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "outcome" {
				outcomes[l.GetValue()] = m.GetCounter().GetValue()
			}
		}
	}
	if outcomes["clean"] < 1 || outcomes["detected"] < 1 {
		t.Errorf("fanguard_events_total by outcome: %v, want a clean and a detected one at least", outcomes)
	}
	if mf := mfs["fanguard_denials_total"]; mf == nil || mf.GetMetric()[0].GetCounter().GetValue() < 1 {
		t.Errorf("fanguard_denials_total: %v, want at least 1", mf)
	}

	// Every metric the rules and the dashboard name is in the scrape, but
	// the feeds' (no feed here: TestFeedUpdate checks them).
	feedMetrics := map[string]bool{"fanguard_feed_age_seconds": true, "fanguard_feed_stale": true}
	for _, file := range []string{rulesFile, dashboardFile} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range regexp.MustCompile(`\b(?:fanguard|process|go)_[a-z_]+\b`).FindAllString(string(data), -1) {
			base := strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_count")
			if mfs[name] == nil && mfs[base] == nil && !feedMetrics[name] {
				t.Errorf("%s names %s, which the daemon does not export", file, name)
			}
		}
	}

	promURL := scrapeWithPrometheus(t, prometheus, addr)
	// A sample of an instant query: its labels and its [time, "value"].
	type sample struct {
		Metric map[string]string `json:"metric"`
		Value  [2]any            `json:"value"`
	}
	query := func(q string) []sample {
		t.Helper()
		resp, err := http.Get(promURL + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			t.Fatalf("query %s: %v", q, err)
		}
		defer resp.Body.Close()
		var r struct {
			Status string `json:"status"`
			Error  string `json:"error"`
			Data   struct {
				Result []sample `json:"result"`
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || r.Status != "success" {
			t.Errorf("query %s: %v %s %s", q, err, r.Status, r.Error)
		}
		return r.Data.Result
	}
	// Some samples of the fanguard target: up, and the detection.
	up := query(`up{job="fanguard"}`)
	if len(up) != 1 || up[0].Value[1] != "1" {
		t.Errorf(`up{job="fanguard"}: %v, want one series of 1`, up)
	}
	if r := query(`fanguard_events_total{job="fanguard",outcome="detected"} >= 1`); len(r) != 1 {
		t.Errorf(`fanguard_events_total{outcome="detected"} >= 1 in Prometheus: %v`, r)
	}
	// The dashboard's queries, as Grafana would send them.
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	grafana := strings.NewReplacer("$instance", ".*", "$__rate_interval", "1m", "$__range", "5m")
	n := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			n++
			query(grafana.Replace(tg.Expr))
		}
	}
	if n < 10 {
		t.Errorf("%s has %d queries, want a dashboard", dashboardFile, n)
	}
	// The alert rules loaded and evaluated without error.
	deadline := time.Now().Add(20 * time.Second)
	for {
		health := ruleHealth(t, promURL)
		bad := 0
		for name, h := range health {
			if h != "ok" {
				bad++
				if time.Now().After(deadline) {
					t.Errorf("rule %s: health %q", name, h)
				}
			}
		}
		if len(health) == 0 && time.Now().After(deadline) {
			t.Errorf("no rules loaded from %s", rulesFile)
		}
		if bad == 0 && len(health) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// scrapeWithPrometheus runs Debian's prometheus, scraping target every
// second with the shipped rules, until the target is up; it returns the
// address of its HTTP API and kills it (by pid) when the test ends.
func scrapeWithPrometheus(t *testing.T, prometheus, target string) string {
	t.Helper()
	work := t.TempDir()
	rules, err := filepath.Abs(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - %q\n"+
		"scrape_configs:\n  - job_name: fanguard\n    static_configs:\n      - targets: [%q]\n", rules, target)
	cfgPath := filepath.Join(work, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	web := freeAddr(t)
	var log bytes.Buffer
	cmd := exec.Command(prometheus, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(work, "data"),
		"--web.listen-address="+web, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting prometheus: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("prometheus log:\n%s", log.String())
		}
	})
	promURL := "http://" + web
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("prometheus exited: %v", err)
		default:
		}
		if targetUp(promURL) {
			return promURL
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("prometheus did not scrape %s within 30 s", target)
	return ""
}

// targetUp reports whether prometheus at promURL has up{job="fanguard"} == 1.
func targetUp(promURL string) bool {
	resp, err := http.Get(promURL + "/api/v1/query?query=" + url.QueryEscape(`up{job="fanguard"} == 1`))
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var r struct {
		Data struct {
			Result []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	return json.NewDecoder(resp.Body).Decode(&r) == nil && len(r.Data.Result) == 1
}

// ruleHealth returns the health of each rule prometheus at promURL has
// loaded, by name ("ok", "err", "unknown" before its first evaluation).
func ruleHealth(t *testing.T, promURL string) map[string]string {
	t.Helper()
	resp, err := http.Get(promURL + "/api/v1/rules")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name      string `json:"name"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("/api/v1/rules: %v", err)
	}
	h := map[string]string{}
	for _, g := range r.Data.Groups {
		for _, rule := range g.Rules {
			h[rule.Name] = rule.Health
			if rule.LastError != "" {
				h[rule.Name] += ": " + rule.LastError
			}
		}
	}
	return h
}
