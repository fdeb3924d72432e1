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
	tests := []struct {
		name       string
		ev         fan.Event
		maxPending int
		inflight   int64
		wantAnswer map[int32]bool // fd → allowed
		wantClosed map[int32]int
		wantQueued int
	}{
		{name: "own pid allowed at once", ev: fan.Event{Mask: unix.FAN_OPEN_PERM, Fd: 3, Pid: own},
			wantAnswer: map[int32]bool{3: true}, wantClosed: map[int32]int{3: 1}},
		{name: "other pid queued", ev: fan.Event{Mask: unix.FAN_OPEN_PERM, Fd: 3, Pid: 1},
			wantAnswer: map[int32]bool{}, wantClosed: map[int32]int{}, wantQueued: 1},
		{name: "overload answered with on_overload", ev: fan.Event{Mask: unix.FAN_OPEN_PERM, Fd: 3, Pid: 1},
			maxPending: 2, inflight: 2, wantAnswer: map[int32]bool{3: false}, wantClosed: map[int32]int{3: 1}},
		{name: "notification event closed, not answered", ev: fan.Event{Mask: unix.FAN_CLOSE_WRITE, Fd: 3, Pid: 1},
			wantAnswer: map[int32]bool{}, wantClosed: map[int32]int{3: 1}},
		{name: "overflow counted, nothing to answer", ev: fan.Event{Mask: unix.FAN_Q_OVERFLOW, Fd: fan.NoFd},
			wantAnswer: map[int32]bool{}, wantClosed: map[int32]int{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, k := testDaemon(t, time.Hour)
			d.pid = own
			d.cfg.MaxPending = 16
			if tt.maxPending != 0 {
				d.cfg.MaxPending = tt.maxPending
			}
			d.cfg.OnOverload = policy.Deny
			d.excl = policy.NewExclusions(policy.ProtectConfig{})
			d.queue = make(chan *job, d.cfg.MaxPending)
			d.inflight.Store(tt.inflight)
			if !tt.ev.IsPermission() {
				k.notification[tt.ev.Fd] = true
			}
			var scratch [4096]byte
			d.handle(tt.ev, time.Now(), scratch[:])
			if diff := cmp.Diff(tt.wantAnswer, k.allowed); diff != "" {
				t.Errorf("answers (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantClosed, k.closes); diff != "" {
				t.Errorf("closes (-want +got):\n%s", diff)
			}
			if len(d.queue) != tt.wantQueued {
				t.Errorf("queued %d, want %d", len(d.queue), tt.wantQueued)
			}
			for len(d.queue) > 0 {
				(<-d.queue).finish(policy.Allow)
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
	d.excl = policy.NewExclusions(policy.ProtectConfig{})
	ev := fan.Event{Mask: unix.FAN_OPEN_PERM, Fd: 3, Pid: 7}
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

func (nopKernel) Respond(int32, bool) error { return nil }
func (nopKernel) CloseFd(int32) error       { return nil }

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
