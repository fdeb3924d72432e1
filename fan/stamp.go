package fan

import (
	"fmt"
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
// one statx and, for regular files, one ioctl, and allocates nothing.
func StatFd(fd int32) (FileInfo, error) {
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
	if fi.IsRegular() {
		var gen uint64 // room for a long; the kernel writes an int (the low half here)
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), fsIocGetversion, uintptr(unsafe.Pointer(&gen)))
		if e == 0 {
			fi.Stamp.Gen = uint32(gen)
		}
	}
	return fi, nil
}
