package quarantine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Mover moves detected files into the vault and back, keeping the Store's
// records in step with the files so that a crash at any point leaves each
// file either at its path or in the vault, with its record.
//
// Moves, restores and deletions of different records may run at once, in
// one process or several (the daemon and the command line): content shared
// by several records, and the room left in the vault, are guarded by a lock
// on the vault directory, which moves into one vault take one at a time.
// A Mover is safe for concurrent use once its fields are set.
type Mover struct {
	Store *Store
	Vault *Vault
	// MaxBytes bounds the vault: a move that would take it above MaxBytes
	// bytes is refused (see Quarantine). 0: no bound. The daemon sets it
	// from [quarantine] max_bytes.
	MaxBytes int64
	// Fault, if not nil, is called at each named point of a move:
	// "after-record", "after-vault-write", "after-vault-rename",
	// "after-state" and "after-unlink". A test seam: a test kills the
	// process there to check that a crash loses nothing.
	Fault func(point string)
}

func (m *Mover) fault(point string) { callFault(m.Fault, point) }

// daemonActor is who the history names for what the daemon does itself.
func daemonActor() Actor { return Actor{UID: uint32(os.Geteuid()), Name: "fanguard"} }

// Quarantine moves the detected file of record id (state StateRecorded) at
// path, inode dev/ino, into the vault:
//
//  1. the record goes to StateQuarantining (committed): "after-record";
//  2. the file is opened by path (O_NOFOLLOW, no symbolic link on the way)
//     and must still be inode dev/ino, of the size that was scanned;
//  3. its content is copied into the vault (unless the vault has it),
//     checked against the record's sha256 and fsynced, under the vault's
//     exclusive lock, which also orders the check of MaxBytes before it:
//     "after-vault-write", "after-vault-rename";
//  4. the record gets the vault name (committed): "after-state";
//  5. the original is unlinked, if the path still leads to inode dev/ino
//     and the file did not change while it was copied: "after-unlink";
//  6. the record goes to StateQuarantined with a history event.
//
// When the file is gone, replaced or changed (the error wraps ErrChanged),
// when the vault would hold more than MaxBytes bytes with it (ErrVaultLimit;
// content already in the vault under the same sha256 costs nothing), or
// when it cannot be copied or unlinked, the record goes back to
// StateRecorded with an EventNotMoved event saying why, the file stays
// where it is, and any copy made is removed. One exception: when the original is already gone from
// its path by the time it would be unlinked, the copy is kept (state
// StateQuarantined). A record in any state but StateRecorded gives an
// error wrapping ErrState. An error wrapping ErrFull means that the disk of
// the vault or of the database is full (if the database could not take
// the record back to StateRecorded, Recover does at the next start).
func (m *Mover) Quarantine(ctx context.Context, id int64, path []byte, dev, ino uint64) error {
	r, err := m.Store.Get(ctx, id)
	if err != nil {
		return fmt.Errorf("quarantining: %w", err)
	}
	if err := m.Store.transition(ctx, id, StateRecorded, StateQuarantining, "", nil); err != nil {
		return fmt.Errorf("quarantining: %w", err)
	}
	m.fault("after-record")
	return m.move(ctx, id, r.SHA256, r.Size, path, dev, ino)
}

// detected is a file opened for a move: its directory and itself.
type detected struct {
	dirfd int      // O_PATH fd of the directory the file was found in, on a local filesystem
	base  string   // its name there
	f     *os.File // the file, read-only
	st    unix.Stat_t
}

func (d *detected) close() {
	d.f.Close()
	unix.Close(d.dirfd)
}

// openDetected opens the file at path and checks it is inode dev/ino, a
// regular file. A different or missing file gives an error wrapping
// ErrChanged.
//
// The path is the opener's view, and the opener may have changed what it
// leads through since: it may now cross a FUSE mount whose server never
// answers, which would hold the caller (the daemon's recorder) forever.
// So no lookup waits on a filesystem that is not local: the directory is
// found from the kernel's dentry cache alone, or else only through
// directories on local filesystems (openDirNoWait); it must be on a local
// filesystem itself, since the move looks the name up in it again and
// unlinks it there; the file is looked up the same way, checked by its
// attributes at hand (no filesystem asked), and only then opened, through
// the descriptor that was checked. A refusal gives an error wrapping
// ErrNotLocal.
func openDetected(path []byte, dev, ino uint64) (*detected, error) {
	dir, base, err := splitPath(path)
	if err != nil {
		return nil, err
	}
	dirfd, err := openDirNoWait(dir)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			err = fmt.Errorf("%w (%w)", ErrChanged, err)
		}
		return nil, err
	}
	if err := checkLocal(dirfd, dir); err != nil && !errors.Is(err, unix.ENOSYS) {
		// Without statmount (before Linux 6.8) the check is left to the
		// daemon's marks: it is the detected file's own filesystem.
		unix.Close(dirfd)
		return nil, err
	}
	pfd, err := lookupAt(dirfd, base, 0)
	if err != nil {
		unix.Close(dirfd)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("opening %s: %w (%w)", strconv.Quote(string(path)), ErrChanged, err)
		}
		return nil, fmt.Errorf("opening %s: %w", strconv.Quote(string(path)), err)
	}
	stx, err := statNoWait(pfd)
	if err == nil && (unix.Mkdev(stx.Dev_major, stx.Dev_minor) != dev || stx.Ino != ino || stx.Mode&unix.S_IFMT != unix.S_IFREG) {
		err = fmt.Errorf("%s is now inode %d:%d, not the detected %d:%d: %w", strconv.Quote(string(path)),
			unix.Mkdev(stx.Dev_major, stx.Dev_minor), stx.Ino, dev, ino, ErrChanged)
	}
	var fd int
	if err == nil {
		fd, err = reopen(pfd)
	}
	unix.Close(pfd)
	if err != nil {
		unix.Close(dirfd)
		return nil, fmt.Errorf("opening %s: %w", strconv.Quote(string(path)), err)
	}
	d := &detected{dirfd: dirfd, base: base, f: os.NewFile(uintptr(fd), string(path))}
	if err := unix.Fstat(fd, &d.st); err != nil {
		d.close()
		return nil, fmt.Errorf("inspecting %s: %w", strconv.Quote(string(path)), err)
	}
	if d.st.Dev != dev || d.st.Ino != ino || d.st.Mode&unix.S_IFMT != unix.S_IFREG {
		d.close()
		return nil, fmt.Errorf("%s is now inode %d:%d, not the detected %d:%d: %w",
			strconv.Quote(string(path)), d.st.Dev, d.st.Ino, dev, ino, ErrChanged)
	}
	return d, nil
}

// statAt returns the device and inode that name in directory d.dirfd
// leads to now, without waiting on another filesystem (see openDetected).
func (d *detected) statAt() (dev, ino uint64, err error) {
	fd, err := lookupAt(d.dirfd, d.base, 0)
	if err != nil {
		return 0, 0, err
	}
	defer unix.Close(fd)
	stx, err := statNoWait(fd)
	if err != nil {
		return 0, 0, err
	}
	return unix.Mkdev(stx.Dev_major, stx.Dev_minor), stx.Ino, nil
}

// unchanged reports whether the file still has the size and times it had
// when it was opened.
func (d *detected) unchanged() (bool, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(d.f.Fd()), &st); err != nil {
		return false, err
	}
	return st.Size == d.st.Size && st.Mtim == d.st.Mtim && st.Ctim == d.st.Ctim, nil
}

// move does steps 2 to 6 of Quarantine for a record in StateQuarantining
// whose scanned content was size bytes with sha256 sum.
func (m *Mover) move(ctx context.Context, id int64, sum string, size int64, path []byte, dev, ino uint64) error {
	d, err := openDetected(path, dev, ino)
	if err != nil {
		return m.giveUp(ctx, id, "", sum, err)
	}
	defer d.close()
	// Copy no more than was scanned: its owner may have grown the file
	// since, through a descriptor kept open for writing, up to a sparse
	// terabyte that would fill the vault's disk and hold up every
	// detection queued behind this one.
	if d.st.Size != size {
		return m.giveUp(ctx, id, "", sum, fmt.Errorf("%s is now %d bytes, not the %d bytes scanned: %w",
			strconv.Quote(string(path)), d.st.Size, size, ErrChanged))
	}

	// Hold the vault's lock from the size check and the copy until the
	// record names the copy, so that no remover takes the file away in
	// between and no other move takes the room it was measured in.
	unlock, err := m.Vault.lock(unix.LOCK_EX)
	if err != nil {
		return m.giveUp(ctx, id, "", sum, err)
	}
	name, err := m.Vault.store(d.f, size, sum, m.MaxBytes, m.Fault)
	if err == nil {
		err = m.Store.SetState(ctx, id, StateQuarantining, name)
	}
	unlock()
	if err != nil {
		return m.giveUp(ctx, id, name, sum, err)
	}
	m.fault("after-state")

	// Unlink the original only if the path still leads to the inode that
	// was copied, and the copy is still its content.
	nowDev, nowIno, err := d.statAt()
	switch {
	case errors.Is(err, unix.ENOENT):
		m.fault("after-unlink")
		return m.done(ctx, id, name, "the original was already gone from its path")
	case err != nil:
		return m.giveUp(ctx, id, name, sum, fmt.Errorf("inspecting %s: %w", strconv.Quote(string(path)), err))
	case nowDev != dev || nowIno != ino:
		// The detected inode left the path (renamed or replaced): the copy
		// is all there is to review; the file at the path is not ours.
		m.fault("after-unlink")
		derr := m.done(ctx, id, name, "copied, but the original left its path before it could be removed: the file now there was left alone")
		return errors.Join(fmt.Errorf("removing %s: %w", strconv.Quote(string(path)), ErrChanged), derr)
	}
	if same, err := d.unchanged(); err != nil || !same {
		if err == nil {
			err = fmt.Errorf("%s was written to while it was copied: %w", strconv.Quote(string(path)), ErrChanged)
		}
		return m.giveUp(ctx, id, name, sum, err)
	}
	if err := unix.Unlinkat(d.dirfd, d.base, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return m.giveUp(ctx, id, name, sum, fmt.Errorf("removing %s: %w", strconv.Quote(string(path)), err))
	}
	syncDirAt(d.dirfd)
	m.fault("after-unlink")
	return m.done(ctx, id, name, "")
}

// syncDirAt fsyncs the directory an O_PATH fd refers to.
func syncDirAt(dirfd int) {
	fd, err := unix.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	unix.Fsync(fd)
	unix.Close(fd)
}

// done completes a move: StateQuarantined and the history event.
func (m *Mover) done(ctx context.Context, id int64, name, detail string) error {
	e := Event{What: EventQuarantined, By: daemonActor(), Detail: detail}
	if err := m.Store.transition(ctx, id, StateQuarantining, StateQuarantined, name, &e); err != nil {
		return fmt.Errorf("quarantining: %w", err)
	}
	return nil
}

// giveUp rolls a move back: the record returns to StateRecorded with an
// EventNotMoved saying why, and the copy in the vault (name, if any) goes
// unless another record needs it. It returns cause, wrapped.
func (m *Mover) giveUp(ctx context.Context, id int64, name, sum string, cause error) error {
	e := Event{What: EventNotMoved, By: daemonActor(), Detail: cause.Error()}
	err := m.Store.transition(ctx, id, StateQuarantining, StateRecorded, "", &e)
	if err == nil && name != "" {
		_, _, err = release(ctx, m.Store, m.Vault, name, sum)
	}
	return errors.Join(fmt.Errorf("quarantining record %d: %w", id, cause), err)
}

// Recover settles the moves a crash interrupted: each record still in
// StateQuarantining is finished or rolled back, and half-written vault
// files are removed. Call it at start, before the first Quarantine, while
// no other process moves files into the same vault.
//
// For each such record:
//   - the content is in the vault and the original is gone from its path
//     (or another file is there): StateQuarantined;
//   - the original is still at its path (same inode, and same content when
//     the vault also has it): the move is finished (see Quarantine; if that
//     fails the record goes back to StateRecorded);
//   - neither (someone else removed the file before it was copied):
//     StateRecorded.
//
// Each settled record gets an event saying so. Last, vault files that no
// record needs any more are removed. Recover returns the errors it met,
// joined, after trying every record.
func (m *Mover) Recover(ctx context.Context) error {
	unlock, err := m.Vault.lock(unix.LOCK_EX)
	if err != nil {
		return fmt.Errorf("recovering: %w", err)
	}
	err = m.Vault.removeTemps()
	unlock()
	if err != nil {
		return fmt.Errorf("recovering: %w", err)
	}
	recs, err := m.Store.inState(ctx, StateQuarantining)
	if err != nil {
		return fmt.Errorf("recovering: %w", err)
	}
	var errs []error
	for _, r := range recs {
		if err := m.recoverOne(ctx, &r); err != nil {
			errs = append(errs, fmt.Errorf("recovering record %d: %w", r.ID, err))
		}
	}
	if err := m.removeOrphans(ctx); err != nil {
		errs = append(errs, fmt.Errorf("recovering: %w", err))
	}
	return errors.Join(errs...)
}

// removeOrphans removes vault files no record needs any more (left by a
// crash between a record's change and the removal of its content).
func (m *Mover) removeOrphans(ctx context.Context) error {
	des, err := os.ReadDir(m.Vault.dir)
	if err != nil {
		return fmt.Errorf("reading the vault: %w", err)
	}
	for _, de := range des {
		sum, ok := strings.CutSuffix(de.Name(), vaultSuffix)
		if !ok || !validSHA256(sum) {
			continue
		}
		if _, _, err := release(ctx, m.Store, m.Vault, de.Name(), sum); err != nil {
			return err
		}
	}
	return nil
}

func (m *Mover) recoverOne(ctx context.Context, r *Record) error {
	name := VaultName(r.SHA256)
	inVault := m.Vault.verify(name) == nil
	inPlace := false
	if d, err := openDetected(r.Path, r.Dev, r.Ino); err == nil {
		inPlace = true
		if inVault {
			// The inode number may have been reused by a new file after
			// the original was unlinked: only the same content counts.
			sum, err := fileSHA256(io.NewSectionReader(d.f, 0, math.MaxInt64))
			inPlace = err == nil && sum == r.SHA256
		}
		d.close()
	}
	switch {
	case inPlace:
		ev := Event{What: EventRecovered, By: daemonActor(), Detail: "an interrupted move is finished"}
		if err := m.Store.AddEvent(ctx, r.ID, ev); err != nil {
			return err
		}
		return m.move(ctx, r.ID, r.SHA256, r.Size, r.Path, r.Dev, r.Ino)
	case inVault:
		return m.done(ctx, r.ID, name, "completed by recovery after an interruption: the content is in the vault, the original gone from its path")
	default:
		e := Event{What: EventRecovered, By: daemonActor(), Detail: "an interrupted move is rolled back: the file was neither at its path nor in the vault"}
		return m.Store.transition(ctx, r.ID, StateQuarantining, StateRecorded, "", &e)
	}
}

func fileSHA256(r io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Restore writes the original content of quarantined record id back: to
// path to, or to the record's path when to is nil, with the record's mode,
// owner and modification time, then sets StateRestored with an
// EventRestored by by, and removes the vault copy unless another record
// needs it. The target must be an absolute path without any symbolic link
// in it (an error wrapping ErrSymlink), in an existing directory. An
// existing file at the target gives an error wrapping ErrExist unless force
// is set; then it is replaced atomically. The content goes to a temporary
// file in the target directory first (fsynced, then renamed), so the
// target never holds a partial file. Errors: ErrNotFound, ErrState (the
// record is not quarantined), ErrExist, ErrSymlink, ErrCorrupt.
func (m *Mover) Restore(ctx context.Context, id int64, to []byte, force bool, by Actor) error {
	r, err := m.Store.Get(ctx, id)
	if err != nil {
		return fmt.Errorf("restoring: %w", err)
	}
	if r.State != StateQuarantined {
		return fmt.Errorf("restoring record %d: it is %s, not %s: %w", id, r.State, StateQuarantined, ErrState)
	}
	target := to
	if target == nil {
		target = r.Path
	}
	if err := m.writeBack(r, target, force); err != nil {
		return fmt.Errorf("restoring record %d to %s: %w", id, strconv.Quote(string(target)), err)
	}
	e := Event{What: EventRestored, By: by, Detail: "to " + strconv.Quote(string(target))}
	if err := m.Store.transition(ctx, id, StateQuarantined, StateRestored, "", &e); err != nil {
		return fmt.Errorf("restoring: %w", err)
	}
	if _, _, err := release(ctx, m.Store, m.Vault, r.VaultName, r.SHA256); err != nil {
		return fmt.Errorf("restoring record %d: %w", id, err)
	}
	return nil
}

// writeBack writes the vault content of r to target.
func (m *Mover) writeBack(r *Record, target []byte, force bool) (err error) {
	dir, base, err := splitPath(target)
	if err != nil {
		return err
	}
	dirfd, err := openDir(dir, unix.O_RDONLY)
	if err != nil {
		return err
	}
	defer unix.Close(dirfd)
	var st unix.Stat_t
	switch err := unix.Fstatat(dirfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); {
	case errors.Is(err, unix.ENOENT):
	case err != nil:
		return err
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		return ErrSymlink
	case st.Mode&unix.S_IFMT == unix.S_IFDIR:
		return fmt.Errorf("a directory is in the way: %w", ErrExist)
	case !force:
		return ErrExist
	}

	src, err := m.Vault.open(r.VaultName)
	if err != nil {
		return err
	}
	defer src.Close()
	var tmp string
	var fd int
	for i := 0; ; i++ {
		tmp = fmt.Sprintf(".fanguard-restore-%d-%d", os.Getpid(), time.Now().UnixNano()+int64(i))
		fd, err = unix.Openat(dirfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if !errors.Is(err, unix.EEXIST) || i > 100 {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("creating a temporary file: %w", err)
	}
	f := os.NewFile(uintptr(fd), tmp)
	defer func() {
		if f != nil {
			f.Close()
		}
		if err != nil {
			unix.Unlinkat(dirfd, tmp, 0)
		}
	}()
	if _, err := io.Copy(f, src); err != nil {
		return err
	}
	mtime := unix.NsecToTimespec(r.Mtime.UnixNano())
	ts := [2]unix.Timespec{{Nsec: unix.UTIME_NOW}, mtime}
	// The owner first: chown clears the set-user-ID and set-group-ID bits.
	if err := unix.Fchown(fd, int(r.UID), int(r.GID)); err != nil {
		return fmt.Errorf("setting the owner: %w", err)
	}
	if err := unix.Fchmod(fd, r.Mode&0o7777); err != nil {
		return fmt.Errorf("setting the mode: %w", err)
	}
	if err := futimens(fd, &ts); err != nil {
		return fmt.Errorf("setting the modification time: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("syncing: %w", err)
	}
	cerr := f.Close()
	f = nil
	if cerr != nil {
		return cerr
	}
	if force {
		err = unix.Renameat(dirfd, tmp, dirfd, base)
	} else {
		err = renameNoReplace(dirfd, tmp, base)
	}
	if errors.Is(err, unix.EEXIST) {
		return ErrExist
	}
	if err != nil {
		return fmt.Errorf("renaming into place: %w", err)
	}
	if err := unix.Fsync(dirfd); err != nil {
		return fmt.Errorf("syncing the directory: %w", err)
	}
	return nil
}

// Delete deletes the vault content of quarantined record id (unless
// another record still needs it) and sets StateDeleted with an
// EventDeleted by by. Errors: ErrNotFound, ErrState (not quarantined).
func (m *Mover) Delete(ctx context.Context, id int64, by Actor) error {
	r, err := m.Store.Get(ctx, id)
	if err != nil {
		return fmt.Errorf("deleting: %w", err)
	}
	if r.State != StateQuarantined {
		return fmt.Errorf("deleting record %d: it is %s, not %s: %w", id, r.State, StateQuarantined, ErrState)
	}
	e := Event{What: EventDeleted, By: by}
	if err := m.Store.transition(ctx, id, StateQuarantined, StateDeleted, "", &e); err != nil {
		return fmt.Errorf("deleting: %w", err)
	}
	if _, _, err := release(ctx, m.Store, m.Vault, r.VaultName, r.SHA256); err != nil {
		return fmt.Errorf("deleting record %d: %w", id, err)
	}
	return nil
}
