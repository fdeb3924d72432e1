package fan

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The mount namespace side of the kernel interface: listing mount
// namespaces through nsfs, entering them on a thread of their own, reading
// their mount tables and opening their mount points without ever waiting
// for a filesystem.

// mntNSInfo is struct mnt_ns_info (include/uapi/linux/nsfs.h, Linux 6.12).
type mntNSInfo struct {
	size     uint32
	nrMounts uint32
	id       uint64 // the namespace's ID, never reused until reboot
}

const (
	// nsfs ioctls, _IOR(0xb7, nr, struct mnt_ns_info); golang.org/x/sys
	// does not have them. NEXT and PREV return an fd of the next or
	// previous mount namespace in the kernel's list of all of them,
	// skipping those the caller has no CAP_SYS_ADMIN over, and ENOENT at
	// either end.
	nsMntGetInfo = 0x8010b70a // nr 10, Linux 6.12
	nsMntGetNext = 0x8010b70b // nr 11
	nsMntGetPrev = 0x8010b70c // nr 12

	// resolveCached is RESOLVE_CACHED (openat2(2), Linux 5.12), missing
	// from golang.org/x/sys.
	resolveCached = 0x20

	// mntNSInitIno is the inode number of the initial mount namespace's
	// nsfs file (MNT_NS_INIT_INO): fixed since Linux 6.18, allocated at
	// boot before.
	mntNSInitIno = 0xEFFFFFF8

	// maxNamespaces bounds a walk of the namespace list, which new
	// namespaces join while it runs.
	maxNamespaces = 1 << 20

	// maxMountTable bounds a mount table read (fs.mount-max, 100000
	// mounts by default, makes about 15 MB).
	maxMountTable = 64 << 20
)

// namespaceInfo asks nsfs for the ID and mount count of the mount
// namespace behind fd.
func namespaceInfo(fd int) (mntNSInfo, error) {
	info := mntNSInfo{size: uint32(unsafe.Sizeof(mntNSInfo{}))}
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), nsMntGetInfo, uintptr(unsafe.Pointer(&info)))
	if e != 0 {
		return mntNSInfo{}, e
	}
	return info, nil
}

// stepNamespace returns a new fd of the mount namespace after (req
// nsMntGetNext) or before (nsMntGetPrev) the one behind fd.
func stepNamespace(fd int, req uintptr) (int, mntNSInfo, error) {
	info := mntNSInfo{size: uint32(unsafe.Sizeof(mntNSInfo{}))}
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(unsafe.Pointer(&info)))
	if e != 0 {
		return -1, mntNSInfo{}, e
	}
	return int(r), info, nil
}

// forEachNamespace calls visit with an fd and the info of every mount
// namespace in the kernel's list but the one behind own, walking from own
// backwards, then forwards. The fd is closed after visit returns. A
// namespace created during the walk may be missed (the list is ordered by
// ID, and IDs come from per-CPU batches, not in creation order); the next
// walk finds it. It returns an error only when the walk could not reach
// the end of the list.
func forEachNamespace(own int, visit func(fd int, info mntNSInfo)) error {
	for _, req := range []uintptr{nsMntGetPrev, nsMntGetNext} {
		cur := own
		for n := 0; ; n++ {
			if n == maxNamespaces {
				if cur != own {
					unix.Close(cur)
				}
				return fmt.Errorf("listing mount namespaces: more than %d", maxNamespaces)
			}
			fd, info, err := stepNamespace(cur, req)
			if cur != own {
				unix.Close(cur)
			}
			if err == unix.ENOENT {
				break
			}
			if err != nil {
				return fmt.Errorf("listing mount namespaces: %w", err)
			}
			visit(fd, info)
			cur = fd
		}
	}
	return nil
}

// nsInode returns the inode number of an nsfs fd, the number that
// /proc/PID/ns/mnt shows ("mnt:[N]").
func nsInode(fd int) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// nsThread is one OS thread with a filesystem context of its own
// (unshare(CLONE_FS)): it can enter other mount namespaces with setns(2),
// which moves its root and working directory to the namespace's root,
// without moving the rest of the process. The goroutine that runs it is
// locked to it and never unlocks: when it returns, the runtime ends the
// thread instead of handing it, with a foreign root, to other goroutines
// (shortly after stop returns). It is never the main thread, which the
// runtime would not end. New threads are not cloned from it either: the
// runtime creates them from a clean template thread when asked on a
// locked one.
//
// Functions given to do run on it one at a time. They must make only
// system calls with paths relative to a directory fd or to the thread's
// working directory, and never call code that could resolve an absolute
// path, log, or open a file by name: "/" there is the root of a namespace
// that its owner, maybe an attacker, built.
//
// Its methods are safe for concurrent use; stop must be called once,
// after the last do.
type nsThread struct {
	tid  int         // the thread's ID
	reqs chan func() // functions to run on it; closed by stop
	done chan struct{}
}

// startNSThread starts the thread and detaches its filesystem context.
func startNSThread() (*nsThread, error) {
	t := &nsThread{reqs: make(chan func()), done: make(chan struct{})}
	started := make(chan error, 1)
	go t.run(started)
	if err := <-started; err != nil {
		<-t.done
		return nil, err
	}
	return t, nil
}

// run is the thread's goroutine. It sends on started whether the thread
// is ready, and then runs functions until stop.
func (t *nsThread) run(started chan<- error) {
	runtime.LockOSThread() // never unlocked once the thread is changed
	if unix.Gettid() == unix.Getpid() {
		// The main thread: the runtime parks it forever instead of
		// ending it, and /proc/self shows its view. Keep it locked
		// while another goroutine locks a thread of its own, so that
		// the other one cannot land here; then let it go, unchanged.
		again := make(chan error, 1)
		go t.run(again)
		err := <-again
		runtime.UnlockOSThread()
		started <- err
		return
	}
	defer close(t.done)
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		started <- fmt.Errorf("unsharing the filesystem context: %w", err)
		return
	}
	t.tid = unix.Gettid()
	started <- nil
	for f := range t.reqs {
		f()
	}
}

// do runs f on the thread and returns when it has.
func (t *nsThread) do(f func()) {
	ran := make(chan struct{})
	t.reqs <- func() {
		defer close(ran)
		f()
	}
	<-ran
}

// stop ends the goroutine, and with it the thread, and waits for it.
func (t *nsThread) stop() {
	close(t.reqs)
	<-t.done
}

// mountInfoName is the path, relative to a /proc fd, of the mount table
// of the thread tid of this process: the table of the namespace it is in,
// with paths relative to its root.
func mountInfoName(tid int) string {
	return strconv.Itoa(unix.Getpid()) + "/task/" + strconv.Itoa(tid) + "/mountinfo"
}

// readMountTable reads a mountinfo file through fd from offset 0 to EOF.
//
// It cannot hang on a hostile namespace: the kernel prints the table from
// its own mount structures (namespace_sem held for reading, which no mount
// operation holds while it waits for a filesystem: lookups come first, and
// FUSE mounts answer INIT asynchronously), d_path of dentries already in
// memory, and each superblock's show_options, which for the filesystems an
// unprivileged user can mount (tmpfs, FUSE, overlayfs, proc, sysfs, ...)
// formats fields held in memory.
func readMountTable(fd int, hint int) ([]byte, error) {
	buf := make([]byte, 0, hint+16<<10)
	for {
		if len(buf) == cap(buf) {
			if len(buf) >= maxMountTable {
				return nil, fmt.Errorf("mount table larger than %d bytes", maxMountTable)
			}
			buf = slices.Grow(buf, cap(buf))
		}
		n, err := unix.Pread(fd, buf[len(buf):cap(buf)], int64(len(buf)))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+n]
	}
}

// openMountInfo opens, on the calling thread t, its own mount table.
func openMountInfo(proc, tid int) (int, error) {
	fd, err := unix.Openat(proc, mountInfoName(tid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("opening /proc/%s: %w", mountInfoName(tid), err)
	}
	return fd, nil
}

// errNotCached is reported for a mount point that cannot be reached
// without asking a filesystem: a directory on the way is not in the
// dentry cache, or must be revalidated first (FUSE and NFS after their
// timeouts, sysfs and /proc/sys always), or an automount point.
var errNotCached = errors.New("reaching the mount point would wait for a filesystem (not in the dentry cache, or needs revalidation): skipped, tried again at the next poll")

// mountRoot is what openMountRoot found at a mount point.
type mountRoot struct {
	fd  int    // O_PATH fd of the mount's root, -1 if none
	uid uint64 // the mount's unique ID (Linux 6.8), 0 if unknown
}

// openMountRoot opens, with O_PATH, the root of the mount mt of the
// calling thread's mount namespace, and checks that it is that very mount
// (by mount ID and device), not one mounted over it since the table was
// read. It must run on an nsThread that entered the namespace: the path is
// resolved from the thread's working directory, which setns put on the
// namespace's root.
//
// It never waits for a filesystem, whatever the namespace's owner built:
//   - RESOLVE_CACHED makes the whole walk run in RCU mode, under
//     rcu_read_lock, where the kernel cannot sleep: whatever would need to
//     (a lookup missing from the dentry cache, a FUSE or NFS dentry or
//     permission to revalidate, an automount) fails the walk with EAGAIN
//     instead of calling into the filesystem;
//   - RESOLVE_NO_SYMLINKS, RESOLVE_NO_MAGICLINKS and RESOLVE_BENEATH keep
//     the walk on the path as given, below the namespace's root: no jump,
//     so no d_weak_revalidate (NFS, overlayfs) when the walk completes,
//     and mountinfo paths have no "." or ".." components;
//   - an O_PATH open calls no ->open of the filesystem;
//   - statx with AT_STATX_DONT_SYNC takes attributes from memory, even
//     from a FUSE or NFS inode (what the walk lands on is not known
//     before the check).
func openMountRoot(mt Mount) (mountRoot, error) {
	rel := strings.TrimLeft(mt.Point, "/")
	if rel == "" {
		rel = "."
	}
	for _, c := range strings.Split(rel, "/") {
		if c == "" || c == "." || c == ".." {
			return mountRoot{fd: -1}, fmt.Errorf("opening mount point %q: not a canonical path", mt.Point)
		}
	}
	how := unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC | unix.O_NOFOLLOW,
		Resolve: resolveCached | unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	fd, err := unix.Openat2(unix.AT_FDCWD, rel, &how)
	if err == unix.EAGAIN {
		return mountRoot{fd: -1}, fmt.Errorf("opening mount point %s: %w: %w", mt.Point, errNotCached, err)
	}
	if err != nil {
		return mountRoot{fd: -1}, fmt.Errorf("opening mount point %s: %w", mt.Point, err)
	}
	const flags = unix.AT_EMPTY_PATH | unix.AT_STATX_DONT_SYNC
	var stx unix.Statx_t
	// The kernel fills stx_mnt_id with one kind of ID per call.
	if err := unix.Statx(fd, "", flags, unix.STATX_MNT_ID, &stx); err != nil {
		unix.Close(fd)
		return mountRoot{fd: -1}, fmt.Errorf("checking mount point %s: %w", mt.Point, err)
	}
	if stx.Mask&unix.STATX_MNT_ID == 0 || int(stx.Mnt_id) != mt.ID || unix.Mkdev(stx.Dev_major, stx.Dev_minor) != mt.Dev {
		unix.Close(fd)
		return mountRoot{fd: -1}, errCovered
	}
	root := mountRoot{fd: fd}
	if err := unix.Statx(fd, "", flags, unix.STATX_MNT_ID_UNIQUE, &stx); err == nil && stx.Mask&unix.STATX_MNT_ID_UNIQUE != 0 {
		root.uid = stx.Mnt_id
	}
	return root, nil
}
