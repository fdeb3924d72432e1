package daemon

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/fanguard/fanguard/fan"
	"github.com/fanguard/fanguard/internal/testutil"
	"github.com/fanguard/fanguard/policy"
)

// TestHandleFastPath: what the reader does with each kind of event before
// any scan.
func TestHandleFastPath(t *testing.T) {
	const own = 4242
	// Events carry a pidfd 100+fd of an opener of uid 1000, unless set.
	open := func(fd int32) fan.Event {
		return fan.Event{Mask: unix.FAN_OPEN_PERM, Fd: fd, Pid: 1, Pidfd: 100 + fd}
	}
	file := func(ino uint64, size int64, mode uint32) fan.FileInfo {
		return fan.FileInfo{ID: fan.FileID{Dev: 1, Ino: ino}, Stamp: fan.Stamp{CtimeNs: 5, Size: size}, Mode: mode}
	}
	tests := []struct {
		name        string
		events      []fan.Event
		uids        map[int32]uint32 // by pidfd, beyond the default 1000
		files       map[int32]fan.FileInfo
		cached      []cacheEntry
		maxPending  int
		perUID      int
		excludeUIDs []uint32
		emptyClean  bool // the rules match no empty content
		inflight    int64
		wantAnswer  map[int32]bool // fd → allowed
		wantClosed  map[int32]int
		wantQueued  int
		wantWaits   uint64
		wantDenied  uint64 // by the kernel
		wantOver    map[uint32]uint64
		// wantOutcomes: the events answered on the fast path, by outcome.
		wantOutcomes map[string]uint64
	}{
		{name: "own pid allowed at once", events: []fan.Event{{Mask: unix.FAN_OPEN_PERM, Fd: 3, Pid: own, Pidfd: fan.NoPidfd}},
			wantAnswer: map[int32]bool{3: true}, wantClosed: map[int32]int{3: 1}, wantOutcomes: map[string]uint64{"own": 1}},
		{name: "other pid queued", events: []fan.Event{open(3)},
			wantAnswer: map[int32]bool{}, wantClosed: map[int32]int{}, wantQueued: 1},
		{name: "opener gone: allowed at once", events: []fan.Event{{Mask: unix.FAN_OPEN_PERM, Fd: 3, Pid: 1, Pidfd: -int32(unix.ESRCH)}},
			wantAnswer: map[int32]bool{3: true}, wantClosed: map[int32]int{3: 1}, wantOutcomes: map[string]uint64{"opener_gone": 1}},
		{name: "no pidfd (out of fds): queued, uid unknown", events: []fan.Event{{Mask: unix.FAN_OPEN_PERM, Fd: 3, Pid: 1, Pidfd: -int32(unix.EMFILE)}},
			wantAnswer: map[int32]bool{}, wantClosed: map[int32]int{}, wantQueued: 1},
		{name: "kernel could not open the file: nothing to answer", events: []fan.Event{{Mask: unix.FAN_OPEN_PERM, Fd: -int32(unix.EMFILE), Pid: 1, Pidfd: 103}},
			wantAnswer: map[int32]bool{}, wantClosed: map[int32]int{}, wantDenied: 1},
		{name: "overload answered with on_overload", events: []fan.Event{open(3)},
			maxPending: 2, inflight: 2, wantAnswer: map[int32]bool{3: false}, wantClosed: map[int32]int{3: 1}, wantOutcomes: map[string]uint64{"overloaded": 1},
			wantOver: map[uint32]uint64{1000: 1}},
		{name: "one user's opens beyond max_pending_per_uid get on_overload, another's do not",
			events: []fan.Event{open(3), open(4), open(5), open(6)},
			uids:   map[int32]uint32{106: 0},
			perUID: 2, wantAnswer: map[int32]bool{5: false}, wantClosed: map[int32]int{5: 1}, wantQueued: 3,
			wantOver: map[uint32]uint64{1000: 1}, wantOutcomes: map[string]uint64{"overloaded": 1}},
		{name: "excluded uid allowed at once", events: []fan.Event{open(3)}, excludeUIDs: []uint32{1000},
			wantAnswer: map[int32]bool{3: true}, wantClosed: map[int32]int{3: 1}, wantOutcomes: map[string]uint64{"excluded": 1}},
		{name: "excluded uid: a known detection is denied all the same", events: []fan.Event{open(3)}, excludeUIDs: []uint32{1000},
			files:      map[int32]fan.FileInfo{3: file(9, 10, unix.S_IFREG|0o644)},
			cached:     []cacheEntry{{id: fan.FileID{Dev: 1, Ino: 9}, stamp: fan.Stamp{CtimeNs: 5, Size: 10}, gen: 1, verdict: policy.Deny, det: &detection{rule: "r"}}},
			wantAnswer: map[int32]bool{3: false}, wantClosed: map[int32]int{3: 1}, wantOutcomes: map[string]uint64{"cached": 1}},
		{name: "notification event closed, not answered", events: []fan.Event{{Mask: unix.FAN_CLOSE_WRITE, Fd: 3, Pid: 1, Pidfd: fan.NoPidfd}},
			wantAnswer: map[int32]bool{}, wantClosed: map[int32]int{3: 1}},
		{name: "overflow counted, nothing to answer", events: []fan.Event{{Mask: unix.FAN_Q_OVERFLOW, Fd: fan.NoFd, Pidfd: fan.NoPidfd}},
			wantAnswer: map[int32]bool{}, wantClosed: map[int32]int{}},
		{name: "not a regular file allowed", events: []fan.Event{open(3)},
			files:      map[int32]fan.FileInfo{3: file(3, 0, unix.S_IFIFO|0o644)},
			wantAnswer: map[int32]bool{3: true}, wantClosed: map[int32]int{3: 1}, wantOutcomes: map[string]uint64{"not_regular": 1}},
		{name: "oversize answered with on_oversize", events: []fan.Event{open(3)},
			files:      map[int32]fan.FileInfo{3: file(3, 1<<40, unix.S_IFREG|0o644)},
			wantAnswer: map[int32]bool{3: false}, wantClosed: map[int32]int{3: 1}, wantOutcomes: map[string]uint64{"oversize": 1}},
		{name: "cached denial", events: []fan.Event{open(3)},
			files:      map[int32]fan.FileInfo{3: file(9, 10, unix.S_IFREG|0o644)},
			cached:     []cacheEntry{{id: fan.FileID{Dev: 1, Ino: 9}, stamp: fan.Stamp{CtimeNs: 5, Size: 10}, gen: 1, verdict: policy.Deny, det: &detection{rule: "r"}}},
			wantAnswer: map[int32]bool{3: false}, wantClosed: map[int32]int{3: 1}, wantOutcomes: map[string]uint64{"cached": 1}},
		{name: "stale cache entry: another stamp", events: []fan.Event{open(3)},
			files:      map[int32]fan.FileInfo{3: file(9, 10, unix.S_IFREG|0o644)},
			cached:     []cacheEntry{{id: fan.FileID{Dev: 1, Ino: 9}, stamp: fan.Stamp{CtimeNs: 4, Size: 10}, gen: 1, verdict: policy.Deny}},
			wantAnswer: map[int32]bool{}, wantClosed: map[int32]int{}, wantQueued: 1},
		{name: "stale cache entry: old rules", events: []fan.Event{open(3)},
			files:      map[int32]fan.FileInfo{3: file(9, 10, unix.S_IFREG|0o644)},
			cached:     []cacheEntry{{id: fan.FileID{Dev: 1, Ino: 9}, stamp: fan.Stamp{CtimeNs: 5, Size: 10}, gen: 0, verdict: policy.Deny}},
			wantAnswer: map[int32]bool{}, wantClosed: map[int32]int{}, wantQueued: 1},
		{name: "empty file, rules that match no empty content: allowed at once", events: []fan.Event{open(3)},
			files: map[int32]fan.FileInfo{3: file(9, 0, unix.S_IFREG|0o644)}, emptyClean: true,
			wantAnswer: map[int32]bool{3: true}, wantClosed: map[int32]int{3: 1}, wantOutcomes: map[string]uint64{"empty": 1}},
		{name: "empty file, rules that may match empty content: scanned", events: []fan.Event{open(3)},
			files:      map[int32]fan.FileInfo{3: file(9, 0, unix.S_IFREG|0o644)},
			wantAnswer: map[int32]bool{}, wantClosed: map[int32]int{}, wantQueued: 1},
		{name: "not empty: scanned whatever the rules say of empty content", events: []fan.Event{open(3)},
			files: map[int32]fan.FileInfo{3: file(9, 1, unix.S_IFREG|0o644)}, emptyClean: true,
			wantAnswer: map[int32]bool{}, wantClosed: map[int32]int{}, wantQueued: 1},
		{name: "empty file with a cached denial: denied", events: []fan.Event{open(3)},
			files: map[int32]fan.FileInfo{3: file(9, 0, unix.S_IFREG|0o644)}, emptyClean: true,
			cached:     []cacheEntry{{id: fan.FileID{Dev: 1, Ino: 9}, stamp: fan.Stamp{CtimeNs: 5}, gen: 1, verdict: policy.Deny, det: &detection{rule: "r"}}},
			wantAnswer: map[int32]bool{3: false}, wantClosed: map[int32]int{3: 1}, wantOutcomes: map[string]uint64{"cached": 1}},
		{name: "same file and stamp: one scan, the others wait", events: []fan.Event{open(3), open(4), open(5)},
			files: map[int32]fan.FileInfo{
				3: file(9, 10, unix.S_IFREG|0o644), 4: file(9, 10, unix.S_IFREG|0o644), 5: file(9, 10, unix.S_IFREG|0o644)},
			wantAnswer: map[int32]bool{}, wantClosed: map[int32]int{}, wantQueued: 1, wantWaits: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, k := testDaemon(t, time.Hour)
			d.pid = own
			d.cfg.MaxPending = 16
			if tt.maxPending != 0 {
				d.cfg.MaxPending = tt.maxPending
			}
			d.cfg.MaxPendingPerUID = d.cfg.MaxPending
			if tt.perUID != 0 {
				d.cfg.MaxPendingPerUID = tt.perUID
			}
			d.cfg.OnOverload = policy.Deny
			d.cfg.OnOversize = policy.Deny
			d.cfg.Protect = policy.ProtectConfig{ExcludeUIDs: tt.excludeUIDs}
			d.storeSettings(d.cfg)
			d.sched = newSched(d.cfg.MaxPending, d.cfg.MaxPendingPerUID, 2)
			d.cache = testCache(t, 100, &d.stats)
			for _, e := range tt.cached {
				d.cache.store(e)
			}
			d.rules.Load().emptyClean = tt.emptyClean
			d.inflight.Store(tt.inflight)
			for fd, fi := range tt.files {
				k.files[fd] = fi
			}
			for _, ev := range tt.events {
				if ev.Pidfd >= 0 {
					k.uids[ev.Pidfd] = 1000
				}
			}
			for pidfd, uid := range tt.uids {
				k.uids[pidfd] = uid
			}
			var scratch [4096]byte
			for _, ev := range tt.events {
				if !ev.IsPermission() {
					k.notification[ev.Fd] = true
				}
				d.handle(ev, time.Now(), scratch[:])
			}
			d.writeAnswers(d.answers.n)
			if tt.wantOutcomes == nil {
				tt.wantOutcomes = map[string]uint64{}
			}
			if diff := cmp.Diff(tt.wantOutcomes, outcomeCounts(&d.stats)); diff != "" {
				t.Errorf("outcomes (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantAnswer, k.allowed); diff != "" {
				t.Errorf("answers (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantClosed, k.closes); diff != "" {
				t.Errorf("closes (-want +got):\n%s", diff)
			}
			if waiting, _ := d.sched.queued(); waiting != tt.wantQueued {
				t.Errorf("queued %d, want %d", waiting, tt.wantQueued)
			}
			if got := d.stats.DedupWaits.Load(); got != tt.wantWaits {
				t.Errorf("dedup waits %d, want %d", got, tt.wantWaits)
			}
			if got := d.stats.KernelDenied.Load(); got != tt.wantDenied {
				t.Errorf("kernel denied %d, want %d", got, tt.wantDenied)
			}
			over := map[uint32]uint64{}
			for _, u := range d.unscanned.snapshot() {
				over[u.UID] = u.Overloaded
			}
			if tt.wantOver == nil {
				tt.wantOver = map[uint32]uint64{}
			}
			if diff := cmp.Diff(tt.wantOver, over); diff != "" {
				t.Errorf("overloaded by uid (-want +got):\n%s", diff)
			}
			// The waiting events get the verdict of the scan they wait for.
			for {
				j, _ := d.sched.pop(d.stillWaiting, nil)
				if j == nil {
					break
				}
				followers := append([]*job(nil), j.followers...)
				for _, f := range followers {
					f.finish(policy.Deny, outcomeDetected)
				}
				j.finish(policy.Deny, outcomeDetected)
				delete(d.scans, j.info.ID)
			}
			if d.inflight.Load() != tt.inflight {
				t.Errorf("inflight %d after the scans, want %d", d.inflight.Load(), tt.inflight)
			}
			// Every permission event read has one outcome, every denial is counted.
			var sum uint64
			for _, n := range outcomeCounts(&d.stats) {
				sum += n
			}
			if events := d.stats.Events.Load(); sum != events {
				t.Errorf("outcomes add up to %d, events %d", sum, events)
			}
			var denied uint64
			for _, allowed := range k.allowed {
				if !allowed {
					denied++
				}
			}
			if got := d.stats.Denials.Load(); got != denied {
				t.Errorf("denials %d, want %d", got, denied)
			}
			// Every pidfd the events brought is closed, once.
			for _, ev := range tt.events {
				if ev.Pidfd >= 0 && k.pidfdCloses[ev.Pidfd] != 1 {
					t.Errorf("pidfd %d closed %d times, want 1", ev.Pidfd, k.pidfdCloses[ev.Pidfd])
				}
			}
			for uid, u := range d.sched.users {
				if u.live != 0 || u.active {
					t.Errorf("scheduler still counts %d jobs of uid %d (active %v)", u.live, uid, u.active)
				}
			}
		})
	}
}

// BenchmarkHandleOwnPid measures the reader's fast path for an event it
// answers at once; it must not allocate.
func BenchmarkHandleOwnPid(b *testing.B) {
	d, _ := testDaemon(&testing.T{}, time.Hour)
	d.kern = nopKernel{}
	d.pid = 7
	d.cfg.Protect = policy.ProtectConfig{}
	d.storeSettings(d.cfg)
	ev := fan.Event{Mask: unix.FAN_OPEN_PERM, Fd: 3, Pid: 7, Pidfd: fan.NoPidfd}
	var scratch [4096]byte
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		d.handle(ev, now, scratch[:])
	}
}

func TestHandleOwnPidAllocs(t *testing.T) {
	if testutil.RaceEnabled {
		t.Skip("the race detector changes escape analysis")
	}
	res := testing.Benchmark(BenchmarkHandleOwnPid)
	if a := res.AllocsPerOp(); a != 0 {
		t.Errorf("fast path allocates %d times per event, want 0", a)
	}
}

type nopKernel struct{}

func (nopKernel) Respond(int32, bool) error       { return nil }
func (nopKernel) CloseFd(int32) error             { return nil }
func (nopKernel) Ignore(int32) error              { return nil }
func (nopKernel) Unignore(int32) error            { return nil }
func (nopKernel) OpenerUID(int32) (uint32, error) { return 0, nil }
func (nopKernel) Path(int32, []byte) ([]byte, error) {
	return []byte("/nop"), nil
}
func (nopKernel) Stat(int32) (fan.FileInfo, error) {
	return fan.FileInfo{Mode: unix.S_IFREG | 0o644}, nil // the file of the zero FileID and Stamp
}

// blockingWriter blocks every Write until release is closed.
type blockingWriter struct {
	release chan struct{}
	mu      sync.Mutex // guards buf
	buf     bytes.Buffer
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

// TestLogSinkNeverBlocks: a sink whose writer is stuck (journald waiting on
// an open we hold, say) drops entries and counts them instead of blocking.
func TestLogSinkNeverBlocks(t *testing.T) {
	w := &blockingWriter{release: make(chan struct{})}
	s := NewLogSink(w, 4)
	done := make(chan struct{})
	go func() {
		for i := range 100 {
			s.Write([]byte(strings.Repeat("x", i%7) + "\n"))
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Write blocked on a stuck writer")
	}
	if s.Dropped() < 100-4-1 {
		t.Errorf("dropped %d of 100 with room for 4 (+1 in the writer)", s.Dropped())
	}
	close(w.release)
	s.Close()
	s.Write([]byte("after close\n"))
	lines := strings.Count(w.buf.String(), "\n")
	if uint64(lines)+s.Dropped() != 101 {
		t.Errorf("written %d + dropped %d != 101", lines, s.Dropped())
	}
}

func TestParsePasswd(t *testing.T) {
	in := "root:x:0:0:root:/root:/bin/bash\n" +
		"# comment:x:5:5\n" +
		"daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n" +
		"broken line\n" +
		"bad:x:notanumber:1::/:/bin/sh\n" +
		"toor:x:0:0::/root:/bin/sh\n" + // a second name for uid 0: the first wins
		"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin"
	want := map[uint32]string{0: "root", 1: "daemon", 65534: "nobody"}
	if diff := cmp.Diff(want, parsePasswd([]byte(in))); diff != "" {
		t.Errorf("parsePasswd (-want +got):\n%s", diff)
	}
}

// outcomeCounts returns the events counted by outcome, those not zero.
func outcomeCounts(s *Stats) map[string]uint64 {
	m := map[string]uint64{}
	for o := range numOutcomes {
		if n := s.Outcomes[o].Load(); n > 0 {
			m[o.String()] = n
		}
	}
	return m
}
