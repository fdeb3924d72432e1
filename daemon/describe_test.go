package daemon

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/fanguard/fanguard/fan"
	"github.com/fanguard/fanguard/policy"
	"github.com/fanguard/fanguard/quarantine"
)

// TestBoundedReads: a read that never returns is given up after
// procReadTimeout, and once maxStuckReads are out none is started.
func TestBoundedReads(t *testing.T) {
	var abandoned atomic.Uint64
	r := &procReads{abandoned: &abandoned}
	release := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	for range maxStuckReads {
		wg.Go(func() {
			if _, ok := bounded(r, func() int { <-release; return 1 }); ok {
				t.Error("a read that never returned was not given up")
			}
		})
	}
	wg.Wait()
	if took := time.Since(start); took < procReadTimeout || took > procReadTimeout+2*time.Second {
		t.Errorf("%d stuck reads given up after %v, want about %v", maxStuckReads, took, procReadTimeout)
	}
	start = time.Now()
	if _, ok := bounded(r, func() int { return 1 }); ok {
		t.Error("a read was started with maxStuckReads out")
	}
	if took := time.Since(start); took > 50*time.Millisecond {
		t.Errorf("refusing a read took %v", took)
	}
	if got := abandoned.Load(); got != maxStuckReads+1 {
		t.Errorf("abandoned = %d, want %d", got, maxStuckReads+1)
	}
	close(release)
	deadline := time.Now().Add(2 * time.Second)
	for r.out.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if v, ok := bounded(r, func() int { return 42 }); !ok || v != 42 {
		t.Errorf("after the stuck reads returned: %d, %v; want 42, true", v, ok)
	}
}

// TestDescribe reads the opener of a detection through its pidfd: a live
// process is named; one that has exited is not, even when its pid is
// asked for again.
func TestDescribe(t *testing.T) {
	d, _ := testDaemon(t, time.Hour)
	d.kern = groupKernel{}
	var abandoned atomic.Uint64
	d.procReads.abandoned = &abandoned
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep")
	}
	cmd := exec.Command(sleep, "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// The child execs after the fork: wait for its command line.
	cmdline := filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid), "cmdline")
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if b, _ := os.ReadFile(cmdline); string(b) == sleep+"\x0030\x00" || time.Now().After(deadline) {
			break
		}
	}
	pidfd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	det := &Detection{PID: int32(cmd.Process.Pid), pidfd: int32(pidfd), Path: []byte("/x")}
	d.describe(det)
	want, _ := filepath.EvalSymlinks(sleep)
	if det.Exe != want || string(det.Cmdline) != sleep+"\x0030\x00" || det.CmdlineLen != int64(len(det.Cmdline)) || det.OpenerExited || det.OpenerUnread || det.pidfd != -1 {
		t.Errorf("described %q %q exited %v unread %v pidfd %d; want %q %q", det.Exe, det.Cmdline, det.OpenerExited,
			det.OpenerUnread, det.pidfd, want, sleep+"\x0030\x00")
	}
	if unix.Close(pidfd) == nil {
		t.Error("describe did not close the pidfd")
	}

	pidfd, err = unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Process.Kill()
	cmd.Wait() // reaped: the pid may be anyone's now
	det = &Detection{PID: int32(cmd.Process.Pid), pidfd: int32(pidfd), Path: []byte("/x")}
	d.describe(det)
	if det.Exe != "" || det.Cmdline != nil || !det.OpenerExited {
		t.Errorf("an exited opener described as %q %q (exited %v)", det.Exe, det.Cmdline, det.OpenerExited)
	}
}

// TestDetectionQueueBound: room is reserved by entries and by bytes, and
// given back when a detection is taken.
func TestDetectionQueueBound(t *testing.T) {
	q := newDetectionQueue()
	if q.reserve(detectionQueueBytes + 1) {
		t.Error("a detection larger than the whole queue was given room")
	}
	n := 0
	for q.reserve(1 << 10) {
		q.send(&Detection{size: 1 << 10})
		n++
	}
	if n != detectionQueueEntries {
		t.Errorf("room for %d detections of 1 KiB, want %d", n, detectionQueueEntries)
	}
	q.taken(<-q.ch)
	if !q.reserve(1 << 10) {
		t.Error("no room after one was taken")
	}
}

// fakeRecorder records in memory, and keeps an allow list.
type fakeRecorder struct {
	mu      sync.Mutex // guards following
	records []*Detection
	repeats map[int64]int64
	fail    error
	// allowed is the allow list, allowVersion its version; allowFail
	// fails reading them.
	allowed      [][32]byte
	allowVersion int64
	allowFail    error
	allowReads   int // reads of the list (not of its version)
}

func (r *fakeRecorder) AllowListVersion(context.Context) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.allowVersion, r.allowFail
}

func (r *fakeRecorder) AllowedSums(context.Context) ([][32]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.allowReads++
	return slices.Clone(r.allowed), r.allowFail
}

// setAllowed replaces the allow list, as the command line would.
func (r *fakeRecorder) setAllowed(sums ...[32]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.allowed = sums
	r.allowVersion++
}

func (r *fakeRecorder) Record(_ context.Context, det *Detection) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return 0, r.fail
	}
	r.records = append(r.records, det)
	return int64(len(r.records)), nil
}

func (r *fakeRecorder) Quarantine(context.Context, int64, *Detection) error { return nil }

func (r *fakeRecorder) AddRepeats(_ context.Context, reps []quarantine.Repeat) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.repeats == nil {
		r.repeats = map[int64]int64{}
	}
	for _, rp := range reps {
		r.repeats[rp.ID] += rp.N
	}
	return nil
}

// TestRecordCoalesces: repeats of a detection (same file, content, user,
// program, rules) are counted in its record, not recorded again; anything
// that differs is a record of its own.
func TestRecordCoalesces(t *testing.T) {
	d, _ := testDaemon(t, time.Hour)
	rec := &fakeRecorder{}
	d.recorder = rec
	det := func(ino uint64, sha, exe string, uid int64) *Detection {
		return &Detection{File: fan.FileInfo{ID: fan.FileID{Dev: 1, Ino: ino}}, SHA256: sha, Exe: exe, UID: uid,
			RulesGeneration: "g", Action: policy.ActionDeny, Time: time.Now()}
	}
	in := make(chan *Detection, 100)
	for range 50 {
		in <- det(1, "a", "/bin/cat", 1000)
	}
	in <- det(2, "a", "/bin/cat", 1000) // another file
	in <- det(1, "b", "/bin/cat", 1000) // other content
	in <- det(1, "a", "/bin/sh", 1000)  // another program
	in <- det(1, "a", "/bin/cat", 0)    // another user
	in <- det(1, "a", "/bin/cat", 1000)
	close(in)
	d.record(in)
	if len(rec.records) != 5 {
		t.Errorf("%d records, want 5", len(rec.records))
	}
	if diff := cmp.Diff(map[int64]int64{1: 50}, rec.repeats); diff != "" {
		t.Errorf("repeats (-want +got):\n%s", diff)
	}
	if got := d.stats.DetectionsCoalesced.Load(); got != 50 {
		t.Errorf("coalesced %d, want 50", got)
	}
}

// TestRecordFailureReported: a record that cannot be written is counted,
// and the status says detections are not recorded until one is again.
func TestRecordFailureReported(t *testing.T) {
	d, _ := testDaemon(t, time.Hour)
	d.log = zap.NewNop()
	rec := &fakeRecorder{fail: unix.ENOSPC}
	d.recorder = rec
	in := make(chan *Detection, 2)
	in <- &Detection{SHA256: "a", Time: time.Now()}
	close(in)
	d.record(in)
	if d.stats.RecordErrors.Load() != 1 || d.recordingProblem() == "" {
		t.Fatalf("record errors %d, problem %q", d.stats.RecordErrors.Load(), d.recordingProblem())
	}
	rec.fail = nil
	in = make(chan *Detection, 2)
	in <- &Detection{SHA256: "b", Time: time.Now()}
	close(in)
	d.record(in)
	if p := d.recordingProblem(); p != "" {
		t.Errorf("after a record worked again: %q", p)
	}
}
