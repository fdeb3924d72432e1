package daemon

import (
	"runtime"
	"testing"
	"time"

	"github.com/fanguard/fanguard/fan"
	"github.com/fanguard/fanguard/internal/testutil"
	"github.com/fanguard/fanguard/policy"
)

func entry(ino uint64, v policy.Verdict) cacheEntry {
	return cacheEntry{id: fan.FileID{Dev: 1, Ino: ino}, stamp: fan.Stamp{CtimeNs: int64(ino), Size: 1}, gen: 1, verdict: v}
}

func TestCacheLookup(t *testing.T) {
	var st Stats
	c := newVerdictCache(1000, &st)
	c.store(entry(1, policy.Allow))
	c.store(entry(2, policy.Deny))
	tests := []struct {
		name   string
		ino    uint64
		stamp  fan.Stamp
		gen    uint64
		want   policy.Verdict
		wantOK bool
	}{
		{"clean", 1, fan.Stamp{CtimeNs: 1, Size: 1}, 1, policy.Allow, true},
		{"detected", 2, fan.Stamp{CtimeNs: 2, Size: 1}, 1, policy.Deny, true},
		{"ctime moved", 1, fan.Stamp{CtimeNs: 3, Size: 1}, 1, 0, false},
		{"size changed", 1, fan.Stamp{CtimeNs: 1, Size: 2}, 1, 0, false},
		{"generation changed", 1, fan.Stamp{CtimeNs: 1, Size: 1, Gen: 7}, 1, 0, false},
		{"rules changed", 1, fan.Stamp{CtimeNs: 1, Size: 1}, 2, 0, false},
		{"unknown file", 3, fan.Stamp{CtimeNs: 3, Size: 1}, 1, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, _, ok := c.lookup(fan.FileID{Dev: 1, Ino: tt.ino}, tt.stamp, tt.gen)
			if ok != tt.wantOK || v != tt.want {
				t.Errorf("lookup = %v, %v; want %v, %v", v, ok, tt.want, tt.wantOK)
			}
		})
	}
	if !c.forget(fan.FileID{Dev: 1, Ino: 1}, fan.Stamp{CtimeNs: 1, Size: 1}) || c.forget(fan.FileID{Dev: 1, Ino: 1}, fan.Stamp{}) {
		t.Error("forget: want true, then false")
	}
	if _, _, ok := c.lookup(fan.FileID{Dev: 1, Ino: 1}, fan.Stamp{CtimeNs: 1, Size: 1}, 1); ok {
		t.Error("forgotten entry still found")
	}
	if _, _, ok := c.lookup(fan.FileID{Dev: 1, Ino: 2}, fan.Stamp{CtimeNs: 2, Size: 1}, 1); !ok {
		t.Error("forgetting one entry lost another")
	}
	c.clear()
	if st.CacheEntries.Load() != 0 {
		t.Errorf("entries after clear: %d", st.CacheEntries.Load())
	}
	var nilCache *verdictCache
	nilCache.store(entry(1, policy.Allow))
	if _, _, ok := nilCache.lookup(fan.FileID{Dev: 1, Ino: 1}, fan.Stamp{CtimeNs: 1, Size: 1}, 1); ok {
		t.Error("the nil cache (cache.entries = 0) found something")
	}
}

// TestCacheForget: a writer's close drops a clean verdict whatever the
// stamp (a shared mapping writes without moving it), and a detection only
// when the stamp moved.
func TestCacheForget(t *testing.T) {
	det := &detection{rule: "r", ruleFile: "f.yar"}
	same := fan.Stamp{CtimeNs: 5, Size: 1}
	tests := []struct {
		name     string
		det      *detection
		now      fan.Stamp
		wantGone bool
	}{
		{"clean, same stamp", nil, same, true},
		{"clean, stamp moved", nil, fan.Stamp{CtimeNs: 6, Size: 1}, true},
		{"detected, same stamp", det, same, false},
		{"detected, ctime moved", det, fan.Stamp{CtimeNs: 6, Size: 1}, true},
		{"detected, size changed", det, fan.Stamp{CtimeNs: 5, Size: 2}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var st Stats
			c := newVerdictCache(100, &st)
			e := entry(5, policy.Deny)
			e.det = tt.det
			c.store(e)
			if gone := c.forget(e.id, tt.now); gone != tt.wantGone {
				t.Errorf("forget = %v, want %v", gone, tt.wantGone)
			}
			if _, _, ok := c.lookup(e.id, same, 1); ok == tt.wantGone {
				t.Errorf("entry found after forget: %v, want %v", ok, !tt.wantGone)
			}
			want := int64(1)
			if tt.wantGone {
				want = 0
			}
			if got := st.CacheEntries.Load(); got != want {
				t.Errorf("entries = %d, want %d", got, want)
			}
		})
	}
}

// TestCacheBound: more distinct files than entries: the cache holds at most
// its bound, counts evictions, and keeps the entries in use (CLOCK).
func TestCacheBound(t *testing.T) {
	for _, size := range []int{1, 7, 100, 1000} {
		var st Stats
		c := newVerdictCache(size, &st)
		const files = 5000
		for i := range uint64(files) {
			c.store(entry(i, policy.Allow))
			// file 0 is opened again and again: a hit keeps it
			c.lookup(fan.FileID{Dev: 1, Ino: 0}, fan.Stamp{CtimeNs: 0, Size: 1}, 1)
		}
		held := 0
		for i := range c.shards {
			held += len(c.shards[i].entries)
			if len(c.shards[i].index) != len(c.shards[i].entries) {
				t.Fatalf("size %d: shard %d index %d != entries %d", size, i, len(c.shards[i].index), len(c.shards[i].entries))
			}
		}
		if held != size || st.CacheEntries.Load() != int64(size) {
			t.Errorf("size %d: holds %d (counted %d)", size, held, st.CacheEntries.Load())
		}
		if got := st.CacheEvictions.Load(); got != files-uint64(size) {
			t.Errorf("size %d: %d evictions, want %d", size, got, files-size)
		}
		if _, _, ok := c.lookup(fan.FileID{Dev: 1, Ino: 0}, fan.Stamp{CtimeNs: 0, Size: 1}, 1); !ok && size > maxCacheShards {
			t.Errorf("size %d: the entry in constant use was evicted", size)
		}
	}
}

// TestCacheMemory measures the cost per entry that configs/fanguard.toml
// documents (about 120 bytes).
func TestCacheMemory(t *testing.T) {
	const n = 200_000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var st Stats
	c := newVerdictCache(n, &st)
	for i := range uint64(n) {
		c.store(entry(i, policy.Allow))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("%.0f bytes per entry", per)
	if per > 140 {
		t.Errorf("%.0f bytes per entry, documented as about 120", per)
	}
	runtime.KeepAlive(c)
}

// BenchmarkCacheHit is the daemon cache's hit path, as the reader takes it.
func BenchmarkCacheHit(b *testing.B) {
	var st Stats
	c := newVerdictCache(1_000_000, &st)
	for i := range uint64(100_000) {
		c.store(entry(i, policy.Allow))
	}
	id, stamp := fan.FileID{Dev: 1, Ino: 4242}, fan.Stamp{CtimeNs: 4242, Size: 1}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, ok := c.lookup(id, stamp, 1); !ok {
			b.Fatal("miss")
		}
	}
}

// BenchmarkHandleCacheHit is the reader's whole fast path for an event
// answered from the daemon cache (kernel calls faked).
func BenchmarkHandleCacheHit(b *testing.B) {
	d, _ := testDaemon(&testing.T{}, 0)
	d.kern = nopKernel{}
	d.excl = policy.NewExclusions(policy.ProtectConfig{})
	d.cache = newVerdictCache(1000, &d.stats)
	d.cache.store(cacheEntry{stamp: fan.Stamp{}, gen: 1, verdict: policy.Deny, det: &detection{rule: "r"}})
	ev := fan.Event{Mask: 0x10000, Fd: 3, Pid: 7} // FAN_OPEN_PERM
	var scratch [4096]byte
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		d.handle(ev, now, scratch[:])
	}
	if d.stats.CacheHits.Load() == 0 {
		b.Fatalf("no cache hit: %v", d.stats.fields())
	}
}

func TestHitPathAllocs(t *testing.T) {
	if testutil.RaceEnabled {
		t.Skip("the race detector changes escape analysis")
	}
	for _, bench := range []func(*testing.B){BenchmarkCacheHit, BenchmarkHandleCacheHit} {
		if a := testing.Benchmark(bench).AllocsPerOp(); a != 0 {
			t.Errorf("hit path allocates %d times per event, want 0", a)
		}
	}
}
