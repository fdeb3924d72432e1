package fan

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// NamespaceOptions configures a NamespaceMarker. FSTypes and Mark are
// required; the zero value of every other field means its default.
type NamespaceOptions struct {
	// FSTypes lists the filesystem types to protect, spelled as in
	// mountinfo ("ext4", "tmpfs"), as for MarkerOptions. Mounts of other
	// types are never marked. Required.
	FSTypes []string

	// Paths, if non-empty, limits marking to mounts whose mount point, as
	// seen from the root of their own namespace, is one of these absolute
	// paths or lies below one ("/srv" covers "/srv/a", not "/srvx"). They
	// are taken as written, not resolved: they name places in other
	// namespaces. A mount that only holds a path (a namespace's root
	// mount) is not in scope. The owner of a namespace decides where its
	// mounts appear, so only whole-machine mode covers every namespace
	// whatever its layout. Empty means every mount of the FSTypes.
	Paths []string

	// Mark places a FAN_MARK_FILESYSTEM mark through fd on the caller's
	// fanotify group: Group.MarkFilesystemAt. fd is an O_PATH fd of the
	// root of a mount in another namespace, open only during the call.
	// Marking a superblock twice must be harmless. It is called one call
	// at a time, from the goroutine running Sync or Run, never from the
	// thread that enters other namespaces. Required.
	Mark func(fd int) error

	// Report, if set, is called after each mark attempt with the mount
	// the mark went through and Mark's error (nil on success). A mount in
	// scope that cannot be reached is reported once, with the reason,
	// until the reason changes: hidden under another mount (the error is
	// the Marker's), or behind a directory that only its filesystem could
	// look up or revalidate, which the NamespaceMarker never waits for
	// (the error wraps unix.EAGAIN). A namespace that cannot be entered or
	// read is reported once, with only Namespace and NamespaceID set;
	// problems with no one namespace (listing the namespaces, reading the
	// trusted ones) once, with a zero ForeignMount. It is called one call
	// at a time, from the goroutine running Sync or Run; it may call
	// Marked and Trusted, not Sync or Close.
	Report func(m ForeignMount, err error)

	// Interval is the time from one look at every namespace to the next,
	// in Run. A mount made in another namespace is marked within about
	// Interval plus the time a look takes, or at once in a namespace that
	// an earlier look saw, if the kernel reports mounts (FAN_MNT_ATTACH,
	// Linux 6.14). Zero means 250 ms.
	Interval time.Duration
}

// DefaultNamespaceInterval is the Interval of a zero NamespaceOptions.
const DefaultNamespaceInterval = 250 * time.Millisecond

// maxLookGap is the longest pause between a look and an early one.
const maxLookGap = 25 * time.Millisecond

// ForeignMount is a mount of another mount namespace, as a
// NamespaceMarker saw it.
type ForeignMount struct {
	// Mount is its line in the namespace's mountinfo. Point is relative to
	// the namespace's root.
	Mount

	// Namespace is the inode number of the mount namespace, as
	// /proc/PID/ns/mnt ("mnt:[N]") and lsns(8) show it. Inode numbers of
	// dead namespaces are reused.
	Namespace uint64

	// NamespaceID is the namespace's 64-bit ID (NS_GET_MNTNS_ID), never
	// reused until reboot.
	NamespaceID uint64

	// UniqueID is the mount's unique ID (statx STATX_MNT_ID_UNIQUE, Linux
	// 6.8), never reused until reboot; 0 if not known.
	UniqueID uint64
}

// NamespaceMarker marks the filesystems mounted in mount namespaces other
// than the daemon's own — containers, PrivateTmp= units, `unshare -m`, a
// user's `unshare -Urm` — which the Marker, reading the daemon's own
// mount table, never sees. For each superblock of a protected type in
// scope it hands Mark an fd of one of its mounts; it forgets the
// superblock when that mount goes away, and marks it again if it is seen
// again (an unmounted tmpfs's device number is reused at once).
//
// It also knows which mounts belong to the trusted namespaces, the
// initial one (PID 1's) and the daemon's own: see Trusted.
//
// It looks at every namespace once per Interval, in Run, and right away
// when the daemon's own or the initial namespace's mount table changes,
// or when something is mounted in a namespace an earlier look saw
// (FAN_MNT_ATTACH on a FAN_MARK_MNTNS mark, Linux 6.14). Looks start at
// least Interval/10, or 25 ms if that is less, apart: mounting in a loop
// cannot keep the marker looking all the time.
// Namespaces are listed through nsfs (NS_MNT_GET_NEXT, Linux 6.12), which
// also finds namespaces no process is in (kept by a bind mount or an open
// fd of theirs). Each is entered with setns(2) on one dedicated OS thread
// (it needs CAP_SYS_ADMIN and CAP_SYS_CHROOT, and a seccomp filter that
// lets setns(CLONE_NEWNS) through), which reads the namespace's mount
// table (/proc/PID/task/TID/mountinfo) and opens mount points only with
// RESOLVE_CACHED: a mount behind a directory on FUSE whose server never
// answers is skipped and reported, never waited for (see openMountRoot).
// The thread is the only one the NamespaceMarker keeps; it ends in Close.
// Between looks the thread sits in the daemon's own namespace, so that it
// never keeps another namespace alive.
//
// What it cannot mark: a superblock that no path in any namespace leads
// to (all its mounts hidden under other mounts, or detached: fsmount(2)
// or open_tree(2) without move_mount, or unmounted lazily while a process
// keeps an fd below it), and a mount made, used and unmounted between two
// looks.
//
// NamespaceMarker is safe for concurrent use. Run must not be called more
// than once.
type NamespaceMarker struct {
	fsTypes  map[string]bool
	paths    []string // cleaned absolute paths
	mark     func(fd int) error
	report   func(m ForeignMount, err error)
	interval time.Duration

	th     *nsThread
	proc   int // O_PATH fd of /proc, to open the thread's mountinfo
	own    int // nsfs fd of the daemon's mount namespace
	ownID  uint64
	ownMI  int // mountinfo of own, polled for changes (POLLPRI)
	init   int // nsfs fd of the initial mount namespace; -1 if it is own or unknown
	initID uint64
	initMI int // mountinfo of init, polled for changes; -1 if none
	wake   int // eventfd written by Close to stop Run
	attach int // fanotify group told of mounts in the namespaces seen (FAN_MNT_ATTACH); -1 if the kernel has none

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
	// fdMu is held for reading while the fds and the thread are in use
	// (Sync, Run), and for writing by Close, which frees them.
	fdMu sync.RWMutex

	trusted atomic.Pointer[[]uint64] // sorted unique mount IDs, see Trusted

	syncMu      sync.Mutex              // serializes looks, and guards following
	devs        map[uint64]*nsMarkedDev // marked superblocks by st_dev
	nss         map[uint64]*nsState     // namespaces by ID, as of the last look
	trustDirty  [2]bool                 // own, init: mount table changed, trusted IDs to read again
	trustedIDs  [2][]uint64             // own, init: unique IDs as last read
	initMissing bool                    // the initial namespace was not found; reported once
	listErr     string                  // Run's last error listing the namespaces, reported once
	trustErr    [2]string               // own, init: last error reading the trusted mounts, reported once
	lastLook    time.Time               // when the last look started

	mu     sync.Mutex     // guards following
	marked []ForeignMount // published by each look for Marked
}

// nsMarkedDev is a superblock the NamespaceMarker has marked.
type nsMarkedDev struct {
	via ForeignMount // the mount the mark went through, as last seen
}

// nsState is what the last look found in one namespace.
type nsState struct {
	ino      uint64
	table    []byte  // mountinfo as read
	mounts   []Mount // parsed table
	problems map[nsProblemKey]string
	seen     bool // seen by the look in progress
}

// nsProblemKey names what a problem is about: a mount (by ID and device)
// or, with id -1, the namespace itself.
type nsProblemKey struct {
	id  int
	dev uint64
}

// NewNamespaceMarker checks opts, starts the thread that enters other
// namespaces and checks that it can (it returns an error wrapping EPERM
// without CAP_SYS_CHROOT or when a seccomp filter forbids setns). It has
// not marked anything yet: call Sync to place the first marks and learn
// the trusted mounts, then Run to follow changes.
func NewNamespaceMarker(opts NamespaceOptions) (*NamespaceMarker, error) {
	if opts.Mark == nil {
		return nil, errors.New("namespace marker options: Mark is required")
	}
	if len(opts.FSTypes) == 0 {
		return nil, errors.New("namespace marker options: no filesystem types to protect")
	}
	if opts.Interval < 0 {
		return nil, fmt.Errorf("namespace marker options: negative interval %v", opts.Interval)
	}
	m := &NamespaceMarker{
		mark:     opts.Mark,
		report:   opts.Report,
		interval: cmp.Or(opts.Interval, DefaultNamespaceInterval),
		proc:     -1, own: -1, ownMI: -1, init: -1, initMI: -1, wake: -1, attach: -1,
		devs:       make(map[uint64]*nsMarkedDev),
		nss:        make(map[uint64]*nsState),
		trustDirty: [2]bool{true, true},
	}
	if m.report == nil {
		m.report = func(ForeignMount, error) {}
	}
	var err error
	if m.fsTypes, m.paths, err = scope(opts.FSTypes, opts.Paths); err != nil {
		return nil, err
	}
	if err := m.open(); err != nil {
		m.free()
		return nil, err
	}
	return m, nil
}

// open acquires the fds and the thread.
func (m *NamespaceMarker) open() error {
	var err error
	if m.proc, err = unix.Open("/proc", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
		return fmt.Errorf("opening /proc: %w", err)
	}
	// Every thread but an nsThread is in the process's namespace.
	if m.own, err = unix.Open("/proc/thread-self/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
		return fmt.Errorf("opening own mount namespace: %w", err)
	}
	info, err := namespaceInfo(m.own)
	if err != nil {
		return fmt.Errorf("asking nsfs about own mount namespace (Linux 6.12 has NS_MNT_GET_INFO): %w", err)
	}
	m.ownID = info.id
	if m.wake, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return fmt.Errorf("creating eventfd: %w", err)
	}
	// Mount notifications are a bonus: without them, Run polls.
	if fd, err := unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_REPORT_MNT|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK, 0); err == nil {
		m.attach = fd
	}
	if m.th, err = startNSThread(); err != nil {
		return err
	}
	m.th.do(func() {
		if err = unix.Setns(m.own, unix.CLONE_NEWNS); err != nil {
			err = fmt.Errorf("entering own mount namespace (setns needs CAP_SYS_ADMIN, CAP_SYS_CHROOT and, under systemd, RestrictNamespaces= allowing mnt): %w", err)
			return
		}
		m.ownMI, err = openMountInfo(m.proc, m.th.tid)
	})
	if err != nil {
		return err
	}
	return m.findInit()
}

// findInit finds the initial mount namespace, PID 1's, and opens its
// mount table. /proc/1/ns/mnt may be out of reach (PID 1's capabilities
// are not a subset of ours and we lack CAP_SYS_PTRACE, or an LSM says
// no); since Linux 6.18 the initial namespace has a fixed inode number.
// If it is not found, only the daemon's own namespace is trusted.
func (m *NamespaceMarker) findInit() error {
	want := uint64(mntNSInitIno)
	var st unix.Stat_t
	if err := unix.Stat("/proc/1/ns/mnt", &st); err == nil {
		want = st.Ino
	}
	ownIno, err := nsInode(m.own)
	if err != nil {
		return fmt.Errorf("checking own mount namespace: %w", err)
	}
	if ownIno == want {
		return nil
	}
	err = forEachNamespace(m.own, func(fd int, info mntNSInfo) {
		if m.init >= 0 {
			return
		}
		if ino, err := nsInode(fd); err == nil && ino == want {
			if m.init, err = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0); err != nil {
				m.init = -1
				return
			}
			m.initID = info.id
		}
	})
	if err != nil {
		return err
	}
	if m.init < 0 {
		m.initMissing = true
		return nil
	}
	m.th.do(func() {
		if err = unix.Setns(m.init, unix.CLONE_NEWNS); err != nil {
			err = fmt.Errorf("entering the initial mount namespace: %w", err)
			return
		}
		m.initMI, err = openMountInfo(m.proc, m.th.tid)
		if serr := unix.Setns(m.own, unix.CLONE_NEWNS); serr != nil {
			err = errors.Join(err, fmt.Errorf("entering own mount namespace: %w", serr))
		}
	})
	return err
}

// Trusted reports whether the mount with unique ID uniqueMountID (statx
// STATX_MNT_ID_UNIQUE, Linux 6.8) is a mount of a protected filesystem
// type in the initial mount namespace or in the daemon's own, as of the
// last look: a path through it (readlink of /proc/self/fd/N of an event)
// is one an administrator sees, not a layout a user built in a namespace
// of its own. A mount made in a trusted namespace since the last look is
// not trusted yet, nor is one that was hidden under another mount, or
// behind a directory the marker would not wait for, at the last look.
// Every mount copied into a new namespace gets a new ID, so no mount of
// another namespace is ever trusted.
//
// It takes no lock and allocates nothing; it may be called from any
// goroutine, also while Sync or Run looks.
func (m *NamespaceMarker) Trusted(uniqueMountID uint64) bool {
	ids := m.trusted.Load()
	if ids == nil || uniqueMountID == 0 {
		return false
	}
	_, ok := slices.BinarySearch(*ids, uniqueMountID)
	return ok
}

// Marked returns the superblocks marked through other namespaces, one
// mount each (the one the mark went through), as of the last look, sorted
// by namespace and mount point.
func (m *NamespaceMarker) Marked() []ForeignMount {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.marked)
}

// Sync looks at every namespace once: it marks what is in scope and not
// marked yet, forgets what went away, and reads the trusted mounts again
// if their tables changed. Failures to mark, or to enter or read one
// namespace, go to Report. It returns an error only when the namespaces
// cannot be listed (wrapping os.ErrClosed after Close); the marks that can
// be placed are placed all the same.
func (m *NamespaceMarker) Sync() error {
	m.fdMu.RLock()
	defer m.fdMu.RUnlock()
	if m.closed.Load() {
		return fmt.Errorf("looking at mount namespaces: %w", os.ErrClosed)
	}
	return m.look()
}

// Run looks at every namespace each Interval, and right away when the
// mount table of the daemon's own or of the initial namespace changes,
// until Close; then it returns nil. A look that fails to list the
// namespaces is reported once (Report, with a zero ForeignMount) and
// tried again at the next interval; Run returns an error only when it
// cannot wait.
func (m *NamespaceMarker) Run() error {
	m.fdMu.RLock()
	defer m.fdMu.RUnlock()
	for !m.closed.Load() {
		err := m.look()
		m.syncMu.Lock()
		switch {
		case err == nil:
			m.listErr = ""
		case err.Error() != m.listErr:
			m.listErr = err.Error()
			m.report(ForeignMount{}, err)
		}
		m.syncMu.Unlock()
		if err := m.wait(); err != nil {
			if errors.Is(err, os.ErrClosed) {
				return nil
			}
			return err
		}
	}
	return nil
}

// wait sleeps for one interval, less if a trusted mount table changes or
// something is mounted in a namespace seen before, or until Close. It
// returns os.ErrClosed after Close.
func (m *NamespaceMarker) wait() error {
	fds := []unix.PollFd{
		{Fd: int32(m.wake), Events: unix.POLLIN},
		{Fd: int32(m.ownMI), Events: unix.POLLPRI},
		{Fd: int32(m.initMI), Events: unix.POLLPRI}, // poll ignores a negative fd
		{Fd: int32(m.attach), Events: unix.POLLIN},
	}
	m.syncMu.Lock()
	deadline := m.lastLook.Add(m.interval)
	earliest := m.lastLook.Add(min(m.interval/10, maxLookGap))
	m.syncMu.Unlock()
	early := false
	for {
		left := time.Until(deadline)
		if early {
			left = time.Until(earliest)
		}
		if left <= 0 {
			return nil
		}
		if early {
			fds = fds[:1] // only Close ends the pause
		}
		_, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("waiting between looks at mount namespaces: %w", err)
		}
		if fds[0].Revents != 0 {
			return os.ErrClosed
		}
		if early {
			continue
		}
		for i, pfd := range fds[1:] {
			switch {
			case pfd.Revents&unix.POLLNVAL != 0:
				return fmt.Errorf("waiting for mount changes: %w", unix.EBADF)
			case i < 2 && pfd.Revents&(unix.POLLPRI|unix.POLLERR) != 0:
				m.syncMu.Lock()
				m.trustDirty[i] = true
				m.syncMu.Unlock()
				early = true
			case i == 2 && pfd.Revents != 0:
				drain(m.attach)
				early = true
			}
		}
	}
}

// drain reads and drops every event queued on a notification group.
func drain(fd int) {
	var buf [4096]byte
	for {
		n, err := unix.Read(fd, buf[:])
		if err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			return
		}
	}
}

// Close stops Run, waits for a look in progress, ends the thread and
// closes every fd. The marks stay: they belong to the caller's group.
// Calls after the first return what the first returned.
func (m *NamespaceMarker) Close() error {
	m.closeOnce.Do(func() {
		m.closed.Store(true)
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1)
		if _, err := unix.Write(m.wake, one[:]); err != nil {
			m.closeErr = fmt.Errorf("waking namespace marker: %w", err)
		}
		m.fdMu.Lock()
		defer m.fdMu.Unlock()
		m.closeErr = errors.Join(m.closeErr, m.free())
	})
	return m.closeErr
}

// free ends the thread and closes the fds that are open.
func (m *NamespaceMarker) free() error {
	if m.th != nil {
		m.th.stop()
		m.th = nil
	}
	var errs []error
	for _, fd := range []*int{&m.proc, &m.own, &m.ownMI, &m.init, &m.initMI, &m.wake, &m.attach} {
		if *fd >= 0 {
			if err := unix.Close(*fd); err != nil {
				errs = append(errs, fmt.Errorf("closing fd %d: %w", *fd, err))
			}
			*fd = -1
		}
	}
	return errors.Join(errs...)
}

// look is one look at every namespace. It runs with fdMu held for
// reading.
func (m *NamespaceMarker) look() error {
	m.syncMu.Lock()
	defer m.syncMu.Unlock()
	defer m.publish()
	m.lastLook = time.Now()

	m.refreshTrusted()

	for _, st := range m.nss {
		st.seen = false
	}
	// The initial namespace first: it never goes away, so marks that go
	// through its mounts are not forgotten and placed again each time a
	// short-lived namespace holding the same filesystems ends.
	if m.init >= 0 {
		m.lookAt(m.init, mntNSInfo{id: m.initID})
	}
	err := forEachNamespace(m.own, func(fd int, info mntNSInfo) {
		if m.init < 0 || info.id != m.initID {
			m.lookAt(fd, info)
		}
	})
	// Back home, so that the thread keeps no other namespace alive.
	var serr error
	m.th.do(func() { serr = unix.Setns(m.own, unix.CLONE_NEWNS) })
	if serr != nil {
		err = errors.Join(err, fmt.Errorf("entering own mount namespace: %w", serr))
	}
	if err != nil {
		// Namespaces not reached may still be there: keep their marks.
		return err
	}
	for id, st := range m.nss {
		if !st.seen {
			delete(m.nss, id)
			m.forgetVia(id, nil)
		}
	}
	return nil
}

// lookAt reads the mount table of one namespace, forgets the marks whose
// mount went away, and marks what is in scope and not marked yet.
func (m *NamespaceMarker) lookAt(nsfd int, info mntNSInfo) {
	st := m.nss[info.id]
	if st == nil {
		ino, _ := nsInode(nsfd)
		st = &nsState{ino: ino, problems: make(map[nsProblemKey]string)}
		m.nss[info.id] = st
		if m.attach >= 0 {
			// Harmless if it fails: the next look comes anyway. The
			// kernel drops the mark when the namespace goes away.
			unix.FanotifyMark(m.attach, unix.FAN_MARK_ADD|unix.FAN_MARK_MNTNS, unix.FAN_MNT_ATTACH, nsfd, "")
		}
	}
	st.seen = true
	nsOnly := ForeignMount{Namespace: st.ino, NamespaceID: info.id}

	var data []byte
	var err error
	m.th.do(func() {
		if err = unix.Setns(nsfd, unix.CLONE_NEWNS); err != nil {
			err = fmt.Errorf("entering mount namespace %d: %w", st.ino, err)
			return
		}
		var fd int
		if fd, err = openMountInfo(m.proc, m.th.tid); err != nil {
			return
		}
		data, err = readMountTable(fd, len(st.table))
		unix.Close(fd)
		if err != nil {
			err = fmt.Errorf("reading mount table of namespace %d: %w", st.ino, err)
		}
	})
	if err == nil && !bytes.Equal(data, st.table) {
		var mounts []Mount
		if mounts, err = ParseMountInfo(data); err == nil {
			st.table, st.mounts = data, mounts
		} else {
			err = fmt.Errorf("mount namespace %d: %w", st.ino, err)
		}
	}
	if err != nil {
		// Its marks stay: nothing says their mounts went away.
		m.problem(st, nsProblemKey{id: -1}, nsOnly, err)
		return
	}
	m.solved(st, nsProblemKey{id: -1})

	byID := make(map[int]Mount, len(st.mounts))
	for _, mt := range st.mounts {
		byID[mt.ID] = mt
	}
	cov := newCoverage(st.mounts)
	m.forgetVia(info.id, func(md *nsMarkedDev) bool {
		cur, ok := byID[md.via.ID]
		if !ok || cur.Dev != md.via.Dev {
			return true
		}
		md.via.Mount = cur // it may have moved
		if md.via.UniqueID == 0 || cov.covers(cur) {
			return false
		}
		// Same line, maybe not the same mount: a tmpfs unmounted and
		// mounted again between two looks gets the same mount ID and
		// device number. Only the unique ID tells.
		var root mountRoot
		var err error
		m.th.do(func() {
			root, err = openMountRoot(cur)
			if root.fd >= 0 {
				unix.Close(root.fd)
			}
		})
		return err != nil || root.uid != md.via.UniqueID
	})

	// In scope and not marked yet, by superblock, in table order.
	var devs []uint64
	cands := make(map[uint64][]Mount)
	for _, mt := range st.mounts {
		if !m.inScope(mt) || m.devs[mt.Dev] != nil {
			continue
		}
		if _, ok := cands[mt.Dev]; !ok {
			devs = append(devs, mt.Dev)
		}
		cands[mt.Dev] = append(cands[mt.Dev], mt)
	}
	for key := range st.problems {
		if key.id >= 0 && cands[key.dev] == nil {
			delete(st.problems, key) // gone, or marked through another mount
		}
	}
	for _, dev := range devs {
		m.markDev(st, info.id, cands[dev], cov)
	}
}

// markDev marks a superblock through the first of its mounts in scope
// that a path leads to.
func (m *NamespaceMarker) markDev(st *nsState, nsID uint64, cands []Mount, cov coverage) {
	var root mountRoot
	var via Mount
	var firstErr error
	m.th.do(func() {
		for _, c := range cands {
			if cov.covers(c) {
				continue
			}
			r, err := openMountRoot(c)
			if err == nil {
				root, via = r, c
				return
			}
			if firstErr == nil {
				firstErr = err
				via = c
			}
		}
		root.fd = -1
	})
	fm := ForeignMount{Mount: via, Namespace: st.ino, NamespaceID: nsID, UniqueID: root.uid}
	var err error
	if root.fd < 0 {
		err = firstErr
		if err == nil { // every mount covered, by the table
			fm.Mount, err = cands[0], errCovered
		}
	} else {
		err = m.mark(root.fd)
		unix.Close(root.fd)
	}
	// One problem per superblock: the one of the mount last tried.
	key := nsProblemKey{id: fm.ID, dev: fm.Dev}
	for _, c := range cands {
		if k := (nsProblemKey{id: c.ID, dev: c.Dev}); k != key || err == nil {
			m.solved(st, k)
		}
	}
	if err != nil {
		m.problem(st, key, fm, err)
		return
	}
	m.report(fm, nil)
	m.devs[via.Dev] = &nsMarkedDev{via: fm}
}

// inScope reports whether a mount of another namespace is to be marked.
func (m *NamespaceMarker) inScope(mt Mount) bool {
	if !m.fsTypes[mt.FSType] {
		return false
	}
	if len(m.paths) == 0 {
		return true
	}
	for _, p := range m.paths {
		if isUnder(mt.Point, p) {
			return true
		}
	}
	return false
}

// forgetVia forgets the superblocks marked through a mount of namespace
// nsID for which gone says so (all of them if gone is nil).
func (m *NamespaceMarker) forgetVia(nsID uint64, gone func(*nsMarkedDev) bool) {
	for dev, md := range m.devs {
		if md.via.NamespaceID == nsID && (gone == nil || gone(md)) {
			delete(m.devs, dev)
		}
	}
}

// problem reports err about key once, until it changes or is solved.
func (m *NamespaceMarker) problem(st *nsState, key nsProblemKey, fm ForeignMount, err error) {
	if st.problems[key] == err.Error() {
		return
	}
	st.problems[key] = err.Error()
	m.report(fm, err)
}

func (m *NamespaceMarker) solved(st *nsState, key nsProblemKey) { delete(st.problems, key) }

// refreshTrusted reads the unique IDs of the mounts of the trusted
// namespaces whose tables changed, and publishes the union.
func (m *NamespaceMarker) refreshTrusted() {
	// Changes since the last poll, also when Sync runs without Run.
	fds := []unix.PollFd{{Fd: int32(m.ownMI), Events: unix.POLLPRI}, {Fd: int32(m.initMI), Events: unix.POLLPRI}}
	if _, err := unix.Poll(fds, 0); err == nil {
		for i, pfd := range fds {
			if pfd.Revents&(unix.POLLPRI|unix.POLLERR) != 0 {
				m.trustDirty[i] = true
			}
		}
	}
	if m.initMissing {
		m.initMissing = false
		m.report(ForeignMount{}, errors.New("the initial mount namespace (PID 1's) was not found: only mounts of the daemon's own namespace are trusted"))
	}
	changed := false
	for i, ns := range [2]struct{ fd, mi int }{{m.own, m.ownMI}, {m.init, m.initMI}} {
		if !m.trustDirty[i] || ns.fd < 0 {
			continue
		}
		var ids []uint64
		var err error
		m.th.do(func() { ids, err = m.readTrusted(ns.fd, ns.mi) })
		if err != nil {
			// Keep the IDs of the last read: a mount made since is
			// not trusted yet, one gone can have no more events.
			if err.Error() != m.trustErr[i] {
				m.trustErr[i] = err.Error()
				m.report(ForeignMount{}, fmt.Errorf("reading trusted mounts: %w", err))
			}
			continue
		}
		m.trustErr[i] = ""
		m.trustDirty[i] = false
		m.trustedIDs[i] = ids
		changed = true
	}
	if !changed && m.trusted.Load() != nil {
		return
	}
	ids := slices.Concat(m.trustedIDs[0], m.trustedIDs[1])
	slices.Sort(ids)
	ids = slices.Compact(ids)
	m.trusted.Store(&ids)
}

// readTrusted runs on the thread: it enters the namespace of nsfd, reads
// its mount table through mi and returns the unique IDs of the mounts of
// the protected types that a path leads to.
func (m *NamespaceMarker) readTrusted(nsfd, mi int) ([]uint64, error) {
	if err := unix.Setns(nsfd, unix.CLONE_NEWNS); err != nil {
		return nil, fmt.Errorf("entering mount namespace: %w", err)
	}
	data, err := readMountTable(mi, 0)
	if err != nil {
		return nil, fmt.Errorf("reading mount table: %w", err)
	}
	mounts, err := ParseMountInfo(data)
	if err != nil {
		return nil, err
	}
	cov := newCoverage(mounts)
	var ids []uint64
	for _, mt := range mounts {
		if !m.fsTypes[mt.FSType] || cov.covers(mt) {
			continue
		}
		root, err := openMountRoot(mt)
		if err != nil {
			continue
		}
		unix.Close(root.fd)
		if root.uid != 0 {
			ids = append(ids, root.uid)
		}
	}
	return ids, nil
}

// publish makes the marked superblocks visible to Marked.
func (m *NamespaceMarker) publish() {
	marked := make([]ForeignMount, 0, len(m.devs))
	for _, md := range m.devs {
		marked = append(marked, md.via)
	}
	slices.SortFunc(marked, func(a, b ForeignMount) int {
		return cmp.Or(cmp.Compare(a.NamespaceID, b.NamespaceID), strings.Compare(a.Point, b.Point), cmp.Compare(a.ID, b.ID))
	})
	m.mu.Lock()
	m.marked = marked
	m.mu.Unlock()
}
