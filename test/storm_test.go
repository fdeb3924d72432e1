package test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3" // the "sqlite3" driver, for the read-only integrity check
	"golang.org/x/sys/unix"

	"github.com/fanguard/fanguard/internal/testutil"
	"github.com/fanguard/fanguard/quarantine"
)

// The promises "no hang" and "crash without harm": a storm of opens from
// many readers is answered within the budget, and SIGKILL of the daemon in
// the middle of one releases every held opener, loses no detected file and
// leaves the quarantine database intact.

// stormFile is one file of a storm and what it holds.
type stormFile struct {
	path     string
	content  []byte
	detected bool
}

// stormContent is the content of storm file i: small and varied when
// clean; when detected, EICAR or the test marker, with a varied tail so
// that sha256 sums differ (EICAR's repeat every 50 files: the vault shares
// their content).
func stormContent(i int, detected bool) []byte {
	switch {
	case !detected:
		head := fmt.Sprintf("clean storm file %d\n", i)
		return []byte(head + strings.Repeat(string(rune('a'+i%26)), (i*7919)%3000))
	case i%2 == 0:
		return []byte(eicar + strings.Repeat(" ", i%50)) // at most 128 bytes: still EICAR
	default:
		return []byte(fmt.Sprintf("storm file %d\nFANGUARD-TEST-MALWARE-MARKER\n%s", i, strings.Repeat("x", i%500)))
	}
}

// writeStormFiles writes n files named prefix%05d in dir; every
// detectEvery-th is detected (none if detectEvery is 0).
func writeStormFiles(t *testing.T, dir, prefix string, n, detectEvery int) []stormFile {
	t.Helper()
	files := make([]stormFile, n)
	for i := range files {
		det := detectEvery > 0 && i%detectEvery == detectEvery-1
		files[i] = stormFile{path: filepath.Join(dir, fmt.Sprintf("%s%05d", prefix, i)), content: stormContent(i, det), detected: det}
		if err := os.WriteFile(files[i].path, files[i].content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return files
}

// stormErrors collects failures from many goroutines without touching the
// testing.T, so that a goroutine still running after the test gave up
// cannot log into a finished test.
type stormErrors struct {
	mu    sync.Mutex // guards n and first
	n     int
	first []string
}

func (e *stormErrors) add(format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.n++
	if len(e.first) < 10 {
		e.first = append(e.first, fmt.Sprintf(format, args...))
	}
}

// report fails t with the errors collected, if any.
func (e *stormErrors) report(t *testing.T) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range e.first {
		t.Error(s)
	}
	if e.n > len(e.first) {
		t.Errorf("... and %d more failures", e.n-len(e.first))
	}
}

// stormWait waits for wg up to timeout and reports whether it finished.
func stormWait(wg *sync.WaitGroup, timeout time.Duration) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// TestStorm: NumCPU×4 readers open 20,000 files 200,000 times, 1 file in
// 100 detected. Every open is answered within the budget, clean ones with
// their content, detected ones with EPERM; the daemon's own decision
// latency stays within the budget, its counters show no timeout, error or
// overload and one answer per event, and its fds return to their level.
func TestStorm(t *testing.T) {
	testutil.RequireRoot(t)
	const (
		nFiles      = 20_000
		nOpens      = 10 * nFiles
		detectEvery = 100
		nDetected   = nFiles / detectEvery
		budget      = 5 * time.Second
	)
	readers := runtime.NumCPU() * 4

	// The files are written before the daemon starts: the writers' opens
	// never reach it, so its latency histogram holds the storm alone.
	dir := testutil.MountTmpfs(t)
	began := time.Now()
	files := writeStormFiles(t, dir, "f", nFiles, detectEvery)
	t.Logf("wrote %d files (%d detected) in %v", nFiles, nDetected, time.Since(began).Round(time.Millisecond))
	d := startDaemon(t, options{dir: dir, config: fmt.Sprintf("budget = %q", budget)})
	fdsBefore := daemonFdsButDB(d)

	// Each file 10 times, in an order that mixes first opens (scans) with
	// cached ones, and sends concurrent opens of one file now and then.
	order := make([]int32, nOpens)
	for i := range order {
		order[i] = int32(i % nFiles)
	}
	rand.New(rand.NewPCG(7, 7)).Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })

	lat := make([]time.Duration, nOpens)
	var next, denied atomic.Int64
	var errs stormErrors
	var wg sync.WaitGroup
	began = time.Now()
	for range readers {
		wg.Go(func() {
			for {
				k := next.Add(1) - 1
				if k >= nOpens {
					return
				}
				f := &files[order[k]]
				start := time.Now()
				fh, err := os.Open(f.path)
				lat[k] = time.Since(start)
				var b []byte
				if err == nil {
					b, err = io.ReadAll(fh)
					fh.Close()
				}
				switch {
				case f.detected && errors.Is(err, unix.EPERM):
					denied.Add(1)
				case f.detected:
					errs.add("detected %s: read %d bytes, err %v; want EPERM", f.path, len(b), err)
				case err != nil:
					errs.add("clean %s: %v", f.path, err)
				case !bytes.Equal(b, f.content):
					errs.add("clean %s: read %d bytes that differ from the %d written", f.path, len(b), len(f.content))
				}
			}
		})
	}
	if !stormWait(&wg, 3*time.Minute) {
		t.Fatalf("storm not over after 3 min: %d of %d opens started; an opener hangs", next.Load(), nOpens)
	}
	elapsed := time.Since(began)
	errs.report(t)
	if want := int64(nOpens / nFiles * nDetected); denied.Load() != want {
		t.Errorf("%d opens denied, want %d", denied.Load(), want)
	}
	p50, p99, largest := latencies(lat)
	t.Logf("%d readers, %d opens in %v (%.0f opens/s): open latency p50 %v, p99 %v, max %v",
		readers, nOpens, elapsed.Round(time.Millisecond), float64(nOpens)/elapsed.Seconds(), p50, p99, largest)
	if largest > budget {
		t.Errorf("an open took %v, more than the budget %v", largest, budget)
	}

	// The fds of the events are closed right after their answers: none
	// refers to a file on the tmpfs any more, and the daemon holds no more
	// fds than before, but for the quarantine database's connection pool,
	// which grows with the first detections. Count before talking to the
	// control socket, whose connection is an fd too.
	var after []string
	for range 100 {
		if after = daemonFdsButDB(d); len(after) <= len(fdsBefore) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("daemon fds, leaving out the quarantine database's: %d before the storm, %d after", len(fdsBefore), len(after))
	if len(after) > len(fdsBefore) || slices.ContainsFunc(after, func(s string) bool { return strings.Contains(s, "="+dir+"/") }) {
		t.Errorf("daemon fds: before the storm %v, after %v", fdsBefore, after)
	}

	st := getStatus(t, d)
	c := st.Counters
	t.Logf("daemon decision latency: p50 %dµs, p99 %dµs, max %dµs over %d events", st.Latency.P50us, st.Latency.P99us, st.Latency.MaxUs, st.Latency.Count)
	t.Logf("daemon counters: events %v, scans %v, detections %v, cached_denials %v, dedup_waits %v, cache_hits %v, kernel_marks_added %v",
		c["events"], c["scans"], c["detections"], c["cached_denials"], c["dedup_waits"], c["cache_hits"], c["kernel_marks_added"])
	if m := time.Duration(st.Latency.MaxUs) * time.Microsecond; m > budget {
		t.Errorf("daemon decision latency max %v, more than the budget %v", m, budget)
	}
	for _, name := range []string{"timed_out", "errors", "answer_errors", "parse_errors", "kernel_denied", "overloaded", "overflows", "record_errors"} {
		if c[name] != 0 {
			t.Errorf("counter %s = %v, want 0", name, c[name])
		}
	}
	// Every clean file reaches the daemon once (then the kernel's ignore
	// mark answers), every open of a detected file each time.
	if lo := float64(nFiles + nDetected*(nOpens/nFiles-1)); c["events"] < lo || c["events"] > nOpens {
		t.Errorf("events = %v, want %v to %d", c["events"], lo, nOpens)
	}
	if float64(st.Latency.Count) != c["events"] {
		t.Errorf("%d decisions for %v events: each event is answered once", st.Latency.Count, c["events"])
	}
	if c["scans"] < nFiles || c["scans"] > 1.1*nFiles {
		t.Errorf("scans = %v, want about one per file (%d)", c["scans"], nFiles)
	}
	if c["detections"] < nDetected || c["detections"] > 2*nDetected {
		t.Errorf("detections = %v, want about one per detected file (%d)", c["detections"], nDetected)
	}
	if c["cached_denials"] > float64(nDetected*nOpens/nFiles) {
		t.Errorf("cached_denials = %v, more than the %d opens of detected files", c["cached_denials"], nDetected*nOpens/nFiles)
	}
	stopped := d.stop()
	if stopped["events"] != c["events"] {
		t.Errorf("events = %v at the stop, %v after the storm: something opened files since", stopped["events"], c["events"])
	}
}

// crashStorm is the storm of TestCrashDuringStorm: readers opening clean
// files and freshly written detected ones, a writer adding detected files,
// and the test's record of what each open met.
type crashStorm struct {
	epoch time.Time
	clean []stormFile

	mu       sync.Mutex         // guards the following
	detected []*stormFile       // written by the writer, oldest first
	probes   []*stormFile       // written by the probes
	slow     []*stormFile       // written by the slow opener
	probed   []stormOpen        // the probes' opens that were allowed
	windows  [][2]time.Duration // from a kill to READY=1 of the next daemon: no protection

	stop  atomic.Bool
	slots []*stormSlot
	errs  stormErrors
}

// stormSlot is one reader: its open under way and the opens it made.
type stormSlot struct {
	start atomic.Int64  // since the epoch, of the open under way; -1 when none
	seq   atomic.Uint64 // opens finished

	// Owned by the reader until the storm is over:
	opens   []stormOpen // every open: start and end of os.Open
	allowed []stormOpen // the opens of detected files that were allowed
	denied  int         // opens of detected files denied
	gone    int         // opens of detected files already moved away
	clean   int         // opens of clean files
}

type stormOpen struct {
	start, end time.Duration // since the epoch
	path       string
}

func (s *crashStorm) now() time.Duration { return time.Since(s.epoch) }

// pick chooses a clean file, or one in 8 times one of the last detected
// files written (those likely to be still in place).
func (s *crashStorm) pick(rng *rand.Rand) *stormFile {
	if rng.IntN(8) == 0 {
		s.mu.Lock()
		n := len(s.detected)
		var f *stormFile
		if n > 0 {
			f = s.detected[n-1-rng.IntN(min(n, 32))]
		}
		s.mu.Unlock()
		if f != nil {
			return f
		}
	}
	return &s.clean[rng.IntN(len(s.clean))]
}

// read is one reader's loop.
func (s *crashStorm) read(sl *stormSlot, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 1))
	for !s.stop.Load() {
		s.open(sl, s.pick(rng))
	}
}

// open opens f for reader sl, notes when, and checks what it got. It
// returns the open's error.
func (s *crashStorm) open(sl *stormSlot, f *stormFile) error {
	start := s.now()
	sl.start.Store(int64(start))
	fh, err := os.Open(f.path)
	end := s.now()
	sl.start.Store(-1)
	sl.seq.Add(1)
	var b []byte
	if err == nil {
		b, err = io.ReadAll(fh)
		fh.Close()
	}
	op := stormOpen{start, end, f.path}
	sl.opens = append(sl.opens, op)
	switch {
	case !f.detected && err != nil:
		s.errs.add("clean %s: %v", f.path, err)
	case !f.detected && !bytes.Equal(b, f.content):
		s.errs.add("clean %s: read %d bytes that differ from the %d written", f.path, len(b), len(f.content))
	case !f.detected:
		sl.clean++
	case errors.Is(err, unix.EPERM):
		sl.denied++
	case errors.Is(err, unix.ENOENT):
		sl.gone++ // quarantined
	case err != nil:
		s.errs.add("detected %s: %v; want EPERM, ENOENT or (unprotected) its content", f.path, err)
	case !bytes.Equal(b, f.content):
		s.errs.add("detected %s: read %d bytes that differ from the %d written", f.path, len(b), len(f.content))
	default:
		sl.allowed = append(sl.allowed, op)
	}
	return err
}

// write adds a fresh detected file every 20 ms until the storm stops.
func (s *crashStorm) write(dir string) {
	for i := 0; !s.stop.Load(); i++ {
		f := &stormFile{path: filepath.Join(dir, fmt.Sprintf("det%05d", i)), content: stormContent(i, true), detected: true}
		if err := os.WriteFile(f.path, f.content, 0o644); err != nil {
			s.errs.add("writing %s: %v", f.path, err)
		} else {
			s.mu.Lock()
			s.detected = append(s.detected, f)
			s.mu.Unlock()
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// slowContent is a detected file that the test_slow rule takes about
// 0.2 s to match (see testRules): its opener is held by the daemon that
// long, so a kill finds it held.
func slowContent(i int) []byte {
	return []byte(strings.Repeat("a", 3_000) + fmt.Sprintf("FANGUARD-SLOW-TEST %d", i))
}

// readSlow opens slow files until the storm stops, so that one worker of
// the daemon is busy with one nearly all the time. A file that was denied
// is left to the daemon to move; one that was allowed (no daemon
// protected it) is opened again, which keeps the number of slow files
// left at their path small.
func (s *crashStorm) readSlow(sl *stormSlot, dir string) {
	var f *stormFile
	for i := 0; !s.stop.Load(); {
		if f == nil {
			f = &stormFile{path: filepath.Join(dir, fmt.Sprintf("slow%04d", i)), content: slowContent(i), detected: true}
			i++
			if err := os.WriteFile(f.path, f.content, 0o644); err != nil {
				s.errs.add("writing %s: %v", f.path, err)
				return
			}
			s.mu.Lock()
			s.slow = append(s.slow, f)
			s.mu.Unlock()
		}
		if err := s.open(sl, f); err != nil {
			f = nil
		} else {
			time.Sleep(5 * time.Millisecond) // no spinning while unprotected
		}
	}
}

// held returns, for each reader with an open under way that started before
// at, its index and how many opens it had finished.
func (s *crashStorm) held(at time.Duration) map[int]uint64 {
	m := make(map[int]uint64)
	for i, sl := range s.slots {
		seq := sl.seq.Load()
		if st := sl.start.Load(); st >= 0 && time.Duration(st) < at {
			m[i] = seq
		}
	}
	return m
}

// probe writes a fresh EICAR file every 10 ms and opens it, until an open
// is denied; it returns when. Probe files opened before that are
// detected files left in place; all are checked at the end like the rest.
func (s *crashStorm) probe(dir string, kill int, until time.Duration) (time.Duration, error) {
	for j := 0; ; j++ {
		if s.stop.Load() {
			return 0, errors.New("the storm stopped")
		}
		f := &stormFile{path: filepath.Join(dir, fmt.Sprintf("probe%02d-%03d", kill, j)), content: []byte(eicar), detected: true}
		if err := os.WriteFile(f.path, f.content, 0o644); err != nil {
			return 0, err
		}
		s.mu.Lock()
		s.probes = append(s.probes, f)
		s.mu.Unlock()
		start := s.now()
		_, err := os.ReadFile(f.path)
		now := s.now()
		switch {
		case errors.Is(err, unix.EPERM):
			return now, nil
		case err != nil:
			return 0, fmt.Errorf("probe %s: %w", f.path, err)
		case now > until:
			return 0, fmt.Errorf("fresh EICAR files still open %v after the kill", until)
		}
		// Allowed: the open must have begun before READY=1 of the
		// restarted daemon (checked once the windows are known).
		s.mu.Lock()
		s.probed = append(s.probed, stormOpen{start, now, f.path})
		s.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCrashDuringStorm: during a storm of opens with detected files being
// quarantined, SIGKILL the daemon 10 times at random moments and restart
// it. Every opener held at a kill returns within 2 s; the restarted daemon
// denies a fresh EICAR file within 2 s of its restart; opens of detected
// files are allowed only while no daemon protects; at the end the
// quarantine database passes integrity_check and every detected file is
// either at its path, whole, and denied again, or in the vault with its
// content, recorded.
func TestCrashDuringStorm(t *testing.T) {
	testutil.RequireRoot(t)
	const (
		nClean   = 2_000
		kills    = 10
		budget   = 5 * time.Second
		released = 2 * time.Second // openers held at a kill are let go within this
		protects = 2 * time.Second // a restarted daemon denies again within this of the restart
	)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	dir := testutil.MountTmpfs(t)
	s := &crashStorm{clean: writeStormFiles(t, dir, "clean", nClean, 0)}
	d := startDaemon(t, options{dir: dir, config: fmt.Sprintf("budget = %q", budget), quarantine: `action = "quarantine"`})
	s.epoch = time.Now()

	readers := runtime.NumCPU() * 4
	var wg sync.WaitGroup
	for i := range readers {
		sl := &stormSlot{}
		sl.start.Store(-1)
		s.slots = append(s.slots, sl)
		wg.Go(func() { s.read(sl, seed+uint64(i)) })
	}
	wg.Go(func() { s.write(dir) })
	slowSlot := &stormSlot{}
	slowSlot.start.Store(-1)
	s.slots = append(s.slots, slowSlot)
	wg.Go(func() { s.readSlow(slowSlot, dir) })
	t.Cleanup(func() { // if the test gives up early: before the daemon is killed and the tmpfs unmounted
		s.stop.Store(true)
		stormWait(&wg, 10*time.Second)
	})

	type killResult struct {
		at, reaped, ready, protected time.Duration
		held                         int
		slowHeld                     bool // the slow opener was held at the kill
	}
	var results []killResult
	for k := range kills {
		time.Sleep(time.Duration(100+rng.IntN(900)) * time.Millisecond)
		at := s.now()
		held := s.held(at)
		d.kill()
		reaped := s.now()
		probed := make(chan error, 1)
		var protected time.Duration
		go func() {
			var err error
			protected, err = s.probe(dir, k, reaped+30*time.Second)
			probed <- err
		}()
		d.restart() // the process is gone already: it starts the daemon again and waits for READY=1
		ready := s.now()
		s.mu.Lock()
		s.windows = append(s.windows, [2]time.Duration{at, ready})
		s.mu.Unlock()
		if err := <-probed; err != nil {
			t.Fatalf("kill %d: %v", k, err)
		}
		// A hang shows here; the exact release times come from the opens.
		for i, seq := range held {
			for s.slots[i].seq.Load() == seq {
				if s.now()-at > 10*time.Second {
					t.Fatalf("kill %d: reader %d still held 10 s after the kill", k, i)
				}
				time.Sleep(time.Millisecond)
			}
		}
		_, slowHeld := held[len(s.slots)-1]
		results = append(results, killResult{at: at, reaped: reaped, ready: ready, protected: protected, held: len(held), slowHeld: slowHeld})
	}
	time.Sleep(500 * time.Millisecond) // the last daemon under the storm too
	s.stop.Store(true)
	if !stormWait(&wg, 10*time.Second) {
		t.Fatal("storm readers still blocked 10 s after the storm stopped")
	}
	s.errs.report(t)

	// (a) Release and (b) protection, per kill.
	var lat []time.Duration
	var opens, clean, denied, gone int
	var allowed []stormOpen
	for _, sl := range s.slots {
		for _, op := range sl.opens {
			lat = append(lat, op.end-op.start)
		}
		opens += len(sl.opens)
		clean += sl.clean
		denied += sl.denied
		gone += sl.gone
		allowed = append(allowed, sl.allowed...)
	}
	var maxRelease, maxProtect, maxReady time.Duration
	slowHeld := 0
	for k, r := range results {
		if r.slowHeld {
			slowHeld++
		}
		var release time.Duration
		inflight := 0
		for _, sl := range s.slots {
			for _, op := range sl.opens {
				if op.start <= r.at && op.end > r.at {
					inflight++
					release = max(release, op.end-r.at)
				}
			}
		}
		protect, ready := r.protected-r.reaped, r.ready-r.reaped
		t.Logf("kill %d at %v: %d opens in flight (%d seen held, slow one %v), all released %v after the kill; reaped after %v; restarted daemon READY=1 after %v, denies a fresh EICAR after %v",
			k, r.at.Round(time.Millisecond), inflight, r.held, r.slowHeld, release.Round(time.Microsecond), (r.reaped - r.at).Round(time.Microsecond),
			ready.Round(time.Millisecond), protect.Round(time.Millisecond))
		if release > released {
			t.Errorf("kill %d: an opener held at the kill returned %v after it (want ≤ %v)", k, release, released)
		}
		if protect > protects {
			t.Errorf("kill %d: the restarted daemon denied a fresh EICAR file %v after the restart (want ≤ %v)", k, protect, protects)
		}
		maxRelease, maxProtect, maxReady = max(maxRelease, release), max(maxProtect, protect), max(maxReady, ready)
	}
	t.Logf("max: openers released %v after a kill; READY=1 %v after a restart; protecting %v after a restart", maxRelease.Round(time.Microsecond),
		maxReady.Round(time.Millisecond), maxProtect.Round(time.Millisecond))
	if slowHeld < kills/2 {
		t.Errorf("the slow opener was held at %d kills of %d: too few to test the release of held openers", slowHeld, kills)
	}
	var slowLat []time.Duration
	for _, op := range slowSlot.opens {
		slowLat = append(slowLat, op.end-op.start)
	}
	sp50, _, smax := latencies(slowLat)
	t.Logf("slow opener: %d opens (%d denied, %d allowed while unprotected), p50 %v, max %v", len(slowLat), slowSlot.denied, len(slowSlot.allowed),
		sp50.Round(time.Millisecond), smax.Round(time.Millisecond))
	p50, p99, largest := latencies(lat)
	t.Logf("%d readers, %d opens (%d clean, %d detected denied, %d detected already quarantined, %d detected allowed while unprotected): open latency p50 %v, p99 %v, max %v",
		readers, opens, clean, denied, gone, len(allowed), p50, p99, largest)
	if largest > budget {
		t.Errorf("an open took %v, more than the budget %v", largest, budget)
	}
	if denied == 0 || gone == 0 {
		t.Errorf("%d detected opens denied, %d after their quarantine: the storm did not exercise the quarantine", denied, gone)
	}
	// A detected file opens only while no daemon protects: between a kill
	// (the kernel allows what the dead daemon held) and READY=1 of the next.
	for _, op := range append(allowed, s.probed...) {
		unprotected := false
		for _, w := range s.windows {
			if op.start < w[1] && op.end > w[0] {
				unprotected = true
			}
		}
		if !unprotected {
			t.Errorf("detected %s opened from %v to %v, while a daemon protected (unprotected: %v)", op.path, op.start, op.end, s.windows)
		}
	}

	// Every detected file still at its path is denied by the last daemon.
	all := slices.Concat(s.detected, s.probes, s.slow)
	atPath := 0
	for _, f := range all {
		if _, err := os.Lstat(f.path); err != nil {
			continue
		}
		atPath++
		_, err := os.ReadFile(f.path)
		if !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.ENOENT) { // ENOENT: quarantined meanwhile
			t.Errorf("detected %s at its path after the last restart: open %v, want EPERM", f.path, err)
		}
	}
	// The last daemon moves them into the vault.
	left := 0
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		left = 0
		for _, f := range all {
			if _, err := os.Lstat(f.path); err == nil {
				left++
			}
		}
		if left == 0 || time.Now().After(deadline) {
			break
		}
	}
	c := d.stop()
	t.Logf("%d detected files written (%d by the probes, %d slow); %d still at their path after the storm, %d after the last daemon's quarantine; last daemon: detections %v, quarantined %v, quarantine_errors %v, record_errors %v, timed_out %v",
		len(all), len(s.probes), len(s.slow), atPath, left, c["detections"], c["quarantined"], c["quarantine_errors"], c["record_errors"], c["timed_out"])
	for _, name := range []string{"timed_out", "errors", "record_errors", "kernel_denied"} {
		if c[name] != 0 {
			t.Errorf("last daemon: counter %s = %v, want 0", name, c[name])
		}
	}

	// (c) The database is intact.
	db := filepath.Join(d.Work, "quarantine.db")
	if res := quarantineIntegrity(t, db); res != "ok" {
		t.Fatalf("PRAGMA integrity_check: %s", res)
	}

	// (d) No detected file is lost: at its path with its content, or
	// recorded with its content in the vault.
	store, err := quarantine.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	recs, err := store.List(context.Background(), quarantine.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	vault, err := quarantine.OpenVault(filepath.Join(d.Work, "vault"))
	if err != nil {
		t.Fatal(err)
	}
	vaultContent := func(name string) ([]byte, error) {
		r, err := vault.Open(name)
		if err != nil {
			return nil, err
		}
		defer r.Close()
		return io.ReadAll(r) // checks size and sha256 at the end
	}
	byPath := make(map[string][]quarantine.Record)
	states := make(map[string]int)
	for _, r := range recs {
		byPath[string(r.Path)] = append(byPath[string(r.Path)], r)
		states[r.State]++
		if r.State == quarantine.StateQuarantined {
			if b, err := vaultContent(r.VaultName); err != nil {
				t.Errorf("record %d (%s): vault file %s: %v", r.ID, r.Path, r.VaultName, err)
			} else if len(b) != int(r.Size) {
				t.Errorf("record %d (%s): vault file holds %d bytes, the record says %d", r.ID, r.Path, len(b), r.Size)
			}
		}
	}
	var inPlace, inVault, lost int
	for _, f := range all {
		b, err := os.ReadFile(f.path) // no daemon now
		if err == nil {
			inPlace++
			if !bytes.Equal(b, f.content) {
				t.Errorf("detected %s at its path holds %d bytes that differ from the %d written", f.path, len(b), len(f.content))
			}
			continue
		}
		found := false
		for _, r := range byPath[f.path] {
			if r.VaultName == "" {
				continue
			}
			if v, err := vaultContent(r.VaultName); err == nil && bytes.Equal(v, f.content) {
				found = true
				break
			}
		}
		if found {
			inVault++
			continue
		}
		lost++
		if lost <= 10 {
			var desc []string
			for _, r := range byPath[f.path] {
				desc = append(desc, fmt.Sprintf("record %d %s vault %q", r.ID, r.State, r.VaultName))
			}
			t.Errorf("detected %s lost: not at its path (%v), not in the vault; its records: %v", f.path, err, desc)
		}
	}
	t.Logf("%d records by state %v; detected files: %d at their path, %d in the vault, %d lost", len(recs), states, inPlace, inVault, lost)
	if lost > 0 {
		t.Errorf("%d detected files lost", lost)
	}
	// Every interrupted move was settled at a restart, and the last daemon
	// stopped cleanly: no move is left half-way.
	if states[quarantine.StateQuarantining] > 0 {
		t.Errorf("%d records still %q after a clean stop", states[quarantine.StateQuarantining], quarantine.StateQuarantining)
	}
	events := make(map[string]int)
	for _, r := range recs {
		full, err := store.Get(context.Background(), r.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range full.History {
			events[e.What]++
		}
	}
	t.Logf("history events: %v", events)
	// The vault holds the content of quarantined records only: no
	// half-written file, no orphan.
	needed := make(map[string]bool)
	for _, r := range recs {
		if r.State == quarantine.StateQuarantined {
			needed[r.VaultName] = true
		}
	}
	des, err := os.ReadDir(vault.Dir())
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range des {
		if !needed[de.Name()] {
			t.Errorf("vault file %s: no quarantined record names it", de.Name())
		}
	}
}

// quarantineIntegrity runs PRAGMA integrity_check on the database at path,
// opened read-only, and returns its findings ("ok" when intact).
func quarantineIntegrity(t *testing.T, path string) string {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+(&url.URL{Path: path}).EscapedPath()+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`PRAGMA integrity_check`)
	if err != nil {
		t.Fatalf("PRAGMA integrity_check: %v", err)
	}
	defer rows.Close()
	var res []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		res = append(res, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(res, "; ")
}

// daemonFdsButDB lists the daemon's open fds with what they refer to, leaving
// out those of its quarantine database (SQLite's connection pool).
func daemonFdsButDB(d *daemon) []string {
	dir := fmt.Sprintf("/proc/%d/fd", d.Pid)
	des, _ := os.ReadDir(dir)
	var out []string
	for _, de := range des {
		target, _ := os.Readlink(filepath.Join(dir, de.Name()))
		if !strings.HasPrefix(target, filepath.Join(d.Work, "quarantine.db")) {
			out = append(out, de.Name()+"="+target)
		}
	}
	return out
}
