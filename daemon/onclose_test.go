package daemon

import (
	"slices"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/fanguard/fanguard/fan"
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
