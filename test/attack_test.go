package test

// The local attacker of issue 11: seven routes by which the user nobody
// (uid 65534), with nothing but the default configuration or the common
// exclusions, could jam, blind or bypass the daemon. Each test runs the
// attack as nobody against a daemon that protects only a tmpfs of the
// test's, and holds the daemon to what must hold against it.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fanguard/fanguard/internal/testutil"
	"github.com/fanguard/fanguard/quarantine"
)

// attacker is nobody with the attack helper built.
type attacker struct {
	*nobody
	tool string // attackToolSource, built
}

func newAttacker(t *testing.T, d *daemon) *attacker {
	t.Helper()
	return &attacker{nobody: newNobody(t, d), tool: buildTool(t, "attack", attackToolSource, "-pthread")}
}

// requireUserns skips t (fails it under CI) where nobody may not make a
// user and mount namespace of its own.
func (a *attacker) requireUserns() {
	a.t.Helper()
	if !a.userns() {
		if testutil.InCI() {
			a.t.Fatal("unprivileged user namespaces are off: the attack needs them, and CI=true")
		}
		a.t.Skip("unprivileged user namespaces are off")
	}
}

// lines returns the lines p prints, as they come; the channel is closed
// at the end of p's output. Read p's output through it only.
func (p *proc) lines() <-chan string {
	c := make(chan string, 64)
	go func() {
		defer close(c)
		for {
			l, err := p.stdout.ReadString('\n')
			if l != "" {
				c <- strings.TrimSuffix(l, "\n")
			}
			if err != nil {
				return
			}
		}
	}()
	return c
}

// failed kills p, waits for it and returns its standard error, for the
// message of a failure.
func (p *proc) failed() string {
	p.cmd.Process.Kill()
	<-p.exited
	return p.stderr.String()
}

// nextLine returns the next line from c within d; false if none came.
func nextLine(c <-chan string, d time.Duration) (string, bool) {
	select {
	case l, ok := <-c:
		return l, ok
	case <-time.After(d):
		return "", false
	}
}

// openFuse makes /dev/fuse usable by every user (0666, as on a standard
// Debian system) for the test, and puts its mode back afterwards.
func openFuse(t *testing.T) {
	t.Helper()
	fi, err := os.Stat("/dev/fuse")
	if err != nil {
		if testutil.InCI() {
			t.Fatalf("no /dev/fuse: %v", err)
		}
		t.Skipf("no /dev/fuse: %v", err)
	}
	if err := os.Chmod("/dev/fuse", 0o666); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.Chmod("/dev/fuse", fi.Mode().Perm()); err != nil {
			t.Errorf("restoring the mode of /dev/fuse: %v", err)
		}
	})
}

// openEvery opens paths[i] at i × every from now, each open in its own
// goroutine whatever the others' fate (an open-loop load: a slow answer
// does not slow the next open), and returns how each went once all are
// answered.
func openEvery(paths []string, every time.Duration) []timedOpen {
	res := make([]timedOpen, len(paths))
	done := make(chan struct{}, len(paths))
	start := time.Now()
	for i, p := range paths {
		time.Sleep(time.Until(start.Add(time.Duration(i) * every)))
		go func() {
			defer func() { done <- struct{}{} }()
			t0 := time.Now()
			f, err := os.Open(p)
			res[i] = timedOpen{time.Since(t0), err}
			if err == nil {
				f.Close()
			}
		}()
	}
	for range paths {
		<-done
	}
	return res
}

// freshFiles writes n files named prefix0, prefix1... in dir with content (the
// index appended, so that each is a file of its own), owned by uid, and
// returns their paths.
func freshFiles(t *testing.T, dir, prefix string, n int, content string, uid int) []string {
	t.Helper()
	var paths []string
	for i := range n {
		p := filepath.Join(dir, fmt.Sprintf("%s%d", prefix, i))
		writeFile(t, p, fmt.Sprintf("%s %d\n", content, i), 0o644)
		if err := os.Chown(p, uid, uid); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

// slowOpens counts the opens of res that took longer than limit and
// returns their latencies as well.
func slowOpens(res []timedOpen, limit time.Duration) (slow int, ds []time.Duration) {
	for _, r := range res {
		ds = append(ds, r.took)
		if r.took > limit {
			slow++
		}
	}
	return slow, ds
}

// fileKey is a file's identity, as the records keep it.
type fileKey struct{ dev, ino uint64 }

// keyOf returns the identity of the file at path.
func keyOf(t *testing.T, path string) fileKey {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fileKey{st.Dev, st.Ino}
}

// recordOf returns the record of the file k among recs, or nil.
func recordOf(k fileKey, recs []quarantine.Record) *quarantine.Record {
	for i, r := range recs {
		if r.Dev == k.dev && r.Ino == k.ino {
			return &recs[i]
		}
	}
	return nil
}

// waitRecords waits (up to wait) until the quarantine log holds a record
// of each file of keys, and returns all the records then.
func waitRecords(t *testing.T, d *daemon, keys []fileKey, wait time.Duration) []quarantine.Record {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		recs := records(t, d, 0, 0)
		all := true
		for _, k := range keys {
			all = all && recordOf(k, recs) != nil
		}
		if all || time.Now().After(deadline) {
			return recs
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAttackJammedWorkers (route 1): nobody holds its own mmap_lock for as
// long as it likes — one thread reads /proc/self/mem at a page of a FUSE
// file whose server (a process of nobody's, in nobody's user namespace)
// never answers READ, a second queues munmap behind it — and then opens a
// fresh EICAR file. Whatever reads the opener's /proc/PID/cmdline (or
// environ, or mem) then waits with it. Two such openers, one per worker.
// With them in place: root's opens of fresh clean files are answered
// within a second, root's fresh EICAR file is denied, the jammers' own
// opens were denied and recorded, and the daemon says it is healthy with
// its workers free. Once the FUSE servers die, everything goes on.
func TestAttackJammedWorkers(t *testing.T) {
	const workers = 2
	d := startDaemon(t, options{config: fmt.Sprintf("workers = %d", workers)})
	a := newAttacker(t, d)
	a.requireUserns()
	openFuse(t)
	dir := nobodyDir(t, d.Dir, "nb", 0o755)
	scratch := t.TempDir()
	traversable(t, scratch)
	probeDir := filepath.Join(d.Dir, "root")
	if err := os.Mkdir(probeDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Every file the test opens is written now: with the workers jammed,
	// even the opens that create files wait.
	c := d.counters()
	jamFiles := freshFiles(t, dir, "jam", workers, eicar, nobodyUID)
	clean := freshFiles(t, probeDir, "clean", 20, "clean", 0)
	bad := filepath.Join(probeDir, "eicar.com")
	writeFile(t, bad, eicar, 0o644)
	d.waitCounter("invalidations", c["invalidations"]+float64(len(jamFiles)+len(clean)+1))

	c = d.counters()
	type jammer struct {
		p      *proc
		out    <-chan string
		server int
	}
	var jammers []jammer
	for i, f := range jamFiles {
		mnt := nobodyDir(t, scratch, fmt.Sprintf("fuse%d", i), 0o755)
		p := a.start("unshare", "-Urm", a.tool, "jam", mnt, f)
		j := jammer{p: p, out: p.lines()}
		l, _ := nextLine(j.out, 10*time.Second)
		if _, err := fmt.Sscanf(l, "server %d", &j.server); err != nil {
			t.Fatalf("jammer %d: %q; stderr %s", i, l, p.failed())
		}
		// Cleanups run last first: the server dies before the jammer is
		// killed, which releases all that waits on the jammer's lock.
		t.Cleanup(func() { syscall.Kill(j.server, syscall.SIGKILL) })
		if l, _ := nextLine(j.out, 10*time.Second); l != "jammed" {
			t.Fatalf("jammer %d: %q, want jammed; stderr %s", i, l, p.failed())
		}
		jammers = append(jammers, j)
	}
	// Both EICAR files are scanned: from here on, whatever reads the
	// jammers' /proc waits.
	d.waitCounter("scans", c["scans"]+workers)
	start := time.Now()

	// Root's opens of fresh files, one every 50 ms, the EICAR file among
	// them.
	res := openEvery(append(clean, bad), 50*time.Millisecond)
	badRes := res[len(res)-1]
	slow, ds := slowOpens(res[:len(res)-1], time.Second)
	p50, p99, mx := latencies(ds)
	t.Logf("root's %d opens of fresh clean files with %d workers' openers jammed: p50 %v, p99 %v, max %v; %d over 1 s",
		len(ds), workers, p50, p99, mx, slow)
	if slow > 0 {
		t.Errorf("%d of root's %d opens of fresh clean files took over 1 s (max %v): the jammers hold the workers", slow, len(ds), mx)
	}
	t.Logf("root's open of a fresh EICAR file: %v after %v", badRes.err, badRes.took)
	if !errors.Is(badRes.err, unix.EPERM) || badRes.took > time.Second {
		t.Errorf("root's open of a fresh EICAR file with the workers' openers jammed: %v after %v; want EPERM within 1 s", badRes.err, badRes.took)
	}

	// The jammers' own opens.
	for i, j := range jammers {
		l, ok := nextLine(j.out, 10*time.Second)
		t.Logf("jammer %d, %v after the jam: %q", i, time.Since(start).Round(time.Millisecond), l)
		if !ok || !strings.HasPrefix(l, "open: Operation not permitted") {
			t.Errorf("jammer %d's open of its EICAR file: %q; want it denied (Operation not permitted)", i, l)
		}
	}
	// Their records, while the jam holds (the command line may be
	// missing).
	var keys []fileKey
	for _, f := range append(jamFiles, bad) {
		keys = append(keys, keyOf(t, f))
	}
	recs := waitRecords(t, d, keys, 5*time.Second)
	for i, f := range jamFiles {
		if r := recordOf(keys[i], recs); r == nil {
			t.Errorf("no record of jammer %d's EICAR file %s within 5 s of the jam (%d records)", i, f, len(recs))
		} else {
			t.Logf("record of jammer %d: pid %d, exe %q, %d bytes of command line", i, r.PID, r.Exe, len(r.Cmdline))
		}
	}
	if r := recordOf(keys[len(keys)-1], recs); r == nil {
		t.Errorf("no record of root's EICAR file within 5 s")
	}
	// What the daemon says of itself.
	st := getStatus(t, d)
	busy := workers
	for range 3 {
		if busy = getPipeline(t, d).Pipeline.BusyWorkers; busy < workers {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("while jammed: healthy %v (%q), %d of %d workers busy; counters %v", st.Health.Healthy, st.Health.Reason, busy, workers,
		pick(d.counters(), "timed_out", "detections", "record_errors", "opener_reads_abandoned"))
	if !st.Health.Healthy {
		t.Errorf("unhealthy with the jammers in place: %s", st.Health.Reason)
	}
	if busy >= workers {
		t.Errorf("%d of %d workers busy, three times in 300 ms: stuck", busy, workers)
	}

	// The FUSE servers die: the jammers' reads fail, their locks go.
	for _, j := range jammers {
		syscall.Kill(j.server, syscall.SIGKILL)
	}
	for i, j := range jammers {
		j.p.stdin.Close()
		select {
		case <-j.p.exited:
		case <-time.After(5 * time.Second):
			t.Errorf("jammer %d still there 5 s after its FUSE server died", i)
		}
	}
	after := freshFiles(t, probeDir, "after", 1, "clean", 0)[0]
	t0 := time.Now()
	if err := read(t, after); err != nil || time.Since(t0) > time.Second {
		t.Errorf("root's open of a fresh clean file once the jam is gone: %v after %v", err, time.Since(t0))
	}
}

// pick returns the counters of c named in names, for a log line.
func pick(c map[string]float64, names ...string) map[string]float64 {
	out := make(map[string]float64)
	for _, n := range names {
		out[n] = c[n]
	}
	return out
}

// reconfigure replaces old with new in the daemon's configuration file
// (exactly once) and restarts the daemon on it.
func reconfigure(t *testing.T, d *daemon, old, new string) {
	t.Helper()
	b, err := os.ReadFile(d.Config)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(b), old) != 1 {
		t.Fatalf("%q is not once in %s:\n%s", old, d.Config, b)
	}
	writeFile(t, d.Config, strings.Replace(string(b), old, new, 1), 0o644)
	d.restart()
}

// detectedScript is a shell script that the test rules detect; run, it
// prints scriptRan.
const detectedScript = "#!/bin/sh\n# FANGUARD-TEST-MALWARE-MARKER\necho " + scriptRan + "\n"

// scriptRan is what detectedScript prints: a word no path holds.
const scriptRan = "DETECTED-SCRIPT-RAN"

// TestAttackExclusionByPath (route 2): the exclusions name paths, and
// nobody, in a user and mount namespace of its own, can put its own files
// at any path it likes with a bind mount. The daemon saw the opener's
// path (readlink of the event fd) and the opener's executable
// (/proc/PID/exe), so it let through, unscanned, a detected file bound
// where the quarantine database (excluded by the daemon itself) or an
// exclude_paths entry is, and a detected script run by /bin/dash bound
// over an exclude_exe program; and since exclusions come before the
// cache, even a file already denied at its own path. All of it must be
// denied; the real excluded path and program must still work.
func TestAttackExclusionByPath(t *testing.T) {
	dir := testutil.MountTmpfs(t)
	excluded := filepath.Join(dir, "excluded")
	if err := os.Mkdir(excluded, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	traversable(t, bin)
	trusted := filepath.Join(bin, "trusted-cat") // a real excluded program: a copy of cat
	if b, err := os.ReadFile("/bin/cat"); err != nil {
		t.Fatal(err)
	} else {
		writeFile(t, trusted, string(b), 0o755)
	}
	d := startDaemon(t, options{dir: dir})
	reconfigure(t, d, "[protect]\n", fmt.Sprintf("[protect]\nexclude_paths = [%q]\nexclude_exe = [%q]\n", excluded, trusted))
	traversable(t, d.Work)
	a := newAttacker(t, d)
	a.requireUserns()
	nbDir := nobodyDir(t, dir, "nb", 0o755)

	// Each case and kind: nobody writes the file f into a directory src
	// of its own, then, in a user and mount namespace of its own, mounts
	// and runs the kind's command ($1 src, $2 f, $3 path).
	dash, err := filepath.EvalSymlinks("/bin/dash")
	if err != nil {
		if testutil.InCI() {
			t.Fatalf("no /bin/dash: %v", err)
		}
		t.Skipf("no /bin/dash: %v", err)
	}
	cases := []struct {
		name  string
		file  string // the file's name in src
		mount string // what nobody mounts
		path  string // where f then is
		exe   bool   // the trick is the program, not the path: run the file with the dash over trusted
	}{
		{name: "as the quarantine database", file: "quarantine.db", mount: fmt.Sprintf(`mount --bind "$1" %q`, d.Work), path: filepath.Join(d.Work, "quarantine.db")},
		{name: "in the vault", file: "vault/evil", mount: fmt.Sprintf(`mount --bind "$1" %q`, d.Work), path: filepath.Join(d.Work, "vault", "evil")},
		{name: "under exclude_paths", file: "evil", mount: fmt.Sprintf(`mount --bind "$1" %q`, excluded), path: filepath.Join(excluded, "evil")},
		{name: "opened by dash bound over an exclude_exe program", file: "evil", mount: fmt.Sprintf(`mount --bind %q %q`, dash, trusted), exe: true},
	}
	kinds := []struct {
		name, content string
		// run: the command, as nobody in its namespace; $3 the path.
		run, exeRun string
		leaked      string // in the output if the file got through
	}{
		{name: "EICAR", content: eicar, run: `cat "$3"`, exeRun: fmt.Sprintf(`%q -c '{ read -r l || true; } < "$0" && echo "$l"' "$2"`, trusted), leaked: "EICAR-STANDARD"},
		{name: "script", content: detectedScript, run: `"$3"`, exeRun: fmt.Sprintf(`%q "$2"`, trusted), leaked: scriptRan},
	}
	n := 0
	for _, tc := range cases {
		for _, k := range kinds {
			for _, cached := range []bool{false, true} {
				name := tc.name + "/" + k.name
				if cached {
					name += "/denied at its path first"
				}
				t.Run(name, func(t *testing.T) {
					n++
					src := nobodyDir(t, nbDir, strconv.Itoa(n), 0o755)
					f := filepath.Join(src, tc.file)
					if code, out := a.sh(`mkdir -p "${1%/*}" && printf '%s' "$2" > "$1" && chmod 755 "$1"`, f, k.content); code != 0 {
						t.Fatalf("nobody's write: exit %d, %s", code, out)
					}
					if cached {
						if code, out := a.sh(evasionAtPath["data"], f); code == 0 || !strings.Contains(out, "Operation not permitted") {
							t.Fatalf("at its path: exit %d, %q; want EPERM", code, out)
						}
					}
					run := k.run
					if tc.exe {
						run = k.exeRun
					}
					code, out := a.run("unshare", "-Urm", "sh", "-c", tc.mount+" && "+run, "sh", src, f, tc.path)
					if code == 0 || strings.Contains(out, k.leaked) || !strings.Contains(out, "Operation not permitted") {
						t.Errorf("exit %d, %q; want EPERM and nothing read or run", code, strings.TrimSpace(out))
					}
				})
			}
		}
	}

	// The real exclusions still work, for a file the rules match.
	inExcluded := filepath.Join(excluded, "real.com")
	writeFile(t, inExcluded, eicar, 0o644)
	if b, err := os.ReadFile(inExcluded); err != nil || string(b) != eicar {
		t.Errorf("root's read of an EICAR file under exclude_paths: %v", err)
	}
	if code, out := a.sh(`cat "$1"`, inExcluded); code != 0 || !strings.Contains(out, "EICAR-STANDARD") {
		t.Errorf("nobody's read of an EICAR file under exclude_paths: exit %d, %q", code, out)
	}
	mine := filepath.Join(nbDir, "mine.com")
	if code, out := a.sh(`printf '%s' "$2" > "$1" && "$3" "$1"`, mine, eicar, trusted); code != 0 || !strings.Contains(out, "EICAR-STANDARD") {
		t.Errorf("nobody's exclude_exe program (a copy of cat) reading an EICAR file: exit %d, %q", code, out)
	}
	if out, err := exec.Command(trusted, mine).CombinedOutput(); err != nil || !strings.Contains(string(out), "EICAR-STANDARD") {
		t.Errorf("root's exclude_exe program reading an EICAR file: %v, %q", err, out)
	}
}

// TestAttackLeaseLosesClose (route 3): nobody's file, primed clean (the
// kernel caches the verdict with an ignore mark), is changed to EICAR
// through a shared mapping, which no write(2) clears, and closed; at once
// nobody takes a write lease on it through a read-only fd. The kernel
// opens a file for each notification event inside the daemon's read();
// it cannot open a leased file without breaking the lease (the group's
// fds are non-blocking), so it drops the writer's close: alone in the
// queue, read() returns EAGAIN; behind other events (here: 64 closes of
// nobody's other files just before), the read returns those and the lost
// one is never told. The daemon never drops its cached verdict. Each
// attempt holds the lease 3 s; after, the file must be denied.
func TestAttackLeaseLosesClose(t *testing.T) {
	d := startDaemon(t, options{})
	a := newAttacker(t, d)
	dir := nobodyDir(t, d.Dir, "nb", 0o755)
	const attempts = 4 // of each kind; about half (alone) and nine in ten (behind a backlog) lose the close today
	clean := strings.Repeat("a", len(eicar))
	c := d.counters()
	files := freshFiles(t, dir, "leased", 2*attempts, clean, nobodyUID)
	for i := range files { // the same length as EICAR: the mapping covers it
		if code, out := a.sh(`printf '%s' "$2" > "$1"`, files[i], clean); code != 0 {
			t.Fatalf("nobody's write: %s", out)
		}
	}
	d.waitCounter("invalidations", c["invalidations"]+float64(2*len(files)))
	for _, f := range files {
		if err := read(t, f); err != nil {
			t.Fatalf("root's open of the clean file: %v", err)
		}
	}
	c = d.waitCounter("kernel_marks_added", c["kernel_marks_added"]+float64(len(files)))

	type result struct {
		file, kind, out string
		code            int
	}
	results := make(chan result, len(files))
	for i, f := range files {
		args, kind := []string{a.tool, "lease", f, eicar, "3000"}, "alone"
		if i%2 == 1 {
			args, kind = append(args, nobodyDir(t, dir, fmt.Sprintf("backlog%d", i), 0o755), "64"), "behind 64 closes"
		}
		go func() {
			code, out := a.run(args...)
			results <- result{f, kind, strings.TrimSpace(out), code}
		}()
	}
	broken := 0
	for range files {
		r := <-results
		if r.code != 0 {
			t.Fatalf("nobody's lease helper: exit %d, %s", r.code, r.out)
		}
		var tries, us, breaks int
		if _, err := fmt.Sscanf(r.out, "leased after %d tries (%d us); %d breaks", &tries, &us, &breaks); err != nil && !strings.HasPrefix(r.out, "refused:") {
			t.Fatalf("nobody's lease helper: %q", r.out)
		}
		if breaks > 0 {
			broken++
		}
		err := read(t, r.file)
		t.Logf("%s, %s: %s; root's open after the lease: %v", filepath.Base(r.file), r.kind, r.out, err)
		if !deniedWithin(t, r.file, time.Second) {
			t.Errorf("%s (%s, the lease broken %d times): EICAR written through a mapping still opens after the writer's close and the lease", filepath.Base(r.file), r.kind, breaks)
		}
	}
	dl := delta(c, d.counters())
	t.Logf("%d of %d attempts made the kernel try to open the file for the writer's close under the lease (a lost event); daemon: %v",
		broken, len(files), pick(dl, "invalidations", "kernel_flushes", "invalidations_lost"))
	if broken > 0 && dl["invalidations_lost"] < 1 {
		t.Errorf("invalidations_lost = %v after %d lost writers' closes, want at least 1", dl["invalidations_lost"], broken)
	}
}

// TestAttackAIOWrite (route 4): a write through io_submit does not clear
// the kernel's ignore mark while the writer keeps its fd open, as a write
// through a shared mapping does not: this is a stated limit (SECURITY.md).
// The test logs what an open in the window got, and holds the daemon to
// the promise that the writer's close ends it.
func TestAttackAIOWrite(t *testing.T) {
	d := startDaemon(t, options{})
	a := newAttacker(t, d)
	dir := nobodyDir(t, d.Dir, "nb", 0o755)
	c := d.counters()
	f := freshFiles(t, dir, "aio", 1, strings.Repeat("a", len(eicar)), nobodyUID)[0]
	d.waitCounter("invalidations", c["invalidations"]+1)
	if err := read(t, f); err != nil {
		t.Fatalf("root's open of the clean file: %v", err)
	}
	d.waitCounter("kernel_marks_added", c["kernel_marks_added"]+1)
	w := a.start(a.tool, "aio", f, eicar)
	w.expect(t, false, "written") // EICAR is in the file, the writer's fd open
	if b, err := os.ReadFile(f); errors.Is(err, unix.EPERM) {
		t.Log("open after the asynchronous write, the writer's fd open: denied")
	} else {
		t.Logf("open after the asynchronous write, the writer's fd open: %v, EICAR read: %v (the stated limit: the cached verdict answered)",
			err, strings.Contains(string(b), "EICAR-STANDARD"))
	}
	w.expect(t, true, "closed")
	if !deniedWithin(t, f, 5*time.Second) {
		t.Errorf("still allowed once the asynchronous writer closed the file")
	}
}

// TestAttackOtherMountNamespaces (route 7): the daemon marks what its own
// mount table shows. A tmpfs that nobody mounts in a user and mount
// namespace of its own, or that root mounts in a private mount namespace
// (as container runtimes do for a container's /tmp and /dev/shm), is not
// in it: EICAR was read and a detected script ran there. Each is mounted
// below the protected directory, waits 1 s (the time the daemon has to
// mark a new filesystem), then writes EICAR and a detected script and
// opens them: both must be denied. Then a script run from a memfd, which
// no mount shows.
func TestAttackOtherMountNamespaces(t *testing.T) {
	d := startDaemon(t, options{})
	a := newAttacker(t, d)
	// $1 the mount point, $2 EICAR, $3 the script; in a namespace of its own.
	const attack = `mount -t tmpfs -o size=1m attack "$1" && sleep 1 &&
		printf '%s' "$2" > "$1/e.com" && printf '%s' "$3" > "$1/s.sh" && chmod 755 "$1/s.sh" &&
		{ cat "$1/e.com"; "$1/s.sh"; true; }`
	check := func(t *testing.T, code int, out string) {
		t.Helper()
		if code != 0 || strings.Contains(out, "EICAR-STANDARD") || strings.Contains(out, scriptRan) || strings.Count(out, "Operation not permitted") != 2 {
			t.Errorf("EICAR read and the script run in a tmpfs of another mount namespace: exit %d, %q; want both denied (EPERM)", code, strings.TrimSpace(out))
		}
	}
	t.Run("nobody's user namespace", func(t *testing.T) {
		a.requireUserns()
		m := nobodyDir(t, d.Dir, "nb", 0o755)
		code, out := a.run("unshare", "-Urm", "sh", "-c", attack, "sh", m, eicar, detectedScript)
		check(t, code, out)
	})
	t.Run("root's private mount namespace", func(t *testing.T) {
		m := filepath.Join(d.Dir, "root")
		if err := os.Mkdir(m, 0o755); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "unshare", "-m", "--propagation", "private", "sh", "-c", attack, "sh", m, eicar, detectedScript)
		out, err := cmd.CombinedOutput()
		code := 0
		if err != nil {
			code = -1
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			}
		}
		check(t, code, string(out))
	})
	t.Run("memfd", func(t *testing.T) {
		// A memfd lives on the kernel's internal tmpfs, which no mount
		// namespace shows and no filesystem mark reaches; the daemon may
		// well not cover it (README and SECURITY.md say which): this
		// logs what happens and fails neither way.
		code, out := a.run(a.tool, "memfdexec", detectedScript)
		if strings.Contains(out, scriptRan) {
			t.Logf("a detected script written to a memfd and executed from it as nobody ran (exit %d, %q): not covered", code, strings.TrimSpace(out))
		} else {
			t.Logf("a detected script written to a memfd and executed from it as nobody: exit %d, %q: denied", code, strings.TrimSpace(out))
		}
	})
}

// unscannedDoc is the part of GET /status that counts, per uid, the
// opens let through unscanned by on_timeout or on_overload.
type unscannedDoc struct {
	UnscannedByUID []struct {
		UID        int64   `json:"uid"`
		TimedOut   float64 `json:"timed_out"`
		Overloaded float64 `json:"overloaded"`
	} `json:"unscanned_by_uid"`
}

func getUnscanned(t *testing.T, d *daemon) unscannedDoc {
	t.Helper()
	code, body := control(t, d, "GET", "/status")
	if code != 200 {
		t.Fatalf("GET /status: HTTP %d: %s", code, body)
	}
	var u unscannedDoc
	if err := json.Unmarshal(body, &u); err != nil {
		t.Fatalf("decoding /status: %v\n%s", err, body)
	}
	return u
}

// logged reports whether a log line of d contains all of parts, waiting
// up to within.
func logged(d *daemon, within time.Duration, parts ...string) bool {
	deadline := time.Now().Add(within)
	for {
		for _, l := range strings.Split(d.Log(), "\n") {
			if containsAll(l, parts) {
				return true
			}
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAttackFailOpenByLoad (route 5): nobody floods the daemon from 1,000
// threads, each rewriting one byte of its own sparse 32 MiB file (just
// within max_file_size: a full scan) and opening it, again and again.
// Each open needs a scan of its own; with two workers they queue, run
// out the budget and are allowed by on_timeout; the jobs already
// answered stay queued and are scanned all the same, so the queue only
// grows until max_pending, and then every open of every user is answered
// by on_overload with no scan and no record. Root's opens wait with
// nobody's: the full budget, and a fresh EICAR file is allowed. Under the
// flood, root's opens (one every 50 ms) must be answered at p99 ≤ 50 ms
// and its EICAR files denied; nobody's unscanned opens are counted and
// logged against uid 65534, root's not at all. (A daemon built with -race,
// as make test builds it, is several times slower on every event: there
// the bound is 500 ms, still a tenth of what the attack achieved before.)
func TestAttackFailOpenByLoad(t *testing.T) {
	const (
		threads = 1000
		size    = 32 << 20 // max_file_size
		every   = 50 * time.Millisecond
		probing = 15 * time.Second
	)
	p99Limit := 50 * time.Millisecond
	if testutil.RaceEnabled {
		p99Limit = 500 * time.Millisecond
	}
	d := startDaemon(t, options{config: "workers = 2"})
	a := newAttacker(t, d)
	dir := nobodyDir(t, d.Dir, "nb", 0o755)
	probeDir := filepath.Join(d.Dir, "root")
	if err := os.Mkdir(probeDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Root's files, written before the flood: fresh 4 KiB files, and
	// every 50th an EICAR file.
	n := int(probing / every)
	paths := make([]string, n)
	isBad := func(i int) bool { return i%50 == 25 }
	c := d.counters()
	for i := range paths {
		paths[i] = filepath.Join(probeDir, fmt.Sprintf("f%d", i))
		content := fmt.Sprintf("%-4095d\n", i)
		if isBad(i) {
			paths[i] += ".com"
			content = eicar
		}
		writeFile(t, paths[i], content, 0o644)
	}
	d.waitCounterWithin("invalidations", c["invalidations"]+float64(n), 10*time.Second)

	flood := a.start(a.tool, "openflood", dir, strconv.Itoa(threads), strconv.Itoa(size))
	out := flood.lines()
	if l, _ := nextLine(out, 30*time.Second); l != "ready" {
		t.Fatalf("nobody's flood: %q; stderr %s", l, flood.failed())
	}
	io.WriteString(flood.stdin, "go\n")
	if l, _ := nextLine(out, 30*time.Second); l != "started" {
		t.Fatalf("nobody's flood: %q; stderr %s", l, flood.failed())
	}
	c = d.counters()
	time.Sleep(2 * time.Second) // the flood's first answers run out the budget
	res := openEvery(paths, every)
	var clean []timedOpen
	var badAllowed []string
	for i, r := range res {
		if !isBad(i) {
			clean = append(clean, r)
			continue
		}
		t.Logf("root's open of fresh EICAR file %d under the flood: %v after %v", i, r.err, r.took.Round(time.Millisecond))
		if !errors.Is(r.err, unix.EPERM) {
			badAllowed = append(badAllowed, fmt.Sprintf("%s: %v after %v", filepath.Base(paths[i]), r.err, r.took.Round(time.Millisecond)))
		}
	}
	u := getUnscanned(t, d)
	dl := delta(c, d.counters())
	io.WriteString(flood.stdin, "stop\n")
	summary, _ := nextLine(out, 15*time.Second)

	slow, ds := slowOpens(clean, p99Limit)
	p50, p99, mx := latencies(ds)
	t.Logf("root's %d opens of fresh 4 KiB files, one every %v, under nobody's %d-thread flood: p50 %v, p99 %v, max %v; %d over %v",
		len(ds), every, threads, p50, p99, mx, slow, p99Limit)
	t.Logf("nobody's flood: %s", summary)
	t.Logf("daemon meanwhile: %v", pick(dl, "events", "scans", "timed_out", "overloaded", "late_scans", "late_dropped"))
	if p99 > p99Limit {
		t.Errorf("root's opens under nobody's flood: p99 %v, want at most %v (p50 %v, max %v)", p99, p99Limit, p50, mx)
	}
	if len(badAllowed) > 0 {
		t.Errorf("root's opens of fresh EICAR files under nobody's flood, allowed: %s", strings.Join(badAllowed, "; "))
	}
	var ofNobody, ofRoot float64
	for _, e := range u.UnscannedByUID {
		switch e.UID {
		case nobodyUID:
			ofNobody = e.TimedOut + e.Overloaded
		case 0:
			ofRoot = e.TimedOut + e.Overloaded
		}
	}
	t.Logf("unscanned_by_uid: %+v", u.UnscannedByUID)
	if ofNobody == 0 {
		t.Errorf("/status unscanned_by_uid has no unscanned opens of nobody (uid %d): %+v", nobodyUID, u.UnscannedByUID)
	}
	if ofRoot != 0 {
		t.Errorf("/status unscanned_by_uid counts %v unscanned opens of root: %+v", ofRoot, u.UnscannedByUID)
	}
	if !logged(d, time.Second, "opens allowed unscanned", fmt.Sprintf(`"uid": %d`, nobodyUID)) {
		t.Errorf(`no log line "opens allowed unscanned" with "uid": %d`, nobodyUID)
	}
}

// filesSize returns the total size of the regular files among paths, and
// below those that are directories; what is missing counts 0.
func filesSize(paths ...string) int64 {
	var n int64
	for _, p := range paths {
		filepath.Walk(p, func(_ string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() {
				n += fi.Size()
			}
			return nil
		})
	}
	return n
}

// watchPeak calls sample every interval until the function it returns is
// called, which returns the largest value seen.
func watchPeak(interval time.Duration, sample func() int64) func() int64 {
	peak := sample()
	stop, done := make(chan struct{}), make(chan int64)
	go func() {
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				done <- max(peak, sample())
				return
			case <-tick.C:
				peak = max(peak, sample())
			}
		}
	}()
	return func() int64 {
		close(stop)
		return <-done
	}
}

// startDetectionFlood starts nobody's detection flood: threads threads,
// each rewriting (the same bytes) and opening its own file dir/dN.com of
// content, from a process with padKiB KiB of command line. It returns a
// function that stops the flood and returns its summary line.
func (a *attacker) startDetectionFlood(t *testing.T, dir string, threads, padKiB int, content string) func() string {
	t.Helper()
	p := a.start(a.tool, "detflood", dir, strconv.Itoa(threads), strconv.Itoa(padKiB), content)
	out := p.lines()
	if l, _ := nextLine(out, 30*time.Second); l != "ready" {
		t.Fatalf("nobody's detection flood: %q; stderr %s", l, p.failed())
	}
	io.WriteString(p.stdin, "go\n")
	if l, _ := nextLine(out, 30*time.Second); l != "started" {
		t.Fatalf("nobody's detection flood: %q; stderr %s", l, p.failed())
	}
	return func() string {
		io.WriteString(p.stdin, "stop\n")
		l, ok := nextLine(out, 15*time.Second)
		if !ok {
			t.Errorf("nobody's detection flood did not stop within 15 s")
		}
		return l
	}
}

// TestAttackDetectionFlood (route 6): detections are attacker-sized. Each
// record kept the opener's whole command line, so 16 threads of a process
// with 6 MiB of arguments, each rewriting the same EICAR bytes into its
// own file through an fd it keeps (the change stamp moves: each open is
// scanned and detected anew) and opening it, grew the database by 10 to
// 140 MB/s (as fast as the disk syncs) and the daemon by a GiB in
// seconds (detections queued, each with its command line; once the queue
// is full, the workers wait and opens run out the budget). The
// quarantine's max_bytes was enforced only at start and daily, and a
// full disk was only counted.
func TestAttackDetectionFlood(t *testing.T) {
	t.Run("records", func(t *testing.T) {
		const (
			threads     = 16
			padKiB      = 6 << 10
			duration    = 60 * time.Second
			growthLimit = 10 << 20
			cmdlineMax  = 8 << 10
		)
		d := startDaemon(t, options{config: "workers = 2"})
		a := newAttacker(t, d)
		dir := nobodyDir(t, d.Dir, "nb", 0o755)
		last := filepath.Join(d.Dir, "last.com")
		c := d.counters()
		writeFile(t, last, eicar, 0o644)
		d.waitCounter("invalidations", c["invalidations"]+1)
		db := filepath.Join(d.Work, "quarantine.db")
		dbSize := func() int64 { return filesSize(db, db+"-wal", db+"-shm") }
		db0, rss0 := dbSize(), vmRSS(t, d.Pid)
		// The flood may add 171 MiB to the daemon's RSS at start (200 MiB
		// in all for a plain daemon that started at 29 MiB, before the
		// rules were split by class; a cold split leaves it at about
		// 60 MiB now). The race detector's shadow memory doubles what the
		// heap's churn costs: a -race daemon started at about twice the
		// RSS of a plain one (53 MiB against 29), and now at 87 MiB.
		rssLimit := rss0 + 171<<20
		if testutil.RaceEnabled {
			rssLimit = rss0 + 2*171<<20
		}

		stopFlood := a.startDetectionFlood(t, dir, threads, padKiB, eicar)
		start := time.Now()
		var peakRSS, growth int64
		var took time.Duration
		aborted := false
		for took < duration {
			time.Sleep(100 * time.Millisecond)
			took = time.Since(start)
			rss, err := readRSS(d.Pid)
			if err != nil {
				t.Fatalf("the daemon is gone: %v", err)
			}
			peakRSS, growth = max(peakRSS, rss), dbSize()-db0
			// Far past the bounds, the flood has shown what it does:
			// spare the machine's disk and memory.
			if growth > 25*growthLimit || peakRSS > 1<<30 {
				aborted = true
				break
			}
		}
		summary := stopFlood()
		dl := delta(c, d.counters())
		t.Logf("nobody's %d threads with %d MiB of command line, %v: %s", threads, padKiB>>10, took.Round(time.Millisecond), summary)
		t.Logf("database grew %.1f MiB (%.1f MiB/s), daemon RSS %d MiB at start, peak %d MiB; daemon: %v",
			float64(growth)/(1<<20), float64(growth)/(1<<20)/took.Seconds(), rss0>>20, peakRSS>>20,
			pick(dl, "scans", "detections", "cached_denials", "record_errors", "timed_out", "detections_coalesced", "detections_deferred"))
		if aborted {
			// The recorder would go on with what is queued for minutes.
			d.kill()
			t.Errorf("stopped after %v, far past the bounds: database +%d MiB, daemon RSS %d MiB", took.Round(time.Millisecond), growth>>20, peakRSS>>20)
		}
		if growth > growthLimit {
			t.Errorf("the database grew %.1f MiB in %v of nobody's detection flood, want at most %d MiB", float64(growth)/(1<<20), took.Round(time.Millisecond), growthLimit>>20)
		}
		if peakRSS > rssLimit {
			t.Errorf("daemon RSS reached %d MiB during nobody's detection flood, want at most %d MiB", peakRSS>>20, rssLimit>>20)
		}
		var denied, allowed, errs int
		if _, err := fmt.Sscanf(summary, "%d denied, %d allowed, %d errors", &denied, &allowed, &errs); err != nil || denied == 0 || allowed != 0 {
			t.Errorf("nobody's opens of its detected files: %q; want all denied", summary)
		}
		if !aborted {
			// The daemon goes on recording: a detection after the flood.
			if err := read(t, last); !errors.Is(err, unix.EPERM) {
				t.Errorf("root's open of a fresh EICAR file after the flood: %v, want EPERM", err)
			}
		}
		var keys []fileKey
		for i := range threads {
			keys = append(keys, keyOf(t, filepath.Join(dir, fmt.Sprintf("d%d.com", i))))
		}
		wait := 10 * time.Second
		if aborted {
			wait = 0
		}
		lastKey := keyOf(t, last)
		recs := waitRecords(t, d, append(keys, lastKey), wait)
		var longest int
		for _, r := range recs {
			longest = max(longest, len(r.Cmdline))
		}
		var missing []string
		for i, k := range keys {
			if recordOf(k, recs) == nil {
				missing = append(missing, fmt.Sprintf("d%d.com", i))
			}
		}
		t.Logf("%d records; the longest command line kept: %d bytes", len(recs), longest)
		if len(missing) > 0 {
			t.Errorf("no record of nobody's detected files %v", missing)
		}
		if aborted {
			t.Errorf("not checked: a record of a detection after the flood (the daemon was stopped)")
		} else if recordOf(lastKey, recs) == nil {
			t.Errorf("no record of root's EICAR file opened after the flood, within %v", wait)
		}
		if longest > cmdlineMax {
			t.Errorf("a record keeps %d bytes of command line, want at most %d", longest, cmdlineMax)
		}
	})

	t.Run("vault", func(t *testing.T) {
		// 20 sparse files of 32 MiB (max_file_size), each matched by a
		// rule of the test's, opened once each with action = quarantine
		// and a vault of at most 64 MiB.
		const (
			files    = 20
			size     = 32 << 20
			maxBytes = 64 << 20
		)
		rules := t.TempDir()
		writeFile(t, filepath.Join(rules, "attack.yar"), "rule attack_vault { condition: uint32(0) == 0x56514746 }\n", 0o644) // "FGQV" at 0
		d := startDaemon(t, options{ruleDirs: []string{rules}, quarantine: fmt.Sprintf("action = \"quarantine\"\nmax_bytes = %d", maxBytes)})
		a := newAttacker(t, d)
		dir := nobodyDir(t, d.Dir, "nb", 0o755)
		var paths []string
		for i := range files {
			paths = append(paths, filepath.Join(dir, fmt.Sprintf("v%d", i)))
		}
		// Sparse first, the marker after (no write makes a detected file
		// on the way), and a number after it: the vault keeps content by
		// its sha256, once.
		if code, out := a.sh(`i=0; for f in "$@"; do truncate -s `+strconv.Itoa(size)+` "$f" && printf FGQV%06d $i | dd of="$f" conv=notrunc status=none || exit 1; i=$((i+1)); done`, paths...); code != 0 {
			t.Fatalf("nobody's files: exit %d, %s", code, out)
		}
		keys := make(map[string]fileKey)
		for _, p := range paths {
			keys[p] = keyOf(t, p)
		}
		vault := filepath.Join(d.Work, "vault")
		peak := watchPeak(10*time.Millisecond, func() int64 { return filesSize(vault) })
		for _, p := range paths {
			if code, out := a.sh(`cat "$1" > /dev/null`, p); code == 0 || !strings.Contains(out, "Operation not permitted") {
				t.Errorf("nobody's open of %s: exit %d, %q; want EPERM", filepath.Base(p), code, out)
			}
		}
		// Every detection recorded, no move under way.
		var recs []quarantine.Record
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			recs = records(t, d, files, 0)
			busy := 0
			for _, r := range recs {
				if r.State == quarantine.StateQuarantining {
					busy++
				}
			}
			if len(recs) >= files && busy == 0 || time.Now().After(deadline) {
				break
			}
		}
		inVault := peak()
		moved, kept := 0, 0
		for _, p := range paths {
			r := recordOf(keys[p], recs)
			_, err := os.Stat(p)
			switch {
			case r == nil && err != nil:
				t.Errorf("%s: no record, and not in place: %v", filepath.Base(p), err)
			case r == nil:
				t.Errorf("%s: no record", filepath.Base(p))
			case r.State == quarantine.StateQuarantined:
				moved++
			case err != nil:
				t.Errorf("%s: %s, not moved, and not in place: %v", filepath.Base(p), r.State, err)
			default:
				kept++
			}
		}
		t.Logf("vault peak %.1f MiB (max_bytes %d MiB), now %.1f MiB; %d files moved, %d left in place; daemon: %v", float64(inVault)/(1<<20), maxBytes>>20,
			float64(filesSize(vault))/(1<<20), moved, kept, pick(d.counters(), "detections", "quarantined", "quarantine_errors", "vault_full"))
		if inVault > maxBytes {
			t.Errorf("the vault held %.1f MiB, above max_bytes = %d MiB", float64(inVault)/(1<<20), maxBytes>>20)
		}
	})

	t.Run("full disk", func(t *testing.T) {
		// The database on a 1 MiB tmpfs, filled up: records fail.
		d := startDaemon(t, options{config: "workers = 2"})
		small := t.TempDir()
		if err := unix.Mount("tmpfs", small, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=1m,mode=0700"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Unmount(small, unix.MNT_DETACH) })
		db := filepath.Join(d.Work, "quarantine.db")
		reconfigure(t, d, fmt.Sprintf("db = %q", db), fmt.Sprintf("db = %q", filepath.Join(small, "quarantine.db")))
		if f, err := os.Create(filepath.Join(small, "filler")); err != nil {
			t.Fatal(err)
		} else {
			f.Write(make([]byte, 2<<20)) // until ENOSPC
			f.Close()
		}
		a := newAttacker(t, d)
		dir := nobodyDir(t, d.Dir, "nb", 0o755)
		probe := filepath.Join(d.Dir, "root")
		if err := os.Mkdir(probe, 0o755); err != nil {
			t.Fatal(err)
		}
		c := d.counters()
		bad := freshFiles(t, probe, "eicar", 20, eicar, 0)
		d.waitCounter("invalidations", c["invalidations"]+float64(len(bad)))
		c = d.counters()
		stopFlood := a.startDetectionFlood(t, dir, 4, 0, eicar)
		var allowed []string
		for _, f := range bad {
			if err := read(t, f); !errors.Is(err, unix.EPERM) {
				allowed = append(allowed, fmt.Sprintf("%s: %v", filepath.Base(f), err))
			}
			time.Sleep(100 * time.Millisecond)
		}
		summary := stopFlood()
		dl := delta(c, d.counters())
		st := getStatus(t, d)
		var errLine string
		for _, l := range strings.Split(d.Log(), "\n") {
			if f := strings.SplitN(l, "\t", 3); len(f) == 3 && strings.EqualFold(f[1], "error") {
				errLine = l
				break
			}
		}
		t.Logf("nobody's flood on a full database disk: %s; daemon: %v; health %v %q; error line: %.200s", summary,
			pick(dl, "detections", "record_errors", "cached_denials", "detections_coalesced", "detections_deferred"), st.Health.Healthy, st.Health.Reason, errLine)
		if len(allowed) > 0 {
			t.Errorf("root's opens of fresh EICAR files with the database disk full, not denied: %v", allowed)
		}
		if _, err := fmt.Sscanf(summary, "%d denied, %d allowed", new(int), new(int)); err != nil || !strings.Contains(summary, " 0 allowed") {
			t.Errorf("nobody's opens of its detected files with the database disk full: %q; want all denied", summary)
		}
		if dl["record_errors"] < 1 {
			t.Errorf("record_errors = %v with the database disk full, want it counted", dl["record_errors"])
		}
		if errLine == "" {
			t.Errorf("nothing logged at error level with the database disk full")
		}
		if st.Health.Healthy || !strings.Contains(st.Health.Reason, "record") {
			t.Errorf("/status health with the database disk full: healthy %v, reason %q; want unhealthy, the reason naming the records", st.Health.Healthy, st.Health.Reason)
		}
	})
}

// attackToolSource is the attacks' own helper, run as nobody: what a
// shell cannot do (a FUSE server, threads, io_submit, leases, a long
// command line, memfd_create). Each command says what it does.
const attackToolSource = `#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <linux/fuse.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static int fail(const char *what) {
	fprintf(stderr, "%s: %s\n", what, strerror(errno));
	return 1;
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
	va_list ap;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fflush(stdout);
}

/* line waits for a line on stdin; 0 at its end. */
static int line(void) {
	char b[64];
	return fgets(b, sizeof b, stdin) != NULL;
}

static double now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- jam: a FUSE file whose READ is never answered ---- */

static void reply(int fuse, uint64_t unique, int error, const void *arg, size_t n) {
	struct fuse_out_header h = {.len = sizeof h + n, .error = error, .unique = unique};
	struct iovec iov[2] = {{&h, sizeof h}, {(void *)arg, n}};
	if (writev(fuse, iov, n ? 2 : 1) < 0 && errno != ENOENT)
		_exit(3);
}

static void attr(struct fuse_attr *a, uint64_t node) {
	memset(a, 0, sizeof *a);
	a->ino = node;
	a->nlink = 1;
	a->blksize = 4096;
	if (node == FUSE_ROOT_ID) {
		a->mode = S_IFDIR | 0755;
	} else {
		a->mode = S_IFREG | 0644;
		a->size = 1 << 16;
		a->blocks = a->size / 512;
	}
}

/* serve answers INIT, LOOKUP of "f", GETATTR, OPEN, FLUSH and RELEASE,
 * and never READ: each READ is told on notify. */
static void serve(int fuse, int notify) {
	static char buf[1 << 17];
	for (;;) {
		ssize_t n = read(fuse, buf, sizeof buf);
		if (n < 0 && (errno == EINTR || errno == ENOENT))
			continue;
		if (n < (ssize_t)sizeof(struct fuse_in_header))
			_exit(0);
		struct fuse_in_header *in = (void *)buf;
		char *arg = buf + sizeof *in;
		switch (in->opcode) {
		case FUSE_INIT: {
			struct fuse_init_in *ii = (void *)arg;
			struct fuse_init_out o = {.major = FUSE_KERNEL_VERSION, .minor = FUSE_KERNEL_MINOR_VERSION,
				.max_readahead = ii->max_readahead, .max_background = 16, .congestion_threshold = 12,
				.max_write = 4096, .time_gran = 1};
			reply(fuse, in->unique, 0, &o, sizeof o);
			break;
		}
		case FUSE_LOOKUP: {
			if (strcmp(arg, "f") != 0) {
				reply(fuse, in->unique, -ENOENT, NULL, 0);
				break;
			}
			struct fuse_entry_out e = {.nodeid = 2, .entry_valid = 3600, .attr_valid = 3600};
			attr(&e.attr, 2);
			reply(fuse, in->unique, 0, &e, sizeof e);
			break;
		}
		case FUSE_GETATTR: {
			struct fuse_attr_out a = {.attr_valid = 3600};
			attr(&a.attr, in->nodeid);
			reply(fuse, in->unique, 0, &a, sizeof a);
			break;
		}
		case FUSE_OPEN: {
			struct fuse_open_out o = {.fh = 1};
			reply(fuse, in->unique, 0, &o, sizeof o);
			break;
		}
		case FUSE_READ:
			if (write(notify, "R", 1) < 0)
				_exit(4);
			break; /* never answered */
		case FUSE_FORGET:
		case FUSE_BATCH_FORGET:
		case FUSE_INTERRUPT:
			break;
		case FUSE_FLUSH:
		case FUSE_RELEASE:
			reply(fuse, in->unique, 0, NULL, 0);
			break;
		default:
			reply(fuse, in->unique, -ENOSYS, NULL, 0);
		}
	}
}

static char *jamMap;
static void *spare;
static atomic_int munmapTid;

static void *faulter(void *unused) {
	int mem = open("/proc/self/mem", O_RDONLY);
	char c;
	if (mem < 0 || pread(mem, &c, 1, (off_t)(uintptr_t)jamMap) < 0)
		fprintf(stderr, "faulter: %s\n", strerror(errno));
	return NULL;
}

static int unmapGo[2]; /* a byte on it starts the munmap */

static void *unmapper(void *unused) {
	char c;
	atomic_store(&munmapTid, (int)syscall(SYS_gettid));
	if (read(unmapGo[0], &c, 1) == 1)
		munmap(spare, 4096);
	return NULL;
}

/* taskState returns the state letter of thread tid of this process. */
static char taskState(int tid) {
	char p[64], b[512];
	snprintf(p, sizeof p, "/proc/self/task/%d/stat", tid);
	int fd = open(p, O_RDONLY);
	if (fd < 0)
		return '?';
	ssize_t n = read(fd, b, sizeof b - 1);
	close(fd);
	if (n <= 0)
		return '?';
	b[n] = 0;
	char *r = strrchr(b, ')');
	return r && r[1] && r[2] ? r[2] : '?';
}

/* jam MNT FILE (in a user and mount namespace of its own): mounts a FUSE
 * filesystem on MNT served by a child process that never answers READ;
 * one thread reads /proc/self/mem at a page mapped from it and holds the
 * mmap_lock, a second queues munmap behind it, then the main thread opens
 * FILE. Says "server PID", "jammed", then how the open went; exits at
 * the end of stdin. */
static int jam(const char *mnt, const char *file) {
	/* Whatever faults a page in after the jam (the vDSO's data, printf's
	 * float code) waits for the lock too: use them once before. */
	char warm[64];
	snprintf(warm, sizeof warm, "%.3f %s", now(), strerror(EPERM));
	int fuse = open("/dev/fuse", O_RDWR | O_CLOEXEC);
	if (fuse < 0)
		return fail("open /dev/fuse");
	char opts[128];
	snprintf(opts, sizeof opts, "fd=%d,rootmode=40000,user_id=0,group_id=0", fuse);
	if (mount("attack", mnt, "fuse", MS_NOSUID | MS_NODEV, opts) < 0)
		return fail("mount fuse");
	int notify[2];
	if (pipe2(notify, O_CLOEXEC) < 0)
		return fail("pipe");
	pid_t server = fork();
	if (server < 0)
		return fail("fork");
	if (server == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(notify[0]);
		serve(fuse, notify[1]);
		_exit(0);
	}
	close(fuse);
	close(notify[1]);
	say("server %d\n", server);
	char path[4096];
	snprintf(path, sizeof path, "%s/f", mnt);
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return fail("open the FUSE file");
	jamMap = mmap(NULL, 1 << 16, PROT_READ, MAP_SHARED, fd, 0);
	spare = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (jamMap == MAP_FAILED || spare == MAP_FAILED)
		return fail("mmap");
	/* Both threads are made now: a thread's stack is an mmap, which
	 * would wait for the lock like the munmap. */
	pthread_t a, b;
	if (pipe(unmapGo) < 0)
		return fail("pipe");
	pthread_create(&b, NULL, unmapper, NULL);
	pthread_create(&a, NULL, faulter, NULL);
	struct pollfd p = {.fd = notify[0], .events = POLLIN};
	char c;
	if (poll(&p, 1, 10000) != 1 || read(notify[0], &c, 1) != 1) {
		fprintf(stderr, "the FUSE server got no READ\n");
		return 1;
	}
	if (write(unmapGo[1], "g", 1) != 1)
		return fail("write");
	char st = '?';
	for (int i = 0; i < 500; i++) {
		int tid = atomic_load(&munmapTid);
		if (tid && (st = taskState(tid)) == 'D')
			break;
		usleep(2000);
	}
	if (st != 'D') {
		fprintf(stderr, "munmap is not waiting (state %c)\n", st);
		return 1;
	}
	say("jammed\n");
	double t0 = now();
	int r = open(file, O_RDONLY);
	double took = now() - t0;
	if (r >= 0)
		say("open: allowed after %.3f s\n", took);
	else
		say("open: %s after %.3f s\n", strerror(errno), took);
	while (read(0, warm, sizeof warm) > 0) /* no stdio: its buffer would be allocated now */
		;
	_exit(0);
}

/* ---- aio: a write through io_submit ---- */

/* aio FILE CONTENT: writes CONTENT at offset 0 of FILE with io_submit,
 * says "written", keeps the fd until a line, closes it, says "closed",
 * and exits at the next line. */
static int aio(const char *file, const char *content) {
	int fd = open(file, O_RDWR);
	if (fd < 0)
		return fail("open");
	aio_context_t ctx = 0;
	if (syscall(SYS_io_setup, 1, &ctx) < 0)
		return fail("io_setup");
	struct iocb cb = {.aio_lio_opcode = IOCB_CMD_PWRITE, .aio_fildes = fd,
		.aio_buf = (uint64_t)(uintptr_t)content, .aio_nbytes = strlen(content)};
	struct iocb *cbs[1] = {&cb};
	if (syscall(SYS_io_submit, ctx, 1, cbs) != 1)
		return fail("io_submit");
	struct io_event ev;
	if (syscall(SYS_io_getevents, ctx, 1, 1, &ev, NULL) != 1)
		return fail("io_getevents");
	if (ev.res != (int64_t)strlen(content)) {
		fprintf(stderr, "aio write: %lld\n", (long long)ev.res);
		return 1;
	}
	say("written\n");
	line();
	close(fd);
	say("closed\n");
	line();
	return 0;
}

/* ---- lease: a writer's close lost under a write lease ---- */

static atomic_int breaks;
static void onSIGIO(int sig) { atomic_fetch_add(&breaks, 1); }

/* lease FILE CONTENT HOLD_MS [DIR N]: writes CONTENT over the start of
 * FILE through a shared mapping, opens it read-only, closes the writer's
 * fd and at once takes a write lease through the read-only one (whose
 * close is no writer's close), and holds it for HOLD_MS. With DIR and N, N other files in DIR, opened for writing
 * beforehand, are closed just before FILE: their closes come first.
 * Says how many tries the lease took and how many times someone tried to
 * break it (SIGIO): each is an open of the file for the writer's close;
 * or "refused" if the read-only open was denied. */
static int lease(const char *file, const char *content, int holdMs, const char *dir, int backlog) {
	struct sigaction sa = {.sa_handler = onSIGIO};
	sigaction(SIGIO, &sa, NULL);
	size_t n = strlen(content);
	int *others = calloc(backlog + 1, sizeof *others);
	for (int i = 0; i < backlog; i++) {
		char p[4096];
		snprintf(p, sizeof p, "%s/backlog%d", dir, i);
		if ((others[i] = open(p, O_WRONLY | O_CREAT, 0644)) < 0)
			return fail(p);
	}
	int fd = open(file, O_RDWR);
	if (fd < 0)
		return fail("open");
	char *m = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		return fail("mmap");
	memcpy(m, content, n);
	munmap(m, n);
	int ro = open(file, O_RDONLY);
	if (ro < 0 && errno == EPERM) {
		/* Scanned, and denied: the daemon no longer trusts the file. */
		say("refused: %s\n", strerror(errno));
		return 0;
	}
	if (ro < 0)
		return fail("open read-only");
	for (int i = 0; i < backlog; i++)
		close(others[i]);
	close(fd); /* the writer's close */
	int tries = 1;
	double t0 = now();
	while (fcntl(ro, F_SETLEASE, F_WRLCK) < 0) {
		if (errno != EAGAIN || now() - t0 > 2)
			return fail("F_SETLEASE");
		tries++;
	}
	double took = now() - t0;
	usleep(holdMs * 1000);
	int b = atomic_load(&breaks);
	fcntl(ro, F_SETLEASE, F_UNLCK);
	close(ro);
	say("leased after %d tries (%.0f us); %d breaks\n", tries, took * 1e6, b);
	return 0;
}

/* ---- openflood: opens of big files, each changed before each open ---- */

static atomic_int stop;
struct opener {
	pthread_t th;
	int fd;
	char path[256];
	long opens, slow, errors;
	double worst;
};

static void *opens(void *arg) {
	struct opener *o = arg;
	for (unsigned char b = 0; !atomic_load(&stop); b++) {
		if (pwrite(o->fd, &b, 1, 0) != 1) {
			o->errors++;
			continue;
		}
		double t0 = now();
		int r = open(o->path, O_RDONLY);
		double took = now() - t0;
		if (r < 0)
			o->errors++;
		else
			close(r);
		o->opens++;
		if (took > 1)
			o->slow++;
		if (took > o->worst)
			o->worst = took;
	}
	return NULL;
}

/* openflood DIR N SIZE: makes N sparse files of SIZE bytes in DIR, says
 * "ready", waits for a line, then from N threads rewrites one byte of its
 * own file and opens it, again and again, until the next line; says how
 * many opens, how many took over a second, the longest. */
static int openflood(const char *dir, int n, long long size) {
	struct opener *os = calloc(n, sizeof *os);
	for (int i = 0; i < n; i++) {
		snprintf(os[i].path, sizeof os[i].path, "%s/f%d", dir, i);
		os[i].fd = open(os[i].path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (os[i].fd < 0 || ftruncate(os[i].fd, size) < 0)
			return fail(os[i].path);
	}
	say("ready\n");
	if (!line())
		return 0;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 64 << 10);
	for (int i = 0; i < n; i++)
		if (pthread_create(&os[i].th, &attr, opens, &os[i]) != 0)
			return fail("pthread_create");
	say("started\n");
	line();
	atomic_store(&stop, 1);
	long total = 0, slow = 0, errors = 0;
	double worst = 0;
	for (int i = 0; i < n; i++) {
		pthread_join(os[i].th, NULL);
		total += os[i].opens;
		slow += os[i].slow;
		errors += os[i].errors;
		if (os[i].worst > worst)
			worst = os[i].worst;
	}
	say("%ld opens, %ld over 1 s, longest %.3f s, %ld errors\n", total, slow, worst, errors);
	return 0;
}

/* ---- detflood: opens of detected files, each changed before each open ---- */

struct detector {
	pthread_t th;
	int fd;
	char path[256];
	const char *content;
	long denied, allowed, errors;
};

static void *detect(void *arg) {
	struct detector *o = arg;
	size_t n = strlen(o->content);
	while (!atomic_load(&stop)) {
		if (pwrite(o->fd, o->content, n, 0) != (ssize_t)n) {
			o->errors++;
			continue;
		}
		int r = open(o->path, O_RDONLY);
		if (r >= 0) {
			o->allowed++;
			close(r);
		} else if (errno == EPERM) {
			o->denied++;
		} else {
			o->errors++;
		}
	}
	return NULL;
}

/* detflood DIR N PAD_KIB CONTENT: re-runs itself with PAD_KIB KiB more of
 * arguments (a command line that long), makes N files in DIR and, from N
 * threads, writes CONTENT over its own file (through an fd kept open, so
 * that the file, once detected, can still be written) and opens it,
 * again and again: each write moves the change stamp, so each open is
 * scanned and detected anew. "ready", a line, "started", a line, then
 * the counts. */
static int detflood(char **argv, int n, int padKiB, const char *content) {
	if (padKiB > 0) {
		/* The kernel takes up to a quarter of the stack limit of
		 * arguments: raise it to the hard limit. */
		struct rlimit rl;
		getrlimit(RLIMIT_STACK, &rl);
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_STACK, &rl) < 0)
			return fail("setrlimit");
		int pads = padKiB / 120;
		char **args = calloc(6 + pads + 1, sizeof *args);
		char *pad = malloc(120 << 10);
		memset(pad, 'A', (120 << 10) - 1);
		pad[(120 << 10) - 1] = 0;
		args[0] = argv[0];
		args[1] = argv[1];
		args[2] = argv[2];
		args[3] = argv[3];
		args[4] = "0";
		args[5] = argv[5];
		for (int i = 0; i < pads; i++)
			args[6 + i] = pad;
		execv("/proc/self/exe", args);
		return fail("execv");
	}
	struct detector *os = calloc(n, sizeof *os);
	for (int i = 0; i < n; i++) {
		snprintf(os[i].path, sizeof os[i].path, "%s/d%d.com", argv[2], i);
		os[i].content = content;
		os[i].fd = open(os[i].path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (os[i].fd < 0)
			return fail(os[i].path);
	}
	say("ready\n");
	if (!line())
		return 0;
	for (int i = 0; i < n; i++)
		if (pthread_create(&os[i].th, NULL, detect, &os[i]) != 0)
			return fail("pthread_create");
	say("started\n");
	line();
	atomic_store(&stop, 1);
	long denied = 0, allowed = 0, errors = 0;
	for (int i = 0; i < n; i++) {
		pthread_join(os[i].th, NULL);
		denied += os[i].denied;
		allowed += os[i].allowed;
		errors += os[i].errors;
	}
	say("%ld denied, %ld allowed, %ld errors\n", denied, allowed, errors);
	return 0;
}

/* ---- memfdexec: a script run from memory ---- */

/* memfdexec SCRIPT: writes SCRIPT into a memfd and executes it through
 * /proc/self/fd. */
static int memfdexec(const char *script) {
	int fd = syscall(SYS_memfd_create, "attack", 0);
	if (fd < 0)
		return fail("memfd_create");
	if (write(fd, script, strlen(script)) < 0)
		return fail("write");
	char p[64];
	snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
	char *args[] = {"attack", NULL}, *env[] = {"PATH=/usr/bin:/bin", NULL};
	execve(p, args, env);
	return fail("execve");
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	const char *cmd = argv[1];
	if (!strcmp(cmd, "jam") && argc == 4)
		return jam(argv[2], argv[3]);
	if (!strcmp(cmd, "aio") && argc == 4)
		return aio(argv[2], argv[3]);
	if (!strcmp(cmd, "lease") && argc == 5)
		return lease(argv[2], argv[3], atoi(argv[4]), NULL, 0);
	if (!strcmp(cmd, "lease") && argc == 7)
		return lease(argv[2], argv[3], atoi(argv[4]), argv[5], atoi(argv[6]));
	if (!strcmp(cmd, "openflood") && argc == 5)
		return openflood(argv[2], atoi(argv[3]), atoll(argv[4]));
	if (!strcmp(cmd, "detflood") && argc >= 6)
		return detflood(argv, atoi(argv[3]), atoi(argv[4]), argv[5]);
	if (!strcmp(cmd, "memfdexec") && argc == 3)
		return memfdexec(argv[2]);
	return 2;
}
`
