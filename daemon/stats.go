package daemon

import (
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Stats are the daemon's counters. Each is updated with one atomic add on
// the event path, no lock; read them at any time.
type Stats struct {
	Events         atomic.Uint64 // permission events read
	OwnPid         atomic.Uint64 // allowed at once: opened by the daemon itself
	Excluded       atomic.Uint64 // allowed at once: exclude_paths/exe/uids
	Overloaded     atomic.Uint64 // answered at once with on_overload: max_pending reached
	Overflows      atomic.Uint64 // FAN_Q_OVERFLOW alarms from the kernel
	NotRegular     atomic.Uint64 // allowed without a scan: not a regular file
	Oversize       atomic.Uint64 // answered with on_oversize: above max_file_size
	EmptyClean     atomic.Uint64 // allowed without a scan: empty, and the rules match no empty content
	Scans          atomic.Uint64 // YARA scans run
	BytesScanned   atomic.Uint64
	Detections     atomic.Uint64 // scans with at least one matching rule
	LateDetections atomic.Uint64 // detections that came after the budget ran out
	TimedOut       atomic.Uint64 // answered with on_timeout by the deadline
	Errors         atomic.Uint64 // answered with on_error: unreadable or unscannable
	AnswerErrors   atomic.Uint64 // the kernel refused an answer
	ParseErrors    atomic.Uint64 // malformed event records (answered with on_error and skipped; fatal if not delimited)
	KernelDenied   atomic.Uint64 // events the kernel denied itself: it could not open an fd for us

	CacheHits        atomic.Uint64 // events answered from the daemon's verdict cache
	CacheMisses      atomic.Uint64 // lookups that found nothing valid
	CacheEvictions   atomic.Uint64 // entries evicted to stay within cache.entries
	CacheEntries     atomic.Int64  // entries held now
	CachedDenials    atomic.Uint64 // denials answered from the cache, without a rescan
	KernelMarks      atomic.Uint64 // ignore marks added (the kernel may still refuse silently)
	KernelUnmarks    atomic.Uint64 // ignore marks removed: stamp moved, file written, rules changed
	KernelFlushes    atomic.Uint64 // all ignore marks dropped at once (rules changed, lost invalidations)
	DedupWaits       atomic.Uint64 // events that waited for a scan of the same file already running
	Invalidations    atomic.Uint64 // writers' closes seen (FAN_CLOSE_WRITE)
	AllowListed      atomic.Uint64 // detections let through by the allow list
	RecordErrors     atomic.Uint64 // detections that could not be recorded (logged all the same)
	Quarantined      atomic.Uint64 // files moved into the vault
	QuarantineErrors atomic.Uint64 // quarantine moves that failed (the file stays, denied)
	Reloads          atomic.Uint64 // rule sets loaded after the first
	ReloadFailures   atomic.Uint64 // reloads that kept the rules in force

	OpenerGone           atomic.Uint64 // allowed at once: the opener had exited before the event was read
	LateScans            atomic.Uint64 // scans of files whose open the budget had answered before a worker was free
	LateDropped          atomic.Uint64 // such files not scanned: too many were waiting; they stay uncached
	DetectionsDeferred   atomic.Uint64 // detections not queued for the record (queue full): left uncached, detected again at the next open
	DetectionsCoalesced  atomic.Uint64 // repeats of a detection recorded lately, counted in its record
	InvalidationsLost    atomic.Uint64 // writers' closes the kernel could not pass on (a lease, no fds): every cached verdict dropped
	OpenerReadsAbandoned atomic.Uint64 // reads under an opener's /proc given up (it held them) or not tried (too many held)
	VaultFull            atomic.Uint64 // quarantine moves refused: the vault would pass max_bytes
	ForeignFilesystems   atomic.Int64  // filesystems marked in other mount namespaces, now

	// Scans on close ([scan] on_close, onclose.go).
	CloseQueued     atomic.Uint64 // files queued for a scan after a writer closed them
	CloseMerged     atomic.Uint64 // closes of a file already queued: queued once, with the latest fd
	CloseDropped    atomic.Uint64 // files dropped from the full queue, oldest first: their first open scans
	CloseSkipped    atomic.Uint64 // closes not scanned: too large, excluded, cached already, being scanned, gone
	CloseScans      atomic.Uint64 // scans run on close (also counted in Scans)
	CloseDetections atomic.Uint64 // detections made on close (also counted in Detections)

	// Outcomes counts the permission events by what decided their answer,
	// one count per event, when it is answered: they add up to Events.
	Outcomes [numOutcomes]atomic.Uint64
	Denials  atomic.Uint64 // answers that denied an open, whatever decided them

	Decision latencyHistogram // from reading an event to answering it
	Scan     latencyHistogram // one YARA scan of a file's content

	recent recentDetections // the last detections, for the status

	logDropped func() uint64 // the logger's drop counter, if known
}

// eventOutcome is what decided the answer to one permission event: the label
// of fanguard_events_total. Each event has exactly one.
type eventOutcome uint8

const (
	outcomeOwn        eventOutcome = iota // opened by the daemon itself: allowed
	outcomeGone                           // the opener had exited: allowed
	outcomeNotRegular                     // not a regular file: allowed
	outcomeEmpty                          // empty, and the rules match no empty content: allowed
	outcomeCached                         // the daemon's verdict cache
	outcomeExcluded                       // exclude_paths, exclude_exe or exclude_uids: allowed
	outcomeOversize                       // on_oversize: above max_file_size
	outcomeOverloaded                     // on_overload: max_pending or max_pending_per_uid reached
	outcomeClean                          // a scan found nothing
	outcomeDetected                       // a scan matched (the verdict: the action, the allow list, the mode)
	outcomeError                          // on_error: the file could not be read or scanned
	outcomeTimedOut                       // on_timeout: the budget ran out before the verdict
	numOutcomes

	// noOutcome answers a malformed record (ParseErrors), which is not
	// counted in Events.
	noOutcome eventOutcome = 255
)

var outcomeNames = [numOutcomes]string{
	outcomeOwn:        "own",
	outcomeGone:       "opener_gone",
	outcomeNotRegular: "not_regular",
	outcomeEmpty:      "empty",
	outcomeCached:     "cached",
	outcomeExcluded:   "excluded",
	outcomeOversize:   "oversize",
	outcomeOverloaded: "overloaded",
	outcomeClean:      "clean",
	outcomeDetected:   "detected",
	outcomeError:      "error",
	outcomeTimedOut:   "timed_out",
}

func (o eventOutcome) String() string {
	if o < numOutcomes {
		return outcomeNames[o]
	}
	return "none"
}

// answered counts an answer: its outcome, and the denial if it is one.
func (s *Stats) answered(o eventOutcome, allow bool) {
	if o < numOutcomes {
		s.Outcomes[o].Add(1)
	}
	if !allow {
		s.Denials.Add(1)
	}
}

// counter is one named counter value.
type counter struct {
	name  string
	value int64
}

// counters returns every counter, in a stable order.
func (s *Stats) counters() []counter {
	u := func(name string, v *atomic.Uint64) counter { return counter{name, int64(v.Load())} }
	return []counter{
		u("events", &s.Events),
		u("own_pid", &s.OwnPid),
		u("excluded", &s.Excluded),
		u("overloaded", &s.Overloaded),
		u("overflows", &s.Overflows),
		u("not_regular", &s.NotRegular),
		u("oversize", &s.Oversize),
		u("empty_clean", &s.EmptyClean),
		u("scans", &s.Scans),
		u("bytes_scanned", &s.BytesScanned),
		u("detections", &s.Detections),
		u("late_detections", &s.LateDetections),
		u("timed_out", &s.TimedOut),
		u("errors", &s.Errors),
		u("answer_errors", &s.AnswerErrors),
		u("parse_errors", &s.ParseErrors),
		u("kernel_denied", &s.KernelDenied),
		u("cache_hits", &s.CacheHits),
		u("cache_misses", &s.CacheMisses),
		u("cache_evictions", &s.CacheEvictions),
		{"cache_entries", s.CacheEntries.Load()},
		u("cached_denials", &s.CachedDenials),
		u("kernel_marks_added", &s.KernelMarks),
		u("kernel_marks_removed", &s.KernelUnmarks),
		u("kernel_flushes", &s.KernelFlushes),
		u("dedup_waits", &s.DedupWaits),
		u("invalidations", &s.Invalidations),
		u("allow_listed", &s.AllowListed),
		u("record_errors", &s.RecordErrors),
		u("quarantined", &s.Quarantined),
		u("quarantine_errors", &s.QuarantineErrors),
		u("reloads", &s.Reloads),
		u("reload_failures", &s.ReloadFailures),
		u("opener_gone", &s.OpenerGone),
		u("late_scans", &s.LateScans),
		u("late_dropped", &s.LateDropped),
		u("detections_deferred", &s.DetectionsDeferred),
		u("detections_coalesced", &s.DetectionsCoalesced),
		u("invalidations_lost", &s.InvalidationsLost),
		u("opener_reads_abandoned", &s.OpenerReadsAbandoned),
		u("vault_full", &s.VaultFull),
		{"foreign_filesystems", s.ForeignFilesystems.Load()},
		u("close_queued", &s.CloseQueued),
		u("close_merged", &s.CloseMerged),
		u("close_dropped", &s.CloseDropped),
		u("close_skipped", &s.CloseSkipped),
		u("close_scans", &s.CloseScans),
		u("close_detections", &s.CloseDetections),
		u("denials", &s.Denials),
		{"log_dropped", s.logDroppedCount()},
		{"latency_p50_us", s.Decision.quantile(0.50).Microseconds()},
		{"latency_p99_us", s.Decision.quantile(0.99).Microseconds()},
		{"latency_max_us", s.Decision.max().Microseconds()},
	}
}

func (s *Stats) logDroppedCount() int64 {
	if s.logDropped == nil {
		return 0
	}
	return int64(s.logDropped())
}

func (s *Stats) fields() []zap.Field {
	cs := s.counters()
	f := make([]zap.Field, len(cs))
	for i, c := range cs {
		f[i] = zap.Int64(c.name, c.value)
	}
	return f
}

// snapshot returns the counters by name, for the control socket.
func (s *Stats) snapshot() map[string]int64 {
	m := make(map[string]int64)
	for _, c := range s.counters() {
		m[c.name] = c.value
	}
	return m
}

// latencyHistogram counts durations in log-linear buckets: 8 per power of
// two of microseconds, so a quantile is off by at most 12.5 %. Record is
// lock-free and allocation-free.
type latencyHistogram struct {
	buckets [64 * subBuckets]atomic.Uint64
	maxNs   atomic.Int64
	sumNs   atomic.Int64 // for the Prometheus histogram's _sum
}

const subBits = 3
const subBuckets = 1 << subBits

// bucketOf maps microseconds to a bucket: values below 8 µs have one bucket
// each; above, each power of two is split in 8.
func bucketOf(us uint64) int {
	if us < subBuckets {
		return int(us)
	}
	exp := bits.Len64(us) - 1 // ≥ subBits
	mant := (us >> (exp - subBits)) & (subBuckets - 1)
	return (exp-subBits+1)*subBuckets + int(mant)
}

// bucketHigh is the largest value (µs) of bucket i.
func bucketHigh(i int) uint64 {
	if i < subBuckets {
		return uint64(i)
	}
	exp := i/subBuckets + subBits - 1
	mant := uint64(i % subBuckets)
	return (subBuckets+mant+1)<<(exp-subBits) - 1
}

// Record counts one duration.
func (h *latencyHistogram) Record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	i := min(bucketOf(uint64(d/time.Microsecond)), len(h.buckets)-1)
	h.buckets[i].Add(1)
	h.sumNs.Add(int64(d))
	for {
		m := h.maxNs.Load()
		if int64(d) <= m || h.maxNs.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

// quantile returns the upper bound of the bucket holding quantile q.
func (h *latencyHistogram) quantile(q float64) time.Duration {
	var total uint64
	for i := range h.buckets {
		total += h.buckets[i].Load()
	}
	if total == 0 {
		return 0
	}
	rank := uint64(q*float64(total-1)) + 1
	var seen uint64
	for i := range h.buckets {
		if seen += h.buckets[i].Load(); seen >= rank {
			return min(time.Duration(bucketHigh(i))*time.Microsecond, h.max())
		}
	}
	return h.max()
}

func (h *latencyHistogram) max() time.Duration { return time.Duration(h.maxNs.Load()) }

// promBuckets returns the histogram merged into powers of two: cumulative
// counts with upper bounds in seconds, from 1 µs to 2^26 µs (about 67 s),
// the total count and the sum in seconds. The buckets are read once each,
// so the count is the sum of what the buckets held when read.
func (h *latencyHistogram) promBuckets() (count uint64, sum float64, cumulative map[float64]uint64) {
	cumulative = make(map[float64]uint64, promBucketPowers+1)
	i := 0
	for k := 0; k <= promBucketPowers; k++ {
		bound := uint64(1) << k // µs
		for ; i < len(h.buckets) && bucketHigh(i) < bound; i++ {
			count += h.buckets[i].Load()
		}
		cumulative[float64(bound)/1e6] = count
	}
	for ; i < len(h.buckets); i++ {
		count += h.buckets[i].Load()
	}
	return count, float64(h.sumNs.Load()) / 1e9, cumulative
}

// promBucketPowers is the largest power of two (of µs) exported as a
// bucket bound: 2^26 µs ≈ 67 s.
const promBucketPowers = 26

// recentDetections is a small ring of the last detections, filled by the
// recorder goroutine (off the event path) and read by the status.
type recentDetections struct {
	mu   sync.Mutex
	ring [recentDetectionsKept]RecentDetection
	n    int // detections added, ever
}

const recentDetectionsKept = 10

// RecentDetection is what the status shows of one detection.
type RecentDetection struct {
	Time   time.Time `json:"time"`
	Path   string    `json:"path"`
	Rules  []string  `json:"rules"`
	Action string    `json:"action"`
	Late   bool      `json:"late,omitempty"`
	// OnClose: found when a writer closed the file (PID and Exe are the
	// writer's), not at an open.
	OnClose bool   `json:"on_close,omitempty"`
	Exe     string `json:"exe,omitempty"`
	PID     int32  `json:"pid"`
	Record  int64  `json:"record"` // -1: not recorded
}

func (r *recentDetections) add(det *Detection, id int64) {
	rd := RecentDetection{Time: det.Time, Path: string(det.Path), Action: det.Action.String(),
		Late: det.Late, OnClose: det.OnClose, Exe: det.Exe, PID: det.PID, Record: id}
	for _, m := range det.Matches {
		rd.Rules = append(rd.Rules, m.Rule)
	}
	r.mu.Lock()
	r.ring[r.n%recentDetectionsKept] = rd
	r.n++
	r.mu.Unlock()
}

// last returns the detections kept, the newest first.
func (r *recentDetections) last() []RecentDetection {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]RecentDetection, 0, min(r.n, recentDetectionsKept))
	for i := r.n - 1; i >= 0 && i >= r.n-recentDetectionsKept; i-- {
		out = append(out, r.ring[i%recentDetectionsKept])
	}
	return out
}
