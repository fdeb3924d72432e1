package fan

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// MarkerOptions configures a Marker.
type MarkerOptions struct {
	// FSTypes lists the filesystem types to protect, spelled as in
	// mountinfo ("ext4", "tmpfs"). The caller has validated them against its
	// allow-list. Mounts of other types are never marked. Required.
	FSTypes []string

	// Paths, if non-empty, limits protection to the filesystems holding
	// these absolute paths, and to filesystems mounted at or below them
	// ("/srv" covers a mount on "/srv/a", not one on "/srvx"). A protect
	// path that is missing, or whose filesystem type is not in FSTypes, is
	// an error. Empty means every filesystem of the FSTypes.
	Paths []string

	// Mark places a FAN_MARK_FILESYSTEM mark through path on the caller's
	// fanotify group. Marking a superblock twice must be harmless. It is
	// called with a mount point, one call at a time. Required.
	Mark func(path string) error

	// Report, if set, is called after each mark attempt with the mount the
	// mark went through and Mark's error (nil on success). A failed mark is
	// retried at the next mount table change. A superblock whose mounts in
	// scope are all hidden under other mounts cannot be marked through a
	// path: it is reported once, with an error saying so, and marked when
	// it is uncovered. Run also calls Report for a protect path problem it
	// finds (see Paths), once until the problem changes, with only Point
	// set, to the protect path. Report is called one call at a time; it may
	// call Marked, not Sync.
	Report func(m Mount, err error)

	// Watcher, if set, is the mount watcher to use; the Marker owns it from
	// NewMarker on, also when NewMarker fails, and closes it. Nil means
	// NewMountWatcher.
	Watcher *MountWatcher
}

// Marker decides which filesystems to protect and keeps them marked as
// mounts come and go: it places one mark per superblock, through one of its
// mount points. It never removes marks; the kernel drops a superblock's
// marks when the superblock goes away.
//
// A superblock counts as marked while the mount the mark went through is
// still in the mount table and, on Linux 6.8 and later, is still the same
// mount by its unique mount ID. Otherwise the Marker marks it again, which
// is harmless. Before 6.8 a tmpfs unmounted and mounted again at the same
// place between two syncs can go unnoticed: it gets the same device number
// and mount ID, and mountinfo shows the same line.
//
// Marker is safe for concurrent use. Run must not be called more than once.
type Marker struct {
	fsTypes  map[string]bool
	paths    []string // cleaned absolute protect paths
	mark     func(path string) error
	report   func(m Mount, err error)
	watcher  *MountWatcher                          // nil in tests of the selection
	statPath func(path string) (pathInfo, error)    // statProtectPath, faked in tests
	mountAt  func(point string) (mountIdent, error) // identifyMount, faked in tests

	syncMu   sync.Mutex // serializes syncs, and guards following
	devs     map[uint64]*markedDev
	covered  map[uint64]bool   // superblocks found hidden by the last sync, reported once
	pathErrs map[string]string // protect path problems of the last sync, by path

	mu     sync.Mutex // guards following
	marked []Mount    // published by each sync for Marked: one per superblock, by Point
}

// markedDev is a superblock the Marker has marked.
type markedDev struct {
	via Mount  // the mount the mark went through, as in the last table
	uid uint64 // its unique mount ID (Linux 6.8), 0 if unknown
}

// mountIdent identifies the mount a path leads to.
type mountIdent struct {
	id  int    // mount ID as in mountinfo, -1 if the kernel does not say
	uid uint64 // unique mount ID, never reused until reboot (Linux 6.8); 0 if unknown
}

// pathInfo is what the Marker needs to know about a protect path.
type pathInfo struct {
	real  string // the path with symlinks resolved
	mntID int    // ID of the mount holding it, -1 if the kernel does not say
	dev   uint64 // st_dev
}

// pathProblem is a protect path that cannot be protected.
type pathProblem struct {
	path string
	err  error
}

// errCovered is reported for a superblock whose every mount in scope is
// hidden under another mount, so that no path leads to it.
var errCovered = errors.New("mount point is covered by another mount; it will be marked once it is uncovered")

// NewMarker checks opts and returns a Marker that has not marked anything
// yet: call Sync to place the first marks, then Run to follow mount
// changes. Mount changes from NewMarker on are not missed. In path mode it
// reads the mount table and returns an error for a protect path that is
// missing or on a filesystem type not in FSTypes.
func NewMarker(opts MarkerOptions) (*Marker, error) {
	m, err := newMarker(opts, statProtectPath, identifyMount)
	if err != nil {
		if opts.Watcher != nil {
			opts.Watcher.Close()
		}
		return nil, err
	}
	w := opts.Watcher
	if w == nil {
		if w, err = NewMountWatcher(); err != nil {
			return nil, err
		}
	}
	if len(m.paths) > 0 {
		mounts, err := w.Mounts()
		if err != nil {
			w.Close()
			return nil, err
		}
		if _, problems := m.selectMounts(mounts); len(problems) > 0 {
			w.Close()
			return nil, joinPathProblems(problems)
		}
	}
	m.watcher = w
	return m, nil
}

// newMarker checks opts and builds a Marker without a watcher.
func newMarker(opts MarkerOptions, statPath func(string) (pathInfo, error), mountAt func(string) (mountIdent, error)) (*Marker, error) {
	if opts.Mark == nil {
		return nil, errors.New("marker options: Mark is required")
	}
	if len(opts.FSTypes) == 0 {
		return nil, errors.New("marker options: no filesystem types to protect")
	}
	m := &Marker{
		mark:     opts.Mark,
		report:   opts.Report,
		statPath: statPath,
		mountAt:  mountAt,
		devs:     make(map[uint64]*markedDev),
		pathErrs: make(map[string]string),
	}
	if m.report == nil {
		m.report = func(Mount, error) {}
	}
	var err error
	if m.fsTypes, m.paths, err = scope(opts.FSTypes, opts.Paths); err != nil {
		return nil, err
	}
	return m, nil
}

// Sync reads the mount table and marks every eligible superblock not marked
// yet. A failed mark goes to Report and does not stop the others. Sync
// returns an error when the mount table cannot be read (wrapping
// os.ErrClosed after Close), or, in path mode, naming each protect path that
// cannot be protected; the marks that can be placed are placed all the same.
func (m *Marker) Sync() error {
	mounts, err := m.watcher.Mounts()
	if err != nil {
		return err
	}
	problems, _ := m.syncMounts(mounts)
	return joinPathProblems(problems)
}

// Run waits for mount table changes and syncs after each, until Close; then
// it returns nil. It returns an error only when the mount table cannot be
// polled or read. Protect path problems go to Report.
func (m *Marker) Run() error {
	for {
		if err := m.watcher.Wait(); err != nil {
			if errors.Is(err, os.ErrClosed) {
				return nil
			}
			return err
		}
		mounts, err := m.watcher.Mounts()
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return nil
			}
			return err
		}
		_, fresh := m.syncMounts(mounts)
		for _, p := range fresh {
			m.report(Mount{Point: p.path}, p.err)
		}
	}
}

// Close stops Run and closes the mount watcher. The marks stay: they belong
// to the caller's fanotify group. Calls after the first return nil.
func (m *Marker) Close() error {
	return m.watcher.Close()
}

// Marked returns the marked superblocks as of the last sync, one mount
// each (the one the mark went through), sorted by mount point. It may be
// called from any goroutine, also while Sync or Run marks.
func (m *Marker) Marked() []Mount {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.marked)
}

// syncMounts marks the eligible superblocks of mounts that are not marked
// yet. It returns the protect path problems, and those of them that are new
// or changed since the last sync.
func (m *Marker) syncMounts(mounts []Mount) (problems, fresh []pathProblem) {
	m.syncMu.Lock()
	defer m.syncMu.Unlock()

	eligible, problems := m.selectMounts(mounts)
	seen := make(map[string]string, len(problems))
	for _, p := range problems {
		seen[p.path] = p.err.Error()
		if m.pathErrs[p.path] != seen[p.path] {
			fresh = append(fresh, p)
		}
	}
	m.pathErrs = seen

	byID := make(map[int]Mount, len(mounts))
	for _, mt := range mounts {
		byID[mt.ID] = mt
	}
	var cov *coverage
	covers := func(mt Mount) bool {
		if cov == nil {
			c := newCoverage(mounts)
			cov = &c
		}
		return cov.covers(mt)
	}

	// A superblock stays marked while the mount the mark went through is
	// still there; else it is forgotten, and marked again if in scope
	// (harmless if it is the same superblock). Forgetting on less would
	// miss new superblocks: after an unmount the kernel hands out the same
	// anonymous device number (tmpfs) and the same mount ID again at once,
	// so a tmpfs unmounted and mounted again between two syncs shows the
	// very same mountinfo line. Only the unique mount ID (Linux 6.8) tells
	// the two apart; it can be checked while the mount is not hidden.
	for dev, md := range m.devs {
		cur, ok := byID[md.via.ID]
		if !ok || cur.Dev != dev {
			delete(m.devs, dev)
			continue
		}
		md.via = cur // it may have moved
		if md.uid != 0 && !covers(cur) {
			if id, err := m.mountAt(cur.Point); err != nil || id.uid != md.uid {
				delete(m.devs, dev)
			}
		}
	}

	wasCovered := m.covered
	m.covered = make(map[uint64]bool)
	tried := make(map[uint64]bool)
	for _, e := range eligible {
		if m.devs[e.Dev] != nil || tried[e.Dev] {
			continue
		}
		tried[e.Dev] = true
		// Any mount of the superblock will do, but only if its mount point
		// leads to it: no other mount may hide it, by the table and by the
		// kernel (the table may be stale; its change is then pending).
		var via Mount
		var id mountIdent
		found := false
		for _, c := range eligible {
			if c.Dev != e.Dev || covers(c) {
				continue
			}
			var err error
			id, err = m.mountAt(c.Point)
			if err == nil && id.id >= 0 && id.id != c.ID {
				continue
			}
			// On an error, Mark fails too and reports it.
			via, found = c, true
			break
		}
		if !found {
			m.covered[e.Dev] = true
			if !wasCovered[e.Dev] {
				m.report(e, errCovered)
			}
			continue
		}
		err := m.mark(via.Point)
		m.report(via, err)
		if err == nil {
			m.devs[e.Dev] = &markedDev{via: via, uid: id.uid}
		}
	}

	marked := make([]Mount, 0, len(m.devs))
	for _, md := range m.devs {
		marked = append(marked, md.via)
	}
	slices.SortFunc(marked, func(a, b Mount) int {
		return cmp.Or(strings.Compare(a.Point, b.Point), cmp.Compare(a.ID, b.ID))
	})
	m.mu.Lock()
	m.marked = marked
	m.mu.Unlock()
	return problems, fresh
}

// selectMounts returns the mounts in scope, in table order: every mount of
// a protected type in whole-machine mode; in path mode the mounts holding
// the protect paths and those at or below them. It also returns the protect
// paths that cannot be protected.
func (m *Marker) selectMounts(mounts []Mount) (eligible []Mount, problems []pathProblem) {
	if len(m.paths) == 0 {
		for _, mt := range mounts {
			if m.fsTypes[mt.FSType] {
				eligible = append(eligible, mt)
			}
		}
		return eligible, nil
	}

	want := make(map[int]bool)
	for _, p := range m.paths {
		real := p // for mounts below a missing path, should it appear
		if info, err := m.statPath(p); err != nil {
			problems = append(problems, pathProblem{p, fmt.Errorf("checking protect path %s: %w", p, err)})
		} else {
			real = info.real
			holder, ok := holderOf(mounts, info)
			switch {
			case !ok:
				problems = append(problems, pathProblem{p, fmt.Errorf("checking protect path %s: no mount in the mount table holds it (device %d:%d)",
					p, unix.Major(info.dev), unix.Minor(info.dev))})
			case !m.fsTypes[holder.FSType]:
				problems = append(problems, pathProblem{p, fmt.Errorf("protect path %s is on %s, which is not a protected filesystem type", p, holder.FSType)})
			default:
				want[holder.ID] = true
			}
		}
		for _, mt := range mounts {
			if m.fsTypes[mt.FSType] && isUnder(mt.Point, real) {
				want[mt.ID] = true
			}
		}
	}
	for _, mt := range mounts {
		if want[mt.ID] {
			eligible = append(eligible, mt)
		}
	}
	return eligible, problems
}

// holderOf returns the mount holding a path: the mount the kernel names
// (statx STATX_MNT_ID), or else, as when the table is older than the statx,
// the mount of the path's device whose mount point is the longest prefix of
// the path. The device alone is not enough on btrfs, where st_dev of a
// subvolume differs from the superblock's.
func holderOf(mounts []Mount, info pathInfo) (Mount, bool) {
	if info.mntID >= 0 {
		for _, mt := range mounts {
			if mt.ID == info.mntID {
				return mt, true
			}
		}
	}
	var holder Mount
	found := false
	for _, mt := range mounts {
		// On equal mount points the later mount is on top.
		if mt.Dev == info.dev && isUnder(info.real, mt.Point) && (!found || len(mt.Point) >= len(holder.Point)) {
			holder, found = mt, true
		}
	}
	return holder, found
}

// statProtectPath resolves a protect path's symlinks and asks the kernel
// which mount holds it. It does not open the path.
func statProtectPath(path string) (pathInfo, error) {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return pathInfo{}, err
	}
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, real, 0, unix.STATX_MNT_ID, &stx); err != nil {
		return pathInfo{}, &os.PathError{Op: "statx", Path: real, Err: err}
	}
	info := pathInfo{real: real, mntID: -1, dev: unix.Mkdev(stx.Dev_major, stx.Dev_minor)}
	if stx.Mask&unix.STATX_MNT_ID != 0 {
		info.mntID = int(stx.Mnt_id)
	}
	return info, nil
}

// identifyMount tells which mount a mount point leads to. It does not
// follow a final symlink, trigger an automount or open the path.
func identifyMount(point string) (mountIdent, error) {
	const flags = unix.AT_SYMLINK_NOFOLLOW | unix.AT_NO_AUTOMOUNT
	id := mountIdent{id: -1}
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, point, flags, unix.STATX_MNT_ID, &stx); err != nil {
		return id, &os.PathError{Op: "statx", Path: point, Err: err}
	}
	if stx.Mask&unix.STATX_MNT_ID != 0 {
		id.id = int(stx.Mnt_id)
	}
	// The kernel fills stx_mnt_id with one kind of ID per call.
	if err := unix.Statx(unix.AT_FDCWD, point, flags, unix.STATX_MNT_ID_UNIQUE, &stx); err != nil {
		return id, &os.PathError{Op: "statx", Path: point, Err: err}
	}
	if stx.Mask&unix.STATX_MNT_ID_UNIQUE != 0 {
		id.uid = stx.Mnt_id
	}
	return id, nil
}

// coverage answers from the mount table alone whether a mount is hidden
// under another one.
type coverage struct {
	byID     map[int]Mount
	children map[int][]Mount // by parent mount ID
}

func newCoverage(mounts []Mount) coverage {
	c := coverage{byID: make(map[int]Mount, len(mounts)), children: make(map[int][]Mount, len(mounts))}
	for _, mt := range mounts {
		c.byID[mt.ID] = mt
		c.children[mt.ParentID] = append(c.children[mt.ParentID], mt)
	}
	return c
}

// covers reports whether no path leads to mt: a mount sits on its mount
// point, or a sibling of mt or of one of its ancestors sits on a directory
// above it (mounted later, or mt would have that sibling as parent).
func (c coverage) covers(mt Mount) bool {
	for _, ch := range c.children[mt.ID] {
		if ch.Point == mt.Point && ch.ID != mt.ID {
			return true
		}
	}
	y := mt
	for range len(c.byID) { // bounds the walk should the table hold a cycle
		x, ok := c.byID[y.ParentID]
		if !ok || x.ID == y.ID {
			return false
		}
		for _, s := range c.children[x.ID] {
			if s.ID != y.ID && s.Point != y.Point && isUnder(y.Point, s.Point) {
				return true
			}
		}
		y = x
	}
	return false
}

// scope checks and cleans the filesystem types and protect paths of a
// Marker or NamespaceMarker: the types as a set, the paths absolute and
// cleaned.
func scope(fsTypes, paths []string) (map[string]bool, []string, error) {
	types := make(map[string]bool, len(fsTypes))
	for _, t := range fsTypes {
		types[t] = true
	}
	var clean []string
	for _, p := range paths {
		if !filepath.IsAbs(p) {
			return nil, nil, fmt.Errorf("protect path %q is not absolute", p)
		}
		clean = append(clean, filepath.Clean(p))
	}
	return types, clean, nil
}

// isUnder reports whether path is dir or lies below it, comparing whole
// path components: "/srv/a" is under "/srv", "/srvx" is not.
func isUnder(path, dir string) bool {
	if dir == "/" {
		return strings.HasPrefix(path, "/")
	}
	return path == dir || strings.HasPrefix(path, dir) && path[len(dir)] == '/'
}

func joinPathProblems(problems []pathProblem) error {
	errs := make([]error, len(problems))
	for i, p := range problems {
		errs[i] = p.err
	}
	return errors.Join(errs...)
}
