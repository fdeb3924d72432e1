package fan

import (
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"
)

// MarkFilesystemAt marks the filesystem (superblock) of what fd refers to,
// as MarkFilesystem does for a path: the way to mark a filesystem that is
// mounted only in another mount namespace, through an fd opened there. fd
// may be an O_PATH fd; it is not closed.
//
// fanotify_mark(2) needs a path: a NULL pathname takes only fds that are
// not O_PATH (EBADF), and there is no AT_EMPTY_PATH. So the mark goes
// through "." relative to fd, which resolves to fd itself without any
// lookup, and, when fd is not a directory (a mount of a single file),
// through its magic link /proc/self/fd/N, resolved in the calling thread's
// mount namespace: call it from an ordinary goroutine, not from one that
// entered another mount namespace.
func (g *Group) MarkFilesystemAt(fd int) error {
	const flags = unix.FAN_MARK_ADD | unix.FAN_MARK_FILESYSTEM
	err := g.mark(flags, g.mask, fd, ".")
	if err == unix.ENOTDIR {
		err = g.mark(flags, g.mask, unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd))
	}
	if err != nil {
		return fmt.Errorf("marking filesystem of fd %d: %w", fd, err)
	}
	return nil
}
