package fan

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Group is a fanotify group of the content class: it receives FAN_OPEN_PERM
// events for the filesystems it marks and answers them.
//
// Read must be called from one goroutine at a time. Respond, Mark and
// Shutdown are safe for concurrent use. The group's fd is closed once, by
// Close, after every Respond in progress has returned; a Respond after Close
// returns os.ErrClosed (the kernel has allowed every pending event by then).
type Group struct {
	fd   int
	wake int // eventfd that interrupts Read

	// users counts Respond and Mark calls in progress; closedBit is set by
	// Close, which then waits for users to reach zero before closing fd.
	users    atomic.Int64
	idle     chan struct{} // closed by the last user out after closedBit is set
	stopping atomic.Bool   // set by Shutdown: Read returns os.ErrClosed

	closeOnce sync.Once
	closeErr  error
}

const closedBit = int64(1) << 62

// ErrEventDenied is returned by Read when the kernel could not create the
// fd of an event (for example EMFILE) and denied the event itself. It is
// not fatal: the next Read goes on with the following events.
var ErrEventDenied = errors.New("kernel denied an event it could not open")

// GroupOptions configures NewGroup. The zero value is valid.
type GroupOptions struct{}

// NewGroup creates a fanotify group in the content class with an unlimited
// queue and unlimited marks; event fds are opened read-only, close-on-exec
// and without updating atime. It needs CAP_SYS_ADMIN.
func NewGroup(GroupOptions) (*Group, error) {
	fd, err := unix.FanotifyInit(
		unix.FAN_CLASS_CONTENT|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK|unix.FAN_UNLIMITED_QUEUE|unix.FAN_UNLIMITED_MARKS,
		unix.O_RDONLY|unix.O_LARGEFILE|unix.O_CLOEXEC|unix.O_NOATIME)
	if err == unix.EPERM {
		return nil, fmt.Errorf("creating fanotify group: %w (it needs root: CAP_SYS_ADMIN)", err)
	}
	if err != nil {
		return nil, fmt.Errorf("creating fanotify group: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("creating eventfd: %w", err)
	}
	return &Group{fd: fd, wake: wake, idle: make(chan struct{})}, nil
}

func (g *Group) acquire() bool {
	for {
		s := g.users.Load()
		if s&closedBit != 0 {
			return false
		}
		if g.users.CompareAndSwap(s, s+1) {
			return true
		}
	}
}

func (g *Group) release() {
	if g.users.Add(-1) == closedBit {
		close(g.idle)
	}
}

// MarkFilesystem marks the filesystem (superblock) holding path for
// FAN_OPEN_PERM: every open of a file on it, through any mount, waits for an
// answer. Marking a filesystem twice is harmless.
func (g *Group) MarkFilesystem(path string) error {
	if !g.acquire() {
		return os.ErrClosed
	}
	defer g.release()
	err := unix.FanotifyMark(g.fd, unix.FAN_MARK_ADD|unix.FAN_MARK_FILESYSTEM, unix.FAN_OPEN_PERM, unix.AT_FDCWD, path)
	if err != nil {
		return fmt.Errorf("marking filesystem of %s: %w", path, err)
	}
	return nil
}

// Read reads whole event records into buf, blocking until there is at least
// one. It returns os.ErrClosed once Shutdown or Close was called. Each record
// with an fd holds that fd open in this process: the caller owns it.
func (g *Group) Read(buf []byte) (int, error) {
	fds := [2]unix.PollFd{
		{Fd: int32(g.fd), Events: unix.POLLIN},
		{Fd: int32(g.wake), Events: unix.POLLIN},
	}
	for {
		if g.stopping.Load() {
			return 0, os.ErrClosed
		}
		n, err := unix.Read(g.fd, buf)
		switch {
		case err == nil && n > 0:
			return n, nil
		case err == nil:
			return 0, errors.New("reading fanotify events: unexpected end of file")
		case err == unix.EINTR:
			continue
		case err == unix.EBADF || err == unix.EINVAL || err == unix.EFAULT:
			return 0, fmt.Errorf("reading fanotify events: %w", err)
		case err != unix.EAGAIN:
			// The kernel could not open the first event's file for us
			// (EMFILE, ENFILE, ENOMEM, or the file's own open error): it
			// has denied that event itself and keeps the rest queued.
			return 0, fmt.Errorf("%w: %w", ErrEventDenied, err)
		}
		if _, err := unix.Poll(fds[:], -1); err != nil && err != unix.EINTR {
			return 0, fmt.Errorf("polling fanotify group: %w", err)
		}
	}
}

// Respond answers the permission event whose fd is fd: allow or deny (EPERM).
// The caller must answer each event exactly once and close the event fd only
// afterwards: the kernel matches the answer by fd number.
func (g *Group) Respond(fd int32, allow bool) error {
	if !g.acquire() {
		return os.ErrClosed
	}
	resp := unix.FanotifyResponse{Fd: fd, Response: unix.FAN_DENY}
	if allow {
		resp.Response = unix.FAN_ALLOW
	}
	b := (*[unsafe.Sizeof(resp)]byte)(unsafe.Pointer(&resp))
	_, err := unix.Write(g.fd, b[:])
	g.release()
	if err != nil {
		return fmt.Errorf("answering event fd %d: %w", fd, err)
	}
	return nil
}

// Shutdown makes Read return os.ErrClosed, now if it is blocked and at every
// later call. Respond still works: the caller answers what it holds, then
// calls Close.
func (g *Group) Shutdown() {
	if g.stopping.Swap(true) {
		return
	}
	one := [8]byte{1}
	unix.Write(g.wake, one[:])
}

// Close shuts the group down: it waits for Respond and Mark calls in
// progress, then closes the group's fd, upon which the kernel allows every
// event still pending. Safe to call more than once.
func (g *Group) Close() error {
	g.closeOnce.Do(func() {
		g.Shutdown()
		if g.users.Add(closedBit) != closedBit {
			<-g.idle
		}
		g.closeErr = errors.Join(unix.Close(g.fd), unix.Close(g.wake))
	})
	return g.closeErr
}
