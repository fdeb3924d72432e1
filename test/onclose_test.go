package test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fanguard/fanguard/internal/testutil"
	"github.com/fanguard/fanguard/quarantine"
)

// TestCloseScanCachesVerdict: files written and closed on the protected
// tmpfs are scanned on close; their first opens then reach no scan at
// all (the kernel's ignore mark answers them), and are as fast as opens of
// cached files.
func TestCloseScanCachesVerdict(t *testing.T) {
	d := startDaemon(t, options{onClose: true})
	const n = 50
	c0 := d.counters()
	for i := range n {
		writeFile(t, filepath.Join(d.Dir, fmt.Sprintf("clean-%d.txt", i)), strings.Repeat(fmt.Sprintf("line %d\n", i), 100), 0o644)
	}
	c1 := d.waitCounter("close_scans", c0["close_scans"]+n)
	if dl := delta(c0, c1); dl["close_detections"] != 0 || dl["close_dropped"] != 0 {
		t.Fatalf("writing %d clean files: %v close detections, %v dropped; want none", n, dl["close_detections"], dl["close_dropped"])
	}
	// Settled: the status says so too.
	st := getStatus(t, d)
	if st.Counters["close_scans"] < n {
		t.Errorf("status: close_scans %v, want at least %d", st.Counters["close_scans"], n)
	}

	var took []time.Duration
	for i := range n {
		start := time.Now()
		if err := read(t, filepath.Join(d.Dir, fmt.Sprintf("clean-%d.txt", i))); err != nil {
			t.Fatalf("first open of clean-%d.txt: %v", i, err)
		}
		took = append(took, time.Since(start))
	}
	c2 := d.counters()
	dl := delta(c1, c2)
	p50, p99, largest := latencies(took)
	t.Logf("%d first opens after the scans on close: %v events, %v scans; open+read p50 %v, p99 %v, max %v",
		n, dl["events"], dl["scans"], p50, p99, largest)
	// Most opens make no event at all: the kernel's ignore mark answers
	// them. The kernel refuses the mark, silently, while the file is still
	// open for write — and the writer's close is reported before its
	// write access is let go — so a few reach the daemon, whose cache
	// answers them.
	if dl["scans"] != 0 || dl["events"] != dl["cache_hits"] || dl["events"] > n/5 {
		t.Errorf("first opens of %d files scanned on close: %v events, %v cache hits, %v scans; want no scan, every event a cache hit, most opens no event",
			n, dl["events"], dl["cache_hits"], dl["scans"])
	}
	// Loose: a scan-free open of a small file on tmpfs takes microseconds.
	if p50 > 5*time.Millisecond {
		t.Errorf("open+read p50 %v after the scan on close, want well under 5ms", p50)
	}
}

// TestCloseScanDetects: EICAR written and closed is detected at close —
// recorded (and, with action = "quarantine", moved into the vault) without
// any open of the file for reading; with action = "deny", the next open
// is denied from the cache, without a scan.
func TestCloseScanDetects(t *testing.T) {
	for _, action := range []string{"deny", "quarantine"} {
		t.Run(action, func(t *testing.T) {
			d := startDaemon(t, options{onClose: true, quarantine: `action = "` + action + `"`})
			path := filepath.Join(d.Dir, "eicar.com")
			c0 := d.counters()
			writeFile(t, path, eicar, 0o644)
			recs := records(t, d, 1, 10*time.Second)
			if len(recs) != 1 {
				t.Fatalf("%d records after writing EICAR, want 1; log:\n%s", len(recs), d.Log())
			}
			r := recs[0]
			if !r.OnClose || r.Late || r.PID != int32(os.Getpid()) || r.ProcUID != uint32(os.Getuid()) ||
				r.Matches[0].Rule != "EICAR_Test_File" || string(r.Path) != path {
				t.Errorf("record: on_close %v, late %v, pid %d (want %d, the writer), uid %d, rule %q, path %q",
					r.OnClose, r.Late, r.PID, os.Getpid(), r.ProcUID, r.Matches[0].Rule, r.Path)
			}
			if exe, _ := os.Executable(); string(r.Exe) != exe {
				t.Errorf("record: exe %q, want the writer's, %q", r.Exe, exe)
			}
			line := d.waitLog(5*time.Second, "detection on close", "EICAR_Test_File")
			if !strings.Contains(line, `"on_close": true`) {
				t.Errorf("log line without on_close: %s", line)
			}
			c1 := d.counters()
			if dl := delta(c0, c1); dl["close_detections"] != 1 || dl["close_scans"] != 1 {
				t.Errorf("after the close: %v close scans, %v close detections; want 1, 1", dl["close_scans"], dl["close_detections"])
			}
			switch action {
			case "deny":
				err := read(t, path)
				if !errors.Is(err, unix.EPERM) {
					t.Fatalf("open after the detection on close: %v, want EPERM", err)
				}
				dl := d.deltaWhen(c1, func(dl map[string]float64) bool { return dl["cached_denials"] >= 1 })
				if dl["scans"] != 0 || dl["cached_denials"] != 1 {
					t.Errorf("open after the detection on close: %v scans, %v cached denials; want 0, 1", dl["scans"], dl["cached_denials"])
				}
			case "quarantine":
				deadline := time.Now().Add(5 * time.Second)
				for {
					store, err := quarantine.Open(filepath.Join(d.Work, "quarantine.db"))
					if err != nil {
						t.Fatal(err)
					}
					got, err := store.Get(context.Background(), r.ID)
					store.Close()
					if err != nil {
						t.Fatal(err)
					}
					if got.State == quarantine.StateQuarantined {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("record state %q, want %q", got.State, quarantine.StateQuarantined)
					}
					time.Sleep(20 * time.Millisecond)
				}
				if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("the file is still at its path after its quarantine on close: %v", err)
				}
			}
			st := getStatus(t, d)
			if len(st.LastDetections) != 1 || !st.LastDetections[0].OnClose {
				t.Errorf("status: last detections %+v, want one, on close", st.LastDetections)
			}
		})
	}
}

// TestCloseScansYieldToOpens: with files closed by a writer waiting to be
// scanned (each scan slow: test_slow's loop, some 120 ms), a flood of opens
// of other, unscanned files is served first: each open waits for at most
// one scan on close, not for the queue. Once the flood is over, the scans
// on close run.
func TestCloseScansYieldToOpens(t *testing.T) {
	testutil.RequireRoot(t)
	dir := testutil.MountTmpfs(t)
	// test_slow matches files above 2,000 bytes, after its loop.
	slow := "FANGUARD-SLOW-TEST" + strings.Repeat("x", 2100)
	// The flood's files exist before the daemon: uncached, each open a
	// scan; and one slow file, to time a slow scan here.
	const flood = 400
	for i := range flood {
		writeFile(t, filepath.Join(dir, fmt.Sprintf("old-%d", i)), strings.Repeat(fmt.Sprintf("%d ", i), 500), 0o644)
	}
	writeFile(t, filepath.Join(dir, "probe"), slow, 0o644)
	d := startDaemon(t, options{onClose: true, dir: dir, config: "workers = 1"})

	start := time.Now()
	if err := read(t, filepath.Join(dir, "probe")); !errors.Is(err, unix.EPERM) {
		t.Fatalf("open of a slow file: %v, want EPERM (test_slow)", err)
	}
	oneSlow := time.Since(start)
	// Alone, to know what an open of a flood's file costs here.
	var alone []time.Duration
	for i := range 50 {
		start := time.Now()
		if err := read(t, filepath.Join(dir, fmt.Sprintf("old-%d", flood-1-i))); err != nil {
			t.Fatal(err)
		}
		alone = append(alone, time.Since(start))
	}

	// 60 slow files closed at once: if the opens waited for the queue,
	// the first would wait some 60 × oneSlow.
	const closed = 60
	c0 := d.counters()
	for i := range closed {
		writeFile(t, filepath.Join(dir, fmt.Sprintf("new-%d", i)), slow+fmt.Sprint(i), 0o644)
	}
	d.waitCounter("close_queued", c0["close_queued"]+closed)

	var (
		mu   sync.Mutex
		took []time.Duration
		wg   sync.WaitGroup
	)
	next := make(chan int, flood)
	for i := range flood - 50 {
		next <- i
	}
	close(next)
	c1 := d.counters()
	for range 4 {
		wg.Go(func() {
			for i := range next {
				start := time.Now()
				_, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("old-%d", i)))
				dt := time.Since(start)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				took = append(took, dt)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	dl := delta(c1, d.counters())
	a50, a99, _ := latencies(alone)
	p50, p99, largest := latencies(took)
	t.Logf("one slow scan %v; opens alone: p50 %v, p99 %v; %d opens (4 at once) with %d slow files closed before: p50 %v, p99 %v, max %v; "+
		"meanwhile %v scans on close ran, %v scans in all, %v timed out",
		oneSlow, a50, a99, len(took), closed, p50, p99, largest, dl["close_scans"], dl["scans"], dl["timed_out"])
	if dl["timed_out"] != 0 || dl["overloaded"] != 0 {
		t.Errorf("the flood: %v timed out, %v overloaded; want none", dl["timed_out"], dl["overloaded"])
	}
	// Loose: an open may wait for one slow scan (two, with the timing's
	// noise), and four openers share one worker.
	if limit := 4*a99 + 2*oneSlow + 250*time.Millisecond; largest > limit {
		t.Errorf("an open in the flood took %v, more than %v (4 × p99 alone + 2 slow scans + 250ms)", largest, limit)
	}
	if dl["close_scans"] > float64(len(took))/4 {
		t.Errorf("%v scans on close ran during a flood of %d opens on one worker: they did not yield", dl["close_scans"], len(took))
	}
	// Then the queue drains.
	d.waitCounterWithin("close_scans", c0["close_scans"]+closed, 60*time.Second)
}

// TestCloseQueueFdBound: files closed by the hundred while scans on close
// are slow: the queue keeps its bound (the oldest dropped), the daemon
// holds at most two fds per file queued, and once the queue has drained
// it holds none of them.
func TestCloseQueueFdBound(t *testing.T) {
	const bound = 16
	d := startDaemon(t, options{onClose: true, closeQueue: bound})
	time.Sleep(200 * time.Millisecond) // the daemon's own fds settle
	base := fds(t, d.Pid)

	// Each file takes test_slow's loop: about a tenth of a second per
	// scan (and a detection), while a write of one takes a millisecond.
	slow := "FANGUARD-SLOW-TEST" + strings.Repeat("x", 2000)
	const n = 300
	c0 := d.counters()
	most := 0
	for i := range n {
		writeFile(t, filepath.Join(d.Dir, fmt.Sprintf("slow-%d", i)), slow, 0o644)
		if i%10 == 0 {
			most = max(most, fds(t, d.Pid))
		}
	}
	c1 := d.waitCounter("close_queued", c0["close_queued"]+n)
	settled := fds(t, d.Pid) // every close read: only the queue's fds and a job's
	most = max(most, settled)
	dl := delta(c0, c1)
	t.Logf("%d files closed: %v queued, %v dropped, %v scanned so far; daemon fds %d at start, at most %d seen, %d once read",
		n, dl["close_queued"], dl["close_dropped"], dl["close_scans"], base, most, settled)
	if dl["close_dropped"] < n-bound-dl["close_scans"]-2 {
		t.Errorf("%v dropped of %d queued with %v scanned, want at least %v: the bound of %d did not hold",
			dl["close_dropped"], n, dl["close_scans"], n-bound-dl["close_scans"]-2, bound)
	}
	// Once the closes are read: two per file queued (event fd and
	// pidfd) and a worker's job.
	if limit := base + 2*bound + 4; settled > limit {
		t.Errorf("daemon fds: %d with the queue full and every close read, want at most %d (%d at start, %d files queued)",
			settled, limit, base, bound)
	}
	// While closes are read, one read of the notification group holds two
	// fds per event for an instant: its 16 KiB buffer takes at most 512
	// events of 32 bytes (metadata and pidfd record).
	if limit := base + 2*bound + 4 + 2*512; most > limit {
		t.Errorf("daemon fds: %d at most while files were closed, want at most %d", most, limit)
	}
	st := getStatus(t, d)
	if st.OnClose.Bound != bound || st.OnClose.Waiting > bound {
		t.Errorf("status: on close %+v, want bound %d and at most that many waiting", st.OnClose, bound)
	}
	// Drained: every file was scanned, dropped or skipped, and their fds
	// are closed.
	deadline := time.Now().Add(60 * time.Second)
	for {
		c := delta(c0, d.counters())
		if c["close_scans"]+c["close_dropped"]+c["close_skipped"] >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the queue did not drain: %v", c)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // the detections' pidfds are closed once described
	if after := fds(t, d.Pid); after > base+2 {
		t.Errorf("daemon fds: %d after the queue drained, %d at start: leaked", after, base)
	}
}

// TestCloseScanAfterReload: files queued for a scan on close when the
// rules change are scanned with the new rules: a rule added by the reload
// finds them, at close.
func TestCloseScanAfterReload(t *testing.T) {
	d := startDaemon(t, options{onClose: true})
	// One slow file first: its scan on close (test_slow's loop, some
	// seconds for 20 KB) takes the one worker that scans on close, so the
	// marked files written next wait in the queue while the rules are
	// reloaded.
	writeFile(t, filepath.Join(d.Dir, "slow"), "FANGUARD-SLOW-TEST"+strings.Repeat("x", 20000), 0o644)
	d.waitCounter("close_queued", 1)
	const marked = 5
	for i := range marked {
		writeFile(t, filepath.Join(d.Dir, fmt.Sprintf("marked-%d", i)), fmt.Sprintf("FANGUARD-RELOAD-MARKER %d\n", i), 0o644)
	}
	writeFile(t, filepath.Join(d.RulesDir, "reload.yar"), `rule test_reload_marker { strings: $m = "FANGUARD-RELOAD-MARKER" condition: $m }`, 0o644)
	if code, body, err := controlDo(d.Control, "POST", "/reload"); err != nil || code != 200 {
		t.Fatalf("reload: %d %s %v", code, body, err)
	}
	if st := getStatus(t, d); st.OnClose.Waiting < marked {
		t.Skipf("only %d files still queued once the rules were reloaded: the machine scanned faster than this test can tell", st.OnClose.Waiting)
	}
	c := d.waitCounterWithin("close_scans", 1+marked, 60*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	var found int
	for {
		found = 0
		for _, r := range records(t, d, 0, 0) {
			if r.OnClose && r.Matches[0].Rule == "test_reload_marker" {
				found++
			}
		}
		if found == marked || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if found != marked {
		t.Errorf("%d of the %d marked files detected on close with the reloaded rules, want all (counters %v)", found, marked, c)
	}
	for i := range marked {
		if err := read(t, filepath.Join(d.Dir, fmt.Sprintf("marked-%d", i))); !errors.Is(err, unix.EPERM) {
			t.Errorf("open of marked-%d after its detection on close: %v, want EPERM", i, err)
		}
	}
}
