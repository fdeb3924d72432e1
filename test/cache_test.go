package test

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// writeSettled writes files on the protected tmpfs and waits until the
// daemon has seen each writer's close, so that counters read afterwards
// reflect only what the test does next.
func writeSettled(t *testing.T, d *daemon, files map[string]string) {
	t.Helper()
	before := d.counters()["invalidations"]
	for name, content := range files {
		writeFile(t, filepath.Join(d.Dir, name), content, 0o644)
	}
	d.waitCounter("invalidations", before+float64(len(files)))
}

func read(t *testing.T, path string) error {
	t.Helper()
	_, err := os.ReadFile(path)
	return err
}

func TestSecondOpenNotScanned(t *testing.T) {
	d := startDaemon(t, options{})
	writeSettled(t, d, map[string]string{"clean": "nothing here\n"})
	path := filepath.Join(d.Dir, "clean")

	c0 := d.counters()
	if err := read(t, path); err != nil {
		t.Fatal(err)
	}
	// The mark goes on before the answer; its counter just after.
	c1 := d.waitCounter("kernel_marks_added", c0["kernel_marks_added"]+1)
	for i := range 10 {
		if err := read(t, path); err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
	}
	c2 := d.counters()
	if first := delta(c0, c1); first["events"] != 1 || first["scans"] != 1 || first["kernel_marks_added"] != 1 {
		t.Errorf("first open: %v, want 1 event, 1 scan, 1 kernel mark", first)
	}
	if again := delta(c1, c2); again["events"] != 0 || again["scans"] != 0 {
		t.Errorf("10 opens more: %d events and %d scans reached the daemon, want none", int(again["events"]), int(again["scans"]))
	}
}

// TestChangesRescan: every way of changing a cached clean file makes the
// next open scan it again (here, the change makes it a detection); chmod
// changes no content and keeps the cached verdict.
func TestChangesRescan(t *testing.T) {
	d := startDaemon(t, options{})
	tests := []struct {
		name    string
		initial string
		change  func(path string) error
	}{
		{"write", strings.Repeat("a", len(eicar)), func(path string) error {
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteAt([]byte(eicar), 0)
			return err
		}},
		{"truncate", eicar + strings.Repeat("a", 100), func(path string) error {
			return os.Truncate(path, int64(len(eicar))) // no open: only the kernel's clearing of the mark
		}},
		{"O_TRUNC", "harmless", func(path string) error {
			return os.WriteFile(path, []byte(eicar), 0o644)
		}},
		{"fallocate", "FGSZ" + strings.Repeat("a", 96), func(path string) error {
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			return unix.Fallocate(int(f.Fd()), 0, 0, 4096)
		}},
		{"shared mmap then close", strings.Repeat("a", len(eicar)), func(path string) error {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				return err
			}
			defer f.Close() // the writer's close is what reveals the change
			m, err := unix.Mmap(int(f.Fd()), 0, len(eicar), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
			if err != nil {
				return err
			}
			copy(m, eicar)
			return unix.Munmap(m)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := strings.ReplaceAll(tt.name, " ", "_")
			path := filepath.Join(d.Dir, name)
			writeSettled(t, d, map[string]string{name: tt.initial})
			for range 2 {
				if err := read(t, path); err != nil {
					t.Fatalf("clean file: %v", err)
				}
			}
			c := d.counters()
			if err := read(t, path); err != nil {
				t.Fatal(err)
			}
			if n := delta(c, d.counters())["events"]; n != 0 {
				t.Fatalf("the clean file is not cached: %v events", n)
			}
			if err := tt.change(path); err != nil {
				t.Fatal(err)
			}
			// The change is seen at once by the kernel (its mark is
			// cleared) or, for a shared mapping, when the daemon has read
			// the writer's close: allow that a moment.
			deadline := time.Now().Add(2 * time.Second)
			for {
				err := read(t, path)
				if errors.Is(err, unix.EPERM) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("after %s, the open still gives %v; want EPERM from a rescan", tt.name, err)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}

	t.Run("chmod keeps the verdict", func(t *testing.T) {
		path := filepath.Join(d.Dir, "chmod")
		writeSettled(t, d, map[string]string{"chmod": "plain text"})
		read(t, path)
		c := d.counters()
		if err := os.Chmod(path, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := read(t, path); err != nil {
			t.Fatal(err)
		}
		if dl := delta(c, d.counters()); dl["events"] != 0 || dl["scans"] != 0 {
			t.Errorf("after chmod: %v events, %v scans; want none", dl["events"], dl["scans"])
		}
	})
}

func TestDetectedFileOpened100Times(t *testing.T) {
	d := startDaemon(t, options{})
	writeSettled(t, d, map[string]string{"eicar.com": eicar})
	path := filepath.Join(d.Dir, "eicar.com")
	c := d.counters()
	for i := range 100 {
		if err := read(t, path); !errors.Is(err, unix.EPERM) {
			t.Fatalf("open %d: %v, want EPERM", i, err)
		}
	}
	// The answer goes out before the verdict is cached: the next open may
	// come while the scan is still being wrapped up, and wait for its
	// verdict instead of finding it in the cache. Either way, no rescan.
	dl := d.deltaWhen(c, func(dl map[string]float64) bool { return dl["cached_denials"]+dl["dedup_waits"] >= 99 })
	if dl["scans"] != 1 || dl["events"] != 100 || dl["cached_denials"]+dl["dedup_waits"] != 99 {
		t.Errorf("100 opens: %v scans, %v events, %v cached denials + %v waits; want 1, 100, 99",
			dl["scans"], dl["events"], dl["cached_denials"], dl["dedup_waits"])
	}
}

// TestDetectedOnceThoughReadAtOnce: files written and opened at once, so
// that the writer's close often reaches the daemon after the detection:
// each file is scanned and recorded once, and later opens are cached
// denials.
func TestDetectedOnceThoughReadAtOnce(t *testing.T) {
	d := startDaemon(t, options{})
	const n = 200
	c := d.counters()
	for i := range n {
		p := filepath.Join(d.Dir, fmt.Sprintf("eicar%d.com", i))
		writeFile(t, p, eicar, 0o644)
		if err := read(t, p); !errors.Is(err, unix.EPERM) {
			t.Fatalf("%s: %v, want EPERM", p, err)
		}
	}
	d.waitCounter("invalidations", c["invalidations"]+n) // every writer's close seen
	for i := range n {
		if err := read(t, filepath.Join(d.Dir, fmt.Sprintf("eicar%d.com", i))); !errors.Is(err, unix.EPERM) {
			t.Fatalf("second open of eicar%d.com: %v, want EPERM", i, err)
		}
	}
	// Each file is empty at its writer's open, answered without a scan
	// (the rules match no empty content), then scanned once with EICAR.
	// A second open may still find its scan being wrapped up, and wait
	// for it: see TestDetectedFileOpened100Times.
	dl := d.deltaWhen(c, func(dl map[string]float64) bool { return dl["cached_denials"]+dl["dedup_waits"] >= n })
	if dl["detections"] != n || dl["scans"] != n || dl["empty_clean"] != n || dl["cached_denials"]+dl["dedup_waits"] != n {
		t.Errorf("%d files written, opened, opened again: %v detections, %v scans, %v empty opens unscanned, %v cached denials + %v waits; want %d, %d, %d, %d",
			n, dl["detections"], dl["scans"], dl["empty_clean"], dl["cached_denials"], dl["dedup_waits"], n, n, n, n)
	}
}

// TestRulesChangeRescansOnce: after SIGHUP with new rules, every cached
// file is scanned again once, with the new rules.
func TestRulesChangeRescansOnce(t *testing.T) {
	d := startDaemon(t, options{})
	const n = 20
	files := map[string]string{}
	for i := range n {
		files[fmt.Sprintf("f%02d", i)] = fmt.Sprintf("file %d\n", i)
	}
	files["f00"] = "NEW-RULE-MARKER\n" // clean now, detected by the rule added below
	writeSettled(t, d, files)
	readAll := func() (denied int) {
		for name := range files {
			if err := read(t, filepath.Join(d.Dir, name)); errors.Is(err, unix.EPERM) {
				denied++
			} else if err != nil {
				t.Fatal(err)
			}
		}
		return denied
	}
	readAll()
	c0 := d.counters()
	if denied := readAll(); denied != 0 {
		t.Fatalf("%d denied before the rule change", denied)
	}
	if dl := delta(c0, d.counters()); dl["scans"] != 0 {
		t.Fatalf("cached files scanned again: %v", dl["scans"])
	}

	// A reload that finds the same rules (same generation) keeps every
	// cached verdict.
	code, out, errOut := run(t, "reload", "--socket", d.Control)
	if code != 0 || !strings.Contains(out, "unchanged") {
		t.Fatalf("reload of unchanged rules: %d %q %q", code, out, errOut)
	}
	cu := d.counters()
	readAll()
	if dl := delta(cu, d.counters()); dl["scans"] != 0 || dl["events"] != 0 {
		t.Errorf("after a reload of unchanged rules: %v scans, %v events; want none", dl["scans"], dl["events"])
	}

	writeFile(t, filepath.Join(d.RulesDir, "new.yar"), `rule new_rule { strings: $m = "NEW-RULE-MARKER" condition: $m }`, 0o644)
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	d.waitLog(10*time.Second, "rules reloaded", `"unchanged": false`)
	c1 := d.counters()
	if denied := readAll(); denied != 1 {
		t.Errorf("%d denied after the rule change, want 1 (f00)", denied)
	}
	c2 := d.counters()
	readAll()
	c3 := d.counters()
	if dl := delta(c1, c2); dl["scans"] != n {
		t.Errorf("first pass after the change: %v scans, want %d", dl["scans"], n)
	}
	if dl := delta(c2, c3); dl["scans"] != 0 {
		t.Errorf("second pass after the change: %v scans, want 0", dl["scans"])
	}
	if c1["kernel_flushes"] < 1 || c1["reloads"] != 1 {
		t.Errorf("counters after reload: %v", c1)
	}
}

// TestConcurrentOpensOneScan: 16 opens of one large file at once cost one
// scan.
func TestConcurrentOpensOneScan(t *testing.T) {
	d := startDaemon(t, options{})
	big := strings.Repeat("all work and no play makes jack a dull boy\n", (24<<20)/43)
	writeSettled(t, d, map[string]string{"big": big})
	path := filepath.Join(d.Dir, "big")
	c := d.counters()
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			f, err := os.Open(path)
			if err != nil {
				t.Error(err)
				return
			}
			f.Close()
		}()
	}
	close(start)
	wg.Wait()
	dl := delta(c, d.counters())
	t.Logf("16 opens: %v events, %v waited for the running scan, %v cache hits", dl["events"], dl["dedup_waits"], dl["cache_hits"])
	if dl["scans"] != 1 {
		t.Errorf("16 concurrent opens of one file: %v scans, want 1", dl["scans"])
	}
}

// TestOpenForWriteAnsweredByDaemonCache: while another process holds a
// file open for writing, the kernel takes no ignore mark for it; the
// daemon's cache answers its opens instead, and correctly: when the holder
// writes a detection into it, the next open is denied.
func TestOpenForWriteAnsweredByDaemonCache(t *testing.T) {
	d := startDaemon(t, options{})
	writeSettled(t, d, map[string]string{"held": strings.Repeat("a", len(eicar))})
	path := filepath.Join(d.Dir, "held")
	// The holder opens the file read-write (no truncation), says so, waits,
	// then overwrites it with the EICAR string through the fd it holds.
	holder := exec.Command("/bin/sh", "-c", `exec 3<>"$0"; echo held; read x; printf '%s' "$1" >&3; echo wrote; read y`, path, eicar)
	stdin, _ := holder.StdinPipe()
	out, _ := holder.StdoutPipe()
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); holder.Wait() }()
	line := make([]byte, 6)
	if _, err := io.ReadFull(out, line[:5]); err != nil || string(line[:5]) != "held\n" {
		t.Fatalf("holder: %q, %v", line, err)
	}

	c := d.counters()
	for i := range 3 {
		if err := read(t, path); err != nil {
			t.Errorf("open %d of the clean file: %v", i, err)
		}
	}
	// An open that comes while the first scan is being wrapped up waits for
	// its verdict instead of hitting the cache.
	dl := delta(c, d.counters())
	if dl["events"] != 3 || dl["scans"] > 1 || dl["cache_hits"]+dl["dedup_waits"] < 2 {
		t.Errorf("3 opens of a file held open for write: %v events, %v scans, %v cache hits, %v waits; want 3 events (no kernel cache), at most 1 scan",
			dl["events"], dl["scans"], dl["cache_hits"], dl["dedup_waits"])
	}

	io.WriteString(stdin, "go\n")
	if _, err := io.ReadFull(out, line); err != nil || string(line) != "wrote\n" {
		t.Fatalf("holder: %q, %v", line, err)
	}
	if err := read(t, path); !errors.Is(err, unix.EPERM) {
		t.Errorf("open after the holder wrote EICAR: %v, want EPERM", err)
	}
}

// TestCacheBound: more distinct files than cache.entries: the daemon's
// cache evicts, counts it, and stays within its bound.
func TestCacheBound(t *testing.T) {
	d := startDaemon(t, options{tables: "[cache]\nentries = 100"})
	const n = 1000
	files := map[string]string{}
	for i := range n {
		files[fmt.Sprintf("f%04d", i)] = fmt.Sprintf("file %d\n", i)
	}
	writeSettled(t, d, files)
	for name := range files {
		if err := read(t, filepath.Join(d.Dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	// The last verdict is stored just after its answer.
	c := d.deltaWhen(map[string]float64{}, func(c map[string]float64) bool { return c["cache_evictions"] >= n-100 })
	if c["cache_entries"] > 100 || c["cache_evictions"] < n-100 {
		t.Errorf("cache of 100 after %d files: %v entries, %v evictions", n, c["cache_entries"], c["cache_evictions"])
	}
}
