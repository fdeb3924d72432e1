package fan

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// FileID names a file on this machine: its device and inode number.
type FileID struct {
	Dev, Ino uint64
}

// Stamp is a file's change stamp as user space can see it (design §2,
// "i_version from user space"): the inode's change time in nanoseconds,
// its size and its generation. On filesystems with multigrain timestamps
// (ext4, xfs, btrfs, tmpfs since Linux 6.13) a change after a stat is
// guaranteed a new ctime, so an unchanged stamp means unchanged content.
// mtime is left out on purpose: utimensat sets it at will.
type Stamp struct {
	CtimeNs int64
	Size    int64
	Gen     uint32 // FS_IOC_GETVERSION; 0 where the filesystem has none
}

// FileInfo is what the event path needs to know of an event's file.
type FileInfo struct {
	ID      FileID
	Stamp   Stamp
	Mode    uint32 // S_IFMT bits and permissions
	UID     uint32
	GID     uint32
	MtimeNs int64 // for the record of a detection only: mtime is no change stamp
	// MountID is the unique id (Linux 6.8, never reused until reboot) of
	// the mount the file was opened through, 0 if the kernel does not
	// say. The mount is the opener's: it may belong to a mount namespace
	// the opener built itself.
	MountID uint64
}

// IsRegular reports whether the file is a regular file.
func (fi FileInfo) IsRegular() bool { return fi.Mode&unix.S_IFMT == unix.S_IFREG }

// fsIocGetversion is FS_IOC_GETVERSION, _IOR('v', 1, long), which
// x/sys/unix does not name. The kernel writes an int through it.
const fsIocGetversion = 0x80007601 | unsafe.Sizeof(uintptr(0))<<16

// emptyPath is the "" path that statx needs with AT_EMPTY_PATH.
var emptyPath = [1]byte{0}

const statxMask = unix.STATX_TYPE | unix.STATX_MODE | unix.STATX_UID | unix.STATX_GID | unix.STATX_INO |
	unix.STATX_SIZE | unix.STATX_CTIME | unix.STATX_MTIME | unix.STATX_MNT_ID_UNIQUE

// StatFd stats the file behind fd: its identity and change stamp. It makes
// one statx and, for regular files, one FS_IOC_GETVERSION ioctl, and
// allocates nothing. On the event path, use a Stater, which asks each
// filesystem for generations only until it learns that it has none.
func StatFd(fd int32) (FileInfo, error) {
	fi, err := statx(fd)
	if err == nil && fi.IsRegular() {
		fi.Stamp.Gen, _ = getVersion(fd)
	}
	return fi, err
}

// Stater is StatFd for the event path: it learns, once per mount (by its
// unique id, or by device where the kernel gives none), which filesystems
// refuse FS_IOC_GETVERSION (tmpfs and most but ext2/3/4, btrfs and a few
// others), and asks those no more; a filesystem that answers, or fails for
// another reason, is asked every time. It allocates nothing and takes no
// lock. The zero value is ready; a Stater is safe for concurrent use.
type Stater struct {
	// noGen is an open-addressing set of the mounts (key+1, 0 is free)
	// whose filesystems refuse the ioctl; when it is full, nothing more
	// is learned and the others are asked every time.
	noGen [noGenSlots]atomic.Uint64
	// getVersion is the ioctl, or a fake in tests.
	getVersion func(fd int32) (uint32, unix.Errno)
}

// noGenSlots bounds the mounts a Stater remembers (2 KiB): one per
// mounted filesystem that refuses, bind mounts and containers' included.
const noGenSlots = 256

// Stat stats the file behind fd as StatFd does.
func (s *Stater) Stat(fd int32) (FileInfo, error) {
	fi, err := statx(fd)
	if err != nil || !fi.IsRegular() {
		return fi, err
	}
	key := fi.MountID
	if key == 0 {
		key = fi.ID.Dev | 1<<63 // no mount id: the device, apart from ids
	}
	if s.refuses(key) {
		return fi, nil
	}
	get := s.getVersion
	if get == nil {
		get = getVersion
	}
	gen, e := get(fd)
	switch e {
	case 0:
		fi.Stamp.Gen = gen
	case unix.ENOTTY, unix.EINVAL, unix.EOPNOTSUPP:
		// The filesystem has no such ioctl (ENOTTY, from the VFS) or
		// does not keep generations: an answer about it, not about
		// this file. Other errors (EIO, EINTR...) may pass.
		s.learn(key)
	}
	return fi, nil
}

func noGenSlot(key uint64) uint64 { return (key * 0x9E3779B97F4A7C15) >> 56 } // Fibonacci hashing, 8 bits

// refuses reports whether the filesystem of mount key is known to refuse.
func (s *Stater) refuses(key uint64) bool {
	for i, n := noGenSlot(key), 0; n < noGenSlots; i, n = (i+1)%noGenSlots, n+1 {
		switch s.noGen[i].Load() {
		case key + 1:
			return true
		case 0:
			return false
		}
	}
	return false
}

// learn adds mount key to the refusing ones, unless the set is full.
func (s *Stater) learn(key uint64) {
	for i, n := noGenSlot(key), 0; n < noGenSlots; i, n = (i+1)%noGenSlots, n+1 {
		v := s.noGen[i].Load()
		if v == 0 && s.noGen[i].CompareAndSwap(0, key+1) {
			return
		}
		if v == key+1 || s.noGen[i].Load() == key+1 {
			return // learned by another goroutine meanwhile
		}
	}
}

// statx stats the file behind fd, all but its generation.
func statx(fd int32) (FileInfo, error) {
	var stx unix.Statx_t
	_, _, e := unix.Syscall6(unix.SYS_STATX, uintptr(fd), uintptr(unsafe.Pointer(&emptyPath[0])),
		uintptr(unix.AT_EMPTY_PATH|unix.AT_STATX_SYNC_AS_STAT), statxMask, uintptr(unsafe.Pointer(&stx)), 0)
	if e != 0 {
		return FileInfo{}, fmt.Errorf("stating fd %d: %w", fd, e)
	}
	fi := FileInfo{
		ID: FileID{Dev: unix.Mkdev(stx.Dev_major, stx.Dev_minor), Ino: stx.Ino},
		Stamp: Stamp{
			CtimeNs: stx.Ctime.Sec*1e9 + int64(stx.Ctime.Nsec),
			Size:    int64(stx.Size),
		},
		Mode:    uint32(stx.Mode),
		UID:     stx.Uid,
		GID:     stx.Gid,
		MtimeNs: stx.Mtime.Sec*1e9 + int64(stx.Mtime.Nsec),
	}
	if stx.Mask&unix.STATX_MNT_ID_UNIQUE != 0 {
		fi.MountID = stx.Mnt_id
	}
	return fi, nil
}

// getVersion asks the filesystem of fd for the file's generation
// (FS_IOC_GETVERSION).
func getVersion(fd int32) (uint32, unix.Errno) {
	var gen uint64 // room for a long; the kernel writes an int (the low half here)
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), fsIocGetversion, uintptr(unsafe.Pointer(&gen)))
	if e != 0 {
		return 0, e
	}
	return uint32(gen), 0
}
