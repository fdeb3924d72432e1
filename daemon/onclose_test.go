package daemon

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/fanguard/fanguard/fan"
	"github.com/fanguard/fanguard/policy"
)

// realFds opens /dev/null for each item's fd and pidfd, and records (and
// makes) the queue's closes.
type realFds struct {
	t      *testing.T
	mu     sync.Mutex // guards closed
	closed []int32
}

func (r *realFds) open() int32 {
	fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		r.t.Fatal(err)
	}
	return int32(fd)
}

func (r *realFds) close(fd int32) error {
	r.mu.Lock()
	r.closed = append(r.closed, fd)
	r.mu.Unlock()
	return unix.Close(int(fd))
}

// item makes an item for file ino, holding two fresh fds.
func (r *realFds) item(ino uint64) *closeItem {
	return &closeItem{id: fan.FileID{Dev: 1, Ino: ino}, fd: r.open(), pidfd: r.open(), pid: int32(ino)}
}

// drain pops every item, closing its fds, and returns their inodes in
// the order popped.
func (r *realFds) drain(q *closeQueue) []uint64 {
	var inos []uint64
	for it := q.pop(); it != nil; it = q.pop() {
		inos = append(inos, it.id.Ino)
		q.release(it)
	}
	return inos
}

func TestCloseQueue(t *testing.T) {
	for _, tt := range []struct {
		name  string
		limit int
		push  []uint64 // inodes closed, in this order
		// want: the inodes popped (newest first) and the counters.
		want                    []uint64
		queued, merged, dropped uint64
	}{
		{name: "newest first", limit: 8, push: []uint64{1, 2, 3}, want: []uint64{3, 2, 1}, queued: 3},
		{name: "closed twice, queued once at the front", limit: 8, push: []uint64{1, 2, 1}, want: []uint64{1, 2}, queued: 2, merged: 1},
		{name: "the last again", limit: 8, push: []uint64{1, 2, 2, 2}, want: []uint64{2, 1}, queued: 2, merged: 2},
		{name: "bound: the oldest dropped", limit: 3, push: []uint64{1, 2, 3, 4, 5}, want: []uint64{5, 4, 3}, queued: 5, dropped: 2},
		{name: "bound with a merge", limit: 2, push: []uint64{1, 2, 1, 3}, want: []uint64{3, 1}, queued: 3, merged: 1, dropped: 1},
		{name: "bound of one", limit: 1, push: []uint64{1, 2, 3}, want: []uint64{3}, queued: 3, dropped: 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := &realFds{t: t}
			var st Stats
			q := newCloseQueue(tt.limit, r.close, &st)
			var items []*closeItem
			for _, ino := range tt.push {
				it := r.item(ino)
				items = append(items, &closeItem{fd: it.fd, pidfd: it.pidfd, id: it.id}) // what it held
				q.push(it)
				if n := q.len(); n > tt.limit {
					t.Fatalf("%d items queued, bound %d", n, tt.limit)
				}
			}
			// Every fd of an item that was merged away or dropped is
			// closed, and no other.
			var wantClosed []int32
			live := map[fan.FileID]bool{}
			for i := len(items) - 1; i >= 0; i-- {
				it := items[i]
				if live[it.id] || !slices.Contains(tt.want, it.id.Ino) {
					wantClosed = append(wantClosed, it.fd, it.pidfd)
				}
				live[it.id] = true
			}
			r.mu.Lock()
			got := slices.Clone(r.closed)
			r.mu.Unlock()
			slices.Sort(got)
			slices.Sort(wantClosed)
			if diff := cmp.Diff(wantClosed, got); diff != "" {
				t.Errorf("fds closed before the pops (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.want, r.drain(q)); diff != "" {
				t.Errorf("popped (-want +got):\n%s", diff)
			}
			c := []uint64{st.CloseQueued.Load(), st.CloseMerged.Load(), st.CloseDropped.Load()}
			if diff := cmp.Diff([]uint64{tt.queued, tt.merged, tt.dropped}, c); diff != "" {
				t.Errorf("queued, merged, dropped (-want +got):\n%s", diff)
			}
			if len(r.closed) != 2*len(tt.push) {
				t.Errorf("%d fds closed in all, want %d", len(r.closed), 2*len(tt.push))
			}
		})
	}
}

// TestCloseQueueLatestFd: a file closed again is queued with the fd and
// pidfd of its latest close.
func TestCloseQueueLatestFd(t *testing.T) {
	r := &realFds{t: t}
	q := newCloseQueue(4, r.close, &Stats{})
	first, second := r.item(7), r.item(7)
	fd, pidfd := second.fd, second.pidfd
	q.push(first)
	q.push(second)
	it := q.pop()
	if it == nil || it.fd != fd || it.pidfd != pidfd {
		t.Fatalf("popped %+v, want fd %d and pidfd %d", it, fd, pidfd)
	}
	q.release(it)
	if it := q.pop(); it != nil {
		t.Errorf("a second item for the same file: %+v", it)
	}
}

// TestCloseQueueClose: close releases what waits, and a push after it
// is released at once.
func TestCloseQueueClose(t *testing.T) {
	r := &realFds{t: t}
	q := newCloseQueue(8, r.close, &Stats{})
	for ino := range uint64(5) {
		q.push(r.item(ino))
	}
	q.close()
	if len(r.closed) != 10 || q.len() != 0 {
		t.Fatalf("after close: %d fds closed, %d items; want 10, 0", len(r.closed), q.len())
	}
	q.push(r.item(9))
	if len(r.closed) != 12 || q.pop() != nil {
		t.Errorf("a push after close: %d fds closed in all, want 12, and nothing queued", len(r.closed))
	}
}

// TestCloseQueueWake: a token waits in wake while items do, for one idle
// worker at a time: each pop that leaves items puts it back.
func TestCloseQueueWake(t *testing.T) {
	r := &realFds{t: t}
	q := newCloseQueue(8, r.close, &Stats{})
	if len(q.wake) != 0 {
		t.Fatal("a token with nothing queued")
	}
	q.push(r.item(1))
	q.push(r.item(2))
	for i := range 2 {
		select {
		case <-q.wake:
		default:
			t.Fatalf("no token with %d items waiting", 2-i)
		}
		q.release(q.pop())
	}
	if len(q.wake) != 0 {
		t.Error("a token left with nothing queued")
	}
}

// TestNextClose: what a worker does with the newest file closed, by what
// the daemon knows of it: a job is made only for a file that needs a
// scan, and an open of the same file and stamp then waits for that scan.
func TestNextClose(t *testing.T) {
	const fd, openFd = 40, 41
	id := fan.FileID{Dev: 1, Ino: 9}
	small := fan.FileInfo{ID: id, Stamp: fan.Stamp{CtimeNs: 5, Size: 100}, Mode: unix.S_IFREG | 0o644}
	older := small
	older.Stamp.CtimeNs = 4
	large := small
	large.Stamp.Size = closeScanMax + 1
	for _, tt := range []struct {
		name    string
		file    fan.FileInfo
		cached  bool          // a verdict cached for the file's stamp
		running *fan.FileInfo // a scan for an open of the file at this stamp
		wantJob bool
	}{
		{name: "needs a scan", file: small, wantJob: true},
		{name: "too large: left to its first open", file: large},
		{name: "cached for this stamp", file: small, cached: true},
		{name: "an open's scan of this stamp runs", file: small, running: &small},
		{name: "an open's scan of an older stamp runs", file: small, running: &older, wantJob: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d, k := testDaemon(t, time.Minute)
			d.cache = testCache(t, 16, &d.stats)
			d.storeSettings(d.cfg)
			d.closeq = newCloseQueue(4, k.CloseFd, &d.stats)
			k.files[fd], k.files[openFd] = tt.file, tt.file
			k.notification[fd] = true
			if tt.cached {
				d.cache.store(cacheEntry{id: id, stamp: tt.file.Stamp, gen: 1, verdict: policy.Allow})
			}
			var open *job
			if tt.running != nil {
				open = d.jobs.Get().(*job)
				open.start(fan.Event{Fd: 50, Pid: 2, Pidfd: fan.NoPidfd}, 0, *tt.running, time.Now())
				d.scans[id] = open
			}
			d.closeq.push(&closeItem{id: id, fd: fd, pidfd: -1, pid: 3, uid: 1000, read: time.Now()})
			<-d.closeq.wake
			j := d.nextClose()
			if got := j != nil; got != tt.wantJob {
				t.Fatalf("job made: %v, want %v", got, tt.wantJob)
			}
			if d.closeRunning.Load() != map[bool]int32{false: 0, true: 1}[tt.wantJob] {
				t.Errorf("%d scans on close counted as running", d.closeRunning.Load())
			}
			if open != nil {
				defer func() { open.finish(policy.Allow, outcomeClean) }()
				if open.dirty != tt.wantJob {
					t.Errorf("the open's scan of an older stamp dirty: %v, want %v", open.dirty, tt.wantJob)
				}
			}
			if !tt.wantJob {
				if k.closes[fd] != 1 || d.stats.CloseSkipped.Load() != 1 {
					t.Errorf("skipped: fd closed %d times, %d skipped; want 1, 1", k.closes[fd], d.stats.CloseSkipped.Load())
				}
				return
			}
			if d.scans[id] != j || !j.onClose || !j.answered.Load() || !j.started.Load() || j.fd != fd || j.uid != 1000 {
				t.Fatalf("close job: in scans %v, onClose %v, answered %v, started %v, fd %d, uid %d",
					d.scans[id] == j, j.onClose, j.answered.Load(), j.started.Load(), j.fd, j.uid)
			}
			// An open of the same file and stamp waits for this scan,
			// and gets its verdict.
			d.handle(fan.Event{Mask: unix.FAN_OPEN_PERM, Fd: openFd, Pid: 4, Pidfd: fan.NoPidfd}, time.Now(), make([]byte, 4096))
			if len(j.followers) != 1 || d.stats.DedupWaits.Load() != 1 {
				t.Fatalf("the open: %d followers of the scan on close, %d dedup waits; want 1, 1", len(j.followers), d.stats.DedupWaits.Load())
			}
			w := &worker{d: d}
			w.endScan(j, d.rules.Load(), policy.Deny, &outcome{}, false, false)
			d.closeDone()
			j.done()
			if k.answers[openFd] != 1 || k.allowed[openFd] || k.closes[fd] != 1 || d.scans[id] != nil {
				t.Errorf("after the scan: the open answered %d times (allowed %v), the close's fd closed %d times, in scans %v; want 1, deny, 1, no",
					k.answers[openFd], k.allowed[openFd], k.closes[fd], d.scans[id] != nil)
			}
		})
	}
}
