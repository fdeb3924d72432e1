package fan

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/sys/unix"

	"github.com/fanguard/fanguard/internal/testutil"
)

// markRecorder is a fake Mark and Report.
type markRecorder struct {
	mu      sync.Mutex // guards following
	fail    map[string]error
	marks   []string
	reports []string
}

func (r *markRecorder) mark(path string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.marks = append(r.marks, path)
	return r.fail[path]
}

func (r *markRecorder) report(m Mount, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reports = append(r.reports, fmt.Sprintf("%s %d:%d: %v", m.Point, unix.Major(m.Dev), unix.Minor(m.Dev), err))
}

// take returns and clears the marks and reports recorded so far.
func (r *markRecorder) take() (marks, reports []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	marks, reports = r.marks, r.reports
	r.marks, r.reports = nil, nil
	return marks, reports
}

func mnt(id, parent int, minor uint32, point, fsType string) Mount {
	return Mount{ID: id, ParentID: parent, Dev: unix.Mkdev(0, minor), Root: "/", Point: point, FSType: fsType, Source: fsType, Options: "rw"}
}

// A canned machine: minor numbers stand for superblocks.
var (
	rootMnt  = mnt(27, 1, 1, "/", "ext4")
	procMnt  = mnt(22, 27, 21, "/proc", "proc")
	sysMnt   = mnt(23, 27, 22, "/sys", "sysfs")
	devMnt   = mnt(24, 27, 6, "/dev", "devtmpfs")
	shmMnt   = mnt(25, 24, 23, "/dev/shm", "tmpfs")
	runMnt   = mnt(26, 27, 40, "/run", "tmpfs")
	nfsMnt   = mnt(28, 27, 41, "/mnt/share", "nfs4")
	fuseMnt  = mnt(29, 27, 42, "/home/u/remote", "fuse.sshfs")
	dataMnt  = mnt(30, 27, 2, "/srv/data", "xfs")
	srvxMnt  = mnt(31, 27, 43, "/srvx", "tmpfs")
	dataTmp  = mnt(32, 30, 44, "/srv/data/tmp", "tmpfs")
	srvNFS   = mnt(33, 27, 45, "/srv/nfs", "nfs4")
	shareTmp = mnt(35, 28, 46, "/mnt/share/cache", "tmpfs")
)

func withBind(m Mount, id, parent int, root, point string) Mount {
	m.ID, m.ParentID, m.Root, m.Point = id, parent, root, point
	return m
}

type selectionStep struct {
	mounts  []Mount
	uids    map[int]uint64   // unique mount IDs by mount ID; 0 (unknown) if missing
	leadsTo map[string]int   // mount point -> mount ID the kernel finds there, overriding the table
	fail    map[string]error // Mark errors by path
	marks   []string         // want: Mark calls, in order
	reports []string         // want, if not nil: Report calls
	marked  []string         // want: mount points of Marked
	err     string           // want: substring of the protect path error, "" for none
}

func TestMarkerSelection(t *testing.T) {
	eacces := unix.EACCES
	tests := []struct {
		name    string
		fsTypes []string
		paths   []string
		stat    map[string]pathInfo // protect path -> what statx says; missing means ENOENT
		steps   []selectionStep
	}{{
		name:    "whole machine",
		fsTypes: []string{"ext4", "xfs", "tmpfs"},
		steps: []selectionStep{{
			mounts: []Mount{procMnt, sysMnt, devMnt, shmMnt, rootMnt, runMnt, nfsMnt, fuseMnt, dataMnt},
			marks:  []string{"/dev/shm", "/", "/run", "/srv/data"},
			marked: []string{"/", "/dev/shm", "/run", "/srv/data"},
		}, {
			mounts: []Mount{procMnt, sysMnt, devMnt, shmMnt, rootMnt, runMnt, nfsMnt, fuseMnt, dataMnt},
			marked: []string{"/", "/dev/shm", "/run", "/srv/data"},
		}},
	}, {
		name:    "bind mount of a marked superblock is skipped",
		fsTypes: []string{"ext4"},
		steps: []selectionStep{{
			mounts: []Mount{rootMnt, withBind(rootMnt, 40, 27, "/var/x", "/srv/bind")},
			marks:  []string{"/"},
			marked: []string{"/"},
		}, {
			mounts: []Mount{rootMnt, withBind(rootMnt, 40, 27, "/var/x", "/srv/bind"), withBind(rootMnt, 41, 27, "/", "/mnt/b")},
			marked: []string{"/"},
		}},
	}, {
		name:    "path mode",
		fsTypes: []string{"ext4", "xfs", "tmpfs"},
		paths:   []string{"/srv"},
		stat:    map[string]pathInfo{"/srv": {real: "/srv", mntID: 27, dev: rootMnt.Dev}},
		steps: []selectionStep{{
			mounts: []Mount{rootMnt, runMnt, dataMnt, srvxMnt, dataTmp, srvNFS},
			marks:  []string{"/", "/srv/data", "/srv/data/tmp"},
			marked: []string{"/", "/srv/data", "/srv/data/tmp"},
		}},
	}, {
		name:    "path mode through a symlink",
		fsTypes: []string{"ext4", "xfs", "tmpfs"},
		paths:   []string{"/link/"},
		stat:    map[string]pathInfo{"/link": {real: "/srv/data", mntID: 30, dev: dataMnt.Dev}},
		steps: []selectionStep{{
			mounts: []Mount{rootMnt, dataMnt, srvxMnt, dataTmp},
			marks:  []string{"/srv/data", "/srv/data/tmp"},
			marked: []string{"/srv/data", "/srv/data/tmp"},
		}},
	}, {
		name:    "path mode, holder found by device",
		fsTypes: []string{"ext4", "xfs"},
		paths:   []string{"/srv/data/x"},
		stat:    map[string]pathInfo{"/srv/data/x": {real: "/srv/data/x", mntID: -1, dev: dataMnt.Dev}},
		steps: []selectionStep{{
			mounts: []Mount{rootMnt, withBind(dataMnt, 36, 27, "/", "/srv"), withBind(dataMnt, 30, 36, "/", "/srv/data")},
			marks:  []string{"/srv/data"},
			marked: []string{"/srv/data"},
		}},
	}, {
		name:    "protect path on an excluded type",
		fsTypes: []string{"ext4", "tmpfs"},
		paths:   []string{"/mnt/share"},
		stat:    map[string]pathInfo{"/mnt/share": {real: "/mnt/share", mntID: 28, dev: nfsMnt.Dev}},
		steps: []selectionStep{{
			mounts: []Mount{rootMnt, nfsMnt, shareTmp},
			marks:  []string{"/mnt/share/cache"},
			marked: []string{"/mnt/share/cache"},
			err:    "protect path /mnt/share is on nfs4, which is not a protected filesystem type",
		}},
	}, {
		name:    "missing protect path",
		fsTypes: []string{"ext4"},
		paths:   []string{"/nope", "/srv"},
		stat:    map[string]pathInfo{"/srv": {real: "/srv", mntID: 27, dev: rootMnt.Dev}},
		steps: []selectionStep{{
			mounts: []Mount{rootMnt},
			marks:  []string{"/"},
			marked: []string{"/"},
			err:    "checking protect path /nope: lstat /nope: no such file or directory",
		}},
	}, {
		name:    "device number reused with new mount IDs",
		fsTypes: []string{"ext4", "tmpfs"},
		steps: []selectionStep{{
			mounts: []Mount{rootMnt, mnt(50, 27, 60, "/a", "tmpfs")},
			marks:  []string{"/", "/a"},
			marked: []string{"/", "/a"},
		}, {
			mounts: []Mount{rootMnt, mnt(51, 27, 60, "/b", "tmpfs")},
			marks:  []string{"/b"},
			marked: []string{"/", "/b"},
		}, {
			mounts: []Mount{rootMnt, mnt(51, 27, 60, "/b", "tmpfs")},
			marked: []string{"/", "/b"},
		}},
	}, {
		name:    "device number and mount ID reused",
		fsTypes: []string{"tmpfs"},
		steps: []selectionStep{{
			mounts: []Mount{mnt(50, 27, 60, "/a", "tmpfs")},
			uids:   map[int]uint64{50: 1000},
			marks:  []string{"/a"},
			marked: []string{"/a"},
		}, {
			mounts: []Mount{mnt(50, 27, 60, "/a", "tmpfs")},
			uids:   map[int]uint64{50: 1001},
			marks:  []string{"/a"},
			marked: []string{"/a"},
		}, {
			mounts: []Mount{mnt(50, 27, 60, "/a", "tmpfs")},
			uids:   map[int]uint64{50: 1001},
			marked: []string{"/a"},
		}},
	}, {
		name:    "device gone and back",
		fsTypes: []string{"tmpfs"},
		steps: []selectionStep{{
			mounts: []Mount{mnt(50, 27, 60, "/a", "tmpfs")},
			marks:  []string{"/a"},
			marked: []string{"/a"},
		}, {
			mounts: []Mount{},
			marked: []string{},
		}, {
			mounts: []Mount{mnt(50, 27, 60, "/a", "tmpfs")},
			marks:  []string{"/a"},
			marked: []string{"/a"},
		}},
	}, {
		name:    "mount moved",
		fsTypes: []string{"tmpfs"},
		steps: []selectionStep{{
			mounts: []Mount{mnt(50, 27, 60, "/a", "tmpfs")},
			uids:   map[int]uint64{50: 1000},
			marks:  []string{"/a"},
			marked: []string{"/a"},
		}, {
			mounts: []Mount{mnt(50, 27, 60, "/b", "tmpfs")},
			uids:   map[int]uint64{50: 1000},
			marked: []string{"/b"},
		}},
	}, {
		name:    "failed mark is retried at the next change",
		fsTypes: []string{"ext4", "tmpfs"},
		steps: []selectionStep{{
			mounts:  []Mount{rootMnt, runMnt},
			fail:    map[string]error{"/": eacces},
			marks:   []string{"/", "/run"},
			reports: []string{"/ 0:1: permission denied", "/run 0:40: <nil>"},
			marked:  []string{"/run"},
		}, {
			mounts:  []Mount{rootMnt, runMnt},
			marks:   []string{"/"},
			reports: []string{"/ 0:1: <nil>"},
			marked:  []string{"/", "/run"},
		}},
	}, {
		name:    "covered mount",
		fsTypes: []string{"tmpfs"},
		steps: []selectionStep{{
			mounts:  []Mount{rootMnt, devMnt, shmMnt, mnt(34, 25, 47, "/dev/shm", "tmpfs")},
			marks:   []string{"/dev/shm"},
			reports: []string{"/dev/shm 0:23: " + errCovered.Error(), "/dev/shm 0:47: <nil>"},
			marked:  []string{"/dev/shm"},
		}, {
			mounts:  []Mount{rootMnt, devMnt, shmMnt, mnt(34, 25, 47, "/dev/shm", "tmpfs")},
			reports: []string{},
			marked:  []string{"/dev/shm"},
		}, {
			mounts:  []Mount{rootMnt, devMnt, shmMnt},
			marks:   []string{"/dev/shm"},
			reports: []string{"/dev/shm 0:23: <nil>"},
			marked:  []string{"/dev/shm"},
		}},
	}, {
		name:    "mount hidden by a later mount above it",
		fsTypes: []string{"tmpfs"},
		steps: []selectionStep{{
			mounts:  []Mount{rootMnt, mnt(40, 27, 60, "/a/b", "tmpfs"), mnt(41, 27, 61, "/a", "tmpfs"), mnt(42, 27, 62, "/ab", "tmpfs")},
			marks:   []string{"/a", "/ab"},
			reports: []string{"/a/b 0:60: " + errCovered.Error(), "/a 0:61: <nil>", "/ab 0:62: <nil>"},
			marked:  []string{"/a", "/ab"},
		}},
	}, {
		name:    "covered superblock marked through a visible bind mount",
		fsTypes: []string{"tmpfs"},
		steps: []selectionStep{{
			mounts: []Mount{rootMnt, mnt(40, 27, 60, "/x", "tmpfs"), mnt(41, 40, 61, "/x", "tmpfs"), mnt(42, 27, 60, "/y", "tmpfs")},
			marks:  []string{"/y", "/x"},
			marked: []string{"/x", "/y"},
		}},
	}, {
		name:    "mount point leading elsewhere than the table says",
		fsTypes: []string{"tmpfs"},
		steps: []selectionStep{{
			mounts:  []Mount{mnt(40, 27, 60, "/x", "tmpfs")},
			leadsTo: map[string]int{"/x": 99},
			reports: []string{"/x 0:60: " + errCovered.Error()},
			marked:  []string{},
		}, {
			mounts: []Mount{mnt(40, 27, 60, "/x", "tmpfs")},
			marks:  []string{"/x"},
			marked: []string{"/x"},
		}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var step selectionStep
			statPath := func(path string) (pathInfo, error) {
				info, ok := tt.stat[path]
				if !ok {
					return pathInfo{}, &os.PathError{Op: "lstat", Path: path, Err: unix.ENOENT}
				}
				return info, nil
			}
			// The kernel's view: the uncovered mount at the point.
			mountAt := func(point string) (mountIdent, error) {
				if id, ok := step.leadsTo[point]; ok {
					return mountIdent{id: id}, nil
				}
				cov := newCoverage(step.mounts)
				for _, m := range step.mounts {
					if m.Point == point && !cov.covers(m) {
						return mountIdent{id: m.ID, uid: step.uids[m.ID]}, nil
					}
				}
				return mountIdent{}, &os.PathError{Op: "statx", Path: point, Err: unix.ENOENT}
			}
			rec := &markRecorder{}
			m, err := newMarker(MarkerOptions{FSTypes: tt.fsTypes, Paths: tt.paths, Mark: rec.mark, Report: rec.report}, statPath, mountAt)
			if err != nil {
				t.Fatalf("newMarker: %v", err)
			}
			for i, s := range tt.steps {
				step = s
				rec.fail = s.fail
				problems, _ := m.syncMounts(s.mounts)
				err := joinPathProblems(problems)
				switch {
				case s.err == "" && err != nil:
					t.Errorf("step %d: sync error %v, want none", i, err)
				case s.err != "" && (err == nil || !strings.Contains(err.Error(), s.err)):
					t.Errorf("step %d: sync error %v, want one containing %q", i, err, s.err)
				}
				marks, reports := rec.take()
				if diff := cmp.Diff(s.marks, marks, cmpopts.EquateEmpty()); diff != "" {
					t.Errorf("step %d: Mark calls (-want +got):\n%s", i, diff)
				}
				if s.reports != nil {
					if diff := cmp.Diff(s.reports, reports, cmpopts.EquateEmpty()); diff != "" {
						t.Errorf("step %d: Report calls (-want +got):\n%s", i, diff)
					}
				}
				got := []string{}
				for _, mt := range m.Marked() {
					got = append(got, mt.Point)
				}
				if diff := cmp.Diff(s.marked, got); diff != "" {
					t.Errorf("step %d: Marked (-want +got):\n%s", i, diff)
				}
			}
		})
	}
}

func TestMarkerPathProblemsReportedOnce(t *testing.T) {
	var missing bool
	statPath := func(path string) (pathInfo, error) {
		if missing {
			return pathInfo{}, &os.PathError{Op: "lstat", Path: path, Err: unix.ENOENT}
		}
		return pathInfo{real: path, mntID: 27, dev: rootMnt.Dev}, nil
	}
	mountAt := func(string) (mountIdent, error) { return mountIdent{id: 27}, nil }
	m, err := newMarker(MarkerOptions{FSTypes: []string{"ext4"}, Paths: []string{"/srv"}, Mark: func(string) error { return nil }}, statPath, mountAt)
	if err != nil {
		t.Fatal(err)
	}
	for i, step := range []struct {
		missing           bool
		problems, reports int
	}{
		{false, 0, 0},
		{true, 1, 1},
		{true, 1, 0},
		{false, 0, 0},
		{true, 1, 1},
	} {
		missing = step.missing
		problems, fresh := m.syncMounts([]Mount{rootMnt})
		if len(problems) != step.problems || len(fresh) != step.reports {
			t.Errorf("step %d: %d problems, %d fresh; want %d, %d", i, len(problems), len(fresh), step.problems, step.reports)
		}
	}
}

func TestNewMarkerErrors(t *testing.T) {
	mark := func(string) error { t.Error("Mark called"); return nil }
	missing := filepath.Join(t.TempDir(), "missing")
	tests := []struct {
		name    string
		opts    MarkerOptions
		wantErr string
	}{
		{"no Mark", MarkerOptions{FSTypes: []string{"ext4"}}, "Mark is required"},
		{"no types", MarkerOptions{Mark: mark}, "no filesystem types"},
		{"relative path", MarkerOptions{FSTypes: []string{"ext4"}, Paths: []string{"srv"}, Mark: mark}, `protect path "srv" is not absolute`},
		{"missing path", MarkerOptions{FSTypes: []string{"ext4", "tmpfs"}, Paths: []string{missing}, Mark: mark}, "checking protect path " + missing + ": lstat " + missing + ": no such file or directory"},
		{"path on an excluded type", MarkerOptions{FSTypes: []string{"tmpfs"}, Paths: []string{"/proc/self"}, Mark: mark}, "protect path /proc/self is on proc, which is not a protected filesystem type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := NewMountWatcher()
			if err != nil {
				t.Fatal(err)
			}
			tt.opts.Watcher = w
			m, err := NewMarker(tt.opts)
			if err == nil {
				m.Close()
				t.Fatalf("NewMarker succeeded, want an error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("NewMarker error %q, want it to contain %q", err, tt.wantErr)
			}
			if err := w.Wait(); !errors.Is(err, os.ErrClosed) {
				t.Errorf("the Watcher given to a failing NewMarker is not closed: Wait = %v", err)
			}
		})
	}
}

// TestMarkerRun follows a tmpfs mounted under a protect path while Run runs.
func TestMarkerRun(t *testing.T) {
	testutil.RequireRoot(t)
	dir := testutil.MountTmpfs(t)
	marks := make(chan string, 100)
	rec := &markRecorder{}
	m, err := NewMarker(MarkerOptions{
		FSTypes: []string{"tmpfs"},
		Paths:   []string{dir},
		Mark:    func(path string) error { marks <- path; return nil },
		Report:  rec.report,
	})
	if err != nil {
		t.Fatalf("NewMarker: %v", err)
	}
	defer m.Close()
	if err := m.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	expectMarks(t, marks, dir)

	ran := make(chan error, 1)
	go func() { ran <- m.Run() }()

	sub := filepath.Join(dir, "sub")
	mountTmpfsAt(t, sub)
	expectMarks(t, marks, sub)

	// A bind mount of a marked superblock is not marked again.
	bind := filepath.Join(dir, "bind")
	if err := os.Mkdir(bind, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(sub, bind, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind mounting %s on %s: %v", sub, bind, err)
	}
	t.Cleanup(func() { unix.Unmount(bind, unix.MNT_DETACH) })
	select {
	case p := <-marks:
		t.Errorf("Mark(%s) called for a bind mount of a marked superblock", p)
	case <-time.After(200 * time.Millisecond):
	}

	var got []string
	for _, mt := range m.Marked() {
		got = append(got, mt.Point)
	}
	if diff := cmp.Diff([]string{dir, sub}, got); diff != "" {
		t.Errorf("Marked (-want +got):\n%s", diff)
	}

	closeStopsRun(t, m, ran)
	_, reports := rec.take()
	for _, r := range reports {
		if !strings.HasSuffix(r, ": <nil>") {
			t.Errorf("unexpected report %q", r)
		}
	}
}

// TestMarkerRemountSameDevice checks that a tmpfs unmounted and mounted
// again between two syncs is marked again: the kernel gives it the same
// device number and mount ID.
func TestMarkerRemountSameDevice(t *testing.T) {
	testutil.RequireRoot(t)
	dir := testutil.MountTmpfs(t)
	if id, err := identifyMount(dir); err != nil {
		t.Fatal(err)
	} else if id.uid == 0 {
		t.Skip("the kernel has no unique mount IDs (Linux 6.8)")
	}
	rec := &markRecorder{}
	m, err := NewMarker(MarkerOptions{FSTypes: []string{"tmpfs"}, Paths: []string{dir}, Mark: rec.mark})
	if err != nil {
		t.Fatalf("NewMarker: %v", err)
	}
	defer m.Close()
	sub := filepath.Join(dir, "sub")
	mountTmpfsAt(t, sub)
	if err := m.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if marks, _ := rec.take(); !cmp.Equal(marks, []string{dir, sub}) {
		t.Fatalf("first Sync marked %q, want %q", marks, []string{dir, sub})
	}
	before := mountAtPoint(t, m, sub)
	if err := unix.Unmount(sub, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", sub, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=4m"); err != nil {
		t.Fatal(err)
	}
	if after := mountAtPoint(t, m, sub); after != before {
		t.Logf("the new tmpfs got another mountinfo line: %+v, was %+v", after, before)
	}
	if err := m.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if marks, _ := rec.take(); !cmp.Equal(marks, []string{sub}) {
		t.Errorf("Sync after the remount marked %q, want %q", marks, []string{sub})
	}
}

func mountAtPoint(t *testing.T, m *Marker, point string) Mount {
	t.Helper()
	mounts, err := m.watcher.Mounts()
	if err != nil {
		t.Fatal(err)
	}
	for _, mt := range mounts {
		if mt.Point == point {
			return mt
		}
	}
	t.Fatalf("no mount on %s", point)
	return Mount{}
}

// expectMarks checks that Mark is called with want, in order, within 1 s.
func expectMarks(t *testing.T, marks <-chan string, want ...string) {
	t.Helper()
	for _, w := range want {
		select {
		case got := <-marks:
			if got != w {
				t.Fatalf("Mark(%s), want Mark(%s)", got, w)
			}
		case <-time.After(time.Second):
			t.Fatalf("Mark(%s) not called within 1 s", w)
		}
	}
}

// closeStopsRun closes m, whose Run sends its result on ran: Run must
// return nil within a second, and a second Close must return nil too.
func closeStopsRun(t *testing.T, m io.Closer, ran <-chan error) {
	t.Helper()
	if err := m.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	select {
	case err := <-ran:
		if err != nil {
			t.Errorf("Run after Close = %v, want nil", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Run still running 1 s after Close")
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
