package daemon

import (
	"math/bits"
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
	Scans          atomic.Uint64 // YARA scans run
	BytesScanned   atomic.Uint64
	Detections     atomic.Uint64 // scans with at least one matching rule
	LateDetections atomic.Uint64 // detections that came after the budget ran out
	TimedOut       atomic.Uint64 // answered with on_timeout by the deadline
	Errors         atomic.Uint64 // answered with on_error: unreadable or unscannable
	AnswerErrors   atomic.Uint64 // the kernel refused an answer
	ParseErrors    atomic.Uint64 // malformed event records (fatal)
	KernelDenied   atomic.Uint64 // events the kernel denied itself: it could not open an fd for us

	CacheHits      atomic.Uint64 // events answered from the daemon's verdict cache
	CacheMisses    atomic.Uint64 // lookups that found nothing valid
	CacheEvictions atomic.Uint64 // entries evicted to stay within cache.entries
	CacheEntries   atomic.Int64  // entries held now
	CachedDenials  atomic.Uint64 // denials answered from the cache, without a rescan
	KernelMarks    atomic.Uint64 // ignore marks added (the kernel may still refuse silently)
	KernelUnmarks  atomic.Uint64 // ignore marks removed: stamp moved, file written, rules changed
	KernelFlushes  atomic.Uint64 // all ignore marks dropped at once (rules changed, lost invalidations)
	DedupWaits     atomic.Uint64 // events that waited for a scan of the same file already running
	Invalidations  atomic.Uint64 // writers' closes seen (FAN_CLOSE_WRITE)
	Reloads        atomic.Uint64 // rule sets loaded after the first

	Decision latencyHistogram // from reading an event to answering it
}

func (s *Stats) fields() []zap.Field {
	p50, p99, max := s.Decision.quantile(0.50), s.Decision.quantile(0.99), s.Decision.max()
	return []zap.Field{
		zap.Uint64("events", s.Events.Load()),
		zap.Uint64("own_pid", s.OwnPid.Load()),
		zap.Uint64("excluded", s.Excluded.Load()),
		zap.Uint64("overloaded", s.Overloaded.Load()),
		zap.Uint64("overflows", s.Overflows.Load()),
		zap.Uint64("not_regular", s.NotRegular.Load()),
		zap.Uint64("oversize", s.Oversize.Load()),
		zap.Uint64("scans", s.Scans.Load()),
		zap.Uint64("bytes_scanned", s.BytesScanned.Load()),
		zap.Uint64("detections", s.Detections.Load()),
		zap.Uint64("late_detections", s.LateDetections.Load()),
		zap.Uint64("timed_out", s.TimedOut.Load()),
		zap.Uint64("errors", s.Errors.Load()),
		zap.Uint64("answer_errors", s.AnswerErrors.Load()),
		zap.Uint64("parse_errors", s.ParseErrors.Load()),
		zap.Uint64("kernel_denied", s.KernelDenied.Load()),
		zap.Uint64("cache_hits", s.CacheHits.Load()),
		zap.Uint64("cache_misses", s.CacheMisses.Load()),
		zap.Uint64("cache_evictions", s.CacheEvictions.Load()),
		zap.Int64("cache_entries", s.CacheEntries.Load()),
		zap.Uint64("cached_denials", s.CachedDenials.Load()),
		zap.Uint64("kernel_marks_added", s.KernelMarks.Load()),
		zap.Uint64("kernel_marks_removed", s.KernelUnmarks.Load()),
		zap.Uint64("kernel_flushes", s.KernelFlushes.Load()),
		zap.Uint64("dedup_waits", s.DedupWaits.Load()),
		zap.Uint64("invalidations", s.Invalidations.Load()),
		zap.Uint64("reloads", s.Reloads.Load()),
		zap.Int64("latency_p50_us", p50.Microseconds()),
		zap.Int64("latency_p99_us", p99.Microseconds()),
		zap.Int64("latency_max_us", max.Microseconds()),
	}
}

// latencyHistogram counts durations in log-linear buckets: 8 per power of
// two of microseconds, so a quantile is off by at most 12.5 %. Record is
// lock-free and allocation-free.
type latencyHistogram struct {
	buckets [64 * subBuckets]atomic.Uint64
	maxNs   atomic.Int64
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
