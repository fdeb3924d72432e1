package fan

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// DirWatcher reports changes in a few directories through inotify: files
// created, removed, renamed, written and closed, or their attributes
// changed. A directory that does not exist yet is watched through its
// nearest existing parent, so that its creation is seen too.
//
// Wait must be called from one goroutine at a time; Close is safe to call
// concurrently with it, and more than once.
type DirWatcher struct {
	fd   int
	wake int // eventfd that interrupts Wait
	dirs []string

	waitMu    sync.Mutex // held by Wait while it uses the fds; Close takes it to close them
	closeOnce sync.Once
	closed    chan struct{}
}

const dirWatchMask = unix.IN_CREATE | unix.IN_DELETE | unix.IN_CLOSE_WRITE | unix.IN_MOVED_FROM |
	unix.IN_MOVED_TO | unix.IN_ATTRIB | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR

// NewDirWatcher watches dirs (absolute paths).
func NewDirWatcher(dirs []string) (*DirWatcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("creating inotify instance: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("creating eventfd: %w", err)
	}
	w := &DirWatcher{fd: fd, wake: wake, dirs: dirs, closed: make(chan struct{})}
	if err := w.watch(); err != nil {
		w.Close()
		return nil, err
	}
	return w, nil
}

// watch (re)adds a watch for each directory, or for its nearest existing
// parent. Adding a watch twice is harmless.
func (w *DirWatcher) watch() error {
	for _, dir := range w.dirs {
		for d := dir; ; d = filepath.Dir(d) {
			_, err := unix.InotifyAddWatch(w.fd, d, dirWatchMask)
			if err == nil {
				break
			}
			if (err != unix.ENOENT && err != unix.ENOTDIR) || d == "/" {
				return fmt.Errorf("watching %s: %w", d, err)
			}
		}
	}
	return nil
}

// Wait blocks until something changed in the watched directories (or in a
// parent that stands in for a missing one), reads every event pending,
// and watches again directories that appeared meanwhile. It returns
// os.ErrClosed after Close.
func (w *DirWatcher) Wait() error {
	w.waitMu.Lock()
	defer w.waitMu.Unlock()
	fds := [2]unix.PollFd{
		{Fd: int32(w.fd), Events: unix.POLLIN},
		{Fd: int32(w.wake), Events: unix.POLLIN},
	}
	buf := make([]byte, 4096)
	for {
		select {
		case <-w.closed:
			return os.ErrClosed
		default:
		}
		if _, err := unix.Poll(fds[:], -1); err != nil && err != unix.EINTR {
			return fmt.Errorf("polling inotify: %w", err)
		}
		if fds[1].Revents != 0 {
			return os.ErrClosed
		}
		changed := false
		for {
			n, err := unix.Read(w.fd, buf)
			if err == unix.EINTR {
				continue
			}
			if err == unix.EAGAIN || n <= 0 {
				break
			}
			if err != nil {
				return fmt.Errorf("reading inotify events: %w", err)
			}
			changed = true
		}
		if changed {
			return w.watch()
		}
	}
}

// Close stops the watcher: a Wait in progress returns os.ErrClosed, and
// the fds are closed once it has.
func (w *DirWatcher) Close() error {
	var err error
	w.closeOnce.Do(func() {
		close(w.closed)
		one := [8]byte{1}
		unix.Write(w.wake, one[:])
		w.waitMu.Lock()
		err = errors.Join(unix.Close(w.fd), unix.Close(w.wake))
		w.waitMu.Unlock()
	})
	return err
}
