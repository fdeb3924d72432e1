package daemon

import (
	"io"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"

	"github.com/fanguard/fanguard/fan"
	"github.com/fanguard/fanguard/policy"
)

// orderKernel is a fakeKernel that keeps the order of the calls that
// matter here, and of the log lines (see logInto).
type orderKernel struct {
	*fakeKernel
	mu     sync.Mutex // guards calls
	calls  []string
	onStat func(fd int32) // called on each Stat, outside any lock
}

func (k *orderKernel) note(what string, fd int32) {
	k.mu.Lock()
	k.calls = append(k.calls, what+" "+strconv.Itoa(int(fd)))
	k.mu.Unlock()
}

func (k *orderKernel) Respond(fd int32, allow bool) error {
	k.note("respond", fd)
	return k.fakeKernel.Respond(fd, allow)
}

func (k *orderKernel) Stat(fd int32) (fan.FileInfo, error) {
	k.note("stat", fd)
	if k.onStat != nil {
		k.onStat(fd)
	}
	return k.fakeKernel.Stat(fd)
}

func (k *orderKernel) Ignore(fd int32) error { k.note("ignore", fd); return k.fakeKernel.Ignore(fd) }
func (k *orderKernel) Unignore(fd int32) error {
	k.note("unignore", fd)
	return k.fakeKernel.Unignore(fd)
}

// logInto is a debug-level logger that notes each line in k's calls.
func logInto(k *orderKernel) *zap.Logger {
	core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewDevelopmentEncoderConfig()), zapcore.AddSync(io.Discard), zapcore.DebugLevel)
	return zap.New(zapcore.RegisterHooks(core, func(e zapcore.Entry) error {
		k.note("log:"+e.Message, 0)
		return nil
	}))
}

// TestFollowersAnsweredFirst: the opens that waited for a scan are
// answered before the scan's worker makes any system call or writes any
// log line of its own for it — those that came during the scan, and one
// that comes while the worker re-states the file.
func TestFollowersAnsweredFirst(t *testing.T) {
	d, fk := testDaemon(t, time.Hour)
	k := &orderKernel{fakeKernel: fk}
	d.kern = k
	d.log = logInto(k)
	d.cfg.Protect = policy.ProtectConfig{}
	d.storeSettings(d.cfg)
	d.cache = testCache(t, 100, &d.stats)
	file := fan.FileInfo{ID: fan.FileID{Dev: 1, Ino: 42}, Stamp: fan.Stamp{CtimeNs: 5, Size: 10}, Mode: unix.S_IFREG | 0o644}
	for fd := int32(3); fd <= 5; fd++ {
		fk.files[fd] = file
		fk.uids[100+fd] = 1000
	}
	open := func(fd int32) fan.Event { return fan.Event{Mask: unix.FAN_OPEN_PERM, Fd: fd, Pid: 1, Pidfd: 100 + fd} }
	var scratch [4096]byte
	d.handle(open(3), time.Now(), scratch[:]) // the scan
	d.handle(open(4), time.Now(), scratch[:]) // waits for it
	if d.stats.DedupWaits.Load() != 1 {
		t.Fatalf("the second open does not wait for the scan: %v", d.stats.fields())
	}
	j, _ := d.sched.pop(d.stillWaiting, nil)
	if j == nil || j.fd != 3 {
		t.Fatalf("popped %v, want the job of fd 3", j)
	}
	j.started.Store(true)

	// The worker: a clean verdict, marked in the kernel. While it states
	// the file again, a third open comes, and the file changes (so the
	// mark must go).
	k.mu.Lock()
	k.calls = nil
	k.mu.Unlock()
	k.onStat = func(fd int32) {
		if fd != 3 {
			return
		}
		k.onStat = nil
		d.handle(open(5), time.Now(), scratch[:])
		fk.mu.Lock()
		changed := file
		changed.Stamp.CtimeNs++
		fk.files[3] = changed
		fk.mu.Unlock()
	}
	w := &worker{d: d}
	_, marked := j.answerMarked(policy.Allow, outcomeClean, true)
	w.endScan(j, d.rules.Load(), policy.Allow, &outcome{complete: true}, true, marked)
	j.done()

	k.mu.Lock()
	calls := slices.Clone(k.calls)
	k.mu.Unlock()
	at := func(call string) int {
		i := slices.Index(calls, call)
		if i < 0 {
			t.Fatalf("no %q in %q", call, calls)
		}
		return i
	}
	if at("respond 4") > at("stat 3") {
		t.Errorf("the waiting open was answered after the worker's stat: %q", calls)
	}
	for _, own := range []string{"unignore 3", "log:scanned : allow 0"} {
		if at("respond 5") > at(own) || at("respond 4") > at(own) {
			t.Errorf("a waiting open was answered after %q: %q", own, calls)
		}
	}
	if _, _, ok := d.cache.lookup(file.ID, file.Stamp, 1); ok {
		t.Error("a verdict cached for a file that changed during the scan")
	}
	if d.inflight.Load() != 0 {
		t.Errorf("%d jobs still in flight", d.inflight.Load())
	}
	for _, fd := range []int32{3, 4, 5} {
		if fk.answers[fd] != 1 || !fk.allowed[fd] || fk.closes[fd] != 1 {
			t.Errorf("fd %d: %d answers (allowed %v), %d closes", fd, fk.answers[fd], fk.allowed[fd], fk.closes[fd])
		}
	}
}
