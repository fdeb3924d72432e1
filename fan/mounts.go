package fan

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// mountInfoPath is the mount table of the calling process's mount namespace.
const mountInfoPath = "/proc/self/mountinfo"

// Mount is one line of /proc/self/mountinfo (see proc(5)). Paths are
// decoded: the kernel's octal escapes (\040 for a space, \011, \012, \134)
// are turned back into the bytes they stand for.
type Mount struct {
	ID, ParentID int    // mount ID and the mount ID of the parent mount
	Dev          uint64 // st_dev of the superblock, unix.Mkdev(major, minor)

	Root    string // path inside the filesystem that forms the root of this mount
	Point   string // mount point, relative to the process's root; always starts with "/"
	FSType  string // filesystem type, e.g. "ext4" or "fuse.sshfs"
	Source  string // filesystem-specific source, e.g. "/dev/vda1" or "tmpfs"
	Options string // per-mount options, e.g. "rw,nosuid,relatime" (not the superblock options)
}

// ParseMountInfo parses the content of a /proc/PID/mountinfo file. Empty
// lines are skipped. A malformed line makes it return an error naming the
// line number, and no mounts.
func ParseMountInfo(data []byte) ([]Mount, error) {
	mounts := make([]Mount, 0, bytes.Count(data, []byte{'\n'})+1)
	for n := 1; len(data) > 0; n++ {
		var line []byte
		line, data, _ = bytes.Cut(data, []byte{'\n'})
		if len(line) == 0 {
			continue
		}
		m, err := parseMountLine(string(line))
		if err != nil {
			return nil, fmt.Errorf("parsing mountinfo line %d: %w", n, err)
		}
		mounts = append(mounts, m)
	}
	return mounts, nil
}

// parseMountLine parses one mountinfo line:
//
//	36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//	(1)(2)(3)   (4)   (5)         (6)       (7)     (8) (9)  (10)      (11)
//
// (7) is zero or more optional fields, ended by the "-" separator (8). The
// fields are split on single spaces, not on runs of them: the kernel prints
// an empty source as an empty field.
func parseMountLine(line string) (Mount, error) {
	f := strings.Split(line, " ")
	if len(f) < 10 {
		return Mount{}, fmt.Errorf("%d fields, want at least 10", len(f))
	}
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	if sep < 0 {
		return Mount{}, errors.New(`no "-" separator after the optional fields`)
	}
	// The superblock options may in theory hold an unescaped space; they are
	// not kept, so anything after the source is accepted.
	if len(f)-sep-1 < 3 {
		return Mount{}, fmt.Errorf("%d fields after the separator, want 3", len(f)-sep-1)
	}

	var m Mount
	var err error
	if m.ID, err = parseMountID(f[0]); err != nil {
		return Mount{}, fmt.Errorf("parsing mount ID: %w", err)
	}
	if m.ParentID, err = parseMountID(f[1]); err != nil {
		return Mount{}, fmt.Errorf("parsing parent mount ID: %w", err)
	}
	if m.Dev, err = parseDev(f[2]); err != nil {
		return Mount{}, fmt.Errorf("parsing device number: %w", err)
	}
	m.Root = unescapeMountField(f[3])
	m.Point = unescapeMountField(f[4])
	if !strings.HasPrefix(m.Point, "/") {
		return Mount{}, fmt.Errorf("mount point %q is not an absolute path", f[4])
	}
	m.Options = f[5]
	if f[sep+1] == "" {
		return Mount{}, errors.New("empty filesystem type")
	}
	m.FSType = unescapeMountField(f[sep+1])
	m.Source = unescapeMountField(f[sep+2])
	return m, nil
}

// parseMountID parses a non-negative decimal mount ID that fits an int32
// (the kernel allocates them from an IDA).
func parseMountID(s string) (int, error) {
	v, err := strconv.ParseUint(s, 10, 31)
	if err != nil {
		return 0, err
	}
	return int(v), nil
}

// parseDev parses "major:minor".
func parseDev(s string) (uint64, error) {
	maj, min, ok := strings.Cut(s, ":")
	if !ok {
		return 0, fmt.Errorf("%q is not major:minor", s)
	}
	major, err := strconv.ParseUint(maj, 10, 32)
	if err != nil {
		return 0, err
	}
	minor, err := strconv.ParseUint(min, 10, 32)
	if err != nil {
		return 0, err
	}
	return unix.Mkdev(uint32(major), uint32(minor)), nil
}

// unescapeMountField decodes the kernel's octal escapes (a backslash and
// three octal digits, e.g. \040). The kernel escapes space, tab, newline and
// backslash this way; any other backslash is kept as it is.
func unescapeMountField(s string) string {
	if strings.IndexByte(s, '\\') < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			v := int(s[i+1]-'0')<<6 | int(s[i+2]-'0')<<3 | int(s[i+3]-'0')
			if v <= 0xff {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return '0' <= c && c <= '7' }

// MountWatcher reads the mount table of the process's mount namespace and
// waits for it to change. Its methods are safe for concurrent use; Close
// interrupts a blocked Wait.
type MountWatcher struct {
	file  int // /proc/self/mountinfo, read with pread, polled for POLLPRI
	event int // eventfd written by Close to wake Wait

	closed    atomic.Bool
	closeOnce sync.Once

	// mu is held for reading while file or event is in use (Mounts, Wait)
	// and for writing by Close, which closes both fds once nobody uses them.
	mu sync.RWMutex

	readMu   sync.Mutex // serializes Mounts, and guards following
	lastSize int        // size of the last read, to size the next buffer
}

// NewMountWatcher opens /proc/self/mountinfo and an eventfd. Changes of the
// mount table from this moment on are reported by Wait.
func NewMountWatcher() (*MountWatcher, error) {
	file, err := unix.Open(mountInfoPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", mountInfoPath, err)
	}
	event, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(file)
		return nil, fmt.Errorf("creating eventfd: %w", err)
	}
	return &MountWatcher{file: file, event: event}, nil
}

// Mounts reads and parses the whole mount table. It returns an error
// wrapping os.ErrClosed after Close.
func (w *MountWatcher) Mounts() ([]Mount, error) {
	data, err := w.read()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", mountInfoPath, err)
	}
	return ParseMountInfo(data)
}

// read reads the file from offset 0 to EOF. The kernel's seq_file fills the
// whole buffer it is given, so a buffer larger than the last read usually
// takes the table in one pread, plus one that returns EOF.
func (w *MountWatcher) read() ([]byte, error) {
	w.readMu.Lock()
	defer w.readMu.Unlock()
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed.Load() {
		return nil, os.ErrClosed
	}
	buf := make([]byte, 0, w.lastSize+16<<10)
	for {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, cap(buf))
		}
		n, err := unix.Pread(w.file, buf[len(buf):cap(buf)], int64(len(buf)))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n == 0 {
			break
		}
		buf = buf[:len(buf)+n]
	}
	w.lastSize = len(buf)
	return buf, nil
}

// Wait blocks until the mount table changes, then returns nil. It returns
// os.ErrClosed once Close was called, and other errors only if poll(2)
// fails.
//
// The kernel reports a change as POLLPRI|POLLERR on the mountinfo file and
// marks it seen in the same poll call (fs/proc_namespace.c mounts_poll
// compares the namespace's event counter with the file's poll_event and
// updates it), so each change wakes Wait once, whether or not Mounts is
// called in between: Wait does not spin. Changes that happen while no Wait
// is blocked are not lost; the next Wait returns at once. Several changes in
// a row may wake Wait only once, so callers re-read the whole table.
func (w *MountWatcher) Wait() error {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed.Load() {
		return os.ErrClosed
	}
	fds := []unix.PollFd{
		{Fd: int32(w.file), Events: unix.POLLPRI | unix.POLLERR},
		{Fd: int32(w.event), Events: unix.POLLIN},
	}
	for {
		_, err := unix.Poll(fds, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("polling %s: %w", mountInfoPath, err)
		}
		if fds[1].Revents != 0 {
			return os.ErrClosed
		}
		if fds[0].Revents&unix.POLLNVAL != 0 {
			return fmt.Errorf("polling %s: %w", mountInfoPath, unix.EBADF)
		}
		if fds[0].Revents&(unix.POLLPRI|unix.POLLERR) != 0 {
			return nil
		}
		if fds[0].Revents != 0 {
			// Looping on an event Wait does not understand would spin.
			return fmt.Errorf("polling %s: unexpected events %#x", mountInfoPath, fds[0].Revents)
		}
	}
}

// Close wakes a blocked Wait, waits for Mounts and Wait calls in progress to
// return, and closes the file descriptors. Calls after the first return nil.
func (w *MountWatcher) Close() error {
	var err error
	w.closeOnce.Do(func() {
		w.closed.Store(true)
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1)
		// An eventfd write of 1 cannot fail or block: the counter is only
		// ever written here, once.
		if _, werr := unix.Write(w.event, one[:]); werr != nil {
			err = fmt.Errorf("waking mount watcher: %w", werr)
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		if cerr := unix.Close(w.file); cerr != nil {
			err = errors.Join(err, fmt.Errorf("closing %s: %w", mountInfoPath, cerr))
		}
		if cerr := unix.Close(w.event); cerr != nil {
			err = errors.Join(err, fmt.Errorf("closing eventfd: %w", cerr))
		}
	})
	return err
}
