package daemon

import (
	"sync"

	"github.com/fanguard/fanguard/fan"
	"github.com/fanguard/fanguard/policy"
)

// verdictCache is the daemon's verdict cache: the last verdict per file
// (device and inode), valid while the file's change stamp and the rules
// generation are the ones it was judged with.
//
// The eviction is our own, not a library's: CLOCK (second chance) over
// fixed-size entries in per-shard slices. A hit only sets one bit in its
// entry, where an LRU list moves the element on every hit; entries are
// plain values, so the cache allocates nothing per entry once its slices
// have grown, and its memory is a known cost per entry: 64 bytes of entry
// plus the index map's slot — about 120 bytes in all (TestCacheMemory
// measures it), 120 MB for a full cache of a million entries.
// The well-kept libraries we looked at either take a write lock per hit
// (hashicorp/golang-lru) or allocate per entry and evict by sampling
// (ristretto), which would make the bound and the cost per entry
// approximate.
//
// It is safe for concurrent use. The nil cache (cache.entries = 0) holds
// nothing.
type verdictCache struct {
	shards []cacheShard
	stats  *Stats
}

type cacheShard struct {
	mu      sync.Mutex // guards following
	index   map[fan.FileID]int32
	entries []cacheEntry
	hand    int // CLOCK hand: next entry to consider for eviction
	limit   int
}

// cacheEntry is one cached verdict.
type cacheEntry struct {
	id      fan.FileID
	stamp   fan.Stamp
	gen     uint64 // rules generation
	verdict policy.Verdict
	ref     bool       // CLOCK bit: used since the hand last passed
	det     *detection // what was found, for files with matches
}

// detection is what the cache remembers of a file with matches, to log
// later opens without a rescan.
type detection struct {
	rule, ruleFile string
}

const maxCacheShards = 64

func newVerdictCache(entries int, stats *Stats) *verdictCache {
	if entries <= 0 {
		return nil
	}
	n := min(entries, maxCacheShards)
	c := &verdictCache{shards: make([]cacheShard, n), stats: stats}
	for i := range c.shards {
		s := &c.shards[i]
		s.limit = entries / n
		if i < entries%n {
			s.limit++
		}
		s.index = make(map[fan.FileID]int32)
	}
	return c
}

func (c *verdictCache) shard(id fan.FileID) *cacheShard {
	h := (id.Ino ^ id.Dev<<32 ^ id.Dev>>32) * 0x9E3779B97F4A7C15 // Fibonacci hashing
	return &c.shards[(h>>32)%uint64(len(c.shards))]
}

// lookup returns the cached verdict of id if it was judged with stamp and
// the rules generation gen. The caller counts hits and misses.
func (c *verdictCache) lookup(id fan.FileID, stamp fan.Stamp, gen uint64) (policy.Verdict, *detection, bool) {
	if c == nil {
		return 0, nil, false
	}
	s := c.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	if i, ok := s.index[id]; ok {
		e := &s.entries[i]
		if e.stamp == stamp && e.gen == gen {
			e.ref = true
			return e.verdict, e.det, true
		}
	}
	return 0, nil, false
}

// store caches e, replacing what was cached for e.id, evicting an entry
// not used lately when the shard is full.
func (c *verdictCache) store(e cacheEntry) {
	if c == nil {
		return
	}
	s := c.shard(e.id)
	s.mu.Lock()
	defer s.mu.Unlock()
	if i, ok := s.index[e.id]; ok {
		s.entries[i] = e
		return
	}
	if len(s.entries) < s.limit {
		s.index[e.id] = int32(len(s.entries))
		s.entries = append(s.entries, e)
		c.stats.CacheEntries.Add(1)
		return
	}
	for {
		if s.hand >= len(s.entries) {
			s.hand = 0
		}
		old := &s.entries[s.hand]
		if old.ref {
			old.ref = false
			s.hand++
			continue
		}
		delete(s.index, old.id)
		s.index[e.id] = int32(s.hand)
		*old = e
		s.hand++
		c.stats.CacheEvictions.Add(1)
		return
	}
}

// forget drops what is cached for id after a writer closed it, except a
// detection whose file still has the stamp it was scanned at. A clean
// verdict always goes: a write through a shared mapping changes content
// without moving the stamp. A detection is kept, erring on the side of
// denial, so that a writer's close seen after the detection does not make
// the next open scan and record the same content again.
func (c *verdictCache) forget(id fan.FileID, now fan.Stamp) bool {
	if c == nil {
		return false
	}
	s := c.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.index[id]
	if !ok || s.entries[i].det != nil && s.entries[i].stamp == now {
		return false
	}
	last := len(s.entries) - 1
	if int(i) != last {
		s.entries[i] = s.entries[last]
		s.index[s.entries[i].id] = i
	}
	s.entries[last] = cacheEntry{}
	s.entries = s.entries[:last]
	delete(s.index, id)
	c.stats.CacheEntries.Add(-1)
	return true
}

// forgetDetections drops the cached verdicts of files with matches: the
// allow list grew, and one of them may now be allowed.
func (c *verdictCache) forgetDetections() {
	if c == nil {
		return
	}
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for k := len(s.entries) - 1; k >= 0; k-- {
			if s.entries[k].det == nil {
				continue
			}
			delete(s.index, s.entries[k].id)
			last := len(s.entries) - 1
			if k != last {
				s.entries[k] = s.entries[last]
				s.index[s.entries[k].id] = int32(k)
			}
			s.entries[last] = cacheEntry{}
			s.entries = s.entries[:last]
			c.stats.CacheEntries.Add(-1)
		}
		s.mu.Unlock()
	}
}

// clear drops everything.
func (c *verdictCache) clear() {
	if c == nil {
		return
	}
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		c.stats.CacheEntries.Add(-int64(len(s.entries)))
		clear(s.index)
		clear(s.entries)
		s.entries = s.entries[:0]
		s.hand = 0
		s.mu.Unlock()
	}
}
