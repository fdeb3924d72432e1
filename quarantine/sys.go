package quarantine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// splitPath splits an absolute path into its directory and its last
// component, which must be a name (not empty, ".", or "..").
func splitPath(p []byte) (dir, base string, err error) {
	if len(p) == 0 || p[0] != '/' {
		return "", "", fmt.Errorf("%s: not an absolute path", strconv.Quote(string(p)))
	}
	p = bytes.TrimRight(p, "/")
	i := bytes.LastIndexByte(p, '/')
	if i < 0 {
		return "", "", fmt.Errorf("%s: no file name", strconv.Quote("/"))
	}
	dir, base = string(p[:i]), string(p[i+1:])
	if dir == "" {
		dir = "/"
	}
	if base == "" || base == "." || base == ".." {
		return "", "", fmt.Errorf("%s: no file name", strconv.Quote(string(p)))
	}
	return dir, base, nil
}

// openDir opens directory dir (absolute) without following any symbolic
// link on the way: with openat2 and RESOLVE_NO_SYMLINKS, or, where the
// kernel lacks openat2, component by component from "/" with O_NOFOLLOW.
// flags are added to O_DIRECTORY|O_CLOEXEC (O_PATH or O_RDONLY). A
// symbolic link gives an error wrapping ErrSymlink.
func openDir(dir string, flags int) (int, error) {
	fd, err := unix.Openat2(unix.AT_FDCWD, dir, &unix.OpenHow{
		Flags:   uint64(flags | unix.O_DIRECTORY | unix.O_CLOEXEC),
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	switch {
	case err == nil:
		return fd, nil
	case errors.Is(err, unix.ELOOP):
		return -1, fmt.Errorf("opening %s: %w", strconv.Quote(dir), ErrSymlink)
	case !errors.Is(err, unix.ENOSYS):
		return -1, fmt.Errorf("opening %s: %w", strconv.Quote(dir), err)
	}
	return walkDir(dir, flags)
}

// walkDir is openDir without openat2.
func walkDir(dir string, flags int) (int, error) {
	fd, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("opening /: %w", err)
	}
	for _, c := range bytes.Split([]byte(dir), []byte("/")) {
		if len(c) == 0 || string(c) == "." {
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstatat(fd, string(c), &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("opening %s: %w", strconv.Quote(dir), err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			unix.Close(fd)
			return -1, fmt.Errorf("opening %s: %w", strconv.Quote(dir), ErrSymlink)
		}
		next, err := unix.Openat(fd, string(c), unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if errors.Is(err, unix.ELOOP) {
			err = ErrSymlink
		}
		if err != nil {
			return -1, fmt.Errorf("opening %s: %w", strconv.Quote(dir), err)
		}
		fd = next
	}
	if flags&unix.O_PATH != 0 {
		return fd, nil
	}
	// Reopen the directory itself with the flags asked for.
	defer unix.Close(fd)
	fd2, err := unix.Openat(fd, ".", flags|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("opening %s: %w", strconv.Quote(dir), err)
	}
	return fd2, nil
}

// futimens sets the access and modification times of fd (utimensat with
// a NULL path, which x/sys/unix does not offer).
func futimens(fd int, ts *[2]unix.Timespec) error {
	_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(ts)), 0, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// renameNoReplace renames old to new in dirfd, failing with EEXIST when new
// exists. Where the file system lacks RENAME_NOREPLACE it links new and
// unlinks old, which fails the same way.
func renameNoReplace(dirfd int, old, new string) error {
	err := unix.Renameat2(dirfd, old, dirfd, new, unix.RENAME_NOREPLACE)
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) {
		return err
	}
	if err := unix.Linkat(dirfd, old, dirfd, new, 0); err != nil {
		return err
	}
	return unix.Unlinkat(dirfd, old, 0)
}

// resolveCached is RESOLVE_CACHED of openat2 (Linux 5.12), which
// x/sys/unix does not define for Linux: resolve the path only from the
// kernel's dentry cache, failing with EAGAIN where that would take I/O or
// revalidation (a lookup, a network or FUSE filesystem's revalidation, an
// automount) instead of waiting for it.
const resolveCached = 0x20

// noWaitResolve are the openat2 resolve flags of every lookup a move makes:
// no symbolic link followed, none of /proc's magic links, never above the
// starting directory.
const noWaitResolve = unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_BENEATH

// lookupAt opens name, one path component, in directory dirfd as O_PATH
// (plus flags) without following a symbolic link and without waiting on
// any filesystem but dirfd's: from the dentry cache first (that may cross
// into another mount, which costs no I/O), and else with I/O in dirfd's
// filesystem only, refusing to cross a mount point (ErrNotLocal). The
// caller checks that dirfd's filesystem is a local one before; O_PATH
// calls no filesystem's open.
func lookupAt(dirfd int, name string, flags int) (int, error) {
	how := &unix.OpenHow{Flags: uint64(unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC | flags), Resolve: noWaitResolve | resolveCached}
	fd, err := openat2(dirfd, name, how)
	if !errors.Is(err, unix.EAGAIN) {
		return fd, err
	}
	how.Resolve = noWaitResolve | unix.RESOLVE_NO_XDEV
	fd, err = openat2(dirfd, name, how)
	if errors.Is(err, unix.EXDEV) {
		return -1, fmt.Errorf("%s is a mount point not in the kernel's cache: %w", strconv.Quote(name), ErrNotLocal)
	}
	return fd, err
}

func openat2(dirfd int, name string, how *unix.OpenHow) (int, error) {
	for {
		fd, err := unix.Openat2(dirfd, name, how)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// statNoWait returns the attributes of fd that the kernel has at hand,
// without asking its filesystem (AT_STATX_DONT_SYNC: a FUSE or network
// filesystem answers from its cache).
func statNoWait(fd int) (unix.Statx_t, error) {
	var stx unix.Statx_t
	err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_STATX_DONT_SYNC|unix.AT_SYMLINK_NOFOLLOW,
		unix.STATX_TYPE|unix.STATX_INO|unix.STATX_MNT_ID_UNIQUE, &stx)
	return stx, err
}

// fsMagic returns the magic number of the superblock of the filesystem fd
// is on, without asking that filesystem (fstatfs would: a FUSE server or a
// network server that does not answer holds it forever): the mount's
// unique id from statx, then the superblock's magic from statmount (Linux
// 6.8). An error wrapping ENOSYS means the kernel cannot tell.
func fsMagic(fd int) (uint64, error) {
	stx, err := statNoWait(fd)
	if err != nil {
		return 0, err
	}
	if stx.Mask&unix.STATX_MNT_ID_UNIQUE == 0 {
		return 0, fmt.Errorf("no unique mount id from statx: %w", unix.ENOSYS)
	}
	req := struct {
		size  uint32
		spare uint32
		mntID uint64
		param uint64
	}{size: 24, mntID: stx.Mnt_id, param: statmountSBBasic} // MNT_ID_REQ_SIZE_VER0
	var buf [4096]byte
	for {
		_, _, e := unix.Syscall6(unix.SYS_STATMOUNT, uintptr(unsafe.Pointer(&req)), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, fmt.Errorf("statmount: %w", e)
		}
		break
	}
	// struct statmount: size (4), mnt_opts (4), mask (8), sb_dev_major (4),
	// sb_dev_minor (4), sb_magic (8).
	if mask := binary.NativeEndian.Uint64(buf[8:16]); mask&statmountSBBasic == 0 {
		return 0, fmt.Errorf("statmount gave no superblock: %w", unix.ENOSYS)
	}
	return binary.NativeEndian.Uint64(buf[24:32]), nil
}

// statmountSBBasic is STATMOUNT_SB_BASIC (linux/mount.h).
const statmountSBBasic = 0x1

// Magic numbers x/sys/unix lacks (linux/magic.h and the filesystems' own
// headers).
const (
	jfsSuperMagic     = 0x3153464a
	ntfs3SuperMagic   = 0x7366746e
	hfsplusSuperMagic = 0x482b
)

// localFS reports whether a filesystem, by its superblock's magic, is one
// in which a path lookup waits at worst for a local disk: the types
// fanguard can protect (policy.LocalFSTypes) and ramfs. Network, FUSE,
// overlay (its layers may be anything) and pseudo filesystems are not.
func localFS(magic uint64) bool {
	switch magic {
	case unix.EXT4_SUPER_MAGIC, // also ext2 and ext3
		unix.XFS_SUPER_MAGIC, unix.BTRFS_SUPER_MAGIC, unix.TMPFS_MAGIC, unix.RAMFS_MAGIC,
		unix.MSDOS_SUPER_MAGIC, // vfat and msdos
		unix.EXFAT_SUPER_MAGIC, unix.F2FS_SUPER_MAGIC, unix.ISOFS_SUPER_MAGIC,
		jfsSuperMagic, ntfs3SuperMagic, unix.UDF_SUPER_MAGIC, unix.SQUASHFS_MAGIC, unix.EROFS_SUPER_MAGIC_V1,
		hfsplusSuperMagic, unix.NILFS_SUPER_MAGIC, unix.BCACHEFS_SUPER_MAGIC:
		return true
	}
	return false
}

// fsName names a filesystem by its magic, for messages.
func fsName(magic uint64) string {
	switch magic {
	case unix.FUSE_SUPER_MAGIC:
		return "a FUSE filesystem"
	case unix.NFS_SUPER_MAGIC:
		return "an NFS filesystem"
	case unix.CIFS_SUPER_MAGIC, unix.SMB2_SUPER_MAGIC:
		return "an SMB filesystem"
	case unix.V9FS_MAGIC:
		return "a 9p filesystem"
	case unix.CEPH_SUPER_MAGIC:
		return "a Ceph filesystem"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "an overlay filesystem"
	case unix.AUTOFS_SUPER_MAGIC:
		return "an autofs mount"
	case unix.PROC_SUPER_MAGIC:
		return "proc"
	case unix.SYSFS_MAGIC:
		return "sysfs"
	}
	return fmt.Sprintf("a filesystem of magic %#x", magic)
}

// checkLocal returns an error wrapping ErrNotLocal unless directory fd
// (named name, for messages) is on a local filesystem (localFS). An error
// wrapping ENOSYS means the kernel cannot tell (see fsMagic).
func checkLocal(fd int, name string) error {
	magic, err := fsMagic(fd)
	if err != nil {
		return fmt.Errorf("telling the filesystem of %s: %w", strconv.Quote(name), err)
	}
	if !localFS(magic) {
		return fmt.Errorf("%s is on %s, not a local one: looking a name up there could wait forever: %w",
			strconv.Quote(name), fsName(magic), ErrNotLocal)
	}
	return nil
}

// openDirNoWait opens directory dir (absolute) as O_PATH without following
// any symbolic link (ErrSymlink) and without waiting on a filesystem that
// is not local (ErrNotLocal): with openat2 from the dentry cache alone
// (RESOLVE_CACHED) when it has the whole path, which takes no I/O at all;
// else component by component from "/", looking each name up only in a
// directory whose filesystem is local (checkLocal), and crossing into
// another mount only from the cache.
func openDirNoWait(dir string) (int, error) {
	fd, err := openat2(unix.AT_FDCWD, dir, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | resolveCached,
	})
	switch {
	case err == nil:
		return fd, nil
	case errors.Is(err, unix.ELOOP):
		return -1, fmt.Errorf("opening %s: %w", strconv.Quote(dir), ErrSymlink)
	case !errors.Is(err, unix.EAGAIN):
		return -1, fmt.Errorf("opening %s: %w", strconv.Quote(dir), err)
	}
	fd, err = unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("opening /: %w", err)
	}
	walked := "/"
	for _, c := range strings.Split(dir, "/") {
		if c == "" || c == "." {
			continue
		}
		if c == ".." {
			unix.Close(fd)
			return -1, fmt.Errorf("opening %s: \"..\" in the path", strconv.Quote(dir))
		}
		if err := checkLocal(fd, walked); err != nil {
			unix.Close(fd)
			if errors.Is(err, unix.ENOSYS) {
				err = fmt.Errorf("%w: %w", err, ErrNotLocal)
			}
			return -1, fmt.Errorf("opening %s: %w", strconv.Quote(dir), err)
		}
		next, err := lookupAt(fd, c, unix.O_DIRECTORY)
		unix.Close(fd)
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			err = fmt.Errorf("%w (%w)", ErrSymlink, err)
		}
		if err != nil {
			return -1, fmt.Errorf("opening %s: %w", strconv.Quote(dir), err)
		}
		fd, walked = next, path.Join(walked, c)
	}
	return fd, nil
}

// reopen opens the file that O_PATH descriptor fd refers to, read-only,
// through /proc/self/fd: the very inode fd was checked to be, whatever its
// path leads to by now.
func reopen(fd int) (int, error) {
	for {
		nfd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(fd), unix.O_RDONLY|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			return nfd, err
		}
	}
}
