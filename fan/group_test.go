package fan

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fanguard/fanguard/internal/testutil"
)

// serve answers every permission event of g with decide until Read fails.
// It runs in its own goroutine; the test opens files in another.
func serve(t *testing.T, g *Group, decide func(Event) bool) chan error {
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := g.Read(buf)
			if err != nil {
				done <- err
				return
			}
			for off := 0; off < n; {
				ev, size, err := ParseEvent(buf[off:n])
				if err != nil {
					done <- err
					return
				}
				off += size
				if ev.Fd < 0 {
					continue
				}
				if ev.IsPermission() {
					if err := g.Respond(ev.Fd, decide(ev)); err != nil {
						t.Errorf("Respond: %v", err)
					}
				}
				CloseFd(ev.Fd)
			}
		}
	}()
	return done
}

func TestGroupAllowDeny(t *testing.T) {
	dir := testutil.MountTmpfs(t)
	good := filepath.Join(dir, "good")
	bad := filepath.Join(dir, "bad")
	for _, p := range []string{good, bad} {
		if err := os.WriteFile(p, []byte(filepath.Base(p)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	g, err := NewGroup(GroupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if err := g.MarkFilesystem(dir); err != nil {
		t.Fatal(err)
	}
	var scratch [4096]byte
	done := serve(t, g, func(ev Event) bool {
		p, err := FdPath(ev.Fd, scratch[:])
		if err != nil {
			t.Errorf("FdPath: %v", err)
			return true
		}
		st, err := StatFd(ev.Fd)
		if err != nil || !st.IsRegular() {
			return true
		}
		return string(p) != bad
	})

	if b, err := os.ReadFile(good); err != nil || string(b) != "good" {
		t.Errorf("reading allowed file: %q, %v", b, err)
	}
	if _, err := os.ReadFile(bad); !errors.Is(err, unix.EPERM) {
		t.Errorf("reading denied file: err = %v, want EPERM", err)
	}
	g.Shutdown()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("Read after Shutdown: %v, want os.ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Read did not return after Shutdown")
	}
	if err := g.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := g.Respond(3, true); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Respond after Close: %v, want os.ErrClosed", err)
	}
	// With the group closed, nothing holds opens any more.
	if _, err := os.ReadFile(bad); err != nil {
		t.Errorf("reading after Close: %v", err)
	}
}

func TestProcHelpers(t *testing.T) {
	buf := make([]byte, 4096)
	exe, err := ExePath(int32(os.Getpid()), buf)
	if err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	if string(exe) != self {
		t.Errorf("ExePath = %q, want %q", exe, self)
	}
	uid, err := ProcUID(int32(os.Getpid()))
	if err != nil || uid != uint32(os.Getuid()) {
		t.Errorf("ProcUID = %d, %v; want %d", uid, err, os.Getuid())
	}
	f, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := FdPath(int32(f.Fd()), buf)
	if err != nil || string(p) != self {
		t.Errorf("FdPath = %q, %v; want %q", p, err, self)
	}
	st, err := StatFd(int32(f.Fd()))
	if err != nil || !st.IsRegular() || st.Stamp.Size == 0 || st.Stamp.CtimeNs == 0 {
		t.Errorf("StatFd = %+v, %v", st, err)
	}
	head := make([]byte, 4)
	if n, err := ReadFull(int32(f.Fd()), head); err != nil || n != 4 || string(head) != "\x7fELF" {
		t.Errorf("ReadFull = %d %q, %v", n, head, err)
	}
	if _, err := ExePath(-5, buf); err == nil {
		t.Error("ExePath of a bad pid: no error")
	}
	allocs := testing.AllocsPerRun(50, func() {
		FdPath(int32(f.Fd()), buf)
		ExePath(int32(os.Getpid()), buf)
		ProcUID(int32(os.Getpid()))
		StatFd(int32(f.Fd()))
	})
	if allocs != 0 && !testutil.RaceEnabled {
		t.Errorf("proc helpers allocate %v times, want 0", allocs)
	}
}

// TestIgnoreMarks: an ignore mark added through an event fd silences later
// opens of that inode until it is modified, removed or flushed; a
// notification group reports the close of a writer.
func TestIgnoreMarks(t *testing.T) {
	dir := testutil.MountTmpfs(t)
	path := filepath.Join(dir, "f")
	if err := os.WriteFile(path, []byte("content"), 0o644); err != nil {
		t.Fatal(err)
	}
	g, err := NewGroup(GroupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	notif, err := NewGroup(GroupOptions{Notification: true})
	if err != nil {
		t.Fatal(err)
	}
	defer notif.Close()
	for _, gr := range []*Group{g, notif} {
		if err := gr.MarkFilesystem(dir); err != nil {
			t.Fatal(err)
		}
	}

	events := make(chan FileInfo, 100)
	ignore := make(chan bool, 1) // whether to ignore the next event's inode
	serve(t, g, func(ev Event) bool {
		fi, err := StatFd(ev.Fd)
		if err != nil {
			t.Errorf("StatFd: %v", err)
		}
		select {
		case <-ignore:
			if err := g.Ignore(ev.Fd); err != nil {
				t.Errorf("Ignore: %v", err)
			}
		default:
		}
		events <- fi
		return true
	})
	serve(t, notif, func(ev Event) bool {
		t.Error("notification group delivered a permission event")
		return true
	})

	open := func() int { // opens path for reading, returns the events it caused
		t.Helper()
		if _, err := os.ReadFile(path); err != nil {
			t.Fatal(err)
		}
		n := 0
		for {
			select {
			case <-events:
				n++
			case <-time.After(50 * time.Millisecond):
				return n
			}
		}
	}

	if n := open(); n != 1 {
		t.Fatalf("first open: %d events, want 1", n)
	}
	ignore <- true
	if n := open(); n != 1 {
		t.Fatalf("open that adds the ignore mark: %d events, want 1", n)
	}
	if n := open(); n != 0 {
		t.Errorf("open of an ignored inode: %d events, want 0", n)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if n := open(); n != 0 {
		t.Errorf("open after chmod: %d events, want 0 (chmod keeps the mark)", n)
	}
	if err := os.Truncate(path, 3); err != nil {
		t.Fatal(err)
	}
	if n := open(); n != 1 {
		t.Errorf("open after truncate: %d events, want 1 (a modification clears the mark)", n)
	}

	ignore <- true
	open()
	if n := open(); n != 0 {
		t.Fatalf("ignored again: %d events", n)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Unignore(int32(f.Fd())); err != nil {
		t.Errorf("Unignore: %v", err)
	}
	if err := g.Unignore(int32(f.Fd())); !errors.Is(err, unix.ENOENT) {
		t.Errorf("second Unignore: %v, want ENOENT", err)
	}
	f.Close()
	if n := open(); n != 1 {
		t.Errorf("open after Unignore: %d events, want 1", n)
	}

	ignore <- true
	open()
	if err := g.FlushInodeMarks(); err != nil {
		t.Fatal(err)
	}
	if n := open(); n != 1 {
		t.Errorf("open after FlushInodeMarks: %d events, want 1", n)
	}
}

// TestCloseWriteEvents: the notification group reports a writer's close
// with an fd on the written file, and nothing for a reader's close.
func TestCloseWriteEvents(t *testing.T) {
	dir := testutil.MountTmpfs(t)
	path := filepath.Join(dir, "w")
	if err := os.WriteFile(path, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	notif, err := NewGroup(GroupOptions{Notification: true})
	if err != nil {
		t.Fatal(err)
	}
	defer notif.Close()
	if err := notif.MarkFilesystem(dir); err != nil {
		t.Fatal(err)
	}
	want, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.ReadFile(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("y"), 0o644); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := notif.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	ev, size, err := ParseEvent(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	defer CloseFd(ev.Fd)
	if ev.Mask != unix.FAN_CLOSE_WRITE || ev.IsPermission() || size != n {
		t.Errorf("event %+v (%d of %d bytes), want one FAN_CLOSE_WRITE", ev, size, n)
	}
	fi, err := StatFd(ev.Fd)
	if err != nil {
		t.Fatal(err)
	}
	if st := want.Sys().(*syscall.Stat_t); fi.ID.Ino != st.Ino || fi.ID.Dev != st.Dev {
		t.Errorf("event file %+v, want ino %d dev %d", fi.ID, st.Ino, st.Dev)
	}
}
