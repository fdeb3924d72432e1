package fan

import (
	"errors"
	"fmt"
	"os"
	"strconv"
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

// ErrNoUID is returned by ProcUID when /proc/<pid>/status has no Uid line.
var ErrNoUID = errors.New("no Uid line in process status")

// ProcUID returns the real uid of process pid, from /proc/<pid>/status.
func ProcUID(pid int32) (uint32, error) {
	var pb [64]byte
	path := procPath(&pb, "", int64(pid), "/status")
	fd, _, e := unix.Syscall6(unix.SYS_OPENAT, uintptr(atFdcwd), uintptr(unsafe.Pointer(path)),
		uintptr(unix.O_RDONLY|unix.O_CLOEXEC), 0, 0, 0)
	if e != 0 {
		return 0, fmt.Errorf("reading status of pid %d: %w", pid, e)
	}
	var buf [2048]byte // the Uid line comes within the first kilobyte
	n, err := unix.Read(int(fd), buf[:])
	unix.Close(int(fd))
	if err != nil {
		return 0, fmt.Errorf("reading status of pid %d: %w", pid, err)
	}
	uid, ok := parseStatusUID(buf[:n])
	if !ok {
		return 0, fmt.Errorf("reading status of pid %d: %w", pid, ErrNoUID)
	}
	return uid, nil
}

// parseStatusUID finds "\nUid:\t<real>" in a /proc/<pid>/status buffer.
func parseStatusUID(b []byte) (uint32, bool) {
	const key = "\nUid:"
	for i := 0; i+len(key) <= len(b); i++ {
		if b[i] != '\n' || string(b[i:i+len(key)]) != key {
			continue
		}
		j := i + len(key)
		for j < len(b) && (b[j] == '\t' || b[j] == ' ') {
			j++
		}
		var uid uint64
		k := j
		for k < len(b) && b[k] >= '0' && b[k] <= '9' {
			uid = uid*10 + uint64(b[k]-'0')
			if uid > 1<<32-1 {
				return 0, false
			}
			k++
		}
		return uint32(uid), k > j
	}
	return 0, false
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

// ProcCmdline returns the command line of process pid as /proc has it:
// the arguments, each ended by a NUL. For the record of a detection; it
// allocates.
func ProcCmdline(pid int32) ([]byte, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(int(pid)) + "/cmdline")
	if err != nil {
		return nil, fmt.Errorf("reading command line of pid %d: %w", pid, err)
	}
	return b, nil
}
