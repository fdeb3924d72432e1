package quarantine

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
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
