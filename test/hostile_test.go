package test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/fanguard/fanguard/internal/testutil"
	"github.com/fanguard/fanguard/quarantine"
)

// Hostile files (issue 7, promise 5): names made to fool a terminal or a
// parser, sparse files far above any sane size, files changed under the
// scan or rewritten the moment their open is let through, special files,
// and rules made to explode. Each open is answered within the budget, the
// daemon stays up and bounded in memory, and what it logs and records
// shows the file safely.

// hostileMargin is what an open may take beyond the budget on a busy
// machine.
const hostileMargin = 500 * time.Millisecond

// hostileOpen opens path read-only and closes it, and returns how long the
// open took. It never reads: an allowed 100 GiB sparse file stays unread.
func hostileOpen(path string) (time.Duration, error) {
	start := time.Now()
	f, err := os.Open(path)
	took := time.Since(start)
	if err == nil {
		f.Close()
	}
	return took, err
}

// hostileRules writes rules into a rule directory of the test's own and
// returns it, for options.ruleDirs.
func hostileRules(t *testing.T, rules string) string {
	t.Helper()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "hostile.yar"), rules, 0o644)
	return dir
}

// hostileScanTimeout restarts d with scan_timeout set to timeout: the
// harness writes scan_timeout itself, and TOML refuses a key given twice.
func hostileScanTimeout(t *testing.T, d *daemon, timeout string) {
	t.Helper()
	b, err := os.ReadFile(d.Config)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(b), `scan_timeout = "60s"`, fmt.Sprintf("scan_timeout = %q", timeout), 1)
	if cfg == string(b) {
		t.Fatalf("no scan_timeout line to replace in %s:\n%s", d.Config, b)
	}
	writeFile(t, d.Config, cfg, 0o644)
	d.restart()
}

// hostileVmRSS returns the resident set size of pid in KiB.
func hostileVmRSS(pid int) (int64, error) {
	n, err := readRSS(pid)
	return n >> 10, err
}

// hostileRSS returns the resident set size of pid in KiB.
func hostileRSS(t *testing.T, pid int) int64 {
	t.Helper()
	n, err := hostileVmRSS(pid)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// hostileWatchRSS samples the resident set size of pid every 2 ms until
// the function it returns is called, which returns the peak in KiB.
func hostileWatchRSS(t *testing.T, pid int) func() int64 {
	t.Helper()
	peak := hostileRSS(t, pid)
	stop, done := make(chan struct{}), make(chan int64)
	go func() {
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				done <- peak
				return
			case <-tick.C:
			}
			if n, err := hostileVmRSS(pid); err == nil {
				peak = max(peak, n)
			}
		}
	}()
	return func() int64 {
		close(stop)
		return <-done
	}
}

// hostileInodeMarks counts the inode marks (the kernel's cached verdicts)
// of the daemon's fanotify groups, from /proc/PID/fdinfo.
func hostileInodeMarks(t *testing.T, d *daemon) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fdinfo", d.Pid))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", d.Pid, e.Name()))
		n += strings.Count(string(b), "fanotify ino:")
	}
	return n
}

// hostileUnsafeRune reports whether r must never reach a log or a
// terminal raw: the C0 controls but tab and newline, DEL, the C1 controls,
// and the other runes strconv does not call printable (bidirectional
// overrides, line and paragraph separators, invisible format characters),
// by the rule the command line's escaping follows.
func hostileUnsafeRune(r rune) bool {
	return r != '\t' && r != '\n' && !strconv.IsPrint(r)
}

// hostileShownSafely fails t if out (a log, a command's output) holds
// invalid UTF-8 or a rune that hostileUnsafeRune refuses, showing where.
func hostileShownSafely(t *testing.T, what, out string) {
	t.Helper()
	hostileCheckRunes(t, what, out, hostileUnsafeRune)
}

// hostileValidJSON fails t if out, JSON, holds invalid UTF-8 or a C0
// control other than a newline: what JSON must escape. (JSON may carry
// DEL, the C1 controls and format characters raw; encoding/json does.)
func hostileValidJSON(t *testing.T, what, out string) {
	t.Helper()
	hostileCheckRunes(t, what, out, func(r rune) bool { return r < 0x20 && r != '\n' })
}

func hostileCheckRunes(t *testing.T, what, out string, unsafe func(rune) bool) {
	t.Helper()
	for i := 0; i < len(out); {
		r, n := utf8.DecodeRuneInString(out[i:])
		if r == utf8.RuneError && n == 1 {
			t.Errorf("%s: raw invalid UTF-8 byte %#x at %d: %q", what, out[i], i, hostileAround(out, i))
		} else if unsafe(r) {
			t.Errorf("%s: raw %U at %d: %q", what, r, i, hostileAround(out, i))
		}
		i += n
	}
}

func hostileAround(s string, i int) string {
	return s[max(0, i-60):min(len(s), i+60)]
}

// hostileLogFields returns the fields of the first log line that contains
// all of parts, decoded from the JSON object that ends it, waiting up to
// 5 s.
func hostileLogFields(t *testing.T, d *daemon, parts ...string) map[string]any {
	t.Helper()
	line := d.waitLog(5*time.Second, parts...)
	i := strings.Index(line, "{")
	var f map[string]any
	if i < 0 || json.Unmarshal([]byte(line[i:]), &f) != nil {
		t.Fatalf("no JSON fields in log line %q", line)
	}
	return f
}

// hostileAsLogged is how a JSON log shows name: each byte that is not part
// of valid UTF-8 becomes U+FFFD, the rest is kept as it is.
func hostileAsLogged(name []byte) string {
	var sb strings.Builder
	for len(name) > 0 {
		r, n := utf8.DecodeRune(name)
		if r == utf8.RuneError && n == 1 {
			sb.WriteRune(utf8.RuneError)
		} else {
			sb.Write(name[:n])
		}
		name = name[n:]
	}
	return sb.String()
}

// hostileQuoted is how "fanguard quarantine list" and "show" print path:
// as it is when strconv.Quote would change nothing, Go-quoted otherwise.
func hostileQuoted(path string) string {
	q := strconv.Quote(path)
	if q[1:len(q)-1] == path {
		return path
	}
	return q
}

// TestHostileNames: EICAR under names made to fool a terminal (escape
// sequences, carriage returns, backspaces, bidirectional overrides), to
// break a parser (newlines, tabs, invalid UTF-8), at the limits (255-byte
// names, paths of nearly PATH_MAX bytes), or to pass for a deleted file.
// Each open is denied within the budget; each file gets exactly one record
// that holds its path bytes exactly and is quarantined; the daemon's log
// and the quarantine commands show every name escaped.
func TestHostileNames(t *testing.T) {
	const budget = 2 * time.Second
	d := startDaemon(t, options{config: fmt.Sprintf("budget = %q", budget), quarantine: `action = "quarantine"`})

	var c0 []byte // every C0 control but NUL and '/' is no control
	for b := byte(1); b < 0x20; b++ {
		c0 = append(c0, b)
	}
	escapes255 := strings.Repeat("\x1b[1m\x1b]0;x\x07", 30)[:251] + ".com"
	// A path of 4090 bytes, near PATH_MAX (4096 with its NUL, the
	// longest a system call takes): directories of 200 bytes, then a name
	// of at most 250 to make up the rest.
	deep := ""
	for 4090-len(d.Dir)-len(deep)-2 > 250 {
		deep = filepath.Join(deep, strings.Repeat("d", 199)+"\x1b")
	}
	deepName := "\x1b[2K" + strings.Repeat("n", 4090-len(d.Dir)-len(deep)-2-len("\x1b[2K")-len(".com")) + ".com"
	deep = filepath.Join(deep, deepName)

	tests := []struct {
		desc string
		name string // relative to d.Dir
	}{
		{"newline", "new\nline.com"},
		{"CSI colour", "\x1b[31mred\x1b[0m.com"},
		{"CSI clear screen and move", "\x1b[2J\x1b[H\x1b[1Aup.com"},
		{"OSC window title, BEL", "\x1b]0;owned\x07title.com"},
		{"OSC 8 hyperlink, ST", "\x1b]8;;http://example.invalid/\x1b\\click\x1b]8;;\x1b\\.com"},
		{"carriage return over the line", "harmless.txt\rEVIL.com"},
		{"backspaces", "evil\b\b\b\bgood.com"},
		{"DEL", "del\x7f.com"},
		{"C1 CSI as UTF-8", "c1\u009b31mred.com"},
		{"right-to-left override", "invoice\u202egnp.com"},
		{"line separator", "line\u2028sep.com"},
		{"invisible format character above U+FFFF", "tag\U000E0041.com"},
		{"0xff 0xfe", "bad\xff\xfe.com"},
		{"lone continuation bytes", "cont\x80\xbf.com"},
		{"overlong slash", "over\xc0\xaf.com"},
		{"truncated sequence", "trunc\xe2\x82.com"},
		{"tab", "tab\tname.com"},
		{"every C0 control", "c0" + string(c0) + ".com"},
		{"255 bytes", strings.Repeat("L", 251) + ".com"},
		{"255 bytes of escapes", escapes255},
		{"named like a deleted file", "trick.com (deleted)"},
		{"path of 4090 bytes", deep},
	}
	type opened struct {
		path string
		took time.Duration
	}
	var done []opened
	for _, tt := range tests {
		path := filepath.Join(d.Dir, tt.name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatalf("%s: %v", tt.desc, err)
		}
		writeFile(t, path, eicar, 0o644)
		took, err := hostileOpen(path)
		if !errors.Is(err, unix.EPERM) {
			t.Errorf("%s: open: %v, want EPERM", tt.desc, err)
		}
		if took > budget+hostileMargin {
			t.Errorf("%s: open took %v, budget %v", tt.desc, took, budget)
		}
		done = append(done, opened{path, took})
	}
	if n := len(filepath.Base(filepath.Join(d.Dir, escapes255))); n != 255 {
		t.Fatalf("the 255-byte name has %d bytes", n)
	}
	if n := len(filepath.Join(d.Dir, deep)); n != 4090 {
		t.Fatalf("the deep path has %d bytes, want 4090", n)
	}

	// An unlinked EICAR opened again through /proc/self/fd: the kernel
	// gives its path with " (deleted)" appended, which the record leaves
	// out (and the quarantine cannot move a file that is gone).
	gone := filepath.Join(d.Dir, "gone\x1b[8m.com")
	w, err := os.Create(gone)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.WriteString(eicar)
	os.Remove(gone)
	if took, err := hostileOpen(fmt.Sprintf("/proc/self/fd/%d", w.Fd())); !errors.Is(err, unix.EPERM) || took > budget+hostileMargin {
		t.Errorf("unlinked EICAR opened through /proc: %v in %v, want EPERM", err, took)
	}

	recs := records(t, d, len(tests)+1, 10*time.Second)
	if n := len(recs); n != len(tests)+1 {
		t.Errorf("%d records, want %d", n, len(tests)+1)
	}
	var goneRecs []string
	for _, r := range recs {
		if strings.Contains(string(r.Path), "gone") {
			goneRecs = append(goneRecs, string(r.Path))
		}
	}
	if len(goneRecs) != 1 || goneRecs[0] != gone {
		t.Errorf("records of the unlinked file: %q, want one of %q", goneRecs, gone)
	}
	for i, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			path := done[i].path
			var mine []quarantine.Record
			for _, r := range recs {
				if bytes.Equal(r.Path, []byte(path)) {
					mine = append(mine, r)
				}
			}
			if len(mine) != 1 {
				var got []string
				for _, r := range recs {
					got = append(got, strconv.Quote(string(r.Path)))
				}
				t.Fatalf("%d records with the path %q, want 1; records hold %v", len(mine), path, got)
			}
			r := mine[0]
			t.Logf("denied in %v, record %d", done[i].took, r.ID)

			// The log: the detection line carries the record id and the
			// path, escaped, lossless but for invalid UTF-8.
			f := hostileLogFields(t, d, "detection", fmt.Sprintf(`"record": %d,`, r.ID))
			if got, want := f["path"], hostileAsLogged([]byte(path)); got != want {
				t.Errorf("logged path %q, want %q", got, want)
			}

			// The file moved into the vault: its path is free.
			deadline := time.Now().Add(5 * time.Second)
			for {
				if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("the detected file is still at its path 5 s after the detection")
					break
				}
				time.Sleep(20 * time.Millisecond)
			}

			// show: the path escaped, nothing raw.
			code, out, errOut := run(t, "quarantine", "show", strconv.FormatInt(r.ID, 10), "--config", d.Config)
			if code != 0 {
				t.Fatalf("show: exit %d: %s", code, errOut)
			}
			hostileShownSafely(t, "quarantine show", out)
			if !strings.Contains(out, hostileQuoted(path)) {
				t.Errorf("show lacks the path as %s:\n%s", hostileQuoted(path), out)
			}
			code, out, errOut = run(t, "quarantine", "show", strconv.FormatInt(r.ID, 10), "--json", "--config", d.Config)
			var js struct {
				Path    string `json:"path"`
				PathB64 []byte `json:"path_b64"`
			}
			if code != 0 || json.Unmarshal([]byte(out), &js) != nil {
				t.Fatalf("show --json: exit %d, %s%s", code, out, errOut)
			}
			hostileValidJSON(t, "quarantine show --json", out)
			if !bytes.Equal(js.PathB64, []byte(path)) {
				t.Errorf("show --json: path_b64 %q, want %q", js.PathB64, path)
			}
			if utf8.ValidString(path) && js.Path != path {
				t.Errorf("show --json: path %q, want %q", js.Path, path)
			}
		})
	}

	// list, list --json and export: every path, escaped, in one go.
	code, out, errOut := run(t, "quarantine", "list", "--config", d.Config)
	if code != 0 {
		t.Fatalf("list: exit %d: %s", code, errOut)
	}
	hostileShownSafely(t, "quarantine list", out)
	if lines := strings.Count(out, "\n"); lines != len(tests)+2 {
		t.Errorf("list: %d lines for %d records and a header:\n%s", lines, len(tests)+1, out)
	}
	for _, o := range done {
		if !strings.Contains(out, hostileQuoted(o.path)) {
			t.Errorf("list lacks %s", hostileQuoted(o.path))
		}
	}
	code, out, errOut = run(t, "quarantine", "list", "--json", "--config", d.Config)
	var list []struct {
		ID      int64  `json:"id"`
		PathB64 []byte `json:"path_b64"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil {
		t.Fatalf("list --json: exit %d: %s%s", code, out, errOut)
	}
	hostileValidJSON(t, "quarantine list --json", out)
	code, out, errOut = run(t, "quarantine", "export", "--config", d.Config)
	if code != 0 {
		t.Fatalf("export: exit %d: %s", code, errOut)
	}
	hostileValidJSON(t, "quarantine export", out)
	exported := make(map[string]int)
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r struct {
			PathB64 []byte `json:"path_b64"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("export line %q: %v", sc.Text(), err)
		}
		exported[string(r.PathB64)]++
	}
	listed := make(map[string]int)
	for _, r := range list {
		listed[string(r.PathB64)]++
	}
	for _, o := range done {
		if exported[o.path] != 1 || listed[o.path] != 1 {
			t.Errorf("%q: %d times in export, %d in list --json, want 1", o.path, exported[o.path], listed[o.path])
		}
	}

	hostileShownSafely(t, "daemon log", d.Log())
	st := d.stop()
	if st["errors"] != 0 || st["record_errors"] != 0 || st["quarantine_errors"] != 1 || st["detections"] != float64(len(tests)+1) {
		t.Errorf("counters: %v", st)
	}
}

// TestHostilePathBeyondPathMax: a file at a path longer than PATH_MAX,
// reached one directory at a time, is denied within the budget like any
// other and recorded, and the log stays clean; the kernel cannot tell the
// daemon its path (readlink of the fd fails), so the record cannot hold it.
func TestHostilePathBeyondPathMax(t *testing.T) {
	const budget = 2 * time.Second
	d := startDaemon(t, options{config: fmt.Sprintf("budget = %q", budget)})
	dirfd, err := unix.Open(d.Dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	depth := len(d.Dir)
	comp := strings.Repeat("p", 250) + "\x1b"
	for depth < 5000 {
		if err := unix.Mkdirat(dirfd, comp, 0o755); err != nil {
			t.Fatal(err)
		}
		next, err := unix.Openat(dirfd, comp, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		unix.Close(dirfd)
		if err != nil {
			t.Fatal(err)
		}
		dirfd, depth = next, depth+1+len(comp)
	}
	defer unix.Close(dirfd)
	wfd, err := unix.Openat(dirfd, "deep\x1b[31m.com", unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	unix.Write(wfd, []byte(eicar))
	var st unix.Stat_t
	unix.Fstat(wfd, &st)
	unix.Close(wfd)

	start := time.Now()
	rfd, err := unix.Openat(dirfd, "deep\x1b[31m.com", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	took := time.Since(start)
	if err == nil {
		unix.Close(rfd)
	}
	if !errors.Is(err, unix.EPERM) {
		t.Errorf("open at depth %d bytes: %v, want EPERM", depth, err)
	}
	if took > budget+hostileMargin {
		t.Errorf("open took %v, budget %v", took, budget)
	}
	recs := records(t, d, 1, 5*time.Second)
	if len(recs) != 1 || recs[0].Ino != st.Ino {
		t.Fatalf("records %+v, want one of inode %d", recs, st.Ino)
	}
	t.Logf("path of %d bytes: denied in %v, recorded as %q", depth+len("/deep\x1b[31m.com"), took, recs[0].Path)
	d.waitLog(5*time.Second, "detection", fmt.Sprintf(`"record": %d,`, recs[0].ID))
	hostileShownSafely(t, "daemon log", d.Log())
	if c := d.stop(); c["errors"] != 0 || c["detections"] != 1 {
		t.Errorf("counters: %v", c)
	}
}

// TestHostileSparse: a sparse file of 100 GiB (tmpfs allocates nothing for
// it) is answered at once with on_oversize, whatever max_file_size allows
// (at most 4 GiB); a sparse file the daemon does scan costs it no more
// memory than the file's size, is answered within the budget with
// on_timeout, and its scan is ended by scan_timeout.
func TestHostileSparse(t *testing.T) {
	// The configuration refuses a max_file_size above 4 GiB.
	bad := filepath.Join(t.TempDir(), "fanguard.toml")
	writeFile(t, bad, `max_file_size = "200GiB"`+"\n", 0o644)
	expectRun(t, []string{"scan", "--config", bad, bad}, 2, nil, []string{"max_file_size", "out of range", "4GiB"})

	const budget = time.Second
	tests := []struct {
		maxFileSize string // "": the default, 32 MiB
		scanned     int64  // size of a sparse file that is scanned, 0: none
	}{
		{"", 0},
		{"4GiB", 256 << 20},
	}
	for _, tt := range tests {
		t.Run("max_file_size="+tt.maxFileSize, func(t *testing.T) {
			config := fmt.Sprintf("budget = %q\nworkers = 2", budget)
			if tt.maxFileSize != "" {
				config += fmt.Sprintf("\nmax_file_size = %q", tt.maxFileSize)
			}
			var o options
			if tt.scanned > 0 {
				// Slow over any file above 100 MB: 30 ns or so per byte,
				// some 8 s for 256 MiB, so that scan_timeout ends the scan.
				o.ruleDirs = []string{hostileRules(t, `
rule hostile_all_zero {
	condition: filesize > 100MB and for all i in (0..filesize - 1) : ( uint8(i) == 0 )
}
`)}
			}
			o.config = config
			d := startDaemon(t, o)
			if tt.scanned > 0 {
				hostileScanTimeout(t, d, "2s")
			}

			huge := filepath.Join(d.Dir, "huge\x1b[31m.img")
			writeFile(t, huge, "", 0o644)
			if err := os.Truncate(huge, 100<<30); err != nil {
				t.Fatal(err)
			}
			var fs unix.Statfs_t
			unix.Statfs(d.Dir, &fs)
			t.Logf("tmpfs: %d MiB in use after a 100 GiB truncate", (fs.Blocks-fs.Bfree)*uint64(fs.Bsize)>>20)
			rss0 := hostileRSS(t, d.Pid)
			before := d.counters()
			took, err := hostileOpen(huge)
			if err != nil {
				t.Errorf("open of the 100 GiB file: %v, want allowed by on_oversize", err)
			}
			if took > 250*time.Millisecond {
				t.Errorf("open of the 100 GiB file took %v, want at once", took)
			}
			after := d.counters()
			if dc := delta(before, after); dc["oversize"] != 1 || dc["scans"] != 0 || dc["errors"] != 0 {
				t.Errorf("counters after the 100 GiB open: %v", dc)
			}
			rss1 := hostileRSS(t, d.Pid)
			t.Logf("100 GiB sparse file: answered in %v (oversize); daemon RSS %d → %d MiB", took, rss0>>10, rss1>>10)
			if rss1-rss0 > 32<<10 {
				t.Errorf("daemon RSS grew by %d MiB on an oversize file", (rss1-rss0)>>10)
			}

			if tt.scanned > 0 {
				sparse := filepath.Join(d.Dir, "sparse.img")
				writeFile(t, sparse, "", 0o644)
				if err := os.Truncate(sparse, tt.scanned); err != nil {
					t.Fatal(err)
				}
				before := d.counters()
				rss0 := hostileRSS(t, d.Pid)
				peak := hostileWatchRSS(t, d.Pid)
				start := time.Now()
				took, err := hostileOpen(sparse)
				if err != nil {
					t.Errorf("open of the %d MiB sparse file: %v, want allowed by on_timeout", tt.scanned>>20, err)
				}
				if took > budget+hostileMargin {
					t.Errorf("open took %v, budget %v", took, budget)
				}
				// The scan goes on after the answer, until scan_timeout
				// (whole seconds, checked now and then by libyara).
				c := d.waitCounterWithin("errors", before["errors"]+1, 15*time.Second)
				ended := time.Since(start)
				p := peak()
				line := d.waitLog(time.Second, "cannot scan file", "sparse.img")
				if !strings.Contains(line, "scan timeout") {
					t.Errorf("scan error %q, want a timeout", line)
				}
				dc := delta(before, c)
				if dc["timed_out"] != 1 || dc["scans"] != 1 {
					t.Errorf("counters: %v", dc)
				}
				rss2 := hostileRSS(t, d.Pid)
				t.Logf("%d MiB sparse file: answered in %v (on_timeout), scan ended by scan_timeout after %v; RSS %d MiB before, peak %d MiB, after %d MiB",
					tt.scanned>>20, took, ended.Round(time.Millisecond), rss0>>10, p>>10, rss2>>10)
				// The race detector's shadow memory adds twice what the
				// daemon touches.
				factor := int64(1)
				if testutil.RaceEnabled {
					factor = 3
				}
				if limit := rss0 + factor*tt.scanned>>10 + 128<<10; p > limit {
					t.Errorf("peak RSS %d MiB, want at most %d MiB (the file's size and some)", p>>10, limit>>10)
				}
			}

			bad := filepath.Join(d.Dir, "eicar.com")
			writeFile(t, bad, eicar, 0o644)
			if took, err := hostileOpen(bad); !errors.Is(err, unix.EPERM) || took > budget+hostileMargin {
				t.Errorf("EICAR afterwards: %v in %v, want EPERM", err, took)
			}
			hostileShownSafely(t, "daemon log", d.Log())
			d.stop()
		})
	}
}

// hostileSlowRules has a rule that takes some 30 µs per byte of a file
// holding its marker (half a second or more for the 25 KB files here), and
// then does not match: a long scan of a clean file, for changing the file
// under it.
const hostileSlowRules = `
rule hostile_slow_clean {
	strings: $m = "HOSTILE-SLOW-CLEAN"
	condition: $m and for all i in (0..filesize) : ( for all j in (0..1000) : ( uint8(j) != 0xff ) ) and uint8(0) == 0xff
}
`

// TestHostileChangesMidScan: a clean file is truncated, replaced (rename
// over it), overwritten in place or deleted while the daemon scans it. Every
// open is answered within the budget, the daemon survives, and the verdict
// of the old content is never served for the new: EICAR put in its place is
// denied at once, and still after the old scan has ended.
func TestHostileChangesMidScan(t *testing.T) {
	const budget = time.Second
	d := startDaemon(t, options{config: fmt.Sprintf("budget = %q\nworkers = 2", budget),
		ruleDirs: []string{hostileRules(t, hostileSlowRules)}, tables: "[log]\nlevel = \"debug\""})

	tests := []struct {
		name   string
		change func(t *testing.T, path string) // during the scan
		write  bool                            // put EICAR at the path after the open returned
	}{
		{"truncate", func(t *testing.T, path string) {
			if err := os.Truncate(path, 0); err != nil {
				t.Error(err)
			}
		}, true},
		{"truncate half", func(t *testing.T, path string) {
			if err := os.Truncate(path, 10_000); err != nil {
				t.Error(err)
			}
		}, true},
		{"rename EICAR over it", func(t *testing.T, path string) {
			writeFile(t, path+".new", eicar, 0o644)
			if err := os.Rename(path+".new", path); err != nil {
				t.Error(err)
			}
		}, false},
		{"overwrite in place with EICAR", func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
			if err != nil {
				t.Error(err)
				return
			}
			f.WriteString(eicar)
			f.Close()
		}, false},
		{"unlink", func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Error(err)
			}
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(d.Dir, strings.ReplaceAll(tt.name, " ", "_"))
			// The marker last: cut short, the file scans fast.
			content := strings.Repeat("a", 25_000) + "HOSTILE-SLOW-CLEAN"
			writeFile(t, path, content, 0o644)
			scanned := []string{"\tscanned ", path, fmt.Sprintf(`"size": %d,`, len(content))}
			opened := make(chan time.Duration, 1)
			go func() {
				took, err := hostileOpen(path)
				if err != nil {
					t.Errorf("open of the clean file: %v", err)
				}
				opened <- took
			}()
			time.Sleep(150 * time.Millisecond) // the scan runs: the daemon holds its copy
			for _, line := range strings.Split(d.Log(), "\n") {
				if containsAll(line, scanned) {
					t.Fatalf("the scan of the clean file ended within 150 ms: the test tests nothing (%s)", line)
				}
			}
			tt.change(t, path)
			took := <-opened
			if took > budget+hostileMargin {
				t.Errorf("open took %v, budget %v", took, budget)
			}
			if tt.write {
				writeFile(t, path, eicar, 0o644)
			}
			took2, err := hostileOpen(path)
			if !errors.Is(err, unix.EPERM) || took2 > budget+hostileMargin {
				t.Errorf("EICAR while the old scan runs: %v in %v, want EPERM", err, took2)
			}
			// The old scan ends (its verdict, clean, is for content gone).
			d.waitLog(30*time.Second, scanned...)
			took3, err := hostileOpen(path)
			if !errors.Is(err, unix.EPERM) || took3 > budget+hostileMargin {
				t.Errorf("EICAR after the old scan ended: %v in %v, want EPERM (the kernel holds %d inode marks of the daemon)", err, took3, hostileInodeMarks(t, d))
			}
			t.Logf("open during the change: %v; EICAR denied in %v during the old scan, %v after it", took, took2, took3)
		})
	}
	hostileShownSafely(t, "daemon log", d.Log())
	st := d.stop()
	if st["errors"] != 0 {
		t.Errorf("counters: %v", st)
	}
}

// TestHostileRewriteRace: a clean file rewritten with EICAR the moment the
// daemon lets the writer's open through, for many files. The writer's
// open is scanned (clean, the old content) and answered; the writer then
// puts EICAR in and closes. The kernel must not be left caching the clean
// verdict for the new content: the next open is denied every time.
func TestHostileRewriteRace(t *testing.T) {
	const budget = time.Second
	d := startDaemon(t, options{config: fmt.Sprintf("budget = %q\nworkers = 2", budget)})
	const rounds = 1000
	allowed := 0
	start := time.Now()
	for i := range rounds {
		// A new file each round: a detected one cannot be opened again,
		// not even for writing.
		path := filepath.Join(d.Dir, fmt.Sprintf("rewritten%d", i))
		writeFile(t, path, fmt.Sprintf("clean %d\n", i), 0o644)
		writeFile(t, path, eicar, 0o644)
		took, err := hostileOpen(path)
		if err == nil {
			allowed++
			if allowed <= 3 {
				t.Errorf("round %d: EICAR opened in %v right after it was written (the kernel holds %d inode marks)", i, took, hostileInodeMarks(t, d))
			}
		} else if !errors.Is(err, unix.EPERM) || took > budget+hostileMargin {
			t.Errorf("round %d: %v in %v, want EPERM", i, err, took)
		}
	}
	t.Logf("%d rounds in %v: EICAR allowed %d times", rounds, time.Since(start).Round(time.Millisecond), allowed)
	st := d.stop()
	if st["errors"] != 0 {
		t.Errorf("counters: %v", st)
	}
}

// hostileMountDev mounts a tmpfs that, unlike testutil.MountTmpfs's, lets
// device nodes work (no nodev), and unmounts it when the test ends.
func hostileMountDev(t *testing.T) string {
	t.Helper()
	testutil.RequireRoot(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID, "size=16m,mode=0755"); err != nil {
		t.Fatalf("mounting tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	})
	return dir
}

// hostileErrno returns the errno in err: 0 for nil, all ones for an error
// without one.
func hostileErrno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return ^syscall.Errno(0)
}

// TestHostileSpecialFiles: FIFOs, a UNIX socket, device nodes, a directory
// and a symbolic link on a protected filesystem open as they open on an
// unprotected twin (the same errno where they fail), within the budget;
// the daemon counts no error and protects as before. It logs what the
// kernel passes on: permission events for each kind of file.
func TestHostileSpecialFiles(t *testing.T) {
	const budget = time.Second
	protected, twin := hostileMountDev(t), hostileMountDev(t)
	d := startDaemon(t, options{config: fmt.Sprintf("budget = %q", budget), dir: protected})

	var closers []func()
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	mknod := func(mode uint32, major, minor uint32) func(string) error {
		return func(p string) error { return unix.Mknod(p, mode|0o666, int(unix.Mkdev(major, minor))) }
	}
	mkfifo := func(p string) error { return unix.Mkfifo(p, 0o666) }
	openFlags := func(flags int) func(string) error {
		return func(p string) error {
			fd, err := unix.Open(p, flags|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
			if err == nil {
				unix.Close(fd)
			}
			return err
		}
	}
	tests := []struct {
		name string
		make func(path string) error
		use  func(path string) error // opens (and reads or writes): the error, nil if all worked
	}{
		{"FIFO, reader, non-blocking", mkfifo, openFlags(unix.O_RDONLY | unix.O_NONBLOCK)},
		{"FIFO, writer without reader", mkfifo, openFlags(unix.O_WRONLY | unix.O_NONBLOCK)},
		{"FIFO, reader and writer", mkfifo, func(p string) error {
			r, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
			if err != nil {
				return err
			}
			defer r.Close()
			w, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer w.Close()
			if _, err := w.WriteString("ping"); err != nil {
				return err
			}
			buf := make([]byte, 8)
			if n, err := r.Read(buf); err != nil || string(buf[:n]) != "ping" {
				return fmt.Errorf("read %q, %w", buf[:n], err)
			}
			return nil
		}},
		{"UNIX socket, open", func(p string) error {
			ln, err := net.Listen("unix", p)
			if err == nil {
				closers = append(closers, func() { ln.Close() })
			}
			return err
		}, openFlags(unix.O_RDONLY)},
		{"UNIX socket, connect", func(p string) error {
			ln, err := net.Listen("unix", p)
			if err == nil {
				closers = append(closers, func() { ln.Close() })
				go func() {
					for {
						c, err := ln.Accept()
						if err != nil {
							return
						}
						c.Write([]byte("hello"))
						c.Close()
					}
				}()
			}
			return err
		}, func(p string) error {
			c, err := net.Dial("unix", p)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(budget + hostileMargin))
			buf := make([]byte, 8)
			if n, err := c.Read(buf); err != nil || string(buf[:n]) != "hello" {
				return fmt.Errorf("read %q, %w", buf[:n], err)
			}
			return nil
		}},
		{"char device 1:3 (null)", mknod(unix.S_IFCHR, 1, 3), func(p string) error {
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			if _, err := f.WriteString("gone"); err != nil {
				return err
			}
			if n, err := f.Read(make([]byte, 8)); n != 0 || err == nil {
				return fmt.Errorf("read %d bytes, %v, want EOF", n, err)
			}
			return nil
		}},
		{"char device 1:5 (zero)", mknod(unix.S_IFCHR, 1, 5), func(p string) error {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			buf := []byte("xxxx")
			if n, err := f.Read(buf); n != 4 || err != nil || string(buf) != "\x00\x00\x00\x00" {
				return fmt.Errorf("read %q, %v", buf[:n], err)
			}
			return nil
		}},
		{"block device 240:0 (no driver)", mknod(unix.S_IFBLK, 240, 0), openFlags(unix.O_RDONLY)},
		{"directory", func(p string) error { return os.Mkdir(p, 0o755) }, openFlags(unix.O_RDONLY | unix.O_DIRECTORY)},
		{"symbolic link to /dev/null", func(p string) error { return os.Symlink("/dev/null", p) }, openFlags(unix.O_RDWR)},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := fmt.Sprintf("special%d\x1b[7m", i)
			for _, dir := range []string{protected, twin} {
				if err := tt.make(filepath.Join(dir, name)); err != nil {
					t.Fatalf("making it in %s: %v", dir, err)
				}
			}
			want := tt.use(filepath.Join(twin, name))
			before := d.counters()
			start := time.Now()
			got := tt.use(filepath.Join(protected, name))
			took := time.Since(start)
			after := d.counters()
			if hostileErrno(got) != hostileErrno(want) || (got == nil) != (want == nil) {
				t.Errorf("protected: %v; unprotected: %v", got, want)
			}
			if took > budget+hostileMargin {
				t.Errorf("took %v, budget %v", took, budget)
			}
			dc := delta(before, after)
			if dc["errors"] != 0 || dc["scans"] != 0 || dc["timed_out"] != 0 {
				t.Errorf("counters: %v", dc)
			}
			t.Logf("%v in %v (unprotected: %v); permission events %v, not regular %v",
				got, took.Round(time.Microsecond), want, dc["events"], dc["not_regular"])
		})
	}

	bad := filepath.Join(protected, "eicar.com")
	writeFile(t, bad, eicar, 0o644)
	if took, err := hostileOpen(bad); !errors.Is(err, unix.EPERM) || took > budget+hostileMargin {
		t.Errorf("EICAR afterwards: %v in %v, want EPERM", err, took)
	}
	hostileShownSafely(t, "daemon log", d.Log())
	if st := d.stop(); st["errors"] != 0 || st["answer_errors"] != 0 {
		t.Errorf("counters: %v", st)
	}
}

// TestHostileManyMatches: rules whose strings match at every byte of
// 2 MiB (a million matches and more: libyara stops counting a string at
// YR_MAX_STRING_MATCHES, 1,000,000 in 4.2). The open is denied within the
// budget, the daemon's memory stays bounded, and the record and the log
// hold a bounded number of matched strings.
func TestHostileManyMatches(t *testing.T) {
	const budget = 5 * time.Second // the default
	d := startDaemon(t, options{ruleDirs: []string{hostileRules(t, `
rule hostile_many_text {
	strings: $a = "AA"
	condition: $a
}
rule hostile_many_hex {
	strings: $h = { 41 } $i = { 41 41 41 }
	condition: #h > 1000 and $i
}
`)}})
	path := filepath.Join(d.Dir, "AAAA")
	writeFile(t, path, strings.Repeat("A", 2<<20), 0o644)
	before := d.counters()
	rss0 := hostileRSS(t, d.Pid)
	peak := hostileWatchRSS(t, d.Pid)
	took, err := hostileOpen(path)
	p := peak()
	if !errors.Is(err, unix.EPERM) {
		t.Errorf("open: %v, want EPERM", err)
	}
	if took > budget+hostileMargin {
		t.Errorf("open took %v, budget %v", took, budget)
	}
	recs := records(t, d, 1, 5*time.Second)
	if len(recs) != 1 {
		t.Fatalf("%d records, want 1", len(recs))
	}
	r := recs[0]
	var rules []string
	for _, m := range r.Matches {
		rules = append(rules, fmt.Sprintf("%s: %d strings", m.Rule, len(m.Strings)))
		if len(m.Strings) == 0 || len(m.Strings) > 16 {
			t.Errorf("rule %s: %d matched strings in the record, want 1 to 16", m.Rule, len(m.Strings))
		}
	}
	if len(r.Matches) != 2 {
		t.Errorf("record matches %v, want both rules", rules)
	}
	code, out, _ := run(t, "quarantine", "show", strconv.FormatInt(r.ID, 10), "--json", "--config", d.Config)
	if code != 0 || len(out) > 64<<10 {
		t.Errorf("show --json: exit %d, %d bytes", code, len(out))
	}
	var longest int
	for _, line := range strings.Split(d.Log(), "\n") {
		longest = max(longest, len(line))
	}
	if longest > 16<<10 {
		t.Errorf("a log line of %d bytes", longest)
	}
	dc := delta(before, d.counters())
	t.Logf("2 MiB of 'A': denied in %v; record %v; RSS %d MiB before, peak %d MiB; longest log line %d bytes; show --json %d bytes; counters %v",
		took, rules, rss0>>10, p>>10, longest, len(out), map[string]float64{"scans": dc["scans"], "errors": dc["errors"], "detections": dc["detections"]})
	// libyara keeps up to a million matches of each of the three strings
	// (some 60 MB each), and go-yara hands over all the matches of a
	// string before the first 16 are picked (some 60 MB per rule): a few
	// hundred MB at most, twice that with the race detector's shadow.
	limit := int64(400 << 10)
	if testutil.RaceEnabled {
		limit *= 2
	}
	if p-rss0 > limit {
		t.Errorf("daemon RSS grew by %d MiB during the scan, want at most %d MiB", (p-rss0)>>10, limit>>10)
	}
	if dc["errors"] != 0 || dc["detections"] != 1 {
		t.Errorf("counters: %v", dc)
	}
	hostileShownSafely(t, "daemon log", d.Log())
	d.stop()
}

// TestHostileRegex: a regular expression that takes libyara minutes over a
// file of 'a's. Each open of that file is answered within the budget
// (on_timeout), concurrent opens wait for one scan, scan_timeout ends the
// scan, the second worker denies EICAR meanwhile, and a later open of the
// same file is again answered within the budget.
func TestHostileRegex(t *testing.T) {
	const budget = time.Second
	d := startDaemon(t, options{config: fmt.Sprintf("budget = %q\nworkers = 2", budget), ruleDirs: []string{hostileRules(t, `
rule hostile_regex {
	strings: $r = /a.*a.*a.*a.*b/
	condition: $r
}
`)}})
	hostileScanTimeout(t, d, "2s")
	path := filepath.Join(d.Dir, "aaaa")
	writeFile(t, path, strings.Repeat("a", 1<<20), 0o644)
	bad := filepath.Join(d.Dir, "eicar.com")
	writeFile(t, bad, eicar, 0o644)

	rss0 := hostileRSS(t, d.Pid)
	peak := hostileWatchRSS(t, d.Pid)
	for round := range 2 {
		before := d.counters()
		start := time.Now()
		const n = 4
		var wg sync.WaitGroup
		tooks := make([]time.Duration, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				took, err := hostileOpen(path)
				if err != nil {
					t.Errorf("round %d, open %d: %v, want allowed by on_timeout", round, i, err)
				}
				tooks[i] = took
			}()
		}
		time.Sleep(200 * time.Millisecond)
		took, err := hostileOpen(bad)
		if !errors.Is(err, unix.EPERM) || took > budget+hostileMargin {
			t.Errorf("round %d: EICAR during the runaway scan: %v in %v, want EPERM", round, err, took)
		}
		wg.Wait()
		for i, took := range tooks {
			if took > budget+hostileMargin {
				t.Errorf("round %d, open %d took %v, budget %v", round, i, took, budget)
			}
		}
		c := d.waitCounterWithin("errors", before["errors"]+1, 15*time.Second)
		ended := time.Since(start)
		dc := delta(before, c)
		// One scan of the regex file (the others waited for it), and
		// none of EICAR: denied from the cache in round 1.
		if dc["timed_out"] != n || dc["errors"] != 1 || dc["scans"] > 2 {
			t.Errorf("round %d: counters %v", round, dc)
		}
		t.Logf("round %d: %d opens answered in %v (on_timeout), EICAR denied in %v meanwhile, scan ended by scan_timeout after %v; scans %v, dedup waits %v",
			round, n, tooks, took, ended.Round(time.Millisecond), dc["scans"], dc["dedup_waits"])
	}
	p := peak()
	t.Logf("RSS %d MiB before, peak %d MiB", rss0>>10, p>>10)
	if p-rss0 > 128<<10 {
		t.Errorf("daemon RSS grew by %d MiB", (p-rss0)>>10)
	}
	line := d.waitLog(time.Second, "cannot scan file", "aaaa")
	if !strings.Contains(line, "scan timeout") {
		t.Errorf("scan error %q, want a timeout", line)
	}
	hostileShownSafely(t, "daemon log", d.Log())
	d.stop()
}
