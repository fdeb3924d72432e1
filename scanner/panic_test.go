package scanner

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// panicChildEnv makes TestPanicAfterConcurrentScans run its child part.
const panicChildEnv = "FANGUARD_SCANNER_PANIC_CHILD"

// TestPanicAfterConcurrentScans is the regression test for design §3:
// libyara's default scan flags swap the process-wide SIGSEGV/SIGBUS
// handlers on every scan, and after concurrent scans a Go panic from a nil
// dereference (a real SIGSEGV) could hang the process. The child process
// scans from 8 goroutines while others dereference nil and recover, then
// does so once more after the scans; it must exit 0 within 20 s.
func TestPanicAfterConcurrentScans(t *testing.T) {
	if os.Getenv(panicChildEnv) == "1" {
		panicChild(t)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestPanicAfterConcurrentScans$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), panicChildEnv+"=1")
	cmd.WaitDelay = 2 * time.Second
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("child hung: killed after %v\n%s", time.Since(start).Round(time.Millisecond), out)
	}
	if err != nil {
		t.Fatalf("child failed: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "child: done") {
		t.Fatalf("child did not run the scans:\n%s", out)
	}
	t.Logf("child exited 0 after %v", time.Since(start).Round(time.Millisecond))
}

// sinkPtr is nil; dereferencing it faults for real (SIGSEGV), the
// compiler cannot prove it nil.
var sinkPtr atomic.Pointer[int]

// nilDeref dereferences a nil pointer and recovers; it reports whether the
// runtime turned the fault into a panic.
func nilDeref() (recovered bool) {
	defer func() { recovered = recover() != nil }()
	p := sinkPtr.Load()
	return *p == 42
}

func panicChild(t *testing.T) {
	rs := mustLoad(t, shippedRules)
	buf := append(cleanBuffer(4<<10), eicar()...) // clean: the EICAR string is not at offset 0
	var scans, panics atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 8 {
		wg.Go(func() {
			s, err := rs.NewScanner(10 * time.Second)
			if err != nil {
				t.Error(err)
				return
			}
			defer s.Close()
			for range 200 {
				if _, err := s.Scan(buf, VarsFor("/x/y.bin", buf, "root")); err != nil {
					t.Error(err)
					return
				}
				scans.Add(1)
			}
		})
	}
	var pwg sync.WaitGroup
	pwg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if !nilDeref() {
				t.Error("nil dereference did not panic")
				return
			}
			panics.Add(1)
			time.Sleep(time.Millisecond)
		}
	})
	wg.Wait()
	close(stop)
	pwg.Wait()

	// And once more from a fresh goroutine after all scans are done.
	done := make(chan bool)
	go func() { done <- nilDeref() }()
	if !<-done {
		t.Error("nil dereference after the scans did not panic")
	}
	fmt.Printf("child: done: %d scans, %d panics recovered during them\n", scans.Load(), panics.Load()+1)
}
