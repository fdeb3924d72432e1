package daemon

import (
	"encoding/binary"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fanguard/fanguard/fan"
	"github.com/fanguard/fanguard/internal/testutil"
	"github.com/fanguard/fanguard/policy"
)

// record builds one event record as the kernel writes it: the metadata
// and, if pidfd is not fan.NoPidfd, a pidfd info record.
func record(mask uint64, fd, pid, pidfd int32) []byte {
	b := make([]byte, fan.MetadataSize)
	ne := binary.NativeEndian
	if pidfd != fan.NoPidfd {
		b = append(b, unix.FAN_EVENT_INFO_TYPE_PIDFD, 0, 8, 0)
		ne.PutUint16(b[fan.MetadataSize+2:], 8)
		b = ne.AppendUint32(b, uint32(pidfd))
	}
	ne.PutUint32(b[0:], uint32(len(b)))
	b[4] = unix.FANOTIFY_METADATA_VERSION
	ne.PutUint16(b[6:], fan.MetadataSize)
	ne.PutUint64(b[8:], mask)
	ne.PutUint32(b[16:], uint32(fd))
	ne.PutUint32(b[20:], uint32(pid))
	return b
}

// BenchmarkReaderCacheHit is the reader's path for a read of 64 opens
// answered from the daemon's cache: parsing, the fast path and writing
// the answers (kernel calls faked). It reports the time per event.
func BenchmarkReaderCacheHit(b *testing.B) {
	d, _ := testDaemon(&testing.T{}, 0)
	d.kern = nopKernel{}
	d.excl = policy.NewExclusions(policy.ProtectConfig{})
	d.cache = newVerdictCache(1000, &d.stats)
	d.cache.store(cacheEntry{stamp: fan.Stamp{}, gen: 1, verdict: policy.Allow})
	const events = 64
	var buf []byte
	for i := range int32(events) {
		buf = append(buf, record(unix.FAN_OPEN_PERM, 10+i, 7, 200+i)...)
	}
	var scratch [4096]byte
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if err := d.handleBatch(buf, now, scratch[:]); err != nil {
			b.Fatal(err)
		}
		d.writeAnswers(d.answers.n)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*events), "ns/event")
	if d.stats.CacheHits.Load() == 0 {
		b.Fatalf("no cache hit: %v", d.stats.fields())
	}
}

func TestReaderCacheHitAllocs(t *testing.T) {
	if testutil.RaceEnabled {
		t.Skip("the race detector changes escape analysis")
	}
	if a := testing.Benchmark(BenchmarkReaderCacheHit).AllocsPerOp(); a != 0 {
		t.Errorf("the reader allocates %d times per read of cache hits, want 0", a)
	}
}
