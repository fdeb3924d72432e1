package fan

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fanguard/fanguard/internal/testutil"
)

// nsChild is a shell in a mount namespace of its own, driven line by line:
// its script reads commands from stdin and prints what it did. It ends when
// its stdin closes, and is killed with its process group at the end of the
// test if it does not.
type nsChild struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string
}

// How a child enters its namespace.
const (
	asRoot       = iota // unshare -m --propagation private, as root
	asRootUserNS        // unshare -Urm as root: a user namespace of root's
	asNobody            // setpriv to nobody, then unshare -Urm: a user namespace
)

// childLoop ends every child script: it answers "cat FILE" and "sh CMD"
// until stdin closes.
const childLoop = `
while read -r cmd arg; do
	case "$cmd" in
	cat) if cat "$arg" >/dev/null; then echo catted; else echo failed; fi ;;
	sh) if eval "$arg"; then echo done; else echo failed; fi ;;
	esac
done
`

// startChild runs script with sh in a new mount namespace; args are its
// $1, $2, ...
func startChild(t *testing.T, how int, script string, args ...string) *nsChild {
	t.Helper()
	return startChildFiles(t, how, nil, script, args...)
}

// startChildFiles is startChild with files the child gets as fd 3, 4, ...
func startChildFiles(t *testing.T, how int, files []*os.File, script string, args ...string) *nsChild {
	t.Helper()
	var argv []string
	switch how {
	case asRoot:
		argv = []string{"unshare", "-m", "--propagation", "private"}
	case asRootUserNS:
		argv = []string{"unshare", "-Urm"}
	case asNobody:
		argv = []string{requireSetpriv(t), "--reuid=65534", "--regid=65534", "--clear-groups", "unshare", "-Urm"}
	}
	argv = append(argv, "sh", "-c", script+childLoop, "sh")
	argv = append(argv, args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = &testWriter{t: t}
	cmd.ExtraFiles = files
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %v: %v", argv, err)
	}
	c := &nsChild{cmd: cmd, in: in, lines: make(chan string, 100)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	t.Cleanup(func() { c.stop(t) })
	return c
}

// stop closes the child's stdin and waits for it to end, killing its
// process group after 5 s.
func (c *nsChild) stop(t *testing.T) {
	c.in.Close()
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Errorf("child %d still running 5 s after its stdin closed: killing it", c.cmd.Process.Pid)
		syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// expect waits up to d for the child to print want, and returns when it
// read it.
func (c *nsChild) expect(t *testing.T, want string, d time.Duration) time.Time {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case line, ok := <-c.lines:
			if !ok {
				t.Fatalf("child ended before printing %q", want)
			}
			if line == want {
				return time.Now()
			}
			t.Fatalf("child printed %q, want %q", line, want)
		case <-timeout:
			t.Fatalf("child did not print %q within %v", want, d)
		}
	}
}

// do sends the child one command line.
func (c *nsChild) do(t *testing.T, line string) {
	t.Helper()
	if _, err := io.WriteString(c.in, line+"\n"); err != nil {
		t.Fatalf("writing to child: %v", err)
	}
}

// testWriter logs what a child writes to stderr.
type testWriter struct{ t *testing.T }

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Logf("child stderr: %s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// requireSetpriv returns the path of setpriv(1); without it the test is
// skipped, and fails under CI.
func requireSetpriv(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("setpriv")
	if err == nil {
		return p
	}
	if testutil.InCI() {
		t.Fatalf("setpriv not found, and CI=true: install util-linux: %v", err)
	}
	t.Skipf("setpriv not found: %v", err)
	return ""
}

// requireUserNamespaces skips the test when nobody cannot make a user
// namespace with a mount namespace.
func requireUserNamespaces(t *testing.T) {
	t.Helper()
	setpriv := requireSetpriv(t)
	out, err := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "unshare", "-Urm", "true").CombinedOutput()
	if err != nil {
		t.Skipf("unprivileged user namespaces are not available (%v: %s)", err, strings.TrimSpace(string(out)))
	}
}

// reachableByNobody opens the directories from dir up to / for search by
// others, which t.TempDir does not.
func reachableByNobody(t *testing.T, dir string) {
	t.Helper()
	for d := dir; d != "/"; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(d, fi.Mode().Perm()|0o011); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// nsReport is one Report call.
type nsReport struct {
	at  time.Time
	m   ForeignMount
	err error
}

// nsRecorder is a fake Mark and a Report that hands each call to the test.
type nsRecorder struct {
	mu      sync.Mutex // guards following
	reports []nsReport
	markErr error
	marks   int
	waiters []chan struct{}
}

func (r *nsRecorder) mark(fd int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.marks++
	return r.markErr
}

func (r *nsRecorder) report(m ForeignMount, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reports = append(r.reports, nsReport{time.Now(), m, err})
	for _, w := range r.waiters {
		close(w)
	}
	r.waiters = nil
}

// find returns the first report about point (any mount there) for which ok
// holds, waiting up to d for it.
func (r *nsRecorder) find(t *testing.T, point string, ok func(error) bool, d time.Duration) (nsReport, bool) {
	t.Helper()
	deadline := time.After(d)
	for {
		r.mu.Lock()
		for _, rep := range r.reports {
			if rep.m.Point == point && ok(rep.err) {
				r.mu.Unlock()
				return rep, true
			}
		}
		w := make(chan struct{})
		r.waiters = append(r.waiters, w)
		r.mu.Unlock()
		select {
		case <-w:
		case <-deadline:
			return nsReport{}, false
		}
	}
}

// about returns the reports about point so far.
func (r *nsRecorder) about(point string) []nsReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []nsReport
	for _, rep := range r.reports {
		if rep.m.Point == point {
			out = append(out, rep)
		}
	}
	return out
}

func isNil(err error) bool { return err == nil }

// newTestNamespaceMarker makes a NamespaceMarker that protects only paths,
// and closes it at the end of the test.
func newTestNamespaceMarker(t *testing.T, mark func(int) error, rec *nsRecorder, interval time.Duration, paths ...string) *NamespaceMarker {
	t.Helper()
	if len(paths) == 0 {
		t.Fatal("tests must protect only paths they made")
	}
	m, err := NewNamespaceMarker(NamespaceOptions{
		FSTypes:  []string{"tmpfs"},
		Paths:    paths,
		Mark:     mark,
		Report:   rec.report,
		Interval: interval,
	})
	if err != nil {
		t.Fatalf("NewNamespaceMarker: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return m
}

// runMarker runs m.Run until the end of the test.
func runMarker(t *testing.T, m *NamespaceMarker) {
	ran := make(chan error, 1)
	go func() { ran <- m.Run() }()
	t.Cleanup(func() {
		m.Close()
		select {
		case err := <-ran:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(2 * time.Second):
			t.Errorf("Run still running 2 s after Close")
		}
	})
}

// permEvents serves the permission events of g, allowing each, and sends
// the device of each event's file on the returned channel.
func permEvents(t *testing.T, g *Group) <-chan uint64 {
	devs := make(chan uint64, 1000)
	done := serve(t, g, func(ev Event) bool {
		if fi, err := StatFd(ev.Fd); err == nil {
			select {
			case devs <- fi.ID.Dev:
			default:
			}
		}
		return true
	})
	t.Cleanup(func() {
		g.Shutdown()
		<-done
		g.Close()
	})
	return devs
}

// TestNamespaceMarkerMarks mounts a tmpfs in another namespace, as root in
// a private mount namespace and as nobody in a user namespace, below the
// protect path or outside it; a mount below it must be marked within 1 s,
// so that a permission group gets the open of a file there.
func TestNamespaceMarkerMarks(t *testing.T) {
	testutil.RequireRoot(t)
	tests := []struct {
		name    string
		how     int
		protect bool // mounted below the protect path
	}{
		{"root in a private mount namespace", asRoot, true},
		{"nobody in a user namespace", asNobody, true},
		{"root, outside the protect paths", asRoot, false},
		{"nobody, outside the protect paths", asNobody, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.how == asNobody {
				requireUserNamespaces(t)
			}
			protected := testutil.MountTmpfs(t)
			other := testutil.MountTmpfs(t)
			reachableByNobody(t, protected)
			reachableByNobody(t, other)
			point := filepath.Join(other, "u")
			if tt.protect {
				point = filepath.Join(protected, "u")
			}
			if err := os.Mkdir(point, 0o755); err != nil {
				t.Fatal(err)
			}

			g, err := NewGroup(GroupOptions{})
			if err != nil {
				t.Fatal(err)
			}
			events := permEvents(t, g)
			rec := &nsRecorder{}
			m := newTestNamespaceMarker(t, g.MarkFilesystemAt, rec, 0, protected)
			if err := m.Sync(); err != nil {
				t.Fatalf("Sync: %v", err)
			}
			runMarker(t, m)

			c := startChild(t, tt.how, `mount -t tmpfs -o size=1m nsmarker-test "$1" || exit 1
echo mounted
echo content >"$1/f" || exit 1`, point)
			mounted := c.expect(t, "mounted", 5*time.Second)
			if !tt.protect {
				// Two looks at least.
				time.Sleep(2 * DefaultNamespaceInterval)
				if err := m.Sync(); err != nil {
					t.Fatal(err)
				}
				if reps := rec.about(point); len(reps) > 0 {
					t.Errorf("a mount outside the protect paths was reported: %+v", reps)
				}
				for _, fm := range m.Marked() {
					if fm.Point == point {
						t.Errorf("a mount outside the protect paths was marked: %+v", fm)
					}
				}
				return
			}
			rep, ok := rec.find(t, point, isNil, 3*time.Second)
			if !ok {
				t.Fatalf("%s not marked within 3 s; reports: %+v", point, rec.about(point))
			}
			took := rep.at.Sub(mounted)
			t.Logf("marked %d ms after the mount (%s in mount namespace %d, unique mount ID %#x)", took.Milliseconds(), rep.m.Point, rep.m.Namespace, rep.m.UniqueID)
			if took > time.Second {
				t.Errorf("marked %v after the mount, want within 1 s", took)
			}
			if rep.m.FSType != "tmpfs" || rep.m.Namespace == 0 || rep.m.NamespaceID == 0 {
				t.Errorf("report %+v, want a tmpfs in a namespace", rep.m)
			}

			c.do(t, "cat "+point+"/f")
			deadline := time.After(2 * time.Second)
		wait:
			for {
				select {
				case dev := <-events:
					if dev == rep.m.Dev {
						break wait
					}
				case <-deadline:
					t.Fatalf("no permission event for the open of %s/f in the other namespace", point)
				}
			}
			c.expect(t, "catted", 2*time.Second)
		})
	}
}

// TestNamespaceMarkerUnreachable: a mount in scope that no path leads to
// without asking a filesystem, or that another mount hides, is reported
// at once and not marked; the look does not wait.
func TestNamespaceMarkerUnreachable(t *testing.T) {
	testutil.RequireRoot(t)
	tests := []struct {
		name   string
		script string // mounts what cannot be reached on $1/x
		isErr  func(error) bool
	}{{
		name: "behind a sysfs directory, revalidated at every lookup",
		// The way to $1/x/kernel goes through sysfs, whose dentries
		// cannot be revalidated in RCU mode: as a FUSE directory past
		// its entry timeout, or an NFS one.
		script: `mount -t sysfs nsmarker-sysfs "$1/x" && mount -t tmpfs -o size=1m nsmarker-test "$1/x/kernel" || exit 1`,
		isErr: func(err error) bool {
			return errors.Is(err, errNotCached) && errors.Is(err, unix.EAGAIN)
		},
	}, {
		name:   "hidden under another mount",
		script: `mount -t tmpfs -o size=1m hidden "$1/x" && mount -t tmpfs -o size=1m on-top "$1/x" || exit 1`,
		isErr:  func(err error) bool { return errors.Is(err, errCovered) },
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			protected := testutil.MountTmpfs(t)
			if err := os.Mkdir(filepath.Join(protected, "x"), 0o755); err != nil {
				t.Fatal(err)
			}
			rec := &nsRecorder{}
			m := newTestNamespaceMarker(t, rec.mark, rec, 0, protected)
			c := startChild(t, asRoot, tt.script+"\necho mounted", protected)
			c.expect(t, "mounted", 5*time.Second)

			start := time.Now()
			if err := m.Sync(); err != nil {
				t.Fatalf("Sync: %v", err)
			}
			took := time.Since(start)
			t.Logf("Sync took %v", took)
			if took > time.Second {
				t.Errorf("Sync took %v: it waited for something", took)
			}
			var bad nsReport
			found := false
			for _, rep := range rec.about(filepath.Join(protected, "x")) {
				if tt.isErr(rep.err) {
					bad, found = rep, true
				}
			}
			for _, rep := range rec.about(filepath.Join(protected, "x", "kernel")) {
				if tt.isErr(rep.err) {
					bad, found = rep, true
				}
			}
			if !found {
				t.Fatalf("no report of the unreachable mount; reports: %+v", rec.reports)
			}
			t.Logf("reported: %s: %v", bad.m.Point, bad.err)
			for _, fm := range m.Marked() {
				if fm.Dev == bad.m.Dev {
					t.Errorf("the unreachable mount is marked: %+v", fm)
				}
			}
			// Reported once, not at every look.
			if err := m.Sync(); err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, rep := range rec.about(bad.m.Point) {
				if rep.m.Dev == bad.m.Dev && tt.isErr(rep.err) {
					n++
				}
			}
			if n != 1 {
				t.Errorf("%d reports of the unreachable mount after two looks, want 1", n)
			}
		})
	}
}

// TestNamespaceMarkerRemount: a tmpfs unmounted and mounted again at the
// same place in another namespace between two looks is marked again (it
// may get the same mount ID and device number), and a superblock is
// forgotten when its namespace goes away.
func TestNamespaceMarkerRemount(t *testing.T) {
	testutil.RequireRoot(t)
	protected := testutil.MountTmpfs(t)
	point := filepath.Join(protected, "r")
	if err := os.Mkdir(point, 0o755); err != nil {
		t.Fatal(err)
	}
	rec := &nsRecorder{}
	m := newTestNamespaceMarker(t, rec.mark, rec, 0, protected)
	c := startChild(t, asRoot, `mount -t tmpfs -o size=1m first "$1" || exit 1
echo mounted`, point)
	c.expect(t, "mounted", 5*time.Second)

	marksAt := func() []ForeignMount {
		var got []ForeignMount
		for _, rep := range rec.about(point) {
			if rep.err == nil {
				got = append(got, rep.m)
			}
		}
		return got
	}
	if err := m.Sync(); err != nil {
		t.Fatal(err)
	}
	first := marksAt()
	if len(first) != 1 {
		t.Fatalf("%d marks through %s after the first look, want 1", len(first), point)
	}
	c.do(t, `sh umount "$1" && mount -t tmpfs -o size=1m second "$1"`)
	c.expect(t, "done", 5*time.Second)
	if err := m.Sync(); err != nil {
		t.Fatal(err)
	}
	got := marksAt()
	if len(got) != 2 {
		t.Fatalf("%d marks through %s after the remount, want 2", len(got), point)
	}
	t.Logf("first mount: ID %d, device %d:%d, unique ID %#x; second: ID %d, device %d:%d, unique ID %#x",
		first[0].ID, unix.Major(first[0].Dev), unix.Minor(first[0].Dev), first[0].UniqueID,
		got[1].ID, unix.Major(got[1].Dev), unix.Minor(got[1].Dev), got[1].UniqueID)
	if got[1].UniqueID == first[0].UniqueID {
		t.Errorf("the second mount has the unique ID of the first")
	}
	if err := m.Sync(); err != nil {
		t.Fatal(err)
	}
	if n := len(marksAt()); n != 2 {
		t.Errorf("%d marks after a look with nothing new, want 2", n)
	}
	if len(m.Marked()) == 0 {
		t.Errorf("Marked is empty while the namespace lives")
	}

	c.stop(t)
	if err := m.Sync(); err != nil {
		t.Fatal(err)
	}
	for _, fm := range m.Marked() {
		if fm.NamespaceID == got[1].NamespaceID {
			t.Errorf("still marked after its namespace went away: %+v", fm)
		}
	}
}

// mountUniqueID returns the unique ID of the mount path leads to.
func mountUniqueID(t *testing.T, path string) uint64 {
	t.Helper()
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID_UNIQUE, &stx); err != nil {
		t.Fatalf("statx %s: %v", path, err)
	}
	if stx.Mask&unix.STATX_MNT_ID_UNIQUE == 0 {
		t.Skip("the kernel has no unique mount IDs (Linux 6.8)")
	}
	return stx.Mnt_id
}

// TestNamespaceMarkerTrusted: mounts of the test's own namespace are
// trusted once a look has seen them; the copy of a mount in a user
// namespace, and a bind mount made there, never are.
func TestNamespaceMarkerTrusted(t *testing.T) {
	testutil.RequireRoot(t)
	dir := testutil.MountTmpfs(t)
	for _, d := range []string{"a", "b", "new"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	rec := &nsRecorder{}
	m := newTestNamespaceMarker(t, rec.mark, rec, 0, dir)
	if m.Trusted(mountUniqueID(t, dir)) {
		t.Errorf("a mount is trusted before the first look")
	}
	if err := m.Sync(); err != nil {
		t.Fatal(err)
	}
	c := startChild(t, asRootUserNS, `mount --bind "$1/a" "$1/b" || exit 1
echo mounted`, dir)
	c.expect(t, "mounted", 5*time.Second)
	newMount := filepath.Join(dir, "new")
	mountTmpfsAt(t, newMount)
	inChild := "/proc/" + strconv.Itoa(c.cmd.Process.Pid) + "/root"

	tests := []struct {
		name          string
		id            uint64
		before, after bool // trusted before and after the next look
	}{
		{"own namespace", mountUniqueID(t, dir), true, true},
		{"own namespace, mounted since the last look", mountUniqueID(t, newMount), false, true},
		{"copy in a user namespace", mountUniqueID(t, inChild+dir), false, false},
		{"bind mount in a user namespace", mountUniqueID(t, inChild+filepath.Join(dir, "b")), false, false},
		{"no ID", 0, false, false},
	}
	for _, tt := range tests {
		if got := m.Trusted(tt.id); got != tt.before {
			t.Errorf("%s: Trusted(%#x) = %v before the look, want %v", tt.name, tt.id, got, tt.before)
		}
	}
	if err := m.Sync(); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		if got := m.Trusted(tt.id); got != tt.after {
			t.Errorf("%s: Trusted(%#x) = %v after the look, want %v", tt.name, tt.id, got, tt.after)
		}
	}

	id := mountUniqueID(t, dir)
	if allocs := testing.AllocsPerRun(100, func() { m.Trusted(id) }); allocs != 0 && !testutil.RaceEnabled {
		t.Errorf("Trusted allocates %v times, want 0", allocs)
	}
}

// TestNamespaceMarkerTrustedFollowsChanges: with Run, a mount in the
// trusted namespace becomes trusted soon after it appears, without
// waiting for the interval.
func TestNamespaceMarkerTrustedFollowsChanges(t *testing.T) {
	testutil.RequireRoot(t)
	dir := testutil.MountTmpfs(t)
	rec := &nsRecorder{}
	m := newTestNamespaceMarker(t, rec.mark, rec, time.Hour, dir)
	if err := m.Sync(); err != nil {
		t.Fatal(err)
	}
	runMarker(t, m)
	sub := filepath.Join(dir, "sub")
	start := time.Now()
	mountTmpfsAt(t, sub)
	id := mountUniqueID(t, sub)
	for !m.Trusted(id) {
		if time.Since(start) > 2*time.Second {
			t.Fatalf("a new mount of the own namespace not trusted after 2 s (interval 1 h)")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("trusted %v after the mount", time.Since(start))
}

// TestNamespaceMarkerMountEvents: a mount in a namespace that a look has
// seen is marked at once, not at the next interval, when the kernel
// reports mounts (FAN_MNT_ATTACH).
func TestNamespaceMarkerMountEvents(t *testing.T) {
	testutil.RequireRoot(t)
	protected := testutil.MountTmpfs(t)
	point := filepath.Join(protected, "u")
	if err := os.Mkdir(point, 0o755); err != nil {
		t.Fatal(err)
	}
	rec := &nsRecorder{}
	m := newTestNamespaceMarker(t, rec.mark, rec, time.Hour, protected)
	if m.attach < 0 {
		t.Skip("the kernel does not report mounts (FAN_REPORT_MNT, Linux 6.14)")
	}
	c := startChild(t, asRoot, "echo ready", point)
	c.expect(t, "ready", 5*time.Second)
	if err := m.Sync(); err != nil {
		t.Fatal(err)
	}
	runMarker(t, m)
	c.do(t, `sh mount -t tmpfs -o size=1m nsmarker-test "$1"`)
	mounted := c.expect(t, "done", 5*time.Second)
	rep, ok := rec.find(t, point, isNil, 2*time.Second)
	if !ok {
		t.Fatalf("%s not marked within 2 s (interval 1 h); reports: %+v", point, rec.about(point))
	}
	t.Logf("marked %v after the mount", rep.at.Sub(mounted))
}

func TestNewNamespaceMarkerErrors(t *testing.T) {
	mark := func(int) error { t.Error("Mark called"); return nil }
	tests := []struct {
		name    string
		opts    NamespaceOptions
		wantErr string
	}{
		{"no Mark", NamespaceOptions{FSTypes: []string{"tmpfs"}}, "Mark is required"},
		{"no types", NamespaceOptions{Mark: mark}, "no filesystem types"},
		{"relative path", NamespaceOptions{FSTypes: []string{"tmpfs"}, Paths: []string{"srv"}, Mark: mark}, `protect path "srv" is not absolute`},
		{"negative interval", NamespaceOptions{FSTypes: []string{"tmpfs"}, Mark: mark, Interval: -time.Second}, "negative interval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := NewNamespaceMarker(tt.opts)
			if err == nil {
				m.Close()
				t.Fatalf("NewNamespaceMarker succeeded, want an error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("NewNamespaceMarker error %q, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

// openFds returns the process's open fds and what they refer to.
func openFds(t *testing.T) map[string]string {
	t.Helper()
	des, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	fds := make(map[string]string)
	for _, de := range des {
		if target, err := os.Readlink("/proc/self/fd/" + de.Name()); err == nil {
			fds[de.Name()] = target
		}
	}
	return fds
}

// threadNamespaces returns the mount namespace of each of the process's
// threads, by thread ID.
func threadNamespaces(t *testing.T) map[string]string {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	nss := make(map[string]string)
	for _, task := range tasks {
		if ns, err := os.Readlink("/proc/self/task/" + task.Name() + "/ns/mnt"); err == nil {
			nss[task.Name()] = ns
		}
	}
	return nss
}

// TestNamespaceMarkerClose: Close stops Run, ends the thread, frees every
// fd, and leaves no thread in another namespace, also between looks.
func TestNamespaceMarkerClose(t *testing.T) {
	testutil.RequireRoot(t)
	dir := testutil.MountTmpfs(t)
	if err := os.Mkdir(filepath.Join(dir, "u"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := startChild(t, asRoot, `mount -t tmpfs -o size=1m nsmarker-test "$1/u" || exit 1
echo mounted`, dir)
	c.expect(t, "mounted", 5*time.Second)
	own, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	before := openFds(t)
	goroutines := runtime.NumGoroutine()

	rec := &nsRecorder{}
	m, err := NewNamespaceMarker(NamespaceOptions{FSTypes: []string{"tmpfs"}, Paths: []string{dir}, Mark: rec.mark, Report: rec.report, Interval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	tid := strconv.Itoa(m.th.tid)
	if err := m.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, ok := rec.find(t, filepath.Join(dir, "u"), isNil, time.Second); !ok {
		t.Fatalf("the child's tmpfs was not marked; reports %+v", rec.reports)
	}
	ran := make(chan error, 1)
	go func() { ran <- m.Run() }()
	time.Sleep(50 * time.Millisecond)
	m.syncMu.Lock() // between two looks
	for task, ns := range threadNamespaces(t) {
		if ns != own {
			t.Errorf("thread %s is in %s between looks, not in %s", task, ns, own)
		}
	}
	m.syncMu.Unlock()

	closeStopsRun(t, m, ran)
	if err := m.Sync(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Sync after Close = %v, want os.ErrClosed", err)
	}
	if err := m.Run(); err != nil {
		t.Errorf("Run after Close = %v, want nil", err)
	}
	// Only new ones count: the runtime may close an earlier child's
	// pidfd meanwhile.
	for fd, target := range openFds(t) {
		if before[fd] != target {
			t.Errorf("fd %s (%s) open after Close, not before NewNamespaceMarker", fd, target)
		}
	}
	gone := false
	for deadline := time.Now().Add(time.Second); !gone && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		_, err := os.Stat("/proc/self/task/" + tid)
		gone = errors.Is(err, os.ErrNotExist)
	}
	if !gone {
		t.Errorf("the namespace thread %s still exists 1 s after Close", tid)
	}
	for task, ns := range threadNamespaces(t) {
		if ns != own {
			t.Errorf("thread %s is in %s after Close, not in %s", task, ns, own)
		}
	}
	deadline := time.Now().Add(time.Second)
	for runtime.NumGoroutine() > goroutines && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > goroutines {
		t.Errorf("%d goroutines after Close, %d before", n, goroutines)
	}
}

// hungFUSE is a FUSE server that answers until hang is called, and then
// never again: the server an attacker runs to freeze whoever looks up a
// path through its mount. It serves a root directory with one
// subdirectory, "d", whose entry must be looked up again every time
// (entry timeout 0), as any path through it.
type hungFUSE struct {
	dev      *os.File // /dev/fuse, blocking: Go's poller refuses it before the mount
	mu       sync.Mutex
	hung     bool // guarded by mu
	requests int  // requests read after hang; guarded by mu
	done     chan struct{}
}

// FUSE opcodes and sizes (include/uapi/linux/fuse.h).
const (
	fuseLookup  = 1
	fuseForget  = 2
	fuseGetattr = 3
	fuseInit    = 26
	fuseBForget = 42
	fuseInHdr   = 40 // struct fuse_in_header
	fuseAttrLen = 88 // struct fuse_attr
)

func startHungFUSE(t *testing.T) *hungFUSE {
	t.Helper()
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if testutil.InCI() {
			t.Fatalf("opening /dev/fuse: %v", err)
		}
		t.Skipf("no FUSE here: %v", err)
	}
	f := &hungFUSE{dev: os.NewFile(uintptr(fd), "/dev/fuse"), done: make(chan struct{})}
	go f.serve()
	t.Cleanup(func() {
		// Runs after the child's cleanup: its namespace is gone, and
		// with it the mount, which aborted the connection and ended
		// serve's read (closing the fd would not).
		select {
		case <-f.done:
		case <-time.After(5 * time.Second):
			t.Errorf("the FUSE server still runs 5 s after its mount went away")
		}
		f.dev.Close()
	})
	return f
}

// hang stops the answers.
func (f *hungFUSE) hang() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hung = true
}

// requestsSinceHang returns how many requests came after hang.
func (f *hungFUSE) requestsSinceHang() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests
}

func (f *hungFUSE) serve() {
	defer close(f.done)
	buf := make([]byte, 1<<20) // more than max_write: the kernel wants room for a whole request
	for {
		n, err := f.dev.Read(buf)
		switch {
		case errors.Is(err, unix.EPERM):
			time.Sleep(5 * time.Millisecond) // not mounted yet
			continue
		case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINTR):
			continue // a request interrupted before we read it
		case err != nil:
			return
		}
		if n < fuseInHdr {
			return
		}
		op := binary.NativeEndian.Uint32(buf[4:])
		unique := binary.NativeEndian.Uint64(buf[8:])
		nodeid := binary.NativeEndian.Uint64(buf[16:])
		f.mu.Lock()
		hung := f.hung
		if hung {
			f.requests++
		}
		f.mu.Unlock()
		if hung || op == fuseForget || op == fuseBForget {
			continue // never answered
		}
		var out []byte
		errno := int32(0)
		switch op {
		case fuseInit:
			// struct fuse_init_out, no flags
			out = make([]byte, 64)
			binary.NativeEndian.PutUint32(out[0:], 7)     // major
			binary.NativeEndian.PutUint32(out[4:], 31)    // minor
			binary.NativeEndian.PutUint32(out[20:], 4096) // max_write
			binary.NativeEndian.PutUint32(out[24:], 1)    // time_gran
		case fuseLookup:
			name := strings.TrimRight(string(buf[fuseInHdr:n]), "\x00")
			if nodeid != 1 || name != "d" {
				errno = -int32(unix.ENOENT)
				break
			}
			out = make([]byte, 40+fuseAttrLen)        // struct fuse_entry_out, all timeouts 0
			binary.NativeEndian.PutUint64(out[0:], 2) // nodeid
			putFUSEDirAttr(out[40:], 2)
		case fuseGetattr:
			out = make([]byte, 16+fuseAttrLen) // struct fuse_attr_out, timeout 0
			putFUSEDirAttr(out[16:], nodeid)
		default:
			errno = -int32(unix.ENOSYS)
		}
		reply := make([]byte, 16+len(out)) // struct fuse_out_header
		binary.NativeEndian.PutUint32(reply[0:], uint32(len(reply)))
		binary.NativeEndian.PutUint32(reply[4:], uint32(errno))
		binary.NativeEndian.PutUint64(reply[8:], unique)
		copy(reply[16:], out)
		if _, err := f.dev.Write(reply); err != nil && !errors.Is(err, unix.ENOENT) {
			return
		}
	}
}

// putFUSEDirAttr fills a struct fuse_attr for directory inode ino.
func putFUSEDirAttr(b []byte, ino uint64) {
	binary.NativeEndian.PutUint64(b[0:], ino)
	binary.NativeEndian.PutUint32(b[60:], unix.S_IFDIR|0o755) // mode
	binary.NativeEndian.PutUint32(b[64:], 2)                  // nlink
	binary.NativeEndian.PutUint32(b[80:], 4096)               // blksize
}

// TestNamespaceMarkerHungFUSE: a tmpfs mounted, in another namespace, on
// a directory of a FUSE filesystem whose server no longer answers is
// reported and skipped; the look sends the server nothing and does not
// wait.
func TestNamespaceMarkerHungFUSE(t *testing.T) {
	testutil.RequireRoot(t)
	protected := testutil.MountTmpfs(t)
	if err := os.Mkdir(filepath.Join(protected, "fuse"), 0o755); err != nil {
		t.Fatal(err)
	}
	f := startHungFUSE(t)
	rec := &nsRecorder{}
	m := newTestNamespaceMarker(t, rec.mark, rec, 0, protected)

	// The child mounts the FUSE filesystem with the server's /dev/fuse
	// fd (its fd 3), then a tmpfs on its directory "d".
	c := startChildFiles(t, asRoot, []*os.File{f.dev}, `mount -t fuse -o fd=3,rootmode=40000,user_id=0,group_id=0 nsmarker-fuse "$1/fuse" || exit 1
exec 3<&-
mount -t tmpfs -o size=1m nsmarker-test "$1/fuse/d" || exit 1
echo mounted`, protected)
	c.expect(t, "mounted", 5*time.Second)
	f.hang()

	start := time.Now()
	if err := m.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	took := time.Since(start)
	point := filepath.Join(protected, "fuse", "d")
	rep, ok := rec.find(t, point, func(err error) bool { return errors.Is(err, unix.EAGAIN) }, 0)
	if !ok {
		t.Fatalf("no EAGAIN report of %s; reports: %+v", point, rec.reports)
	}
	t.Logf("Sync took %v; reported %s: %v", took, rep.m.Point, rep.err)
	if took > time.Second {
		t.Errorf("Sync took %v: it waited for something", took)
	}
	if n := f.requestsSinceHang(); n != 0 {
		t.Errorf("the FUSE server got %d requests while the marker looked", n)
	}
	for _, fm := range m.Marked() {
		if fm.Point == point {
			t.Errorf("the tmpfs behind the hung FUSE directory is marked: %+v", fm)
		}
	}
}
