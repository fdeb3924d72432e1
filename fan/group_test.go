package fan

import (
	"errors"
	"fmt"
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
				if ev.Fd >= 0 {
					if ev.IsPermission() {
						if err := g.Respond(ev.Fd, decide(ev)); err != nil {
							t.Errorf("Respond: %v", err)
						}
					}
					CloseFd(ev.Fd)
				}
				if ev.Pidfd >= 0 {
					CloseFd(ev.Pidfd)
				}
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
	pidfd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pidfd)
	uid, err := PidfdUID(int32(pidfd))
	if err != nil || uid != uint32(os.Getuid()) {
		t.Errorf("PidfdUID = %d, %v; want %d", uid, err, os.Getuid())
	}
	if !PidfdAlive(int32(pidfd)) {
		t.Error("PidfdAlive(self) = false")
	}
	if id, err := ExeID(int32(os.Getpid())); err != nil {
		t.Errorf("ExeID: %v", err)
	} else if fi, err := os.Stat(self); err != nil {
		t.Fatal(err)
	} else if st := fi.Sys().(*syscall.Stat_t); id.Ino != st.Ino || id.Dev != st.Dev {
		t.Errorf("ExeID = %+v, want dev %d ino %d", id, st.Dev, st.Ino)
	}
	whole, err := os.ReadFile("/proc/self/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	cmdline, length, err := ProcCmdline(int32(os.Getpid()), 4)
	if err != nil || string(cmdline) != os.Args[0][:4] || length != int64(len(whole)) {
		t.Errorf("ProcCmdline(self, 4) = %q, %d, %v; want %q, %d", cmdline, length, err, os.Args[0][:4], len(whole))
	}
	if cmdline, length, err := ProcCmdline(int32(os.Getpid()), 1<<20); err != nil || string(cmdline) != string(whole) || length != int64(len(whole)) {
		t.Errorf("ProcCmdline(self, 1 MiB) = %q, %d, %v; want %q", cmdline, length, err, whole)
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
		PidfdUID(int32(pidfd))
		PidfdAlive(int32(pidfd))
		ExeID(int32(os.Getpid()))
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

// markedTmpfs mounts a tmpfs holding a file name (content "x"), and makes
// a group of opts that marks it; the group is closed at the end of the
// test.
func markedTmpfs(t *testing.T, opts GroupOptions, name string) (g *Group, dir, path string) {
	t.Helper()
	dir = testutil.MountTmpfs(t)
	path = filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	g, err := NewGroup(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	if err := g.MarkFilesystem(dir); err != nil {
		t.Fatal(err)
	}
	return g, dir, path
}

// TestPidfdEvents: a permission group made with Pidfd reports a pidfd of
// the opener with each event, from which its uid is read; the event fd's
// stat names the mount the file was opened through.
func TestPidfdEvents(t *testing.T) {
	g, dir, path := markedTmpfs(t, GroupOptions{Pidfd: true}, "f")
	if !g.FDErrors() {
		t.Log("this kernel has no FAN_REPORT_FD_ERROR")
	}
	var mnt unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, dir, 0, unix.STATX_MNT_ID_UNIQUE, &mnt); err != nil {
		t.Fatal(err)
	}
	type seen struct {
		pid, uid int
		mountID  uint64
		err      error
	}
	got := make(chan seen, 1)
	done := serve(t, g, func(ev Event) bool {
		s := seen{pid: int(ev.Pid), uid: -1}
		if ev.Pidfd < 0 {
			s.err = fmt.Errorf("no pidfd: %d", ev.Pidfd)
		} else if uid, err := PidfdUID(ev.Pidfd); err != nil {
			s.err = err
		} else {
			s.uid = int(uid)
		}
		if st, err := StatFd(ev.Fd); err == nil {
			s.mountID = st.MountID
		}
		select {
		case got <- s:
		default:
		}
		return true
	})
	if _, err := os.ReadFile(path); err != nil {
		t.Fatal(err)
	}
	s := <-got
	if s.err != nil || s.pid != os.Getpid() || s.uid != os.Getuid() || s.mountID != mnt.Mnt_id {
		t.Errorf("event: pid %d uid %d mount %d (%v); want pid %d uid %d mount %d", s.pid, s.uid, s.mountID, s.err,
			os.Getpid(), os.Getuid(), mnt.Mnt_id)
	}
	g.Shutdown()
	<-done
}

// TestCloseWriteUnderLease: a writer's close whose file is under a write
// lease when the group is read cannot be opened for the event without
// waiting; the group reports it as a record with the error, not as
// nothing (Linux 6.13, FAN_REPORT_FD_ERROR).
func TestCloseWriteUnderLease(t *testing.T) {
	notif, _, path := markedTmpfs(t, GroupOptions{Notification: true}, "leased")
	if !notif.FDErrors() {
		t.Skip("this kernel has no FAN_REPORT_FD_ERROR")
	}
	if err := os.WriteFile(path, []byte("y"), 0o644); err != nil { // the writer's close, queued
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := unix.FcntlInt(f.Fd(), unix.F_SETLEASE, unix.F_WRLCK); err != nil {
		t.Fatalf("taking a write lease: %v", err)
	}
	buf := make([]byte, 4096)
	n, err := notif.Read(buf)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	ev, _, err := ParseEvent(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	if ev.Fd >= 0 {
		CloseFd(ev.Fd)
		t.Fatalf("event fd %d for a leased file, want an error", ev.Fd)
	}
	if ev.Mask&unix.FAN_CLOSE_WRITE == 0 || syscall.Errno(-ev.Fd) != unix.EWOULDBLOCK {
		t.Errorf("event %+v, want FAN_CLOSE_WRITE with fd -EWOULDBLOCK", ev)
	}
	unix.FcntlInt(f.Fd(), unix.F_SETLEASE, unix.F_UNLCK)
}
