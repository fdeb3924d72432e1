package daemon

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/google/go-cmp/cmp"

	"github.com/fanguard/fanguard/fan"
	"github.com/fanguard/fanguard/internal/testutil"
	"github.com/fanguard/fanguard/policy"
)

// schedJob is a job of uid for a file of size bytes, named by its fd.
func schedJob(fd int32, uid uint32, size int64) *job {
	return &job{fd: fd, uid: uid, info: fan.FileInfo{Stamp: fan.Stamp{Size: size}}}
}

// order pops every job and returns their fds in the order handed out.
func order(s *sched, waiting func(*job) bool) (fds []int32, dropped []int32) {
	for {
		select {
		case <-s.ready:
		default:
		}
		j, d := s.pop(waiting, nil)
		for _, x := range d {
			dropped = append(dropped, x.fd)
		}
		if j == nil {
			return fds, dropped
		}
		fds = append(fds, j.fd)
		s.finished(j.uid, big(j))
	}
}

func TestSchedFairness(t *testing.T) {
	all := func(*job) bool { return true }
	tests := []struct {
		name string
		jobs []*job
		want []int32
	}{
		{
			name: "one user: first in, first out",
			jobs: []*job{schedJob(1, 7, 10), schedJob(2, 7, 10), schedJob(3, 7, 10)},
			want: []int32{1, 2, 3},
		},
		{
			name: "a flood does not hold another user's open back",
			jobs: []*job{schedJob(1, 7, 32<<20), schedJob(2, 7, 32<<20), schedJob(3, 7, 32<<20), schedJob(4, 7, 32<<20),
				schedJob(5, 0, 4096)},
			want: []int32{1, 5, 2, 3, 4},
		},
		{
			name: "users alternate by cost: many small files of one, few large of another",
			jobs: []*job{schedJob(1, 1, 1<<20), schedJob(2, 1, 1<<20), schedJob(3, 2, 0), schedJob(4, 2, 0),
				schedJob(5, 2, 0), schedJob(6, 2, 0), schedJob(7, 2, 0), schedJob(8, 2, 0)},
			// A 1 MiB file costs 17 empty ones (64 KiB fixed each).
			want: []int32{1, 3, 4, 5, 6, 7, 8, 2},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSched(64, 64, 2)
			for _, j := range tt.jobs {
				if !s.admit(j.uid, time.Now()) {
					t.Fatalf("admit %d refused", j.uid)
				}
				s.push(j)
			}
			got, dropped := order(s, all)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("order (-want +got):\n%s", diff)
			}
			if len(dropped) > 0 {
				t.Errorf("dropped %v", dropped)
			}
		})
	}
}

func TestSchedPerUIDBound(t *testing.T) {
	s := newSched(64, 2, 2)
	for i := range 2 {
		if !s.admit(7, time.Now()) {
			t.Fatalf("job %d of uid 7 refused", i+1)
		}
	}
	if s.admit(7, time.Now()) {
		t.Error("third job of uid 7 admitted with max_pending_per_uid = 2")
	}
	if !s.admit(8, time.Now()) {
		t.Error("uid 8 refused because of uid 7")
	}
	s.leave(7)
	if !s.admit(7, time.Now()) {
		t.Error("uid 7 refused after one of its jobs left")
	}
	s.leave(7)
	s.leave(7)
	s.leave(8)
	for uid, u := range s.users {
		if u.live != 0 || u.active {
			t.Errorf("uid %d: %d jobs alive, active %v, with none left", uid, u.live, u.active)
		}
	}
}

// TestSchedLate: jobs answered while they waited go behind every job still
// waiting, and beyond maxLateJobs the oldest of them are dropped.
func TestSchedLate(t *testing.T) {
	s := newSched(4096, 4096, 2)
	answered := map[int32]bool{}
	waiting := func(j *job) bool { return !answered[j.fd] }
	for fd := range int32(maxLateJobs + 10) {
		j := schedJob(fd, 1, 10)
		answered[fd] = true
		s.admit(1, time.Now())
		s.push(j)
	}
	s.admit(2, time.Now())
	s.push(schedJob(9999, 2, 10))
	got, dropped := order(s, waiting)
	if len(got) == 0 || got[0] != 9999 {
		t.Fatalf("the open still held was not first: %v", got[:min(3, len(got))])
	}
	if len(got) != 1+maxLateJobs {
		t.Errorf("%d jobs handed out, want %d", len(got), 1+maxLateJobs)
	}
	if len(dropped) != 10 || dropped[0] != 0 || dropped[9] != 9 {
		t.Errorf("dropped %v, want the 10 oldest", dropped)
	}
	if got[1] != 10 {
		t.Errorf("first late job handed out %d, want 10 (the oldest kept)", got[1])
	}
}

// TestSchedKeepsAWorkerFree: while another user is active, one user's
// large files take all workers but one; alone, a user takes them all.
func TestSchedKeepsAWorkerFree(t *testing.T) {
	all := func(*job) bool { return true }
	s := newSched(64, 64, 2)
	for fd := int32(1); fd <= 3; fd++ {
		s.admit(7, time.Now())
		s.push(schedJob(fd, 7, 32<<20))
	}
	// Alone: both workers take a large file.
	j1, _ := s.pop(all, nil)
	j2, _ := s.pop(all, nil)
	if j1 == nil || j2 == nil {
		t.Fatalf("a user alone got %v and %v, want two large jobs", j1, j2)
	}
	s.finished(7, true)
	// Another user opens a file: the worker that frees up does not start
	// a third large file of uid 7 while the first still runs.
	s.admit(0, time.Now())
	s.push(schedJob(100, 0, 4096))
	if j, _ := s.pop(all, nil); j == nil || j.fd != 100 {
		t.Fatalf("after root's open: got %v, want root's job", j)
	}
	if j, _ := s.pop(all, nil); j != nil {
		t.Fatalf("a second large scan of uid 7 started while root is active: %d", j.fd)
	}
	if s.parked != 1 {
		t.Errorf("parked = %d, want 1", s.parked)
	}
	tokens := len(s.ready)
	s.finished(7, true) // uid 7's running large scan ends: the token comes back
	if len(s.ready) != tokens+1 || s.parked != 0 {
		t.Errorf("after the large scan ended: %d tokens (was %d), parked %d", len(s.ready), tokens, s.parked)
	}
	if j, _ := s.pop(all, nil); j == nil || j.fd != 3 {
		t.Errorf("after the large scan ended: got %v, want uid 7's third job", j)
	}
}

// BenchmarkQueuedEvent measures the reader's path for an event that needs
// a scan (stat, cache miss, admission, queue) and a worker taking it off
// the queue; the scan itself and the answer are left out.
func BenchmarkQueuedEvent(b *testing.B) {
	d, _ := testDaemon(&testing.T{}, time.Hour)
	d.kern = nopKernel{}
	d.cfg.Protect = policy.ProtectConfig{}
	d.storeSettings(d.cfg)
	d.cache = testCache(b, 100, &d.stats)
	ev := fan.Event{Mask: unix.FAN_OPEN_PERM, Fd: 3, Pid: 7, Pidfd: 4}
	var scratch [4096]byte
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		d.handle(ev, now, scratch[:])
		<-d.sched.ready
		j, _ := d.sched.pop(d.stillWaiting, nil)
		d.sched.finished(j.uid, big(j))
		d.scansMu.Lock()
		delete(d.scans, j.info.ID)
		d.scansMu.Unlock()
		j.finish(policy.Allow, outcomeClean)
	}
}

func TestQueuedEventAllocs(t *testing.T) {
	if testutil.RaceEnabled {
		t.Skip("the race detector changes escape analysis")
	}
	res := testing.Benchmark(BenchmarkQueuedEvent)
	if a := res.AllocsPerOp(); a != 0 {
		t.Errorf("an event queued for a scan allocates %d times, want 0", a)
	}
}
