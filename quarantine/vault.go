package quarantine

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Vault holds the content of quarantined files in one root-only directory
// (0700, files 0600), one file per sha256, transformed so that no scanner
// flags it: a header (magic, format version, original size, sha256) and the
// content XORed with a fixed 32-byte key. Every key byte is non-zero, so no
// byte of the original appears at its place in the vault file. The vault
// is excluded from scanning by the daemon; it must be.
//
// Writers and removers of the same directory coordinate with flock on the
// directory, across processes. A Vault is safe for concurrent use.
type Vault struct {
	dir string

	mu    sync.Mutex // guards usage
	usage usage
}

// usage is the vault's total size as last measured, valid while the
// directory keeps the stamp it had then: a move does not walk the whole
// vault, only the first after another process (the command line's
// restore, delete or purge) or a person changed it.
type usage struct {
	known bool
	stamp dirStamp
	bytes int64
	walks int // how many times the directory was walked (for tests)
}

// dirStamp identifies a state of a directory: any entry added, removed or
// renamed in it moves its ctime and mtime (fine-grained once observed, on
// kernels with multigrain timestamps), and on tmpfs its size.
type dirStamp struct {
	dev, ino   uint64
	size       int64
	nlink      uint64
	mtim, ctim unix.Timespec
}

// vaultSuffix ends every vault file name: "<sha256>.fgq".
const vaultSuffix = ".fgq"

// tempPrefix starts the names of files being written into the vault.
const tempPrefix = ".tmp-"

// header layout: magic (4), version (1), reserved (3), original size
// (8, big endian), sha256 (32).
const (
	headerSize    = 48
	formatVersion = 1
)

var magic = [4]byte{'F', 'G', 'Q', 'V'}

// key is the fixed XOR key. It is no secret: it only keeps scanners, this
// daemon's included, from recognising the content. No byte is zero.
var key = [32]byte{
	0xa5, 0x3c, 0x96, 0x5a, 0xc3, 0x69, 0xf0, 0x0f, 0x1e, 0xe1, 0x78, 0x87, 0x2d, 0xd2, 0x4b, 0xb4,
	0x5f, 0xa0, 0x33, 0xcc, 0x66, 0x99, 0x11, 0xee, 0x77, 0x88, 0x22, 0xdd, 0x44, 0xbb, 0x55, 0xaa,
}

// xorAt transforms b, which sits at offset off of the content, in place.
// The transform is its own inverse.
func xorAt(b []byte, off int64) {
	k := int(off % int64(len(key)))
	for i := range b {
		b[i] ^= key[k]
		k++
		if k == len(key) {
			k = 0
		}
	}
}

// VaultName is the vault file name for content with that sha256.
func VaultName(sha256 string) string { return sha256 + vaultSuffix }

// validName reports whether name can be a vault file name (and so cannot
// leave the directory).
func validName(name string) bool {
	sum, ok := strings.CutSuffix(name, vaultSuffix)
	return ok && validSHA256(sum)
}

// OpenVault opens the vault directory dir, creating it (and its parents)
// with mode 0700. An existing directory must be a real directory (not a
// symbolic link) owned by this process's effective uid; its mode is set to
// 0700 and the mode of its files to 0600.
func OpenVault(dir string) (*Vault, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the vault: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return nil, fmt.Errorf("opening the vault: %w", err)
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return nil, fmt.Errorf("opening the vault: %s is not a directory (a symbolic link is refused)", dir)
	case st != nil && int(st.Uid) != os.Geteuid():
		return nil, fmt.Errorf("opening the vault: %s is owned by uid %d, not %d: refused", dir, st.Uid, os.Geteuid())
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, fmt.Errorf("setting the mode of the vault: %w", err)
		}
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading the vault: %w", err)
	}
	for _, de := range des {
		if !de.Type().IsRegular() {
			continue
		}
		if fi, err := de.Info(); err == nil && fi.Mode().Perm() != 0o600 {
			if err := os.Chmod(filepath.Join(dir, de.Name()), 0o600); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("setting the mode of a vault file: %w", err)
			}
		}
	}
	return &Vault{dir: dir}, nil
}

// Dir returns the vault's directory.
func (v *Vault) Dir() string { return v.dir }

// Put copies the content of src (read from offset 0 with pread; src's
// offset is left alone) into the vault, and returns its vault name. The
// content is fsynced, renamed into place and the directory fsynced before
// Put returns. Putting content that is already there replaces it with the
// same bytes. If what was read does not have the given sha256, nothing is
// kept and the error wraps ErrChanged; when the vault's disk is full,
// nothing is kept and the error wraps ErrFull.
func (v *Vault) Put(src *os.File, sha256 string) (name string, err error) {
	return v.put(src, -1, sha256, nil)
}

// put is Put of content expected to be size bytes (-1: any size), with a
// fault seam: fault is called with "after-vault-write" and
// "after-vault-rename". Content longer than size gives an error wrapping
// ErrChanged before more than size bytes are written.
func (v *Vault) put(src *os.File, size int64, sum string, fault func(string)) (name string, err error) {
	if !validSHA256(sum) {
		return "", fmt.Errorf("putting %q into the vault: not a lower-case hex sha256", sum)
	}
	name = VaultName(sum)
	tmp, err := os.CreateTemp(v.dir, tempPrefix+"*")
	if err != nil {
		return "", fmt.Errorf("putting %s into the vault: %w", sum, full(err))
	}
	defer func() {
		if err != nil {
			tmp.Close()
			if rerr := os.Remove(tmp.Name()); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
				err = errors.Join(err, fmt.Errorf("removing a half-written vault file: %w", rerr), errUntracked)
			}
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return "", fmt.Errorf("putting %s into the vault: %w", sum, err)
	}
	h := sha256.New()
	buf := make([]byte, 64<<10)
	var off int64
	limit := int64(math.MaxInt64)
	if size >= 0 {
		limit = size + 1 // a byte more tells growth
	}
	r := io.NewSectionReader(src, 0, limit)
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			if size >= 0 && off+int64(n) > size {
				return "", fmt.Errorf("putting into the vault: the file grew past the %d bytes scanned while it was copied: %w", size, ErrChanged)
			}
			h.Write(buf[:n])
			xorAt(buf[:n], off)
			if _, err := tmp.WriteAt(buf[:n], headerSize+off); err != nil {
				return "", fmt.Errorf("writing %s into the vault: %w", sum, full(err))
			}
			off += int64(n)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return "", fmt.Errorf("reading the file to put into the vault: %w", rerr)
		}
	}
	got := h.Sum(nil)
	if hex.EncodeToString(got) != sum {
		return "", fmt.Errorf("putting into the vault: the content read has sha256 %x, not %s: %w", got, sum, ErrChanged)
	}
	var hdr [headerSize]byte
	copy(hdr[0:4], magic[:])
	hdr[4] = formatVersion
	binary.BigEndian.PutUint64(hdr[8:16], uint64(off))
	copy(hdr[16:48], got)
	if _, err := tmp.WriteAt(hdr[:], 0); err != nil {
		return "", fmt.Errorf("writing %s into the vault: %w", sum, full(err))
	}
	if err := tmp.Sync(); err != nil {
		return "", fmt.Errorf("syncing %s in the vault: %w", sum, full(err))
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("writing %s into the vault: %w", sum, full(err))
	}
	callFault(fault, "after-vault-write")
	if err := os.Rename(tmp.Name(), filepath.Join(v.dir, name)); err != nil {
		return "", fmt.Errorf("putting %s into the vault: %w", sum, full(err))
	}
	if err := v.syncDir(); err != nil {
		return "", err
	}
	callFault(fault, "after-vault-rename")
	return name, nil
}

func callFault(fault func(string), point string) {
	if fault != nil {
		fault(point)
	}
}

func (v *Vault) syncDir() error {
	d, err := os.Open(v.dir)
	if err != nil {
		return fmt.Errorf("syncing the vault directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing the vault directory: %w", err)
	}
	return nil
}

// Open returns the original content of vault file name. The reader checks
// the size and the sha256 of what it returned when it reaches the end, and
// returns an error wrapping ErrCorrupt there if they differ. An error
// wrapping ErrNotFound means there is no such file.
func (v *Vault) Open(name string) (io.ReadCloser, error) {
	r, err := v.open(name)
	if err != nil {
		return nil, err
	}
	return r, nil
}

func (v *Vault) open(name string) (*vaultReader, error) {
	if !validName(name) {
		return nil, fmt.Errorf("opening %q in the vault: not a vault name: %w", name, ErrNotFound)
	}
	f, err := os.OpenFile(filepath.Join(v.dir, name), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("opening %s in the vault: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("opening %s in the vault: %w", name, err)
	}
	var hdr [headerSize]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil {
		f.Close()
		return nil, fmt.Errorf("reading the header of %s in the vault: %w (%w)", name, ErrCorrupt, err)
	}
	if !bytes.Equal(hdr[0:4], magic[:]) || hdr[4] != formatVersion {
		f.Close()
		return nil, fmt.Errorf("reading the header of %s in the vault: bad magic or version: %w", name, ErrCorrupt)
	}
	r := &vaultReader{f: f, name: name, h: sha256.New(), size: int64(binary.BigEndian.Uint64(hdr[8:16]))}
	copy(r.sum[:], hdr[16:48])
	if hex.EncodeToString(r.sum[:])+vaultSuffix != name {
		f.Close()
		return nil, fmt.Errorf("reading the header of %s in the vault: it holds %x: %w", name, r.sum, ErrCorrupt)
	}
	return r, nil
}

// vaultReader decodes a vault file.
type vaultReader struct {
	f    *os.File
	name string
	h    hash.Hash
	off  int64
	size int64
	sum  [32]byte
}

func (r *vaultReader) Read(p []byte) (int, error) {
	n, err := r.f.Read(p)
	xorAt(p[:n], r.off)
	r.h.Write(p[:n])
	r.off += int64(n)
	if r.off > r.size {
		return n, fmt.Errorf("reading %s in the vault: longer than its header says: %w", r.name, ErrCorrupt)
	}
	if err == io.EOF {
		if r.off != r.size {
			return n, fmt.Errorf("reading %s in the vault: %d bytes, its header says %d: %w", r.name, r.off, r.size, ErrCorrupt)
		}
		if !bytes.Equal(r.h.Sum(nil), r.sum[:]) {
			return n, fmt.Errorf("reading %s in the vault: content does not match its sha256: %w", r.name, ErrCorrupt)
		}
	} else if err != nil {
		err = fmt.Errorf("reading %s in the vault: %w", r.name, err)
	}
	return n, err
}

func (r *vaultReader) Close() error { return r.f.Close() }

// verify reads vault file name through and returns nil when it is whole.
func (v *Vault) verify(name string) error {
	r, err := v.open(name)
	if err != nil {
		return err
	}
	defer r.Close()
	_, err = io.Copy(io.Discard, r)
	return err
}

// Remove removes vault file name. A missing file is no error. Callers that
// share content between records remove it only when no kept record needs
// it (Mover.Delete and Store.Purge do).
func (v *Vault) Remove(name string) error {
	if !validName(name) {
		return fmt.Errorf("removing %q from the vault: not a vault name", name)
	}
	err := os.Remove(filepath.Join(v.dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("removing %s from the vault: %w", name, err)
	}
	return v.syncDir()
}

// Size returns the total size of the files in the vault, in bytes. It
// reads the whole directory (a batch of entries at a time).
func (v *Vault) Size() (int64, error) {
	d, err := os.Open(v.dir)
	if err != nil {
		return 0, fmt.Errorf("measuring the vault: %w", err)
	}
	defer d.Close()
	var n int64
	for {
		des, rerr := d.ReadDir(1024)
		for _, de := range des {
			if !de.Type().IsRegular() {
				continue
			}
			var st unix.Stat_t
			err := unix.Fstatat(int(d.Fd()), de.Name(), &st, unix.AT_SYMLINK_NOFOLLOW)
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			if err != nil {
				return 0, fmt.Errorf("measuring the vault: %w", err)
			}
			n += st.Size
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return 0, fmt.Errorf("measuring the vault: %w", rerr)
		}
	}
}

func (v *Vault) stamp() (dirStamp, error) {
	var st unix.Stat_t
	if err := unix.Lstat(v.dir, &st); err != nil {
		return dirStamp{}, fmt.Errorf("measuring the vault: %w", err)
	}
	return dirStamp{dev: st.Dev, ino: st.Ino, size: st.Size, nlink: st.Nlink, mtim: st.Mtim, ctim: st.Ctim}, nil
}

// used returns what Size returns, from the cached total while the
// directory is as this Vault last saw it. The caller holds the vault's
// exclusive lock, so that no cooperating process changes it meanwhile.
func (v *Vault) used() (int64, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	st, err := v.stamp()
	if err != nil {
		return 0, err
	}
	if v.usage.known && v.usage.stamp == st {
		return v.usage.bytes, nil
	}
	v.usage.known = false
	v.usage.walks++
	n, err := v.Size()
	if err != nil {
		return 0, err
	}
	// Cache only a total that no change overlapped.
	if after, err := v.stamp(); err == nil && after == st {
		v.usage.known, v.usage.stamp, v.usage.bytes = true, st, n
	}
	return n, nil
}

// Used is Size, for a caller that does not hold the lock: it takes the
// exclusive lock and answers from the cached total when it can.
func (v *Vault) Used() (int64, error) {
	unlock, err := v.lock(unix.LOCK_EX)
	if err != nil {
		return 0, err
	}
	defer unlock()
	return v.used()
}

// errUntracked marks an error after which the vault holds bytes that a
// change did not count (a temporary file that could not be removed).
var errUntracked = errors.New("vault changed by an unknown number of bytes")

// track runs change, which alters the vault directory by the number of
// bytes it returns (whether it fails or not, unless its error wraps
// errUntracked), and keeps the cached total in step: if the total was
// current before the change, it is after. The caller holds the vault's
// exclusive lock.
func (v *Vault) track(change func() (delta int64, err error)) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	before, serr := v.stamp()
	current := serr == nil && v.usage.known && v.usage.stamp == before
	delta, err := change()
	after, serr := v.stamp()
	if current && serr == nil && !errors.Is(err, errUntracked) {
		v.usage.bytes += delta
		v.usage.stamp = after
	} else {
		v.usage.known = false
	}
	return err
}

// store puts the content of src (size bytes with sha256 sum, read from
// offset 0) into the vault unless it is there already, whole, and returns
// its vault name. Content already there costs nothing; otherwise, with
// maxBytes above 0, a vault that would then hold more than maxBytes bytes
// (counting the temporary copy, so that it never does) gives an error
// wrapping ErrVaultLimit and nothing is written. The caller holds the
// vault's exclusive lock. Errors as put's.
func (v *Vault) store(src *os.File, size int64, sum string, maxBytes int64, fault func(string)) (string, error) {
	if !validSHA256(sum) {
		return "", fmt.Errorf("putting %q into the vault: not a lower-case hex sha256", sum)
	}
	name := VaultName(sum)
	if v.fileSize(name) == headerSize+size && v.verify(name) == nil {
		// Already there: check that the file still holds what was
		// scanned, as put does.
		got, err := fileSHA256(io.NewSectionReader(src, 0, size+1))
		if err != nil {
			return "", fmt.Errorf("reading the file to put into the vault: %w", err)
		}
		if got != sum {
			return "", fmt.Errorf("putting into the vault: the content read has sha256 %s, not %s: %w", got, sum, ErrChanged)
		}
		return name, nil
	}
	if maxBytes > 0 {
		used, err := v.used()
		if err != nil {
			return "", err
		}
		if need := used + headerSize + size; need > maxBytes || need < used {
			return "", fmt.Errorf("the vault would hold %d bytes, max_bytes is %d: %w", need, maxBytes, ErrVaultLimit)
		}
	}
	err := v.track(func() (int64, error) {
		before := v.fileSize(name)
		_, err := v.put(src, size, sum, fault)
		return v.fileSize(name) - before, err
	})
	if err != nil {
		return "", err
	}
	return name, nil
}

// fileSize returns the size of vault file name, 0 if it is missing.
func (v *Vault) fileSize(name string) int64 {
	fi, err := os.Lstat(filepath.Join(v.dir, name))
	if err != nil {
		return 0
	}
	return fi.Size()
}

// lock takes a flock on the vault directory (how is LOCK_EX: exclusive),
// held by a move from its size check until a record claims the content it
// put in, by a remover while it checks that no record needs a file and
// removes it, and by whoever measures the vault (Used). The returned
// function releases it.
func (v *Vault) lock(how int) (unlock func(), err error) {
	fd, err := unix.Open(v.dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("locking the vault: %w", err)
	}
	for {
		err = unix.Flock(fd, how)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("locking the vault: %w", err)
	}
	return func() { unix.Close(fd) }, nil
}

// removeTemps removes files left half-written by a crash in Put. Only call
// it when no Put can be running on this vault (Mover.Recover at start).
func (v *Vault) removeTemps() error {
	des, err := os.ReadDir(v.dir)
	if err != nil {
		return fmt.Errorf("reading the vault: %w", err)
	}
	for _, de := range des {
		if strings.HasPrefix(de.Name(), tempPrefix) {
			if err := os.Remove(filepath.Join(v.dir, de.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("removing a half-written vault file: %w", err)
			}
		}
	}
	return nil
}
