package daemon

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/fanguard/fanguard/fan"
	"github.com/fanguard/fanguard/policy"
)

// verdictCache is the daemon's verdict cache: the last verdict per file
// (device and inode), valid while the file's change stamp and the rules
// generation are the ones it was judged with.
//
// The eviction is our own, not a library's: CLOCK (second chance) over
// fixed-size entries in per-shard arrays. A hit only sets one bit in its
// entry, where an LRU list moves the element on every hit. The well-kept
// libraries we looked at either take a write lock per hit
// (hashicorp/golang-lru) or allocate per entry and evict by sampling
// (ristretto), which would make the bound and the cost per entry
// approximate.
//
// Its memory is outside the Go heap. Each shard maps, once and at its full
// size, an anonymous private mapping holding its records (40 bytes each,
// pointer-free) and its index, an open-addressing hash table (linear
// probing, backward-shift deletion) of int32 slots, two or more per record
// (a power of two). Untouched pages cost nothing; the garbage collector
// neither scans the mapping nor counts it in its heap goal, so a full cache
// is not doubled by GOGC. A full cache costs about 48 bytes per entry of
// resident memory (TestCacheMemory measures it): 48 MB for a million
// entries. The detections (rule, rule file: only files with matches) are
// Go values, in a small map per shard by file.
//
// It is safe for concurrent use. The nil cache (cache.entries = 0) holds
// nothing. close unmaps it; a closed cache holds nothing either.
type verdictCache struct {
	shards []cacheShard
	stats  *Stats
	seed   uint64 // of the hash: a local attacker does not know the home of an inode
}

type cacheShard struct {
	mu    sync.Mutex                // guards following
	mem   []byte                    // the mapping: recs, then slots; nil once closed
	recs  []cacheRec                // limit records; the first n in use
	slots []int32                   // the index: 0 empty, else 1 + a record's index
	dets  map[fan.FileID]*detection // of the records with recDet
	n     int
	hand  int // CLOCK hand: next record to consider for eviction
	limit int
	seed  uint64
}

// cacheEntry is one cached verdict, as the daemon stores it.
type cacheEntry struct {
	id      fan.FileID
	stamp   fan.Stamp
	gen     uint64 // rules generation
	verdict policy.Verdict
	det     *detection // what was found, for files with matches
}

// cacheRec is a cacheEntry as the cache holds it: fixed-size and free of
// pointers, which is what makes memory outside the Go heap legal for it.
// The device and the rules generation are kept in 32 bits: a file whose
// device number (the kernel's, 32 bits) or a rules generation that does
// not fit is not cached, so a generation counted past 2^32 can never make
// a stale record look current: it only stops the caching.
type cacheRec struct {
	ino     uint64
	ctimeNs int64
	size    int64
	dev     uint32
	fileGen uint32
	gen     uint32
	verdict policy.Verdict
	flags   uint8
	_       [2]byte
}

func (r *cacheRec) id() fan.FileID { return fan.FileID{Dev: uint64(r.dev), Ino: r.ino} }

// cacheable reports whether a record can hold id and gen.
func cacheable(id fan.FileID, gen uint64) bool {
	return id.Dev <= math.MaxUint32 && gen <= math.MaxUint32
}

const (
	recRef = 1 << iota // CLOCK bit: used since the hand last passed
	recDet             // the shard's dets holds its detection
)

// detection is what the cache remembers of a file with matches, to log
// later opens without a rescan.
type detection struct {
	rule, ruleFile string
}

const maxCacheShards = 64

func newVerdictCache(entries int, stats *Stats) (*verdictCache, error) {
	if entries <= 0 {
		return nil, nil
	}
	n := min(entries, maxCacheShards)
	c := &verdictCache{shards: make([]cacheShard, n), stats: stats, seed: rand.Uint64()}
	for i := range c.shards {
		limit := entries / n
		if i < entries%n {
			limit++
		}
		if err := c.shards[i].init(limit, c.seed); err != nil {
			c.close()
			return nil, fmt.Errorf("verdict cache of %d entries: %w", entries, err)
		}
	}
	return c, nil
}

func (s *cacheShard) init(limit int, seed uint64) error {
	nslots := 1 << bits.Len(uint(2*limit-1)) // >= 2*limit
	page := os.Getpagesize()
	recBytes := (limit*int(unsafe.Sizeof(cacheRec{})) + page - 1) &^ (page - 1)
	size := recBytes + nslots*4
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("mapping %d bytes: %w", size, err)
	}
	s.mem = mem
	s.recs = unsafe.Slice((*cacheRec)(unsafe.Pointer(&mem[0])), limit)
	s.slots = unsafe.Slice((*int32)(unsafe.Pointer(&mem[recBytes])), nslots)
	s.dets = make(map[fan.FileID]*detection)
	s.limit = limit
	s.seed = seed
	return nil
}

// close unmaps the cache. Safe on the nil cache, and to call more than
// once; later calls of the other methods find nothing and store nothing.
func (c *verdictCache) close() error {
	if c == nil {
		return nil
	}
	var errs []error
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		if s.mem != nil {
			c.stats.CacheEntries.Add(-int64(s.n))
			if err := unix.Munmap(s.mem); err != nil {
				errs = append(errs, fmt.Errorf("verdict cache: %w", err))
			}
		}
		s.mem, s.recs, s.slots, s.dets = nil, nil, nil, nil
		s.n, s.hand = 0, 0
		s.mu.Unlock()
	}
	return errors.Join(errs...)
}

// hash mixes a file's identity (murmur3's finalizer, seeded): its high
// bits choose the shard, its low bits the home slot in the shard.
func hash(id fan.FileID, seed uint64) uint64 {
	x := id.Ino ^ bits.RotateLeft64(id.Dev, 32) ^ seed
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

func (c *verdictCache) shard(h uint64) *cacheShard {
	return &c.shards[(h>>32)%uint64(len(c.shards))]
}

// find returns the slot of id and its record's index, or the empty slot
// where it would go and -1. The table is never full (2 slots per record).
func (s *cacheShard) find(id fan.FileID, h uint64) (int, int32) {
	mask := len(s.slots) - 1
	for pos := int(h) & mask; ; pos = (pos + 1) & mask {
		v := s.slots[pos]
		if v == 0 {
			return pos, -1
		}
		if r := &s.recs[v-1]; r.ino == id.Ino && uint64(r.dev) == id.Dev {
			return pos, v - 1
		}
	}
}

// unindex empties slot pos, shifting back the records after it in its
// probe chain, so that every record stays reachable from its home slot
// without tombstones.
func (s *cacheShard) unindex(pos int) {
	mask := len(s.slots) - 1
	for j := (pos + 1) & mask; s.slots[j] != 0; j = (j + 1) & mask {
		r := &s.recs[s.slots[j]-1]
		home := int(hash(r.id(), s.seed)) & mask
		// The record at j may fill the hole unless its home lies
		// (cyclically) after the hole, up to j.
		if (j-home)&mask >= (j-pos)&mask {
			s.slots[pos] = s.slots[j]
			pos = j
		}
	}
	s.slots[pos] = 0
}

// remove drops record ri, indexed at slot pos, with its detection, and
// moves the last record into its place.
func (s *cacheShard) remove(ri int32, pos int) {
	r := &s.recs[ri]
	if r.flags&recDet != 0 {
		delete(s.dets, r.id())
	}
	s.unindex(pos)
	last := int32(s.n - 1)
	if ri != last {
		*r = s.recs[last]
		id := r.id()
		p, _ := s.find(id, hash(id, s.seed)) // finds it at last, still there
		s.slots[p] = ri + 1
	}
	s.recs[last] = cacheRec{}
	s.n--
}

// put writes e into record ri, whose detection (if any) is e.id's.
func (s *cacheShard) put(ri int32, e *cacheEntry) {
	r := &s.recs[ri]
	if r.flags&recDet != 0 && e.det == nil {
		delete(s.dets, e.id)
	}
	*r = cacheRec{dev: uint32(e.id.Dev), ino: e.id.Ino, ctimeNs: e.stamp.CtimeNs, size: e.stamp.Size,
		gen: uint32(e.gen), fileGen: e.stamp.Gen, verdict: e.verdict}
	if e.det != nil {
		r.flags = recDet
		s.dets[e.id] = e.det
	}
}

// lookup returns the cached verdict of id if it was judged with stamp and
// the rules generation gen. The caller counts hits and misses.
func (c *verdictCache) lookup(id fan.FileID, stamp fan.Stamp, gen uint64) (policy.Verdict, *detection, bool) {
	if c == nil || !cacheable(id, gen) {
		return 0, nil, false
	}
	h := hash(id, c.seed)
	s := c.shard(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mem == nil {
		return 0, nil, false
	}
	_, ri := s.find(id, h)
	if ri < 0 {
		return 0, nil, false
	}
	r := &s.recs[ri]
	if r.ctimeNs != stamp.CtimeNs || r.size != stamp.Size || r.fileGen != stamp.Gen || uint64(r.gen) != gen {
		return 0, nil, false
	}
	r.flags |= recRef
	var det *detection
	if r.flags&recDet != 0 {
		det = s.dets[id]
	}
	return r.verdict, det, true
}

// store caches e, replacing what was cached for e.id, evicting an entry
// not used lately when the shard is full.
func (c *verdictCache) store(e cacheEntry) {
	if c == nil || !cacheable(e.id, e.gen) {
		return
	}
	h := hash(e.id, c.seed)
	s := c.shard(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mem == nil {
		return
	}
	pos, ri := s.find(e.id, h)
	if ri >= 0 {
		s.put(ri, &e)
		return
	}
	if s.n < s.limit {
		ri = int32(s.n)
		s.n++
		s.slots[pos] = ri + 1
		s.put(ri, &e)
		c.stats.CacheEntries.Add(1)
		return
	}
	for {
		if s.hand >= s.n {
			s.hand = 0
		}
		old := &s.recs[s.hand]
		if old.flags&recRef != 0 {
			old.flags &^= recRef
			s.hand++
			continue
		}
		oldID := old.id()
		if old.flags&recDet != 0 {
			delete(s.dets, oldID)
			old.flags &^= recDet
		}
		opos, _ := s.find(oldID, hash(oldID, s.seed))
		s.unindex(opos)
		pos, _ = s.find(e.id, h) // the shift may have moved its place
		s.slots[pos] = int32(s.hand) + 1
		s.put(int32(s.hand), &e)
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
	h := hash(id, c.seed)
	s := c.shard(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mem == nil {
		return false
	}
	pos, ri := s.find(id, h)
	if ri < 0 {
		return false
	}
	r := &s.recs[ri]
	if r.flags&recDet != 0 && r.ctimeNs == now.CtimeNs && r.size == now.Size && r.fileGen == now.Gen {
		return false
	}
	s.remove(ri, pos)
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
		for id := range s.dets { // remove deletes from dets: allowed while ranging
			pos, ri := s.find(id, hash(id, s.seed))
			s.remove(ri, pos)
			c.stats.CacheEntries.Add(-1)
		}
		s.mu.Unlock()
	}
}

// clear drops everything. The mapping's pages go back to the kernel, to
// be zero again when touched.
func (c *verdictCache) clear() {
	if c == nil {
		return
	}
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		if s.n > 0 {
			c.stats.CacheEntries.Add(-int64(s.n))
			if unix.Madvise(s.mem, unix.MADV_DONTNEED) != nil {
				clear(s.recs[:s.n])
				clear(s.slots)
			}
			clear(s.dets)
		}
		s.n, s.hand = 0, 0
		s.mu.Unlock()
	}
}
