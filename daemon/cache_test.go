package daemon

import (
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/fanguard/fanguard/fan"
	"github.com/fanguard/fanguard/internal/testutil"
	"github.com/fanguard/fanguard/policy"
	"golang.org/x/sys/unix"
)

func entry(ino uint64, v policy.Verdict) cacheEntry {
	return cacheEntry{id: fan.FileID{Dev: 1, Ino: ino}, stamp: fan.Stamp{CtimeNs: int64(ino), Size: 1}, gen: 1, verdict: v}
}

func TestCacheLookup(t *testing.T) {
	var st Stats
	c := testCache(t, 1000, &st)
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
		{"generation past 32 bits", 1, fan.Stamp{CtimeNs: 1, Size: 1}, 1 + 1<<32, 0, false},
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
	// Devices and rules generations past 32 bits are not cached, and
	// never match a record of their low 32 bits.
	for _, e := range []cacheEntry{
		{id: fan.FileID{Dev: 1 + 1<<32, Ino: 1}, stamp: fan.Stamp{CtimeNs: 1, Size: 1}, gen: 1},
		{id: fan.FileID{Dev: 1, Ino: 2}, stamp: fan.Stamp{CtimeNs: 2, Size: 1}, gen: 1 + 1<<32},
	} {
		held := st.CacheEntries.Load()
		c.store(e)
		if _, _, ok := c.lookup(e.id, e.stamp, e.gen); ok || st.CacheEntries.Load() != held {
			t.Errorf("%+v: cached (%v, entries %d -> %d)", e, ok, held, st.CacheEntries.Load())
		}
		if _, _, ok := c.lookup(fan.FileID{Dev: 1, Ino: 2}, fan.Stamp{CtimeNs: 2, Size: 1}, 1); !ok {
			t.Errorf("%+v: replaced what was cached for file 2", e)
		}
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
			c := testCache(t, 100, &st)
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
		c := testCache(t, size, &st)
		const files = 5000
		for i := range uint64(files) {
			c.store(entry(i, policy.Allow))
			// file 0 is opened again and again: a hit keeps it
			c.lookup(fan.FileID{Dev: 1, Ino: 0}, fan.Stamp{CtimeNs: 0, Size: 1}, 1)
		}
		held := 0
		for i := range c.shards {
			held += checkShard(t, &c.shards[i])
		}
		if held != size || st.CacheEntries.Load() != int64(size) {
			t.Errorf("size %d: holds %d (counted %d)", size, held, st.CacheEntries.Load())
		}
		if got := st.CacheEvictions.Load(); got != files-uint64(size) {
			t.Errorf("size %d: %d evictions, want %d", size, got, files-size)
		}
		// A shard of one entry cannot keep it: every store there evicts.
		id0 := fan.FileID{Dev: 1, Ino: 0}
		if _, _, ok := c.lookup(id0, fan.Stamp{CtimeNs: 0, Size: 1}, 1); !ok && c.shard(hash(id0, c.seed)).limit > 1 {
			t.Errorf("size %d: the entry in constant use was evicted", size)
		}
	}
}

// TestCacheMemory measures the cost per entry that configs/fanguard.toml
// documents (about 48 bytes): the resident pages of the cache's mappings
// (mincore), and what it adds to the Go heap (nothing but the detections,
// here none).
func TestCacheMemory(t *testing.T) {
	const n = 200_000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var st Stats
	c := testCache(t, n, &st)
	if r := c.resident(t); r > 64*1024 {
		t.Errorf("an empty cache of %d entries has %d bytes resident", n, r)
	}
	for i := range uint64(n) {
		c.store(entry(i, policy.Allow))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	heap := (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / n
	off := float64(c.resident(t)) / n
	t.Logf("%.1f bytes per entry resident off the Go heap, %.2f on it", off, heap)
	if off > 54 || off < 40 {
		t.Errorf("%.1f bytes per entry resident, documented as about 48", off)
	}
	if heap > 1 {
		t.Errorf("%.2f bytes per entry on the Go heap, want none", heap)
	}
	// clear gives the pages back.
	c.clear()
	if r := c.resident(t); r > 64*1024 {
		t.Errorf("a cleared cache has %d bytes resident", r)
	}
	if _, _, ok := c.lookup(fan.FileID{Dev: 1, Ino: 7}, fan.Stamp{CtimeNs: 7, Size: 1}, 1); ok {
		t.Error("found after clear")
	}
	c.store(entry(7, policy.Allow))
	if _, _, ok := c.lookup(fan.FileID{Dev: 1, Ino: 7}, fan.Stamp{CtimeNs: 7, Size: 1}, 1); !ok {
		t.Error("not found when stored after clear")
	}
	runtime.KeepAlive(c)
}

// resident is how many bytes of c's mappings are in memory.
func (c *verdictCache) resident(t *testing.T) int {
	t.Helper()
	page := os.Getpagesize()
	total := 0
	for i := range c.shards {
		s := &c.shards[i]
		vec := make([]byte, (len(s.mem)+page-1)/page)
		if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&s.mem[0])), uintptr(len(s.mem)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
			t.Fatal(errno)
		}
		for _, v := range vec {
			total += int(v&1) * page
		}
	}
	return total
}

// checkShard checks a shard's invariants and returns how many records it
// holds: each record in use is indexed once and found from its home slot
// with no empty slot on the way, the index holds nothing else, records
// past the count are zero, and the detections are the flagged records'.
func checkShard(t *testing.T, s *cacheShard) int {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	mask := len(s.slots) - 1
	seen := make(map[int32]bool)
	for pos, v := range s.slots {
		if v == 0 {
			continue
		}
		ri := v - 1
		if int(ri) >= s.n || seen[ri] {
			t.Fatalf("slot %d: record %d (count %d, seen %v)", pos, ri, s.n, seen[ri])
		}
		seen[ri] = true
		r := &s.recs[ri]
		id := r.id()
		for p := int(hash(id, s.seed)) & mask; p != pos; p = (p + 1) & mask {
			if s.slots[p] == 0 {
				t.Fatalf("record %d (%v) at slot %d: empty slot %d on its probe chain", ri, id, pos, p)
			}
		}
		if _, has := s.dets[id]; has != (r.flags&recDet != 0) {
			t.Fatalf("record %d (%v): detection %v, flag %v", ri, id, has, r.flags&recDet != 0)
		}
	}
	if len(seen) != s.n || len(s.dets) > s.n || s.n > s.limit {
		t.Fatalf("%d records indexed, %d held, %d detections, limit %d", len(seen), s.n, len(s.dets), s.limit)
	}
	for ri := s.n; ri < s.limit; ri++ {
		if s.recs[ri] != (cacheRec{}) {
			t.Fatalf("record %d past the count %d is not zero", ri, s.n)
		}
	}
	return s.n
}

// oneShard returns a cache of one shard of limit records and the given
// seed, whose slots the test can predict.
func oneShard(t *testing.T, limit int, seed uint64) *verdictCache {
	t.Helper()
	c := &verdictCache{shards: make([]cacheShard, 1), stats: new(Stats), seed: seed}
	if err := c.shards[0].init(limit, seed); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.close() })
	return c
}

// inoAt returns the k-th inode (device 1) above from whose home slot, in a
// table of mask+1 slots, is home.
func inoAt(home, mask int, seed uint64, from uint64) uint64 {
	for ino := from; ; ino++ {
		if int(hash(fan.FileID{Dev: 1, Ino: ino}, seed))&mask == home {
			return ino
		}
	}
}

// TestCacheIndex drives the hash table with chosen home slots: collisions,
// probe chains that wrap around the end of the slot array, and deletions
// inside chains, which must shift back what follows and nothing else.
func TestCacheIndex(t *testing.T) {
	const limit = 8 // 16 slots
	tests := []struct {
		name  string
		homes []int // of the files stored, in order
		del   []int // indexes into homes, forgotten in order
		slots []int // where each file not forgotten ends up
	}{
		{"no collision", []int{1, 2, 3}, nil, []int{1, 2, 3}},
		{"collisions", []int{4, 4, 4}, nil, []int{4, 5, 6}},
		{"wrap around", []int{14, 15, 14, 15}, nil, []int{14, 15, 0, 1}},
		{"delete head of chain", []int{4, 4, 4}, []int{0}, []int{-1, 4, 5}},
		{"delete middle of chain", []int{4, 4, 4}, []int{1}, []int{4, -1, 5}},
		{"delete end of chain", []int{4, 4, 4}, []int{2}, []int{4, 5, -1}},
		{"delete: one at home stays", []int{4, 4, 6, 6}, []int{0}, []int{-1, 4, 6, 7}},
		{"delete: shifts only what may move", []int{4, 5, 4, 7}, []int{1}, []int{4, -1, 5, 7}},
		{"delete: chain across the end", []int{14, 14, 15, 0}, []int{0}, []int{-1, 14, 15, 0}},
		{"delete: wrapped one moves back across the end", []int{15, 15, 15}, []int{0}, []int{-1, 15, 0}},
		{"delete all", []int{3, 3, 4}, []int{0, 1, 2}, []int{-1, -1, -1}},
		{"delete then insert reuses", []int{9, 9, 10}, []int{0}, []int{-1, 9, 10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const seed = 0x5eed
			c := oneShard(t, limit, seed)
			s := &c.shards[0]
			mask := len(s.slots) - 1
			if mask != 15 {
				t.Fatalf("%d slots for %d records, want 16", mask+1, limit)
			}
			ids := make([]fan.FileID, len(tt.homes))
			next := uint64(0)
			for i, home := range tt.homes {
				ino := inoAt(home, mask, seed, next)
				next = ino + 1
				ids[i] = fan.FileID{Dev: 1, Ino: ino}
				c.store(cacheEntry{id: ids[i], stamp: fan.Stamp{CtimeNs: int64(ino)}, gen: 1, verdict: policy.Allow})
				checkShard(t, s)
			}
			for _, i := range tt.del {
				if !c.forget(ids[i], fan.Stamp{}) {
					t.Fatalf("forget %d: not there", i)
				}
				checkShard(t, s)
			}
			for i, want := range tt.slots {
				pos, ri := s.find(ids[i], hash(ids[i], seed))
				if want < 0 {
					if ri >= 0 {
						t.Errorf("file %d: found after forget", i)
					}
					continue
				}
				if ri < 0 || pos != want {
					t.Errorf("file %d (home %d): at slot %d (record %d), want slot %d", i, tt.homes[i], pos, ri, want)
				}
				if _, _, ok := c.lookup(ids[i], fan.Stamp{CtimeNs: int64(ids[i].Ino)}, 1); !ok {
					t.Errorf("file %d: lookup missed", i)
				}
			}
		})
	}
}

// TestCacheModel runs random sequences of stores, lookups, forgets and
// clears against a plain map, as a model of what the cache may answer: a
// hit must be what was last stored for the file, and the cache may only
// forget what it evicted (the count of evictions), holding at most its
// bound. TestCacheClock checks which entry goes.
func TestCacheModel(t *testing.T) {
	for _, tc := range []struct {
		entries, files int
		oneShard       bool
	}{{1, 4, false}, {5, 12, true}, {64, 200, false}, {100, 300, true}, {1000, 1500, false}} {
		t.Run(fmt.Sprint(tc.entries, "/", tc.files, "/", tc.oneShard), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(tc.entries), uint64(tc.files)))
			var c *verdictCache
			if tc.oneShard {
				c = oneShard(t, tc.entries, rng.Uint64())
			} else {
				c = testCache(t, tc.entries, new(Stats))
			}
			st := c.stats
			want := make(map[fan.FileID]cacheEntry) // last stored, unless forgotten or cleared
			dets := []*detection{nil, {rule: "a", ruleFile: "a.yar"}, {rule: "b", ruleFile: "b.yar"}}
			held := func() int {
				n := 0
				for i := range c.shards {
					n += checkShard(t, &c.shards[i])
				}
				return n
			}
			for step := range 20000 {
				id := fan.FileID{Dev: uint64(rng.IntN(2)), Ino: uint64(rng.IntN(tc.files))}
				switch op := rng.IntN(100); {
				case op < 45:
					e := cacheEntry{id: id, stamp: fan.Stamp{CtimeNs: int64(rng.IntN(3)), Size: 1, Gen: uint32(rng.IntN(2))},
						gen: uint64(1 + rng.IntN(2)), verdict: policy.Verdict(rng.IntN(2)), det: dets[rng.IntN(len(dets))]}
					c.store(e)
					want[id] = e
					if v, det, ok := c.lookup(id, e.stamp, e.gen); !ok || v != e.verdict || det != e.det {
						t.Fatalf("step %d: just stored %+v, lookup = %v, %v, %v", step, e, v, det, ok)
					}
				case op < 85:
					m, known := want[id]
					stamp, gen := m.stamp, m.gen
					if rng.IntN(4) == 0 {
						stamp.CtimeNs++
					}
					v, det, ok := c.lookup(id, stamp, gen)
					if ok && (!known || stamp != m.stamp || v != m.verdict || det != m.det) {
						t.Fatalf("step %d: lookup %v = %v, %v, true; model %+v (known %v)", step, id, v, det, m, known)
					}
				case op < 97:
					now := want[id].stamp
					if rng.IntN(2) == 0 {
						now.Size++
					}
					gone := c.forget(id, now)
					m, known := want[id]
					if gone && !known {
						t.Fatalf("step %d: forgot %v, never stored", step, id)
					}
					if known && m.det != nil && now == m.stamp && gone {
						t.Fatalf("step %d: forgot a detection with an unmoved stamp", step)
					}
					if gone || known && (m.det == nil || now != m.stamp) {
						delete(want, id)
					}
					if _, _, ok := c.lookup(id, now, m.gen); gone && ok {
						t.Fatalf("step %d: found after forget", step)
					}
				case op < 99:
					c.forgetDetections()
					for k, m := range want {
						if m.det != nil {
							delete(want, k)
						}
					}
				default:
					c.clear()
					clear(want)
				}
				if step%97 == 0 || tc.entries < 10 {
					n := held()
					if n > tc.entries || int64(n) != st.CacheEntries.Load() {
						t.Fatalf("step %d: holds %d, counted %d, bound %d", step, n, st.CacheEntries.Load(), tc.entries)
					}
					// What the model has and the cache lost was evicted: at
					// most the evictions so far.
					lost := 0
					for k, m := range want {
						if _, _, ok := c.lookup(k, m.stamp, m.gen); !ok {
							lost++
						}
					}
					if uint64(lost) > st.CacheEvictions.Load() {
						t.Fatalf("step %d: %d entries lost, %d evictions", step, lost, st.CacheEvictions.Load())
					}
				}
			}
		})
	}
}

// TestCacheClock: on a full one-shard cache, entries looked up since the
// hand last passed survive an eviction; the first one not used goes.
func TestCacheClock(t *testing.T) {
	const limit = 8
	c := oneShard(t, limit, 1)
	for i := range uint64(limit) {
		c.store(entry(i, policy.Allow))
	}
	used := map[uint64]bool{0: true, 1: true, 3: true}
	for i := range used {
		c.lookup(fan.FileID{Dev: 1, Ino: i}, fan.Stamp{CtimeNs: int64(i), Size: 1}, 1)
	}
	c.store(entry(100, policy.Allow)) // evicts 2: 0 and 1 had their second chance
	for i := range uint64(limit) {
		_, _, ok := c.lookup(fan.FileID{Dev: 1, Ino: i}, fan.Stamp{CtimeNs: int64(i), Size: 1}, 1)
		if ok != (i != 2) {
			t.Errorf("file %d cached %v after one eviction", i, ok)
		}
	}
	if got := c.stats.CacheEvictions.Load(); got != 1 {
		t.Errorf("%d evictions, want 1", got)
	}
	checkShard(t, &c.shards[0])
}

// TestCacheClosed: a closed cache (after the daemon's Run) finds and keeps
// nothing, and closing twice is harmless.
func TestCacheClosed(t *testing.T) {
	var st Stats
	c, err := newVerdictCache(100, &st)
	if err != nil {
		t.Fatal(err)
	}
	c.store(entry(1, policy.Allow))
	if err := c.close(); err != nil {
		t.Fatal(err)
	}
	if err := c.close(); err != nil {
		t.Fatal(err)
	}
	c.store(entry(2, policy.Allow))
	if _, _, ok := c.lookup(fan.FileID{Dev: 1, Ino: 1}, fan.Stamp{CtimeNs: 1, Size: 1}, 1); ok {
		t.Error("closed cache found an entry")
	}
	if c.forget(fan.FileID{Dev: 1, Ino: 1}, fan.Stamp{}) {
		t.Error("closed cache forgot an entry")
	}
	c.forgetDetections()
	c.clear()
	if st.CacheEntries.Load() != 0 {
		t.Errorf("entries after close: %d", st.CacheEntries.Load())
	}
}

// BenchmarkCacheStore stores into a full cache: every store evicts.
func BenchmarkCacheStore(b *testing.B) {
	var st Stats
	c := testCache(b, 100_000, &st)
	b.ReportAllocs()
	i := uint64(0)
	for b.Loop() {
		c.store(entry(i, policy.Allow))
		i++
	}
}

// BenchmarkCacheHit is the daemon cache's hit path, as the reader takes it.
func BenchmarkCacheHit(b *testing.B) {
	var st Stats
	c := testCache(b, 1_000_000, &st)
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
	d.cfg.Protect = policy.ProtectConfig{}
	d.storeSettings(d.cfg)
	d.cache = testCache(b, 1000, &d.stats)
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
