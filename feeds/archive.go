package feeds

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/ulikunitz/xz"
)

// Defaults of UnpackOptions.
const (
	DefaultMaxEntries  = 100000
	DefaultMaxFileSize = 64 << 20
	DefaultMaxTotal    = 1 << 30
)

// defaultInclude returns the include filter used when
// UnpackOptions.Include is nil.
func defaultInclude() []string { return []string{"*.yar", "*.yara"} }

// UnpackOptions says which files Unpack and CopyTree keep and bounds what
// they read. Zero values mean the defaults noted. Unpack and CopyTree only
// read it: one value may be shared by concurrent calls.
type UnpackOptions struct {
	// Subdir keeps only entries at or below this slash-separated relative
	// path, made relative to it. "" keeps all.
	Subdir string
	// Include selects files by glob (path.Match): a pattern without "/"
	// matches the base name, one with "/" the whole path (relative to
	// Subdir). nil means {"*.yar", "*.yara"}.
	Include []string
	// Exclude drops files that Include selected; same syntax.
	Exclude []string
	// MaxEntries bounds the entries of the archive, of all kinds, kept or
	// not. 0 means DefaultMaxEntries (100000).
	MaxEntries int
	// MaxFileSize bounds one regular file, kept or not, as declared and as
	// read. 0 means DefaultMaxFileSize (64 MiB).
	MaxFileSize int64
	// MaxTotal bounds the bytes decompressed in all: the content of every
	// entry that had to be read (kept files, and in a tar the skipped ones
	// too). 0 means DefaultMaxTotal (1 GiB).
	MaxTotal int64
}

// Unpacked says what Unpack or CopyTree wrote. It is a plain value, owned
// by the caller.
type Unpacked struct {
	// Files are the slash-separated paths written under the destination,
	// sorted.
	Files []string
	// Bytes is the number of bytes written.
	Bytes int64
	// Skipped counts the regular files that Subdir, Include or Exclude left
	// out.
	Skipped int
}

// UnsafeEntryError says why an archive or a feed directory was refused,
// naming the entry. Unpack and CopyTree return it (possibly wrapped) for
// every refusal of the content, as opposed to I/O errors and archives that
// are merely malformed. It is a plain value, safe to share once made.
type UnsafeEntryError struct {
	// Entry is the entry's name as the archive gives it (or its path
	// relative to the feed directory).
	Entry string
	// Reason says what is wrong with it.
	Reason string
}

func (e *UnsafeEntryError) Error() string {
	return fmt.Sprintf("unsafe entry %q: %s", e.Entry, e.Reason)
}

// noFollow makes an open fail on a symbolic link.
const noFollow = syscall.O_NOFOLLOW

// magic numbers of the archive formats Unpack reads.
var (
	magicZip  = []byte("PK\x03\x04")
	magicGzip = []byte{0x1f, 0x8b}
	magicXz   = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
)

// Unpack extracts the archive at path into dst, which must not exist: it
// is created with mode 0755, and the files kept are written 0644. The
// format is decided by the first bytes, not the name: zip, gzip (a tar
// inside) or xz (a tar inside); anything else is an error naming what it
// saw. Entries that could write outside dst or make anything but a regular
// file or a directory (links, devices, FIFOs), duplicate paths and entries
// beyond the limits of opts refuse the whole archive with an
// *UnsafeEntryError. On any error dst is removed.
//
// Unpack is safe for concurrent use with distinct destinations.
func Unpack(path, dst string, opts UnpackOptions) (Unpacked, error) {
	f, err := os.Open(path)
	if err != nil {
		return Unpacked{}, fmt.Errorf("unpacking: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Unpacked{}, fmt.Errorf("unpacking: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return Unpacked{}, fmt.Errorf("unpacking %s: not a regular file", path)
	}
	var head [8]byte
	n, err := io.ReadFull(f, head[:])
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return Unpacked{}, fmt.Errorf("unpacking %s: %w", path, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return Unpacked{}, fmt.Errorf("unpacking %s: %w", path, err)
	}
	var extract func(x *extractor) error
	switch h := head[:n]; {
	case bytes.HasPrefix(h, magicZip):
		extract = func(x *extractor) error { return x.zip(f, fi.Size()) }
	case bytes.HasPrefix(h, magicGzip):
		extract = func(x *extractor) error {
			zr, err := gzip.NewReader(bufio.NewReader(f))
			if err != nil {
				return fmt.Errorf("reading gzip: %w", err)
			}
			defer zr.Close()
			return x.tar(zr)
		}
	case bytes.HasPrefix(h, magicXz):
		extract = func(x *extractor) error {
			if err := checkXzDict(f); err != nil {
				return err
			}
			xr, err := xz.NewReader(bufio.NewReader(f))
			if err != nil {
				return fmt.Errorf("reading xz: %w", err)
			}
			return x.tar(xr)
		}
	default:
		return Unpacked{}, fmt.Errorf("unpacking %s: not a zip, gzip or xz archive: it starts with %q", path, h)
	}
	u, err := run(dst, opts, extract)
	if err != nil {
		return Unpacked{}, fmt.Errorf("unpacking %s: %w", path, err)
	}
	return u, nil
}

// CopyTree copies the feed directory src into dst as Unpack extracts an
// archive: same filters, same limits, dst must not exist and is removed on
// any error. src itself may be a symbolic link to a directory; a symbolic
// link, device, FIFO or socket inside it is an *UnsafeEntryError naming it.
// The tree is walked without following links, and every file is opened
// with O_NOFOLLOW and checked again once open.
//
// CopyTree is safe for concurrent use with distinct destinations.
func CopyTree(src, dst string, opts UnpackOptions) (Unpacked, error) {
	root, err := filepath.EvalSymlinks(src)
	if err != nil {
		return Unpacked{}, fmt.Errorf("copying feed directory: %w", err)
	}
	fi, err := os.Stat(root)
	if err != nil {
		return Unpacked{}, fmt.Errorf("copying feed directory: %w", err)
	}
	if !fi.IsDir() {
		return Unpacked{}, fmt.Errorf("copying feed directory %s: not a directory", src)
	}
	u, err := run(dst, opts, func(x *extractor) error { return x.tree(root) })
	if err != nil {
		return Unpacked{}, fmt.Errorf("copying feed directory %s: %w", src, err)
	}
	return u, nil
}

// run creates dst, lets extract fill it through an extractor, and removes
// it again when extract fails.
func run(dst string, opts UnpackOptions, extract func(x *extractor) error) (Unpacked, error) {
	x, err := newExtractor(opts)
	if err != nil {
		return Unpacked{}, err
	}
	if err := os.Mkdir(dst, 0o755); err != nil {
		return Unpacked{}, fmt.Errorf("creating destination: %w", err)
	}
	err = os.Chmod(dst, 0o755)
	if err == nil {
		x.root, err = os.OpenRoot(dst)
	}
	if err == nil {
		err = extract(x)
		if cerr := x.root.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil && x.subdir != "" && !x.seen[x.subdir] {
		err = fmt.Errorf("subdirectory %q is not in the archive", x.subdir)
	}
	if err != nil {
		os.RemoveAll(dst)
		return Unpacked{}, err
	}
	slices.Sort(x.out.Files)
	return x.out, nil
}

// extractor writes the entries of one archive or tree under its root. It
// is not safe for concurrent use.
type extractor struct {
	opts    UnpackOptions // limits filled in
	subdir  string        // cleaned Subdir, "" for all
	root    *os.Root      // the destination
	seen    map[string]bool
	entries int
	total   int64
	made    map[string]bool // directories created under root
	out     Unpacked
}

func newExtractor(opts UnpackOptions) (*extractor, error) {
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = DefaultMaxEntries
	}
	if opts.MaxFileSize <= 0 {
		opts.MaxFileSize = DefaultMaxFileSize
	}
	if opts.MaxTotal <= 0 {
		opts.MaxTotal = DefaultMaxTotal
	}
	if opts.Include == nil {
		opts.Include = defaultInclude()
	}
	for _, p := range slices.Concat(opts.Include, opts.Exclude) {
		if _, err := path.Match(p, ""); err != nil {
			return nil, fmt.Errorf("checking file pattern %q: %w", p, err)
		}
	}
	x := &extractor{opts: opts, seen: map[string]bool{}, made: map[string]bool{}}
	if s := strings.Trim(opts.Subdir, "/"); s != "" {
		x.subdir = path.Clean(s)
		if !fs.ValidPath(x.subdir) || strings.Contains(x.subdir, `\`) {
			return nil, fmt.Errorf("checking subdirectory %q: not a relative slash-separated path without \"..\"", opts.Subdir)
		}
	}
	return x, nil
}

// unsafe returns the *UnsafeEntryError for entry.
func unsafe(entry, format string, args ...any) error {
	return &UnsafeEntryError{Entry: entry, Reason: fmt.Sprintf(format, args...)}
}

// add checks the name of a new entry and records it: it counts it against
// MaxEntries, refuses unsafe names and duplicates, and returns the cleaned
// path ("" for the archive's top directory).
func (x *extractor) add(name string, dir bool) (string, error) {
	x.entries++
	if x.entries > x.opts.MaxEntries {
		return "", unsafe(name, "more than %d entries", x.opts.MaxEntries)
	}
	switch {
	case name == "":
		return "", unsafe(name, "empty name")
	case strings.ContainsRune(name, 0):
		return "", unsafe(name, "NUL in the name")
	case strings.Contains(name, `\`):
		return "", unsafe(name, "backslash in the name")
	case strings.HasPrefix(name, "/"):
		return "", unsafe(name, "absolute path")
	}
	for _, elem := range strings.Split(name, "/") {
		if elem == ".." {
			return "", unsafe(name, "\"..\" in the path")
		}
	}
	clean := path.Clean(name)
	if clean == "." {
		if dir {
			return "", nil
		}
		return "", unsafe(name, "a file without a name")
	}
	if !filepath.IsLocal(clean) || !fs.ValidPath(clean) {
		return "", unsafe(name, "path escapes the destination")
	}
	if prev, ok := x.seen[clean]; ok {
		if prev && dir {
			return clean, nil // a directory listed twice is harmless
		}
		return "", unsafe(name, "duplicate path")
	}
	for p := path.Dir(clean); p != "."; p = path.Dir(p) {
		isDir, ok := x.seen[p]
		if ok && !isDir {
			return "", unsafe(name, "a file, %q, is also a directory", p)
		}
		if ok {
			break // its parents were recorded with it
		}
		x.seen[p] = true
	}
	x.seen[clean] = dir
	return clean, nil
}

// keep says whether the regular file at the cleaned path name is kept, and
// under which path relative to the destination.
func (x *extractor) keep(name string) (string, bool) {
	rel := name
	if x.subdir != "" {
		var ok bool
		if rel, ok = strings.CutPrefix(name, x.subdir+"/"); !ok {
			return "", false
		}
	}
	return rel, matchAny(x.opts.Include, rel) && !matchAny(x.opts.Exclude, rel)
}

// matchAny says whether one of patterns matches rel: a pattern without "/"
// matches its base name, one with "/" the whole path.
func matchAny(patterns []string, rel string) bool {
	for _, p := range patterns {
		subject := rel
		if !strings.Contains(p, "/") {
			subject = path.Base(rel)
		}
		if ok, _ := path.Match(p, subject); ok {
			return true
		}
	}
	return false
}

// file handles the regular file name (as the archive gives it) whose
// declared size is size (-1 when unknown): it refuses a declared size over
// MaxFileSize, then either writes r to the destination or, when the
// filters leave the file out and readSkipped is true, reads r through,
// counting its bytes against MaxTotal.
func (x *extractor) file(name string, size int64, open func() (io.ReadCloser, error), readSkipped bool) error {
	clean, err := x.add(name, false)
	if err != nil {
		return err
	}
	if size > x.opts.MaxFileSize {
		return unsafe(name, "declares %d bytes, more than the limit of %d per file", size, x.opts.MaxFileSize)
	}
	rel, kept := x.keep(clean)
	if !kept {
		x.out.Skipped++
		if !readSkipped {
			return nil
		}
	}
	r, err := open()
	if err != nil {
		return fmt.Errorf("opening entry %q: %w", name, err)
	}
	defer r.Close()
	if !kept {
		_, err = x.copy(name, io.Discard, r)
		return err
	}
	f, err := x.create(rel)
	if err != nil {
		return fmt.Errorf("writing entry %q: %w", name, err)
	}
	defer f.Close()
	n, err := x.copy(name, f, r)
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing entry %q: %w", name, err)
	}
	x.out.Files = append(x.out.Files, rel)
	x.out.Bytes += n
	return nil
}

// create makes the file rel under the destination, and its directories.
func (x *extractor) create(rel string) (*os.File, error) {
	if dir := path.Dir(rel); dir != "." && !x.made[dir] {
		if err := x.root.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		for d := dir; d != "." && !x.made[d]; d = path.Dir(d) {
			if err := x.root.Chmod(d, 0o755); err != nil {
				return nil, err
			}
			x.made[d] = true
		}
	}
	f, err := x.root.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_TRUNC|noFollow, 0o644)
	if err != nil {
		return nil, err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// copy copies the content of the entry name from r to w, enforcing
// MaxFileSize and MaxTotal on the bytes read.
func (x *extractor) copy(name string, w io.Writer, r io.Reader) (int64, error) {
	buf := make([]byte, 32<<10)
	var n int64
	for {
		m, err := r.Read(buf)
		if m > 0 {
			n += int64(m)
			x.total += int64(m)
			if n > x.opts.MaxFileSize {
				return n, unsafe(name, "more than %d bytes, the limit per file", x.opts.MaxFileSize)
			}
			if x.total > x.opts.MaxTotal {
				return n, unsafe(name, "the archive decompresses to more than %d bytes, the limit in all", x.opts.MaxTotal)
			}
			if _, werr := w.Write(buf[:m]); werr != nil {
				return n, fmt.Errorf("writing entry %q: %w", name, werr)
			}
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			if errors.Is(err, zip.ErrFormat) {
				// archive/zip says so when the content is longer than
				// declared.
				return n, unsafe(name, "reading: %v (content longer than declared?)", err)
			}
			return n, fmt.Errorf("reading entry %q: %w", name, err)
		}
	}
}

// tar extracts the tar stream r.
func (x *extractor) tar(r io.Reader) error {
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading tar after %d entries: %w", x.entries, err)
		}
		name := hdr.Name
		switch hdr.Typeflag {
		case tar.TypeReg:
			open := func() (io.ReadCloser, error) { return io.NopCloser(tr), nil }
			if err := x.file(name, hdr.Size, open, true); err != nil {
				return err
			}
		case tar.TypeDir:
			if _, err := x.add(strings.TrimSuffix(name, "/"), true); err != nil {
				return err
			}
			if hdr.Size > 0 {
				// A directory has no content; anything there would be read
				// through unchecked by the next call of Next.
				return unsafe(name, "a directory with %d bytes of content", hdr.Size)
			}
		case tar.TypeXGlobalHeader:
			x.entries++
			if x.entries > x.opts.MaxEntries {
				return unsafe(name, "more than %d entries", x.opts.MaxEntries)
			}
		case tar.TypeSymlink:
			return unsafe(name, "symbolic link (to %q)", hdr.Linkname)
		case tar.TypeLink:
			return unsafe(name, "hard link (to %q)", hdr.Linkname)
		case tar.TypeChar:
			return unsafe(name, "character device")
		case tar.TypeBlock:
			return unsafe(name, "block device")
		case tar.TypeFifo:
			return unsafe(name, "FIFO")
		default:
			return unsafe(name, "unsupported tar entry type %q", hdr.Typeflag)
		}
	}
}

// unix file types in the upper half of a zip entry's external attributes.
const (
	unixTypeMask = 0xf000
	unixFIFO     = 0x1000
	unixChar     = 0x2000
	unixDir      = 0x4000
	unixBlock    = 0x6000
	unixReg      = 0x8000
	unixSymlink  = 0xa000
	unixSocket   = 0xc000
)

// zip extracts the zip archive in r.
func (x *extractor) zip(r io.ReaderAt, size int64) error {
	zr, err := zip.NewReader(r, size)
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		return fmt.Errorf("reading zip: %w", err)
	}
	if len(zr.File) > x.opts.MaxEntries {
		return unsafe(zr.File[x.opts.MaxEntries].Name, "more than %d entries", x.opts.MaxEntries)
	}
	for _, zf := range zr.File {
		name := zf.Name
		// The Unix type bits are checked whoever made the archive, not only
		// when the creator says Unix (as zf.Mode does).
		switch unixType := (zf.ExternalAttrs >> 16) & unixTypeMask; {
		case unixType == unixSymlink || zf.Mode()&fs.ModeSymlink != 0:
			return unsafe(name, "symbolic link")
		case unixType == unixChar || unixType == unixBlock || zf.Mode()&fs.ModeDevice != 0:
			return unsafe(name, "device file")
		case unixType == unixFIFO || zf.Mode()&fs.ModeNamedPipe != 0:
			return unsafe(name, "FIFO")
		case unixType == unixSocket || zf.Mode()&fs.ModeSocket != 0:
			return unsafe(name, "socket")
		case unixType != 0 && unixType != unixDir && unixType != unixReg:
			return unsafe(name, "unknown file type %#o", unixType)
		}
		if strings.HasSuffix(name, "/") || zf.Mode().IsDir() {
			if _, err := x.add(strings.TrimSuffix(name, "/"), true); err != nil {
				return err
			}
			if zf.UncompressedSize64 > 0 || zf.CompressedSize64 > 0 {
				return unsafe(name, "a directory with content")
			}
			continue
		}
		declared := int64(zf.UncompressedSize64)
		if zf.UncompressedSize64 > 1<<62 {
			declared = 1 << 62
		}
		if err := x.file(name, declared, zf.Open, false); err != nil {
			return err
		}
	}
	return nil
}

// tree copies the directory root, walking it without following links.
func (x *extractor) tree(root string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("walking: %w", err)
		}
		if p == root {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		switch t := d.Type(); {
		case t.IsDir():
			_, err := x.add(name, true)
			return err
		case t.IsRegular():
			return x.localFile(name, p)
		case t&fs.ModeSymlink != 0:
			return unsafe(name, "symbolic link")
		case t&fs.ModeDevice != 0:
			return unsafe(name, "device file")
		case t&fs.ModeNamedPipe != 0:
			return unsafe(name, "FIFO")
		case t&fs.ModeSocket != 0:
			return unsafe(name, "socket")
		default:
			return unsafe(name, "not a regular file or directory (%v)", t)
		}
	})
}

// localFile copies the regular file p of a feed directory, known as name.
func (x *extractor) localFile(name, p string) error {
	var fi os.FileInfo
	open := func() (io.ReadCloser, error) {
		f, err := os.OpenFile(p, os.O_RDONLY|noFollow, 0)
		if err != nil {
			return nil, err
		}
		// Replaced since the walk saw it?
		if fi, err = f.Stat(); err != nil || !fi.Mode().IsRegular() {
			f.Close()
			if err == nil {
				err = unsafe(name, "no longer a regular file")
			}
			return nil, err
		}
		if fi.Size() > x.opts.MaxFileSize {
			f.Close()
			return nil, unsafe(name, "%d bytes, more than the limit of %d per file", fi.Size(), x.opts.MaxFileSize)
		}
		return f, nil
	}
	size := int64(-1)
	if info, err := os.Lstat(p); err == nil {
		size = info.Size()
	}
	return x.file(name, size, open, false)
}

// maxXzDict bounds the LZMA2 dictionary an xz archive may ask for: the
// decoder allocates it before reading anything. xz -9 uses 64 MiB.
const maxXzDict = 64 << 20

// checkXzDict reads the header of the first block of the xz stream in f
// (positioned at its start, and put back there) and refuses a dictionary
// larger than maxXzDict. Errors in the header itself are left to the
// decoder.
func checkXzDict(f *os.File) error {
	defer f.Seek(0, io.SeekStart)
	var hdr [12 + 1024]byte
	n, _ := io.ReadFull(f, hdr[:])
	b := hdr[:n]
	if len(b) < 14 || b[12] == 0 {
		return nil // too short, or no block: the decoder says what is wrong
	}
	blk := b[12:]
	size := (int(blk[0]) + 1) * 4
	if size > len(blk) {
		return nil
	}
	blk = blk[:size]
	flags := blk[1]
	rest := blk[2:]
	uvarint := func() (uint64, bool) {
		var v uint64
		for i := 0; i < 9 && i < len(rest); i++ {
			v |= uint64(rest[i]&0x7f) << (7 * i)
			if rest[i]&0x80 == 0 {
				rest = rest[i+1:]
				return v, true
			}
		}
		return 0, false
	}
	if flags&0x40 != 0 {
		if _, ok := uvarint(); !ok {
			return nil
		}
	}
	if flags&0x80 != 0 {
		if _, ok := uvarint(); !ok {
			return nil
		}
	}
	for i := 0; i <= int(flags&3); i++ {
		id, ok1 := uvarint()
		psize, ok2 := uvarint()
		if !ok1 || !ok2 || psize > uint64(len(rest)) {
			return nil
		}
		props := rest[:psize]
		rest = rest[psize:]
		if id == 0x21 && len(props) == 1 { // LZMA2
			d := props[0]
			if d > 40 {
				return nil
			}
			dict := uint64(2|d&1) << (d/2 + 11)
			if dict > maxXzDict {
				return fmt.Errorf("reading xz: the archive asks for a %d MiB dictionary, more than the %d MiB allowed", dict>>20, maxXzDict>>20)
			}
		}
	}
	return nil
}
