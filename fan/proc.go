package fan

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// These helpers run on the event path, some in the reader itself: they make
// raw system calls with paths built in stack buffers so that they allocate
// nothing. Every path they resolve is under /proc.

// atFdcwd is AT_FDCWD as a system call argument.
var atFdcwd = unix.AT_FDCWD

// procPath writes "/proc/<head><n><tail>\x00" into buf and returns a pointer
// to it.
func procPath(buf *[64]byte, head string, n int64, tail string) *byte {
	p := append(buf[:0], "/proc/"...)
	p = append(p, head...)
	p = strconv.AppendInt(p, n, 10)
	p = append(p, tail...)
	p = append(p, 0)
	return &p[0]
}

func readlink(path *byte, buf []byte) ([]byte, error) {
	if len(buf) == 0 {
		return nil, unix.ENAMETOOLONG
	}
	n, _, e := unix.Syscall6(unix.SYS_READLINKAT, uintptr(atFdcwd), uintptr(unsafe.Pointer(path)),
		uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0)
	if e != 0 {
		return nil, e
	}
	if int(n) == len(buf) {
		return nil, unix.ENAMETOOLONG
	}
	return buf[:n], nil
}

// FdPath returns the path the event fd fd refers to, read from
// /proc/self/fd into buf. A deleted file's path ends in " (deleted)".
func FdPath(fd int32, buf []byte) ([]byte, error) {
	var pb [64]byte
	p, err := readlink(procPath(&pb, "self/fd/", int64(fd), ""), buf)
	if err != nil {
		return nil, fmt.Errorf("reading path of fd %d: %w", fd, err)
	}
	return p, nil
}

// ExePath returns the executable of process pid, read into buf.
func ExePath(pid int32, buf []byte) ([]byte, error) {
	var pb [64]byte
	p, err := readlink(procPath(&pb, "", int64(pid), "/exe"), buf)
	if err != nil {
		return nil, fmt.Errorf("reading exe of pid %d: %w", pid, err)
	}
	return p, nil
}

// PidfdUID returns the real uid of the process behind pidfd (a pidfd from
// an event: Event.Pidfd), with one PIDFD_GET_INFO ioctl (Linux 6.13). It
// reads nothing under /proc and takes no lock the process can hold: the
// event path may call it before answering. It fails with ESRCH once the
// process has been reaped.
func PidfdUID(pidfd int32) (uint32, error) {
	info := unix.PidfdInfo{Mask: unix.PIDFD_INFO_CREDS}
	if err := unix.IoctlPidfdInfo(int(pidfd), &info); err != nil {
		return 0, fmt.Errorf("reading credentials of pidfd %d: %w", pidfd, err)
	}
	if info.Mask&unix.PIDFD_INFO_CREDS == 0 {
		return 0, fmt.Errorf("reading credentials of pidfd %d: %w", pidfd, unix.ENODATA)
	}
	return info.Ruid, nil
}

// PidfdAlive reports whether the process behind pidfd has not been reaped
// yet, so that its pid still names it: what was read under /proc/<pid>
// before a true answer was that process's.
func PidfdAlive(pidfd int32) bool {
	info := unix.PidfdInfo{Mask: unix.PIDFD_INFO_PID}
	return unix.IoctlPidfdInfo(int(pidfd), &info) == nil
}

// ExeID returns the identity (device and inode) of the executable of
// process pid: statx of /proc/<pid>/exe, which the kernel resolves to the
// file the process runs, whatever path or mount it was started through.
// It cannot block on the process or on a file server: the link is read
// under the task's lock, and the statx asks for the inode number only,
// with AT_STATX_DONT_SYNC (FUSE and network filesystems answer from their
// cached attributes). It allocates nothing.
func ExeID(pid int32) (FileID, error) {
	var pb [64]byte
	var stx unix.Statx_t
	_, _, e := unix.Syscall6(unix.SYS_STATX, uintptr(atFdcwd), uintptr(unsafe.Pointer(procPath(&pb, "", int64(pid), "/exe"))),
		uintptr(unix.AT_STATX_DONT_SYNC), unix.STATX_INO, uintptr(unsafe.Pointer(&stx)), 0)
	if e != 0 {
		return FileID{}, fmt.Errorf("stating exe of pid %d: %w", pid, e)
	}
	return FileID{Dev: unix.Mkdev(stx.Dev_major, stx.Dev_minor), Ino: stx.Ino}, nil
}

// ReadFull reads the file behind fd from offset 0 into buf with pread, until
// buf is full or the file ends; it returns the bytes read. A file that shrank
// since it was stated yields fewer bytes, not an error. It never maps the
// file: a file truncated under a mapping would kill the process with SIGBUS.
func ReadFull(fd int32, buf []byte) (int, error) {
	off := 0
	for off < len(buf) {
		n, err := unix.Pread(int(fd), buf[off:], int64(off))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return off, fmt.Errorf("reading fd %d at offset %d: %w", fd, off, err)
		}
		if n == 0 {
			break
		}
		off += n
	}
	return off, nil
}

// CloseFd closes an event fd. Call it only after the event was answered.
func CloseFd(fd int32) error { return unix.Close(int(fd)) }

// ProcCmdline returns at most limit bytes of the command line of process
// pid as /proc has it (the arguments, each ended by a NUL), and its whole
// length: where there is more than limit, the size of the argument area
// from /proc/<pid>/stat (arg_end - arg_start), or limit+1 if that cannot
// be read. For the record of a detection, after the answer: reading it
// takes the process's mmap_lock, which the process can hold for as long as
// it likes (a fault on a FUSE mapping whose server never answers), so call
// it only where a read that never returns holds nothing but itself. It
// allocates.
func ProcCmdline(pid int32, limit int) (cmdline []byte, length int64, err error) {
	f, err := os.Open("/proc/" + strconv.Itoa(int(pid)) + "/cmdline")
	if err != nil {
		return nil, 0, fmt.Errorf("reading command line of pid %d: %w", pid, err)
	}
	defer f.Close()
	b := make([]byte, limit+1)
	n, err := io.ReadFull(f, b)
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		return b[:n], int64(n), nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("reading command line of pid %d: %w", pid, err)
	}
	length = int64(limit + 1)
	if st, err := os.ReadFile("/proc/" + strconv.Itoa(int(pid)) + "/stat"); err == nil {
		if start, end, ok := parseArgArea(st); ok && end-start > length {
			length = end - start
		}
	}
	return b[:limit], length, nil
}

// parseArgArea returns arg_start and arg_end, fields 48 and 49 of a
// /proc/<pid>/stat line (proc(5)). The command name, field 2, is in
// parentheses and may hold any byte: the fields are counted from the last
// ')'.
func parseArgArea(stat []byte) (start, end int64, ok bool) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(stat[i+1:])) // f[0] is field 3
	if len(f) < 47 {
		return 0, 0, false
	}
	s, err1 := strconv.ParseInt(f[45], 10, 64)
	e, err2 := strconv.ParseInt(f[46], 10, 64)
	if err1 != nil || err2 != nil || e < s {
		return 0, 0, false
	}
	return s, e, true
}

// PathLeadsTo reports whether path, looked up in this process's mount
// namespace without following a final symbolic link, names the file id.
// The look up never waits: it is made from the kernel's caches alone
// (openat2 RESOLVE_CACHED, O_PATH, which opens nothing and sends no
// fanotify event), and the stat takes the inode number with
// AT_STATX_DONT_SYNC, so that a path through a FUSE or network directory
// whose server does not answer cannot hold the caller. Where the look up
// would need I/O, the answer is false.
func PathLeadsTo(path string, id FileID) bool {
	fd, err := unix.Openat2(unix.AT_FDCWD, path, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: resolveCached | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_STATX_DONT_SYNC, unix.STATX_INO, &stx); err != nil {
		return false
	}
	return unix.Mkdev(stx.Dev_major, stx.Dev_minor) == id.Dev && stx.Ino == id.Ino
}

// PathID returns the identity (device and inode) of the file path leads
// to, following symbolic links, in this process's mount namespace. It
// opens nothing, and asks for the inode number only with
// AT_STATX_DONT_SYNC.
func PathID(path string) (FileID, error) {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_STATX_DONT_SYNC, unix.STATX_INO, &stx); err != nil {
		return FileID{}, &os.PathError{Op: "statx", Path: path, Err: err}
	}
	return FileID{Dev: unix.Mkdev(stx.Dev_major, stx.Dev_minor), Ino: stx.Ino}, nil
}
