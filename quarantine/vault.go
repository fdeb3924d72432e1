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
	return v.put(src, math.MaxInt64, sha256, nil)
}

// put is Put reading at most limit bytes of src, with a fault seam: fault
// is called with "after-vault-write" and "after-vault-rename".
func (v *Vault) put(src *os.File, limit int64, sum string, fault func(string)) (name string, err error) {
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
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return "", fmt.Errorf("putting %s into the vault: %w", sum, err)
	}
	h := sha256.New()
	buf := make([]byte, 64<<10)
	var off int64
	r := io.NewSectionReader(src, 0, limit)
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
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

// Size returns the total size of the files in the vault, in bytes.
func (v *Vault) Size() (int64, error) {
	des, err := os.ReadDir(v.dir)
	if err != nil {
		return 0, fmt.Errorf("measuring the vault: %w", err)
	}
	var n int64
	for _, de := range des {
		if !de.Type().IsRegular() {
			continue
		}
		fi, err := de.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("measuring the vault: %w", err)
		}
		n += fi.Size()
	}
	return n, nil
}

// fileSize returns the size of vault file name, 0 if it is missing.
func (v *Vault) fileSize(name string) int64 {
	fi, err := os.Lstat(filepath.Join(v.dir, name))
	if err != nil {
		return 0
	}
	return fi.Size()
}

// lock takes a flock on the vault directory: shared (LOCK_SH) while content
// is put in and not yet claimed by a record, exclusive (LOCK_EX) while a
// remover checks that no record needs a file and removes it. The returned
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
