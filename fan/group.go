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

// Group is a fanotify group. A permission group (the content class)
// receives FAN_OPEN_PERM events for the filesystems it marks and answers
// them; a notification group receives FAN_CLOSE_WRITE events, which need
// no answer.
//
// Read must be called from one goroutine at a time. Respond, Mark and
// Shutdown are safe for concurrent use. The group's fd is closed once, by
// Close, after every Respond in progress has returned; a Respond after Close
// returns os.ErrClosed (the kernel has allowed every pending event by then).
type Group struct {
	fd   int
	wake int    // eventfd that interrupts Read
	mask uint64 // what MarkFilesystem asks for
	// fdErrors: the kernel reports a failed event fd in the record
	// (FAN_REPORT_FD_ERROR, Linux 6.13) instead of failing the read or
	// dropping the event.
	fdErrors bool

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
// fd of an event (for example EMFILE) and denied the event itself, or, in
// a notification group, dropped it. It is not fatal: the next Read goes on
// with the following events. Groups on kernels with FAN_REPORT_FD_ERROR
// (6.13) report such events as records with a negative Fd instead.
var ErrEventDenied = errors.New("kernel denied an event it could not open")

// GroupOptions configures NewGroup. The zero value is a permission group.
type GroupOptions struct {
	// Notification makes a group in the notification class that reports
	// FAN_CLOSE_WRITE (a file open for writing was closed) instead of
	// holding opens.
	Notification bool
	// Pidfd makes each event carry a pidfd of the process that caused it
	// (FAN_REPORT_PIDFD, Linux 5.15): a race-free handle on the opener,
	// owned by the reader (Event.Pidfd).
	Pidfd bool
}

// NewGroup creates a fanotify group with an unlimited queue and unlimited
// marks; event fds are opened read-only, close-on-exec, without updating
// atime, and non-blocking: the kernel opens them inside our read(), and a
// blocking open of a FIFO (waiting for a writer) or of some devices there
// would freeze the reader. Linux 6.18 reports no events for FIFOs, older
// kernels do. It needs CAP_SYS_ADMIN.
//
// Where the kernel has FAN_REPORT_FD_ERROR (6.13), an event whose fd the
// kernel cannot open (the file is under a lease and the open would have
// to wait, the daemon is out of fds) is delivered with the error in its
// Fd: a notification cannot be lost unseen. Older kernels fail the read
// or drop the event (see ErrEventDenied and FDErrors).
func NewGroup(opts GroupOptions) (*Group, error) {
	class, mask := uint(unix.FAN_CLASS_CONTENT), uint64(unix.FAN_OPEN_PERM)
	if opts.Notification {
		class, mask = unix.FAN_CLASS_NOTIF, unix.FAN_CLOSE_WRITE
	}
	if opts.Pidfd {
		class |= unix.FAN_REPORT_PIDFD
	}
	const eventFlags = unix.O_RDONLY | unix.O_LARGEFILE | unix.O_CLOEXEC | unix.O_NOATIME | unix.O_NONBLOCK
	flags := class | unix.FAN_CLOEXEC | unix.FAN_NONBLOCK | unix.FAN_UNLIMITED_QUEUE | unix.FAN_UNLIMITED_MARKS
	fdErrors := true
	fd, err := unix.FanotifyInit(flags|unix.FAN_REPORT_FD_ERROR, eventFlags)
	if err == unix.EINVAL {
		fdErrors = false
		fd, err = unix.FanotifyInit(flags, eventFlags)
	}
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
	return &Group{fd: fd, wake: wake, mask: mask, fdErrors: fdErrors, idle: make(chan struct{})}, nil
}

// FDErrors reports whether the kernel reports the events it could not
// open a file for as records with a negative Fd (FAN_REPORT_FD_ERROR). Where
// it does not, a notification group can lose events without a trace
// beyond a failed or short read.
func (g *Group) FDErrors() bool { return g.fdErrors }

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

// MarkFilesystem marks the filesystem (superblock) holding path, through
// any mount: for FAN_OPEN_PERM in a permission group (every open of a file
// on it waits for an answer), for FAN_CLOSE_WRITE in a notification group.
// Marking a filesystem twice is harmless.
func (g *Group) MarkFilesystem(path string) error {
	if err := g.mark(unix.FAN_MARK_ADD|unix.FAN_MARK_FILESYSTEM, g.mask, unix.AT_FDCWD, path); err != nil {
		return fmt.Errorf("marking filesystem of %s: %w", path, err)
	}
	return nil
}

// Ignore adds an evictable ignore mark for FAN_OPEN_PERM on the inode behind
// fd (an event fd): later opens of that inode produce no event, until the
// kernel clears the mark on the next modification (write, truncate,
// fallocate, O_TRUNC...) or evicts the inode. The kernel silently adds no
// mark while some process holds the inode open for writing: the caller
// cannot tell, and must not rely on the mark alone.
func (g *Group) Ignore(fd int32) error {
	err := g.mark(unix.FAN_MARK_ADD|unix.FAN_MARK_IGNORE|unix.FAN_MARK_EVICTABLE, unix.FAN_OPEN_PERM, int(fd), "")
	if err != nil {
		return fmt.Errorf("adding ignore mark on fd %d: %w", fd, err)
	}
	return nil
}

// Unignore removes the ignore mark of the inode behind fd. It returns an
// error wrapping unix.ENOENT when the inode has none.
func (g *Group) Unignore(fd int32) error {
	if err := g.mark(unix.FAN_MARK_REMOVE|unix.FAN_MARK_IGNORE, unix.FAN_OPEN_PERM, int(fd), ""); err != nil {
		return fmt.Errorf("removing ignore mark on fd %d: %w", fd, err)
	}
	return nil
}

// FlushInodeMarks removes every inode mark of the group at once — all the
// ignore marks, that is, every verdict cached in the kernel. Filesystem
// marks stay.
func (g *Group) FlushInodeMarks() error {
	if err := g.mark(unix.FAN_MARK_FLUSH, 0, unix.AT_FDCWD, ""); err != nil {
		return fmt.Errorf("flushing inode marks: %w", err)
	}
	return nil
}

func (g *Group) mark(flags uint, mask uint64, dirFd int, path string) error {
	if !g.acquire() {
		return os.ErrClosed
	}
	defer g.release()
	return unix.FanotifyMark(g.fd, flags, mask, dirFd, path)
}

// Read reads whole event records into buf, blocking until there is at least
// one. It returns os.ErrClosed once Shutdown or Close was called. Each record
// with an fd holds that fd open in this process: the caller owns it.
func (g *Group) Read(buf []byte) (int, error) {
	fds := [2]unix.PollFd{
		{Fd: int32(g.fd), Events: unix.POLLIN},
		{Fd: int32(g.wake), Events: unix.POLLIN},
	}
	readable := false // the last poll said the group had events
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
		case readable && !g.fdErrors:
			// Without FAN_REPORT_FD_ERROR the kernel answers EAGAIN when
			// it could not open the only event's file without waiting (a
			// file under a lease: our event fds are non-blocking): the
			// event is gone.
			return 0, fmt.Errorf("%w: %w", ErrEventDenied, err)
		}
		if _, err := unix.Poll(fds[:], -1); err != nil && err != unix.EINTR {
			return 0, fmt.Errorf("polling fanotify group: %w", err)
		}
		readable = fds[0].Revents&unix.POLLIN != 0
	}
}

// ReadNow is Read without waiting: it returns 0 and no error when no event
// is queued.
func (g *Group) ReadNow(buf []byte) (int, error) {
	for {
		if g.stopping.Load() {
			return 0, os.ErrClosed
		}
		n, err := unix.Read(g.fd, buf)
		switch {
		case err == nil:
			return n, nil
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return 0, nil
		case err == unix.EBADF || err == unix.EINVAL || err == unix.EFAULT:
			return 0, fmt.Errorf("reading fanotify events: %w", err)
		}
		return 0, fmt.Errorf("%w: %w", ErrEventDenied, err)
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
