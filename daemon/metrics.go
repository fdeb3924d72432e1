package daemon

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// What the control socket shows of the running daemon: GET /metrics, the
// Prometheus text format, from a collector that reads the atomic counters
// when scraped (nothing is added to the event path), and GET /status, the
// same and more as one JSON document for `fanguard status`.

// promCounters names and describes the counters of Stats.counters in
// /metrics, by their name there. A counter not listed is not exported:
// the outcomes of events, which fanguard_events_total{outcome} counts
// (own_pid, opener_gone, not_regular, empty_clean, cache_hits, excluded,
// oversize, overloaded, timed_out), and the latency figures, which the
// histograms hold. Levels are gauges; the rest are counters, named
// *_total.
var promCounters = map[string]struct{ name, help string }{
	"overflows":              {"overflows_total", "Queue overflow alarms from the kernel."},
	"scans":                  {"scans_total", "YARA scans run."},
	"bytes_scanned":          {"scanned_bytes_total", "Bytes scanned."},
	"detections":             {"detections_total", "Scans with at least one matching rule."},
	"late_detections":        {"late_detections_total", "Detections that came after the budget ran out."},
	"errors":                 {"errors_total", "Files that could not be read or scanned, and malformed event records (whatever answered the open: on_error, or on_timeout first)."},
	"answer_errors":          {"answer_errors_total", "Answers the kernel refused."},
	"parse_errors":           {"parse_errors_total", "Malformed event records (answered with on_error, not counted in fanguard_events_total)."},
	"kernel_denied":          {"kernel_denied_total", "Opens the kernel denied itself: it could not open an fd for the daemon (not counted in fanguard_events_total)."},
	"cache_misses":           {"cache_misses_total", "Verdict cache lookups that found nothing valid (the hits: fanguard_events_total{outcome=\"cached\"})."},
	"cache_evictions":        {"cache_evictions_total", "Verdict cache entries evicted to stay within cache.entries."},
	"cache_entries":          {"cache_entries", "Verdict cache entries held now."},
	"cached_denials":         {"cached_denials_total", "Denials answered from the cache, without a rescan."},
	"kernel_marks_added":     {"kernel_marks_added_total", "Ignore marks added in the kernel."},
	"kernel_marks_removed":   {"kernel_marks_removed_total", "Ignore marks removed: stamp moved, file written, rules changed."},
	"kernel_flushes":         {"kernel_flushes_total", "Times all ignore marks were dropped at once."},
	"dedup_waits":            {"dedup_waits_total", "Events that waited for a scan of the same file already running."},
	"invalidations":          {"invalidations_total", "Writers' closes seen (FAN_CLOSE_WRITE)."},
	"allow_listed":           {"allow_listed_total", "Detections let through by the allow list."},
	"record_errors":          {"record_errors_total", "Detections that could not be recorded."},
	"quarantined":            {"quarantined_total", "Files moved into the vault."},
	"quarantine_errors":      {"quarantine_errors_total", "Quarantine moves that failed."},
	"reloads":                {"reloads_total", "Rule sets loaded after the first."},
	"reload_failures":        {"reload_failures_total", "Reloads that kept the rules in force."},
	"log_dropped":            {"log_dropped_total", "Log entries dropped by the logger's queue."},
	"late_scans":             {"late_scans_total", "Scans of files whose open the budget had answered before a worker was free."},
	"late_dropped":           {"late_dropped_total", "Files whose open the budget answered and that were left unscanned (too many waiting); they stay uncached."},
	"detections_deferred":    {"detections_deferred_total", "Detections not queued for the record (queue full): the file stays uncached and is detected again at its next open."},
	"detections_coalesced":   {"detections_coalesced_total", "Repeats of a recent detection (same file, content, user, program and rules) counted in its record."},
	"invalidations_lost":     {"invalidations_lost_total", "Writers' closes the kernel could not pass on (a lease, no fds): every cached verdict was dropped."},
	"opener_reads_abandoned": {"opener_reads_abandoned_total", "Reads under an opener's /proc for a record given up (the opener held them) or not tried (too many held)."},
	"vault_full":             {"vault_full_total", "Quarantine moves refused because the vault would pass max_bytes; the file stays, denied."},
	"foreign_filesystems":    {"foreign_filesystems", "Filesystems marked in other mount namespaces (containers, user namespaces), now."},
	"close_queued":           {"close_queued_total", "Files queued for a scan after a writer closed them ([scan] on_close)."},
	"close_merged":           {"close_merged_total", "Closes of a file already queued for a scan on close: queued once, with the latest fd."},
	"close_dropped":          {"close_dropped_total", "Files dropped unscanned from the full on-close queue, oldest first: their first open scans them."},
	"close_skipped":          {"close_skipped_total", "Writers' closes not scanned: too large, excluded, cached already, being scanned, or gone."},
	"close_scans":            {"close_scans_total", "Scans run after a writer closed the file (also counted in scans)."},
	"close_detections":       {"close_detections_total", "Detections made when a writer closed the file (also counted in detections)."},
	"denials":                {"denials_total", "Opens denied, whatever decided it (a detection, the cache, on_timeout, on_error, on_oversize, on_overload = \"deny\")."},
}

// isLevel tells the counters that are levels (gauges), not running totals.
func isLevel(name string) bool {
	return name == "cache_entries" || name == "foreign_filesystems" || strings.HasPrefix(name, "latency_")
}

// collector is the daemon's prometheus.Collector.
type collector struct {
	d *Daemon

	counters map[string]*prometheus.Desc

	events                                               *prometheus.Desc
	queue, inflight, busy, workers, filesystems, healthy *prometheus.Desc
	unscanned, recording                                 *prometheus.Desc
	rules, rulesInfo, rulesLoad                          *prometheus.Desc
	build                                                *prometheus.Desc
	decision, scan                                       *prometheus.Desc
	feeds                                                feedMetrics
}

func newCollector(d *Daemon) *collector {
	c := &collector{d: d, counters: make(map[string]*prometheus.Desc)}
	for _, ct := range d.stats.counters() {
		if p, ok := promCounters[ct.name]; ok {
			c.counters[ct.name] = prometheus.NewDesc("fanguard_"+p.name, p.help, nil, nil)
		}
	}
	g := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("fanguard_"+name, help, labels, nil)
	}
	c.events = g("events_total", "Permission events read, by what decided the answer: own, opener_gone, not_regular, empty, cached, excluded, oversize, overloaded (allowed or answered at once), clean, detected, error (a scan's verdict) or timed_out (on_timeout).", "outcome")
	c.queue = g("queue_depth", "Jobs waiting in the queue for a worker.")
	c.inflight = g("inflight", "Events held: queued, scanning, waiting for a scan of the same file or for their deadline.")
	c.busy = g("workers_busy", "Workers scanning now.")
	c.workers = g("workers", "Scan workers.")
	c.filesystems = g("protected_filesystems", "Filesystems marked for permission events.")
	c.healthy = g("healthy", "1 when the pipeline makes progress (what the watchdog checks), else 0.")
	c.recording = g("recording_healthy", "1 while detections are recorded (the last write of the record worked) and the allow list is read, else 0.")
	c.unscanned = g("unscanned_opens_total", "Opens answered without a scan by on_timeout or on_overload, by the opener's uid (-1: unknown, -2: the uids beyond the first 1024).", "uid", "reason")
	c.rules = g("rules", "Rules in force.")
	c.rulesInfo = g("rules_info", "The generation of the rules in force.", "generation")
	c.rulesLoad = g("rules_load_seconds", "How long loading the rules in force took.")
	c.build = g("build_info", "The daemon's version.", "version")
	c.decision = g("decision_latency_seconds", "Time from reading a permission event to answering it.")
	c.scan = g("scan_latency_seconds", "Time of one YARA scan of a file's content.")
	c.feeds = newFeedMetrics()
	return c
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.counters {
		ch <- d
	}
	for _, d := range []*prometheus.Desc{c.events, c.queue, c.inflight, c.busy, c.workers, c.filesystems, c.healthy, c.recording, c.unscanned,
		c.rules, c.rulesInfo, c.rulesLoad, c.build, c.decision, c.scan} {
		ch <- d
	}
	c.feeds.describe(ch)
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	d := c.d
	for _, ct := range d.stats.counters() {
		desc := c.counters[ct.name]
		if desc == nil {
			continue
		}
		typ := prometheus.CounterValue
		if isLevel(ct.name) {
			typ = prometheus.GaugeValue
		}
		ch <- prometheus.MustNewConstMetric(desc, typ, float64(ct.value))
	}
	for o := range numOutcomes {
		ch <- prometheus.MustNewConstMetric(c.events, prometheus.CounterValue, float64(d.stats.Outcomes[o].Load()), o.String())
	}
	gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	}
	waiting, _ := d.sched.queued()
	gauge(c.queue, float64(waiting))
	gauge(c.inflight, float64(d.inflight.Load()))
	gauge(c.busy, float64(d.busyWorkers()))
	gauge(c.workers, float64(len(d.workers)))
	gauge(c.filesystems, float64(d.filesystems.Load()))
	gauge(c.healthy, boolFloat(d.Healthy()))
	gauge(c.recording, boolFloat(d.recordErr.Load() == nil && d.allowErr.Load() == nil))
	for _, u := range d.unscanned.snapshot() {
		uid := strconv.FormatInt(uidField(u.UID), 10)
		ch <- prometheus.MustNewConstMetric(c.unscanned, prometheus.CounterValue, float64(u.TimedOut), uid, "timeout")
		ch <- prometheus.MustNewConstMetric(c.unscanned, prometheus.CounterValue, float64(u.Overloaded), uid, "overload")
	}
	rs := d.rules.Load().rs
	gauge(c.rules, float64(rs.Count))
	gauge(c.rulesInfo, 1, rs.Generation)
	gauge(c.rulesLoad, rs.LoadTime.Seconds())
	gauge(c.build, 1, d.version)
	c.feeds.collect(ch, d.feeds(time.Now()))
	for _, h := range []struct {
		desc *prometheus.Desc
		h    *latencyHistogram
	}{{c.decision, &d.stats.Decision}, {c.scan, &d.stats.Scan}} {
		count, sum, buckets := h.h.promBuckets()
		ch <- prometheus.MustNewConstHistogram(h.desc, count, sum, buckets)
	}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// newRegistry returns the registry that GET /metrics serves, on the
// control socket and on the metrics listener: the daemon's collector,
// and the standard process_* (fds, memory, CPU, start time) and go_*
// (goroutines, heap, GC) collectors. Scraping it reads atomic counters
// and /proc/self; it takes no lock of the event path.
func (d *Daemon) newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newCollector(d),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector())
	return reg
}

// busyWorkers counts the workers on a job now.
func (d *Daemon) busyWorkers() int {
	n := 0
	for _, w := range d.workers {
		if w.busy.Load() != 0 {
			n++
		}
	}
	return n
}

// openFds counts the daemon's open file descriptors.
func openFds() (int, error) {
	f, err := os.Open("/proc/self/fd")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return 0, err
	}
	return len(names) - 1, nil // less the one reading the directory
}

// unhealthyReason says why the daemon is not healthy (see Healthy); "" if
// they all pass now. It looks at the whole path from the kernel to the
// answer: the reader, and each worker from the moment it takes a job to
// the moment it lets go of it, whatever it is doing meanwhile.
func (d *Daemon) unhealthyReason() string {
	if d.readerDone.Load() {
		return "the event reader stopped"
	}
	now := time.Now().UnixNano()
	limit := int64(2 * d.live().budget)
	if since := d.readerBusy.Load(); since != 0 && now-since > limit {
		return fmt.Sprintf("the event reader is stuck on one batch for %v (more than twice the budget)",
			time.Duration(now-since).Round(time.Millisecond))
	}
	waiting, _ := d.sched.queued()
	// A scan ends by scan_timeout; reading the file and wrapping the job
	// up take no time the opener controls.
	stuck := int64(d.cfg.ScanTimeout + 2*d.live().budget)
	for _, w := range d.workers {
		since := w.busy.Load()
		if since == 0 {
			continue
		}
		switch age := now - since; {
		case waiting > 0 && age > limit:
			return fmt.Sprintf("a worker has been on one file for %v (more than twice the budget) with %d events waiting",
				time.Duration(age).Round(time.Millisecond), waiting)
		case age > stuck:
			return fmt.Sprintf("a worker has been on one file for %v (past scan_timeout and twice the budget)",
				time.Duration(age).Round(time.Millisecond))
		}
	}
	return ""
}

// recordingProblem says why detections are not being recorded now, ""
// when they are. It is part of the health the status reports, not of
// what the watchdog checks: a daemon that cannot write its record (a full
// disk) still denies what it detects, and a restart would not help.
func (d *Daemon) recordingProblem() string {
	if e := d.recordErr.Load(); e != nil {
		return "detections are not being recorded: " + *e
	}
	if e := d.allowErr.Load(); e != nil {
		return "the allow list cannot be read (the last one read stays in force): " + *e
	}
	if since := d.recorderBusy.Load(); since != 0 {
		if age := time.Since(time.Unix(0, since)); age > recorderStuck {
			return fmt.Sprintf("the recorder has been on one detection for %v", age.Round(time.Second))
		}
	}
	return ""
}

// recorderStuck is how long one record (a SQLite transaction, a
// quarantine move) may take before the status says so.
const recorderStuck = time.Minute

// rateWindow keeps samples of the events and scans counters, to tell the
// rates over the last minute.
type rateWindow struct {
	mu      sync.Mutex
	samples [rateSamples]rateSample
	n       int
}

type rateSample struct {
	at            time.Time
	events, scans uint64
	bytes         uint64
}

const (
	rateInterval = 5 * time.Second
	rateSamples  = 13 // 60 s of samples 5 s apart, and the one of now
)

func (d *Daemon) rateSample() rateSample {
	return rateSample{at: time.Now(), events: d.stats.Events.Load(), scans: d.stats.Scans.Load(), bytes: d.stats.BytesScanned.Load()}
}

// sampleRates records a sample every rateInterval until ctx is done.
func (d *Daemon) sampleRates(ctx context.Context) {
	t := time.NewTicker(rateInterval)
	defer t.Stop()
	for {
		d.rates.add(d.rateSample())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *rateWindow) add(s rateSample) {
	r.mu.Lock()
	r.samples[r.n%rateSamples] = s
	r.n++
	r.mu.Unlock()
}

// oldest returns the oldest sample kept, false if none.
func (r *rateWindow) oldest() (rateSample, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == 0 {
		return rateSample{}, false
	}
	if r.n < rateSamples {
		return r.samples[0], true
	}
	return r.samples[r.n%rateSamples], true
}

// Status is the document of GET /status.
type Status struct {
	Version       string            `json:"version"`
	PID           int               `json:"pid"`
	Started       time.Time         `json:"started"`
	UptimeSeconds float64           `json:"uptime_seconds"`
	Mode          string            `json:"mode"`
	Health        StatusHealth      `json:"health"`
	Rules         StatusRules       `json:"rules"`
	Protected     StatusProtected   `json:"protected"`
	Pipeline      StatusPipeline    `json:"pipeline"`
	Rates         StatusRates       `json:"rates"`
	Latency       StatusLatency     `json:"latency"`
	ScanLatency   StatusLatency     `json:"scan_latency"`
	Cache         StatusCache       `json:"cache"`
	OnClose       StatusOnClose     `json:"on_close"`
	Counters      map[string]int64  `json:"counters"`
	Detections    []RecentDetection `json:"last_detections"`
	// Unscanned counts, per uid of the opener, the opens answered without
	// a scan by on_timeout or on_overload.
	Unscanned  []UnscannedByUID `json:"unscanned_by_uid"`
	TopTalkers StatusTalkers    `json:"top_talkers"`
	// Feeds are the rule feeds of the configuration ([[feeds]]).
	Feeds []StatusFeed `json:"feeds"`
}

// StatusTalkers are the executables and directories that caused the most
// scan time in the last minutes.
type StatusTalkers struct {
	WindowMinutes int      `json:"window_minutes"`
	Executables   []Talker `json:"executables"`
	Directories   []Talker `json:"directories"`
}

type StatusHealth struct {
	Healthy bool   `json:"healthy"`
	Reason  string `json:"reason,omitempty"` // why not, when not
}

type StatusRules struct {
	Count           int     `json:"count"`
	Files           int     `json:"files"`
	Generation      string  `json:"generation"`
	ShortGeneration string  `json:"short_generation"`
	FromCache       bool    `json:"from_cache"`
	LoadSeconds     float64 `json:"load_seconds"`
}

type StatusProtected struct {
	Filesystems int64 `json:"filesystems"`
}

type StatusPipeline struct {
	Workers     int   `json:"workers"`
	BusyWorkers int   `json:"busy_workers"`
	QueueDepth  int   `json:"queue_depth"`
	LateJobs    int   `json:"late_jobs"` // answered by the budget before a worker was free, waiting for a scan
	InFlight    int64 `json:"inflight"`
	OpenFds     int   `json:"open_fds"`
	Goroutines  int   `json:"goroutines"`
}

// StatusRates are over the last minute, or since the start when the daemon
// is younger (WindowSeconds says which).
type StatusRates struct {
	WindowSeconds  float64 `json:"window_seconds"`
	EventsPerSec   float64 `json:"events_per_second"`
	ScansPerSec    float64 `json:"scans_per_second"`
	BytesPerSecond float64 `json:"bytes_scanned_per_second"`
}

type StatusLatency struct {
	P50us int64  `json:"p50_us"`
	P99us int64  `json:"p99_us"`
	MaxUs int64  `json:"max_us"`
	Count uint64 `json:"count"`
}

type StatusCache struct {
	Hits     uint64  `json:"hits"`
	Misses   uint64  `json:"misses"`
	HitRatio float64 `json:"hit_ratio"` // hits / (hits + misses); 0 when neither
	Entries  int64   `json:"entries"`
}

func latencyOf(h *latencyHistogram) StatusLatency {
	var n uint64
	for i := range h.buckets {
		n += h.buckets[i].Load()
	}
	return StatusLatency{P50us: h.quantile(0.5).Microseconds(), P99us: h.quantile(0.99).Microseconds(),
		MaxUs: h.max().Microseconds(), Count: n}
}

// status builds the document of GET /status.
func (d *Daemon) status() Status {
	now := time.Now()
	waiting, late := d.sched.queued()
	st := Status{
		Version:       d.version,
		PID:           os.Getpid(),
		Started:       d.started,
		UptimeSeconds: now.Sub(d.started).Seconds(),
		Mode:          d.live().mode.String(),
		Health:        StatusHealth{Healthy: d.Healthy()},
		Unscanned:     d.unscanned.named(d.owners),
		Protected:     StatusProtected{Filesystems: d.filesystems.Load()},
		Pipeline: StatusPipeline{Workers: len(d.workers), BusyWorkers: d.busyWorkers(),
			QueueDepth: waiting, LateJobs: late, InFlight: d.inflight.Load(), Goroutines: runtime.NumGoroutine()},
		Latency:     latencyOf(&d.stats.Decision),
		ScanLatency: latencyOf(&d.stats.Scan),
		Counters:    d.stats.snapshot(),
		Detections:  d.stats.recent.last(),
		TopTalkers:  d.topTalkers(),
		OnClose:     d.closeStatus(),
		Feeds:       d.feeds(now),
	}
	if !st.Health.Healthy {
		st.Health.Reason = d.unhealthyReason()
		if st.Health.Reason == "" {
			st.Health.Reason = "the pipeline was not making progress a moment ago"
		}
	} else if r := d.recordingProblem(); r != "" {
		st.Health.Healthy, st.Health.Reason = false, r
	} else if r := feedProblem(st.Feeds, d.live().feedsMaxAge); r != "" {
		st.Health.Healthy, st.Health.Reason = false, r
	}
	rs := d.rules.Load().rs
	st.Rules = StatusRules{Count: rs.Count, Files: len(rs.Files), Generation: rs.Generation,
		ShortGeneration: rs.ShortGeneration(), FromCache: rs.FromCache, LoadSeconds: rs.LoadTime.Seconds()}
	if n, err := openFds(); err == nil {
		st.Pipeline.OpenFds = n
	}
	cur := d.rateSample()
	from, ok := d.rates.oldest()
	if !ok || cur.at.Sub(from.at) < time.Second {
		from = rateSample{at: d.started}
	}
	if w := cur.at.Sub(from.at).Seconds(); w > 0 {
		st.Rates = StatusRates{WindowSeconds: w,
			EventsPerSec:   float64(cur.events-from.events) / w,
			ScansPerSec:    float64(cur.scans-from.scans) / w,
			BytesPerSecond: float64(cur.bytes-from.bytes) / w}
	}
	hits, misses := d.stats.CacheHits.Load(), d.stats.CacheMisses.Load()
	st.Cache = StatusCache{Hits: hits, Misses: misses, Entries: d.stats.CacheEntries.Load()}
	if hits+misses > 0 {
		st.Cache.HitRatio = float64(hits) / float64(hits+misses)
	}
	return st
}

func (d *Daemon) topTalkers() StatusTalkers {
	d.drainTalkers()
	exes, dirs := d.talkers.top(time.Now(), 5)
	return StatusTalkers{WindowMinutes: talkerMinutes, Executables: exes, Directories: dirs}
}
