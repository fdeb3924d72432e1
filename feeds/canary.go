package feeds

import (
	"bufio"
	"bytes"
	"cmp"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// CanaryOptions says where and how many trusted files SampleTrusted picks.
// The zero value samples this host's dpkg database with the defaults. It is
// plain data, safe to share once set.
type CanaryOptions struct {
	Root        string // file system root the package paths are relative to; "" = "/"
	InfoDir     string // dpkg's info directory; "" = Root + "/var/lib/dpkg/info"
	StatusFile  string // dpkg's status file; "" = Root + "/var/lib/dpkg/status"
	Max         int    // files to return; 0 = 2000
	MaxFileSize int64  // larger files are passed over; 0 = 32 MiB
}

// TrustedFile is a file of an installed package whose content matched the
// package's md5sums when SampleTrusted read it. It is plain data.
type TrustedFile struct {
	Path    string // absolute path (under Root), with the symbolic links of its directories resolved
	Package string // owning package, without an ":arch" suffix
	Size    int64
}

// CanaryStats counts what SampleTrusted did, for the gate's report. It is
// plain data, owned by the caller.
type CanaryStats struct {
	Packages   int // installed packages whose md5sums file was read
	Listed     int // paths those files list
	Checked    int // files whose md5 was computed
	Mismatched int // files whose md5 differed from the package's
	Missing    int // listed paths that did not exist (or changed while read)
	Skipped    int // listed paths passed over: not a regular file, empty, larger than MaxFileSize, or a second name of a file already taken
	// BadPackages has one error per installed package left out because its
	// md5sums file could not be read or parsed (naming the file and line).
	BadPackages []error
}

// Sum is one line of a dpkg md5sums file. It is plain data.
type Sum struct {
	MD5  [16]byte
	Path string // relative to the root, clean, without ".." elements
}

const (
	defaultCanaryMax   = 2000
	defaultMaxFileSize = 32 << 20
	maxSymlinkHops     = 40
)

// SampleTrusted returns up to Max regular files whose md5 matches their
// package's md5sums, in a deterministic order (the same machine gives the
// same sample). The files first considered are the commands and shared
// libraries of the packages a Debian system cannot run without: those with
// "Priority: required" or "Essential: yes" and the packages they depend on
// (libc6 among them); then their other files; then every other installed
// package's files. Within each of these groups the order is a stable
// pseudo-random one (a hash of the path), so that the sample spreads over
// packages. Files failing the md5 check, missing, not regular (symbolic
// links are not followed), empty or larger than MaxFileSize are passed over
// and counted in the stats. It stops as soon as Max files are verified.
//
// A package whose md5sums file cannot be read or parsed is left out and
// reported in CanaryStats.BadPackages; the others are still sampled. The
// error is for what stops the whole sample: the status file or the info
// directory cannot be read. SampleTrusted keeps no state between calls and
// is safe to call concurrently.
func SampleTrusted(opts CanaryOptions) ([]TrustedFile, CanaryStats, error) {
	var stats CanaryStats
	root := opts.Root
	if root == "" {
		root = "/"
	}
	infoDir := opts.InfoDir
	if infoDir == "" {
		infoDir = filepath.Join(root, "var/lib/dpkg/info")
	}
	statusFile := opts.StatusFile
	if statusFile == "" {
		statusFile = filepath.Join(root, "var/lib/dpkg/status")
	}
	limit := cmp.Or(opts.Max, defaultCanaryMax)
	maxSize := cmp.Or(opts.MaxFileSize, defaultMaxFileSize)

	status, err := os.ReadFile(statusFile)
	if err != nil {
		return nil, stats, fmt.Errorf("reading dpkg status: %w", err)
	}
	pkgs := parseStatus(status)
	core := corePackages(pkgs)

	entries, err := os.ReadDir(infoDir)
	if err != nil {
		return nil, stats, fmt.Errorf("reading dpkg info directory: %w", err)
	}
	var cands []candidate
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".md5sums")
		if !ok {
			continue
		}
		pkg, _, _ := strings.Cut(name, ":")
		p, ok := pkgs[pkg]
		if !ok || !p.installed {
			continue
		}
		file := filepath.Join(infoDir, e.Name())
		data, err := os.ReadFile(file)
		if err != nil {
			stats.BadPackages = append(stats.BadPackages, fmt.Errorf("reading %s: %w", file, err))
			continue
		}
		sums, err := ParseMD5Sums(data)
		if err != nil {
			stats.BadPackages = append(stats.BadPackages, fmt.Errorf("parsing %s: %w", file, err))
			continue
		}
		stats.Packages++
		stats.Listed += len(sums)
		for _, s := range sums {
			c := candidate{sum: s, pkg: pkg, group: 2, hash: pathHash(s.Path)}
			if core[pkg] {
				c.group = 1
				if isProgram(s.Path) {
					c.group = 0
				}
			}
			cands = append(cands, c)
		}
	}
	slices.SortFunc(cands, func(a, b candidate) int {
		return cmp.Or(cmp.Compare(a.group, b.group), cmp.Compare(a.hash, b.hash),
			strings.Compare(a.sum.Path, b.sum.Path), strings.Compare(a.pkg, b.pkg))
	})

	res := resolver{root: root, dirs: map[string]string{}}
	seen := map[string]bool{}
	var out []TrustedFile
	for _, c := range cands {
		if len(out) >= limit {
			break
		}
		dir, ok := res.dir(path.Dir(c.sum.Path), 0)
		if !ok {
			stats.Missing++
			continue
		}
		rel := path.Join(dir, path.Base(c.sum.Path))
		if seen[rel] {
			stats.Skipped++
			continue
		}
		seen[rel] = true
		full := filepath.Join(root, filepath.FromSlash(rel))
		size, r := checkFile(full, c.sum.MD5, maxSize)
		switch r {
		case fileMissing:
			stats.Missing++
		case fileSkipped:
			stats.Skipped++
		case fileMismatched:
			stats.Checked++
			stats.Mismatched++
		case fileOK:
			stats.Checked++
			out = append(out, TrustedFile{Path: full, Package: c.pkg, Size: size})
		}
	}
	return out, stats, nil
}

// candidate is a listed file waiting for its md5 check.
type candidate struct {
	sum   Sum
	pkg   string
	group int // 0: a core package's program or library, 1: a core package's other file, 2: the rest
	hash  uint64
}

// pathHash gives the stable pseudo-random order of a path: FNV-1a, then a
// finalizer that spreads paths differing in their last bytes.
func pathHash(p string) uint64 {
	h := fnv.New64a()
	io.WriteString(h, p)
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// isProgram reports whether a package path is a command or a shared
// library: the files every process of the host loads.
func isProgram(p string) bool {
	switch path.Dir(p) {
	case "bin", "sbin", "usr/bin", "usr/sbin":
		return true
	}
	base := path.Base(p)
	return (strings.HasPrefix(p, "lib") || strings.HasPrefix(p, "usr/lib")) &&
		(strings.HasSuffix(base, ".so") || strings.Contains(base, ".so."))
}

type checkResult int

const (
	fileOK checkResult = iota
	fileMismatched
	fileMissing
	fileSkipped
)

// checkFile checks that full is a regular file (not a symbolic link) of
// 1 to maxSize bytes whose md5 is want.
func checkFile(full string, want [16]byte, maxSize int64) (int64, checkResult) {
	fi, err := os.Lstat(full)
	if err != nil {
		return 0, fileMissing
	}
	if !fi.Mode().IsRegular() || fi.Size() == 0 || fi.Size() > maxSize {
		return 0, fileSkipped
	}
	f, err := os.Open(full)
	if err != nil {
		return 0, fileMissing
	}
	defer f.Close()
	ofi, err := f.Stat()
	if err != nil || !os.SameFile(fi, ofi) || ofi.Size() != fi.Size() {
		return 0, fileMissing // replaced between the lstat and the open
	}
	h := md5.New()
	n, err := io.Copy(h, io.LimitReader(f, maxSize+1))
	if err != nil || n != fi.Size() {
		return 0, fileMissing
	}
	var got [16]byte
	h.Sum(got[:0])
	if got != want {
		return n, fileMismatched
	}
	return n, fileOK
}

// resolver resolves the symbolic links of directories under a root, as a
// chroot would: an absolute target is taken from the root, and ".." never
// leaves it. It is not safe for concurrent use.
type resolver struct {
	root string
	dirs map[string]string // directory as listed → resolved ("" = the root, "\x00" = does not resolve)
}

// dir returns the directory d (relative to the root, clean) with every
// symbolic link resolved, and false when it does not resolve to a
// directory.
func (r *resolver) dir(d string, depth int) (string, bool) {
	if d == "." || d == "" {
		return "", true
	}
	if got, ok := r.dirs[d]; ok {
		return got, got != "\x00"
	}
	if depth > maxSymlinkHops {
		return "", false
	}
	res, ok := r.resolve(d, depth)
	if !ok {
		r.dirs[d] = "\x00"
		return "", false
	}
	r.dirs[d] = res
	return res, true
}

func (r *resolver) resolve(d string, depth int) (string, bool) {
	parent, ok := r.dir(path.Dir(d), depth)
	if !ok {
		return "", false
	}
	p := path.Join(parent, path.Base(d))
	full := filepath.Join(r.root, filepath.FromSlash(p))
	fi, err := os.Lstat(full)
	if err != nil {
		return "", false
	}
	if fi.Mode()&fs.ModeSymlink == 0 {
		return p, fi.IsDir()
	}
	target, err := os.Readlink(full)
	if err != nil {
		return "", false
	}
	if !path.IsAbs(target) {
		target = path.Join("/", parent, target)
	}
	return r.dir(strings.TrimPrefix(path.Clean(target), "/"), depth+1)
}

// ParseMD5Sums parses one dpkg md5sums file: lines "<32 hex>  <path
// relative to />". A malformed line is an error naming its line number;
// so is a path with a ".." element or a NUL byte. Returned paths are
// relative and clean (a leading "/" or "./" is dropped).
func ParseMD5Sums(data []byte) ([]Sum, error) {
	var out []Sum
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	n := 1
	for ; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		if len(line) < 35 || (line[32] != ' ') || (line[33] != ' ' && line[33] != '*') {
			return nil, fmt.Errorf("line %d: want \"<32 hex digits>  <path>\"", n)
		}
		var s Sum
		if _, err := hex.Decode(s.MD5[:], []byte(line[:32])); err != nil {
			return nil, fmt.Errorf("line %d: md5: %w", n, err)
		}
		p := line[34:]
		if strings.IndexByte(p, 0) >= 0 {
			return nil, fmt.Errorf("line %d: path has a NUL byte", n)
		}
		if slices.Contains(strings.Split(p, "/"), "..") {
			return nil, fmt.Errorf("line %d: path %q has a \"..\" element", n, p)
		}
		p = strings.TrimPrefix(path.Clean("/"+p), "/")
		if p == "" {
			return nil, fmt.Errorf("line %d: empty path", n)
		}
		s.Path = p
		out = append(out, s)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("line %d: %w", n, err)
	}
	return out, nil
}

// dpkgPackage is what SampleTrusted needs of a package's status stanzas
// (all architectures together).
type dpkgPackage struct {
	installed bool
	core      bool     // Priority: required or Essential: yes
	depends   []string // Depends and Pre-Depends, every alternative, without versions or architectures
}

// parseStatus reads dpkg's status file: stanzas separated by blank lines,
// "Key: value" fields, continuation lines starting with a space or a tab.
// Only installed packages are kept.
func parseStatus(data []byte) map[string]*dpkgPackage {
	pkgs := map[string]*dpkgPackage{}
	for _, stanza := range splitStanzas(data) {
		fields := map[string]string{}
		var last string
		for _, line := range strings.Split(stanza, "\n") {
			if line == "" {
				continue
			}
			if line[0] == ' ' || line[0] == '\t' {
				if last != "" {
					fields[last] += "\n" + line
				}
				continue
			}
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				last = ""
				continue
			}
			last = strings.ToLower(strings.TrimSpace(k))
			fields[last] = strings.TrimSpace(v)
		}
		name := fields["package"]
		st := strings.Fields(fields["status"])
		if name == "" || len(st) != 3 || st[1] != "ok" || st[2] != "installed" {
			continue
		}
		p := pkgs[name]
		if p == nil {
			p = &dpkgPackage{}
			pkgs[name] = p
		}
		p.installed = true
		if strings.EqualFold(fields["priority"], "required") || strings.EqualFold(fields["essential"], "yes") {
			p.core = true
		}
		for _, key := range []string{"pre-depends", "depends"} {
			for _, alt := range strings.FieldsFunc(fields[key], func(r rune) bool { return r == ',' || r == '|' }) {
				dep := strings.TrimSpace(alt)
				if i := strings.IndexAny(dep, " (\t\n["); i >= 0 {
					dep = dep[:i]
				}
				dep, _, _ = strings.Cut(dep, ":")
				if dep != "" {
					p.depends = append(p.depends, dep)
				}
			}
		}
	}
	return pkgs
}

func splitStanzas(data []byte) []string {
	s := strings.ReplaceAll(string(data), "\r\n", "\n")
	var out []string
	for _, st := range strings.Split(s, "\n\n") {
		if strings.TrimSpace(st) != "" {
			out = append(out, st)
		}
	}
	return out
}

// corePackages returns the installed packages a system cannot run without:
// the required and essential ones and, transitively, the installed
// packages they depend on.
func corePackages(pkgs map[string]*dpkgPackage) map[string]bool {
	core := map[string]bool{}
	var todo []string
	for name, p := range pkgs {
		if p.core {
			todo = append(todo, name)
		}
	}
	for len(todo) > 0 {
		name := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		p, ok := pkgs[name]
		if core[name] || !ok || !p.installed {
			continue
		}
		core[name] = true
		todo = append(todo, p.depends...)
	}
	return core
}
