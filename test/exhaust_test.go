package test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fanguard/fanguard/internal/testutil"
)

// pipelineDoc is the pipeline section of GET /status.
type pipelineDoc struct {
	Pipeline struct {
		Workers     int   `json:"workers"`
		BusyWorkers int   `json:"busy_workers"`
		QueueDepth  int   `json:"queue_depth"`
		InFlight    int64 `json:"inflight"`
		OpenFds     int   `json:"open_fds"`
		Goroutines  int   `json:"goroutines"`
	} `json:"pipeline"`
}

// control sends a request to the daemon's control socket and returns the
// status code and the body.
func control(t *testing.T, d *daemon, method, path string) (int, []byte) {
	t.Helper()
	code, body, err := controlDo(d.Control, method, path)
	if err != nil {
		t.Fatal(err)
	}
	return code, body
}

func getPipeline(t *testing.T, d *daemon) pipelineDoc {
	t.Helper()
	code, body := control(t, d, "GET", "/status")
	if code != http.StatusOK {
		t.Fatalf("GET /status: HTTP %d: %s", code, body)
	}
	var p pipelineDoc
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("decoding /status: %v\n%s", err, body)
	}
	return p
}

// waitDrained waits until the daemon holds no event (inflight 0).
func waitDrained(t *testing.T, d *daemon, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		p := getPipeline(t, d)
		if p.Pipeline.InFlight == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon still holds %d events (%d queued) %v after the load", p.Pipeline.InFlight, p.Pipeline.QueueDepth, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// timedOpen is one open of a burst: how long it took and what it returned.
type timedOpen struct {
	took time.Duration
	err  error
}

// openAll opens every path at once (one goroutine each, released
// together) and returns how each open went, in the order of paths.
func openAll(paths []string) []timedOpen {
	res := make([]timedOpen, len(paths))
	var wg sync.WaitGroup
	var ready sync.WaitGroup
	ready.Add(len(paths))
	start := make(chan struct{})
	for i, p := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ready.Done()
			<-start
			t0 := time.Now()
			f, err := os.Open(p)
			res[i].took = time.Since(t0)
			res[i].err = err
			if err == nil {
				f.Close()
			}
		}()
	}
	ready.Wait()
	close(start)
	wg.Wait()
	return res
}

// TestOverload: with max_pending = 2 and one worker held by slow scans, a
// burst of opens of files that need a scan is answered at once with
// on_overload past the first two: allowed opens succeed, denied ones get
// EPERM. The overloaded counter counts exactly the opens that were
// answered at once, the two held opens are answered by the deadline
// (on_timeout), no open waits past the budget, and once the slow scans
// drain the daemon scans (and denies) again.
func TestOverload(t *testing.T) {
	tests := []struct {
		onOverload string
		wantErr    error // of an open answered at once
	}{
		{"allow", nil},
		{"deny", unix.EPERM},
	}
	for _, tt := range tests {
		t.Run("on_overload="+tt.onOverload, func(t *testing.T) {
			const (
				budget     = time.Second
				maxPending = 2
				burst      = 40
				// An open answered at once takes microseconds; one held
				// takes the budget. Half the budget tells them apart with
				// room for a busy machine.
				atOnce = budget / 2
				margin = 500 * time.Millisecond
			)
			d := startDaemon(t, options{config: fmt.Sprintf("budget = %q\non_timeout = \"allow\"\nworkers = 1\nmax_pending = %d\non_overload = %q",
				budget, maxPending, tt.onOverload)})
			// Every file of the burst needs a scan, and each scan takes
			// seconds (test_slow, 40 KB: about 2.5 s, more than the
			// budget), so the two events let in stay held — and count
			// against max_pending — for the whole burst.
			paths := make([]string, burst)
			before := d.counters()["invalidations"]
			for i := range paths {
				paths[i] = filepath.Join(d.Dir, fmt.Sprintf("slow%02d", i))
				slowFile(t, paths[i], 40_000)
			}
			d.waitCounter("invalidations", before+burst) // no verdict of the writers' opens survives
			waitDrained(t, d, 10*time.Second)
			c0 := d.counters()

			res := openAll(paths)

			var fast, held []time.Duration
			for i, r := range res {
				if r.took > budget+margin {
					t.Errorf("open of %s took %v, past the budget %v (+%v)", filepath.Base(paths[i]), r.took, budget, margin)
				}
				if r.took < atOnce {
					fast = append(fast, r.took)
					if !errors.Is(r.err, tt.wantErr) && !(tt.wantErr == nil && r.err == nil) {
						t.Errorf("open of %s answered at once (%v): err = %v, want %v (on_overload = %q)",
							filepath.Base(paths[i]), r.took, r.err, tt.wantErr, tt.onOverload)
					}
				} else {
					held = append(held, r.took)
					if r.err != nil {
						t.Errorf("open of %s held %v: err = %v, want it allowed by on_timeout", filepath.Base(paths[i]), r.took, r.err)
					}
				}
			}
			// The deadline counts a timeout right after its answer: the
			// opener may be back before the count.
			dc := delta(c0, d.waitCounter("timed_out", c0["timed_out"]+float64(len(held))))
			p50, _, mx := latencies(fast)
			hp50, _, hmx := latencies(held)
			t.Logf("%d opens at once: %d answered at once (p50 %v, max %v), %d held (p50 %v, max %v); counters: events %v, overloaded %v, timed_out %v, dedup_waits %v",
				burst, len(fast), p50, mx, len(held), hp50, hmx, dc["events"], dc["overloaded"], dc["timed_out"], dc["dedup_waits"])
			if dc["events"] != burst {
				t.Errorf("events = %v, want %d (one per open)", dc["events"], burst)
			}
			if dc["overloaded"] != float64(len(fast)) {
				t.Errorf("overloaded = %v, but %d opens were answered at once", dc["overloaded"], len(fast))
			}
			if len(held) != maxPending {
				t.Errorf("%d opens were held, want max_pending = %d", len(held), maxPending)
			}
			if dc["timed_out"] != float64(len(held)) {
				t.Errorf("timed_out = %v, want the %d held opens answered by the deadline", dc["timed_out"], len(held))
			}
			if dc["overloaded"]+dc["timed_out"] != dc["events"] {
				t.Errorf("overloaded %v + timed_out %v != events %v: some events were answered another way",
					dc["overloaded"], dc["timed_out"], dc["events"])
			}

			// The overload ends with the slow scans: a new file is scanned
			// (and denied) again, not answered by on_overload.
			waitDrained(t, d, 30*time.Second)
			bad := filepath.Join(d.Dir, "eicar.com")
			writeFile(t, bad, eicar, 0o644)
			c2 := d.counters()
			if _, err := os.ReadFile(bad); !errors.Is(err, unix.EPERM) {
				t.Errorf("EICAR after the overload: err = %v, want EPERM", err)
			}
			if dc := delta(c2, d.counters()); dc["overloaded"] != 0 {
				t.Errorf("overloaded went up by %v after the scans drained", dc["overloaded"])
			}
		})
	}
}

// memCgroup is a memory cgroup made for one test, v1 or v2.
type memCgroup struct {
	dir string // in /sys/fs/cgroup
	rel string // as /proc/PID/cgroup names it
	v2  bool
}

// newMemCgroup creates a memory cgroup next to (v2) or below (v1) the one
// this test process is in, without a limit yet, and removes it at cleanup
// (register it before starting a daemon in it, so that the daemon's own
// cleanup, which kills it, runs first). The test process itself never
// joins it. It skips when neither hierarchy can be used, and fails under CI.
func newMemCgroup(t *testing.T) *memCgroup {
	t.Helper()
	testutil.RequireRoot(t)
	cg, err := makeMemCgroup(fmt.Sprintf("fanguard-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
	if err != nil {
		if testutil.InCI() {
			t.Fatalf("no memory cgroup to starve the daemon in: %v", err)
		}
		t.Skipf("no memory cgroup to starve the daemon in: %v", err)
	}
	t.Cleanup(func() {
		// The daemon is gone (killed by its own cleanup); the cgroup
		// empties once the kernel has reaped it.
		var err error
		for range 100 {
			if err = os.Remove(cg.dir); err == nil || errors.Is(err, os.ErrNotExist) {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Errorf("removing cgroup %s: %v (tasks: %s)", cg.dir, err, cg.read("cgroup.procs"))
	})
	return cg
}

func makeMemCgroup(name string) (*memCgroup, error) {
	own, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err != nil {
		return nil, err
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		// cgroup v2: a process may sit only in a leaf once its cgroup
		// delegates controllers, so the new cgroup is a sibling of ours.
		var path string
		for _, l := range strings.Split(string(own), "\n") {
			if p, ok := strings.CutPrefix(l, "0::"); ok {
				path = p
			}
		}
		if path == "" {
			return nil, errors.New("no cgroup v2 entry in /proc/self/cgroup")
		}
		parent := filepath.Join("/sys/fs/cgroup", filepath.Dir(path))
		ctl, err := os.ReadFile(filepath.Join(parent, "cgroup.subtree_control"))
		if err != nil {
			return nil, err
		}
		if !slices.Contains(strings.Fields(string(ctl)), "memory") {
			if err := os.WriteFile(filepath.Join(parent, "cgroup.subtree_control"), []byte("+memory"), 0); err != nil {
				return nil, fmt.Errorf("enabling the memory controller in %s: %w", parent, err)
			}
		}
		cg := &memCgroup{dir: filepath.Join(parent, name), rel: filepath.Join(filepath.Dir(path), name), v2: true}
		if err := os.Mkdir(cg.dir, 0o755); err != nil {
			return nil, err
		}
		if _, err := os.Stat(filepath.Join(cg.dir, "memory.max")); err != nil {
			os.Remove(cg.dir)
			return nil, fmt.Errorf("no memory controller in %s: %w", cg.dir, err)
		}
		return cg, nil
	}
	// cgroup v1: the memory hierarchy, below the cgroup this process is in
	// (v1 lets a cgroup hold processes and children both).
	root := "/sys/fs/cgroup/memory"
	if err := unix.Statfs(root, &st); err != nil || st.Type != unix.CGROUP_SUPER_MAGIC {
		return nil, fmt.Errorf("%s is not a cgroup v1 hierarchy (statfs: %v)", root, err)
	}
	var path string
	for _, l := range strings.Split(string(own), "\n") {
		if f := strings.SplitN(l, ":", 3); len(f) == 3 && slices.Contains(strings.Split(f[1], ","), "memory") {
			path = f[2]
		}
	}
	if path == "" {
		return nil, errors.New("no memory controller line in /proc/self/cgroup")
	}
	cg := &memCgroup{dir: filepath.Join(root, path, name), rel: filepath.Join(path, name)}
	if err := os.Mkdir(cg.dir, 0o755); err != nil {
		return nil, err
	}
	return cg, nil
}

func (cg *memCgroup) procs() string { return filepath.Join(cg.dir, "cgroup.procs") }

func (cg *memCgroup) read(file string) string {
	b, _ := os.ReadFile(filepath.Join(cg.dir, file))
	return strings.TrimSpace(string(b))
}

func (cg *memCgroup) write(file, value string) error {
	return os.WriteFile(filepath.Join(cg.dir, file), []byte(value), 0)
}

// setLimit caps the cgroup's memory at n bytes, swap included.
func (cg *memCgroup) setLimit(n int64) error {
	v := strconv.FormatInt(n, 10)
	if cg.v2 {
		if err := cg.write("memory.max", v); err != nil {
			return err
		}
		if _, err := os.Stat(filepath.Join(cg.dir, "memory.swap.max")); err == nil {
			return cg.write("memory.swap.max", "0")
		}
		return nil
	}
	if err := cg.write("memory.limit_in_bytes", v); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(cg.dir, "memory.memsw.limit_in_bytes")); err == nil {
		return cg.write("memory.memsw.limit_in_bytes", v) // memory and swap together: no swap
	}
	return nil
}

// usage is the memory the cgroup is charged for now.
func (cg *memCgroup) usage() int64 {
	f := "memory.usage_in_bytes"
	if cg.v2 {
		f = "memory.current"
	}
	n, _ := strconv.ParseInt(cg.read(f), 10, 64)
	return n
}

// pressure returns how often the limit was hit (v1 kernels of late keep
// memory.failcnt at 0: peak tells then), how many processes the kernel's
// OOM killer killed in the cgroup, and the peak usage.
func (cg *memCgroup) pressure() (limitHits, oomKills, peak int64) {
	keyed := func(file, key string) int64 {
		sc := bufio.NewScanner(strings.NewReader(cg.read(file)))
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == key {
				n, _ := strconv.ParseInt(f[1], 10, 64)
				return n
			}
		}
		return 0
	}
	number := func(file string) int64 {
		n, _ := strconv.ParseInt(cg.read(file), 10, 64)
		return n
	}
	if cg.v2 {
		return keyed("memory.events", "max"), keyed("memory.events", "oom_kill"), number("memory.peak")
	}
	limitHits = max(number("memory.failcnt"), number("memory.memsw.failcnt"))
	return limitHits, keyed("memory.oom_control", "oom_kill"), number("memory.max_usage_in_bytes")
}

// exited reports whether the daemon process has exited, and how.
func (d *daemon) exited() (bool, error) {
	select {
	case err := <-d.exit:
		d.exit <- err
		return true, err
	default:
		return false, nil
	}
}

const mib = 1 << 20

// TestMemoryStarved: the daemon runs in a memory cgroup capped a little
// above what it uses idle, and many concurrent opens of large files make
// its workers read them into memory. The daemon degrades, it does not
// hang: every open returns within the budget and a margin — allowed,
// denied, or released by the kernel when the OOM killer killed the
// daemon. After the pressure, either the daemon still protects, or it
// died (and its death released every opener) and, restarted outside the
// cgroup, protects again. What happened is logged: limit hits, OOM kills,
// the slowest open.
func TestMemoryStarved(t *testing.T) {
	const (
		budget = 2 * time.Second
		// Past the budget: an event the daemon read is answered by its
		// deadline; one the kernel queued while the daemon was stalled
		// in reclaim waits for the reader. Both are bounded by the OOM
		// killer, which acts once reclaim fails.
		margin   = 3 * time.Second
		workers  = 4
		fileSize = 24 * mib
		files    = 8  // 192 MiB in the 256 MiB tmpfs, charged to this process's cgroup, not the daemon's
		openers  = 24 // three opens of each file at once
		headroom = 48 * mib
	)
	cg := newMemCgroup(t)
	d := startDaemon(t, options{
		config:      fmt.Sprintf("budget = %q\nworkers = %d\nmax_file_size = \"32MiB\"", budget, workers),
		cgroupProcs: cg.procs(),
	})
	if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", d.Pid)); !strings.Contains(string(b), ":"+cg.rel+"\n") {
		t.Fatalf("the daemon is not in %s:\n%s", cg.rel, b)
	}
	if b, _ := os.ReadFile("/proc/self/cgroup"); strings.Contains(string(b), cg.rel) {
		t.Fatalf("the test process itself is in %s", cg.rel)
	}

	// Warm up: scans of small files, a detection, the quarantine log.
	bad := filepath.Join(d.Dir, "eicar.com")
	writeFile(t, bad, eicar, 0o644)
	if _, err := os.ReadFile(bad); !errors.Is(err, unix.EPERM) {
		t.Fatalf("EICAR before the pressure: err = %v, want EPERM", err)
	}
	for i := range 20 {
		p := filepath.Join(d.Dir, fmt.Sprintf("small%d", i))
		writeFile(t, p, strings.Repeat("small file\n", 100*i), 0o644)
		os.ReadFile(p)
	}
	paths := make([]string, files)
	for i := range paths {
		paths[i] = filepath.Join(d.Dir, fmt.Sprintf("big%d", i))
		writeFile(t, paths[i], string(bytes.Repeat([]byte{byte('a' + i)}, fileSize)), 0o644)
	}
	waitDrained(t, d, 10*time.Second)
	idle, rss := cg.usage(), vmRSS(t, d.Pid)
	limit := idle + headroom
	if err := cg.setLimit(limit); err != nil {
		t.Fatalf("setting the cgroup's limit to %d MiB: %v", limit/mib, err)
	}
	t.Logf("idle: cgroup usage %d MiB, VmRSS %d MiB; limit set to %d MiB; %d workers × %d MiB files need %d MiB more",
		idle/mib, rss/mib, limit/mib, workers, fileSize/mib, workers*fileSize/mib)

	// If the daemon hung for good, every opener would hang with it:
	// SIGKILL frees them, and the test fails.
	stuck := time.AfterFunc(60*time.Second, func() { syscall.Kill(d.Pid, syscall.SIGKILL) })
	var burstPaths []string
	for i := range openers {
		burstPaths = append(burstPaths, paths[i%files])
	}
	start := time.Now()
	res := openAll(burstPaths)
	if !stuck.Stop() {
		t.Fatal("the opens were still blocked 60 s into the pressure: the daemon hung (it was killed to free them)")
	}
	took := time.Since(start)
	var durations []time.Duration
	allowed, denied := 0, 0
	for i, r := range res {
		durations = append(durations, r.took)
		switch {
		case r.err == nil:
			allowed++
		case errors.Is(r.err, unix.EPERM):
			denied++
		default:
			t.Errorf("open %d of %s: %v", i, filepath.Base(burstPaths[i]), r.err)
		}
		if r.took > budget+margin {
			t.Errorf("open %d of %s took %v, past the budget %v (+%v)", i, filepath.Base(burstPaths[i]), r.took, budget, margin)
		}
	}
	p50, _, mx := latencies(durations)
	hits, kills, peak := cg.pressure()
	died, exitErr := d.exited()
	for wait := time.Now().Add(5 * time.Second); kills > 0 && !died && time.Now().Before(wait); {
		time.Sleep(10 * time.Millisecond) // killed: the exit is being reaped
		died, exitErr = d.exited()
	}
	t.Logf("%d opens of %d × %d MiB files in %v: %d allowed, %d denied; open p50 %v, max %v; failcnt %d, OOM kills %d, peak usage %d MiB of %d; daemon died: %v (%v)",
		openers, files, fileSize/mib, took.Round(time.Millisecond), allowed, denied, p50, mx, hits, kills, peak/mib, limit/mib, died, exitErr)
	if hits == 0 && kills == 0 && peak < limit-mib {
		t.Errorf("the cgroup's limit (%d MiB) was never reached (peak %d MiB): the daemon was not starved, the test tests nothing", limit/mib, peak/mib)
	}

	// After the pressure: the daemon protects, or its death released
	// everything and a daemon started again (outside the cgroup) does.
	if !died {
		c := d.counters()
		t.Logf("the daemon survived: scans %v, errors %v, timed_out %v, kernel_denied %v, overloaded %v",
			c["scans"], c["errors"], c["timed_out"], c["kernel_denied"], c["overloaded"])
		if !deniedWithin(t, bad, 10*time.Second) {
			t.Errorf("EICAR not denied within 10 s after the pressure: the daemon survived but does not protect")
		}
		return
	}
	if kills == 0 {
		t.Errorf("the daemon died (%v) without an OOM kill in its cgroup", exitErr)
	}
	d.opts.cgroupProcs = ""
	d.restart()
	if !deniedWithin(t, bad, 10*time.Second) {
		t.Errorf("EICAR not denied by the daemon restarted after the OOM kill")
	}
}
