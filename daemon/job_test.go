package daemon

import (
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/fanguard/fanguard/fan"
	"github.com/fanguard/fanguard/policy"
)

// fakeKernel records answers and closes, and checks the order the kernel
// needs: one answer per event, then one close.
type fakeKernel struct {
	t  *testing.T
	mu sync.Mutex // guards the maps
	// answers and closes count calls per fd.
	answers map[int32]int
	closes  map[int32]int
	allowed map[int32]bool
	// notification fds may be closed without an answer.
	notification map[int32]bool
	// files are what Stat returns per fd; by default a 10-byte regular
	// file whose inode number is the fd.
	files map[int32]fan.FileInfo
	// ignored counts Ignore calls per fd.
	ignored map[int32]int
	// uids are the openers' uids by pidfd; pidfds not in it are bad.
	uids map[int32]uint32
	// pidfdCloses counts closes of pidfds (fds in uids).
	pidfdCloses map[int32]int
	// paths counts Path calls per fd.
	paths map[int32]int
}

func newFakeKernel(t *testing.T) *fakeKernel {
	return &fakeKernel{t: t, answers: map[int32]int{}, closes: map[int32]int{}, allowed: map[int32]bool{},
		notification: map[int32]bool{}, files: map[int32]fan.FileInfo{}, ignored: map[int32]int{},
		uids: map[int32]uint32{}, pidfdCloses: map[int32]int{}, paths: map[int32]int{}}
}

func (k *fakeKernel) Respond(fd int32, allow bool) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closes[fd] != 0 {
		k.t.Errorf("fd %d answered after it was closed", fd)
	}
	k.answers[fd]++
	k.allowed[fd] = allow
	return nil
}

func (k *fakeKernel) Stat(fd int32) (fan.FileInfo, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if fi, ok := k.files[fd]; ok {
		return fi, nil
	}
	return fan.FileInfo{ID: fan.FileID{Dev: 1, Ino: uint64(fd)}, Stamp: fan.Stamp{CtimeNs: 1, Size: 10}, Mode: unix.S_IFREG | 0o644}, nil
}

func (k *fakeKernel) Ignore(fd int32) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.ignored[fd]++
	return nil
}

func (k *fakeKernel) Unignore(fd int32) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.ignored[fd]--
	return nil
}

// Path reads the path of fd, a real fd (or fails, as a fake one does).
func (k *fakeKernel) Path(fd int32, buf []byte) ([]byte, error) {
	k.mu.Lock()
	k.paths[fd]++
	k.mu.Unlock()
	return fan.FdPath(fd, buf)
}

func (k *fakeKernel) OpenerUID(pidfd int32) (uint32, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if uid, ok := k.uids[pidfd]; ok {
		return uid, nil
	}
	return 0, unix.EBADF
}

func (k *fakeKernel) CloseFd(fd int32) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.uids[fd]; ok {
		k.pidfdCloses[fd]++
		return nil
	}
	if k.answers[fd] == 0 && !k.notification[fd] {
		k.t.Errorf("fd %d closed before it was answered", fd)
	}
	k.closes[fd]++
	return nil
}

func testDaemon(t *testing.T, budget time.Duration) (*Daemon, *fakeKernel) {
	k := newFakeKernel(t)
	cfg := policy.Default()
	cfg.Budget = budget
	cfg.OnTimeout = policy.Allow
	d := &Daemon{cfg: cfg, kern: k, log: zap.NewNop(), scans: map[fan.FileID]*job{},
		sched: newSched(cfg.MaxPending, cfg.MaxPendingPerUID, cfg.Workers), detections: newDetectionQueue(),
		mounts: trustNoMounts{}}
	d.storeSettings(cfg)
	d.exeIDs.Store(&map[fan.FileID]struct{}{})
	d.rules.Store(newRuleSet(nil, 1))
	d.jobs.New = func() any { return newJob(d) }
	return d, k
}

// TestJobAnswerOnce races the worker's verdict against the deadline for
// many events, with the worker finishing just before, at, or after the
// budget: each event must be answered exactly once and closed exactly once,
// after its answer, and the jobs must all be released.
func TestJobAnswerOnce(t *testing.T) {
	const budget = 2 * time.Millisecond
	const n = 2000
	d, k := testDaemon(t, budget)
	var wg sync.WaitGroup
	lateCount := 0
	var mu sync.Mutex
	for i := range n {
		d.inflight.Add(1)
		j := d.jobs.Get().(*job)
		j.start(fan.Event{Fd: int32(i), Pid: 1, Pidfd: fan.NoPidfd}, 0, fan.FileInfo{}, time.Now())
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(rand.Int64N(int64(2 * budget))))
			if !j.finish(policy.Deny, outcomeDetected) {
				mu.Lock()
				lateCount++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for d.inflight.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := d.inflight.Load(); got != 0 {
		t.Fatalf("%d jobs never released", got)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	denied := 0
	for fd := range int32(n) {
		if k.answers[fd] != 1 || k.closes[fd] != 1 {
			t.Errorf("fd %d: %d answers, %d closes; want 1 and 1", fd, k.answers[fd], k.closes[fd])
		}
		if !k.allowed[fd] {
			denied++
		}
	}
	if timedOut := int(d.stats.TimedOut.Load()); timedOut != lateCount || denied != n-lateCount {
		t.Errorf("timed out %d, late finishes %d, denied %d of %d", timedOut, lateCount, denied, n)
	}
	// Each event has one outcome, whoever answered it.
	want := map[string]uint64{"timed_out": uint64(lateCount), "detected": uint64(n - lateCount)}
	for k, v := range want {
		if v == 0 {
			delete(want, k)
		}
	}
	if diff := cmp.Diff(want, outcomeCounts(&d.stats)); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	if got := d.stats.Denials.Load(); got != uint64(denied) {
		t.Errorf("denials %d, want %d", got, denied)
	}
	t.Logf("%d of %d answered by the deadline", lateCount, n)
}

// TestJobDeadline: a worker that never comes still gets its event answered
// with on_timeout within the budget.
func TestJobDeadline(t *testing.T) {
	const budget = 50 * time.Millisecond
	d, k := testDaemon(t, budget)
	d.cfg.OnTimeout = policy.Deny
	d.storeSettings(d.cfg)
	d.inflight.Add(1)
	j := d.jobs.Get().(*job)
	read := time.Now()
	j.start(fan.Event{Fd: 7, Pid: 1, Pidfd: fan.NoPidfd}, 0, fan.FileInfo{}, read)
	for {
		k.mu.Lock()
		answered := k.answers[7]
		k.mu.Unlock()
		if answered == 1 {
			break
		}
		if time.Since(read) > budget+100*time.Millisecond {
			t.Fatal("not answered within the budget")
		}
		time.Sleep(time.Millisecond)
	}
	k.mu.Lock()
	allowed, closed := k.allowed[7], k.closes[7]
	k.mu.Unlock()
	if allowed {
		t.Error("answered allow, want on_timeout = deny")
	}
	if closed != 0 {
		t.Error("fd closed while the worker still holds the job")
	}
	if j.finish(policy.Allow, outcomeClean) {
		t.Error("finish after the deadline reported its verdict as the answer")
	}
	// The last reference may be the timer's, dropped on its own goroutine
	// just after its answer: wait for the close.
	var answers int
	for deadline := time.Now().Add(time.Second); ; time.Sleep(time.Millisecond) {
		k.mu.Lock()
		answers, closed = k.answers[7], k.closes[7]
		k.mu.Unlock()
		if closed != 0 || time.Now().After(deadline) {
			break
		}
	}
	if closed != 1 || answers != 1 {
		t.Errorf("answers %d, closes %d; want 1 and 1", answers, closed)
	}
}

// TestRuleSetRefs: the set's compiled rules go with its last holder, and
// a freed set cannot be taken again (a worker then takes the newer one).
func TestRuleSetRefs(t *testing.T) {
	s := newRuleSet(nil, 1) // the daemon's reference
	for range 2 {           // two workers
		if !s.acquire() {
			t.Fatal("acquire of a set in force failed")
		}
	}
	s.release() // replaced: the daemon lets go
	s.release() // one worker moves on
	if got := s.refs.Load(); got != 1 {
		t.Fatalf("refs = %d, want 1 (the last worker)", got)
	}
	s.release()
	if s.acquire() {
		t.Error("acquired a set that every holder let go")
	}
}
