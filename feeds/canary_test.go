package feeds

import (
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fanguard/fanguard/internal/testutil"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// requireDpkg skips when this host has no dpkg database (fails under CI,
// whose machines are Debian).
func requireDpkg(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/var/lib/dpkg/info/coreutils.md5sums"); err != nil {
		if testutil.InCI() {
			t.Fatalf("CI=true and no dpkg database: %v", err)
		}
		t.Skipf("no dpkg database: %v", err)
	}
}

func md5File(t *testing.T, p string) [16]byte {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return md5.Sum(data)
}

func TestSampleTrustedHost(t *testing.T) {
	requireDpkg(t)
	start := time.Now()
	got, stats, err := SampleTrusted(CanaryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var bytes int64
	for _, f := range got {
		bytes += f.Size
	}
	t.Logf("SampleTrusted(Max 2000): %v, %d files, %d bytes, stats %+v", time.Since(start), len(got), bytes, stats)
	if len(got) != defaultCanaryMax {
		t.Errorf("got %d files, want %d (listed %d)", len(got), defaultCanaryMax, stats.Listed)
	}
	want := map[string]bool{"/usr/bin/ls": false, "/usr/bin/bash": false}
	libc := false
	paths := map[string]bool{}
	for _, f := range got {
		if _, ok := want[f.Path]; ok {
			want[f.Path] = true
		}
		if f.Package == "libc6" {
			libc = true
		}
		if paths[f.Path] {
			t.Errorf("%s is twice in the sample", f.Path)
		}
		paths[f.Path] = true
		if strings.Contains(f.Package, ":") {
			t.Errorf("%s: package %q keeps its architecture", f.Path, f.Package)
		}
		fi, err := os.Lstat(f.Path)
		if err != nil {
			t.Fatal(err)
		}
		if !fi.Mode().IsRegular() || fi.Size() != f.Size || fi.Size() == 0 {
			t.Errorf("%s: mode %v size %d, sample says size %d", f.Path, fi.Mode(), fi.Size(), f.Size)
		}
	}
	for p, ok := range want {
		if !ok {
			t.Errorf("%s is not in the sample", p)
		}
	}
	if !libc {
		t.Error("no file of libc6 in the sample")
	}
	// Every file's md5 is the one its package lists (under any of the
	// names the package gives it).
	sums := map[string]map[[16]byte]bool{}
	for _, f := range got {
		if sums[f.Package] != nil {
			continue
		}
		sums[f.Package] = map[[16]byte]bool{}
		files, _ := filepath.Glob("/var/lib/dpkg/info/" + f.Package + "*.md5sums")
		for _, file := range files {
			name := strings.TrimSuffix(filepath.Base(file), ".md5sums")
			if name != f.Package && !strings.HasPrefix(name, f.Package+":") {
				continue
			}
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			list, err := ParseMD5Sums(data)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range list {
				sums[f.Package][s.MD5] = true
			}
		}
	}
	for _, f := range got {
		if !sums[f.Package][md5File(t, f.Path)] {
			t.Errorf("%s: md5 not listed by %s", f.Path, f.Package)
		}
	}

	start = time.Now()
	again, _, err := SampleTrusted(CanaryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("SampleTrusted again (warm): %v", time.Since(start))
	if diff := cmp.Diff(got, again); diff != "" {
		t.Errorf("two samples differ (-first +second):\n%s", diff)
	}

	small, _, err := SampleTrusted(CanaryOptions{Max: 50})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(got[:50], small); diff != "" {
		t.Errorf("Max 50 is not the first 50 of Max 2000 (-want +got):\n%s", diff)
	}
	pkgs := map[string]bool{}
	for _, f := range got[len(got)-500:] {
		pkgs[f.Package] = true
	}
	if len(pkgs) < 20 {
		t.Errorf("the last 500 files of the sample come from %d packages, want them spread over at least 20", len(pkgs))
	}
}

// fakeRoot is a file tree with a dpkg database under it.
type fakeRoot struct {
	t      *testing.T
	root   string
	status strings.Builder
}

func newFakeRoot(t *testing.T) *fakeRoot {
	r := &fakeRoot{t: t, root: t.TempDir()}
	if err := os.MkdirAll(filepath.Join(r.root, "var/lib/dpkg/info"), 0o755); err != nil {
		t.Fatal(err)
	}
	return r
}

// pkg installs a package: its stanza, its files (name → content) and its
// md5sums file (under infoName, "" = name).
func (r *fakeRoot) pkg(name, infoName, stanza string, files map[string]string) {
	t := r.t
	t.Helper()
	fmt.Fprintf(&r.status, "Package: %s\nStatus: install ok installed\n%s\n\n", name, stanza)
	var sums strings.Builder
	names := slices.Sorted(func(yield func(string) bool) {
		for k := range files {
			if !yield(k) {
				return
			}
		}
	})
	for _, p := range names {
		full := filepath.Join(r.root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(files[p]), 0o644); err != nil {
			t.Fatal(err)
		}
		sum := md5.Sum([]byte(files[p]))
		fmt.Fprintf(&sums, "%s  %s\n", hex.EncodeToString(sum[:]), p)
	}
	if infoName == "" {
		infoName = name
	}
	r.md5sums(infoName, sums.String())
}

func (r *fakeRoot) md5sums(infoName, content string) {
	r.t.Helper()
	if err := os.WriteFile(filepath.Join(r.root, "var/lib/dpkg/info", infoName+".md5sums"), []byte(content), 0o644); err != nil {
		r.t.Fatal(err)
	}
}

func (r *fakeRoot) write(p, content string) {
	r.t.Helper()
	if err := os.WriteFile(filepath.Join(r.root, p), []byte(content), 0o644); err != nil {
		r.t.Fatal(err)
	}
}

func (r *fakeRoot) symlink(target, p string) {
	r.t.Helper()
	full := filepath.Join(r.root, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		r.t.Fatal(err)
	}
	if err := os.Symlink(target, full); err != nil {
		r.t.Fatal(err)
	}
}

func (r *fakeRoot) sample(n int) ([]TrustedFile, CanaryStats) {
	r.t.Helper()
	if err := os.WriteFile(filepath.Join(r.root, "var/lib/dpkg/status"), []byte(r.status.String()), 0o644); err != nil {
		r.t.Fatal(err)
	}
	got, stats, err := SampleTrusted(CanaryOptions{Root: r.root, Max: n, MaxFileSize: 1000})
	if err != nil {
		r.t.Fatal(err)
	}
	return got, stats
}

func (r *fakeRoot) paths(files []TrustedFile) []string {
	var out []string
	for _, f := range files {
		rel, err := filepath.Rel(r.root, f.Path)
		if err != nil {
			r.t.Fatal(err)
		}
		out = append(out, f.Package+":"+rel)
	}
	return out
}

func TestSampleTrustedFakeRoot(t *testing.T) {
	r := newFakeRoot(t)
	if err := os.MkdirAll(filepath.Join(r.root, "usr/bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	r.symlink("usr/bin", "bin") // merged /usr
	r.pkg("coreutils", "", "Priority: required\nDepends: libc6 (>= 2.34)", map[string]string{
		"bin/ls":                         "ls",
		"usr/share/doc/coreutils/README": "readme",
	})
	r.pkg("libc6", "libc6:amd64", "Priority: optional\nArchitecture: amd64\nMulti-Arch: same", map[string]string{
		"usr/lib/x86_64-linux-gnu/libc.so.6": "libc",
		"usr/share/doc/libc6/copyright":      "copyright",
	})
	// An absolute link to a directory is taken from the root, and a second
	// name of a file already taken is passed over.
	r.symlink("/usr/lib/x86_64-linux-gnu", "lib64")
	libc := md5.Sum([]byte("libc"))
	info := filepath.Join(r.root, "var/lib/dpkg/info/libc6:amd64.md5sums")
	data, err := os.ReadFile(info)
	if err != nil {
		t.Fatal(err)
	}
	r.md5sums("libc6:amd64", string(data)+hex.EncodeToString(libc[:])+"  lib64/libc.so.6\n")
	r.pkg("leaf", "", "Priority: optional", map[string]string{
		"usr/bin/leaf":      "leaf",
		"usr/bin/altered":   "before",
		"usr/bin/empty":     "",
		"usr/bin/big":       strings.Repeat("x", 1001),
		"usr/share/leaf/a":  "a",
		"usr/share/leaf/ln": "placeholder",
		"usr/share/leaf/b":  "b",
	})
	r.write("usr/bin/altered", "after")
	if err := os.Remove(filepath.Join(r.root, "usr/share/leaf/ln")); err != nil {
		t.Fatal(err)
	}
	r.symlink("a", "usr/share/leaf/ln")
	r.pkg("gone", "", "Priority: optional", map[string]string{"usr/bin/gone": "gone"})
	if err := os.Remove(filepath.Join(r.root, "usr/bin/gone")); err != nil {
		t.Fatal(err)
	}
	// A package with a ".." path is left out, the others still sampled.
	r.pkg("evil", "", "Essential: yes", map[string]string{"usr/bin/evil": "evil"})
	r.md5sums("evil", "0123456789abcdef0123456789abcdef  usr/bin/evil\n0123456789abcdef0123456789abcdef  usr/../etc/shadow\n")
	// Not installed: its files are not trusted.
	fmt.Fprintf(&r.status, "Package: removed\nStatus: deinstall ok config-files\n\n")
	r.md5sums("removed", "0123456789abcdef0123456789abcdef  usr/bin/removed\n")

	got, stats := r.sample(100)
	if len(got) != 7 {
		t.Fatalf("got %d files, want 7: %v (stats %+v)", len(got), r.paths(got), stats)
	}
	want := []string{
		// Core packages' programs, in hash order, then their other files.
		"coreutils:usr/bin/ls", "libc6:usr/lib/x86_64-linux-gnu/libc.so.6",
		"coreutils:usr/share/doc/coreutils/README", "libc6:usr/share/doc/libc6/copyright",
	}
	if diff := cmp.Diff(want, r.paths(got)[:4], asSet()); diff != "" {
		t.Errorf("core files (-want +got):\n%s", diff)
	}
	wantRest := []string{"leaf:usr/bin/leaf", "leaf:usr/share/leaf/a", "leaf:usr/share/leaf/b"}
	if diff := cmp.Diff(wantRest, r.paths(got)[4:], asSet()); diff != "" {
		t.Errorf("other files (-want +got):\n%s", diff)
	}
	wantStats := CanaryStats{Packages: 4, Listed: 13, Checked: 8, Mismatched: 1, Missing: 1, Skipped: 4}
	if diff := cmp.Diff(wantStats, stats, cmpopts.IgnoreFields(CanaryStats{}, "BadPackages")); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
	if len(stats.BadPackages) != 1 || !strings.Contains(stats.BadPackages[0].Error(), "evil.md5sums: line 2") {
		t.Errorf("BadPackages = %v, want one error naming evil.md5sums line 2", stats.BadPackages)
	}
	for _, f := range got {
		if want := int64(len(path.Base(f.Path))); f.Package == "leaf" && f.Size != want {
			t.Errorf("%s: size %d, want %d", f.Path, f.Size, want)
		}
	}

	// Max is honoured, and a smaller sample is a prefix of the larger.
	for n := 1; n <= len(got); n++ {
		small, _ := r.sample(n)
		if diff := cmp.Diff(got[:n], small); diff != "" {
			t.Errorf("Max %d (-want +got):\n%s", n, diff)
		}
	}
}

// asSet compares string slices as sets: the hash order of a few paths is
// not for the test to predict, only the groups.
func asSet() cmp.Option {
	return cmp.Transformer("sorted", func(s []string) []string {
		return slices.Sorted(slices.Values(s))
	})
}

func TestSampleTrustedErrors(t *testing.T) {
	dir := t.TempDir()
	_, _, err := SampleTrusted(CanaryOptions{Root: dir})
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "status") {
		t.Errorf("no status file: err = %v, want a not-exist error about the status file", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "status"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err = SampleTrusted(CanaryOptions{Root: dir, StatusFile: filepath.Join(dir, "status")})
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "info") {
		t.Errorf("no info directory: err = %v, want a not-exist error about the info directory", err)
	}
}

func TestParseMD5Sums(t *testing.T) {
	h := "0123456789abcdef0123456789ABCDEF"
	sum := [16]byte{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef}
	tests := []struct {
		name    string
		in      string
		want    []Sum
		wantErr string
	}{
		{"two", h + "  usr/bin/ls\n" + h + "  usr/share/doc/a b\n", []Sum{{sum, "usr/bin/ls"}, {sum, "usr/share/doc/a b"}}, ""},
		{"no final newline", h + "  bin/ls", []Sum{{sum, "bin/ls"}}, ""},
		{"blank lines", "\n" + h + "  bin/ls\n\n", []Sum{{sum, "bin/ls"}}, ""},
		{"binary marker", h + " *bin/ls\n", []Sum{{sum, "bin/ls"}}, ""},
		{"leading slash and dot", h + "  /usr//bin/./ls\n" + h + "  ./etc/x\n", []Sum{{sum, "usr/bin/ls"}, {sum, "etc/x"}}, ""},
		{"empty", "", nil, ""},
		{"dotdot", h + "  bin/ls\n" + h + "  usr/../etc/shadow\n", nil, "line 2: path \"usr/../etc/shadow\" has a \"..\" element"},
		{"dotdot alone", h + "  ..\n", nil, "line 1"},
		{"short hash", "0123  bin/ls\n", nil, "line 1: want"},
		{"bad hex", strings.Replace(h, "0", "g", 1) + "  bin/ls\n", nil, "line 1: md5"},
		{"one space", h + " bin/ls\n", nil, "line 1: want"},
		{"no path", h + "  \n", nil, "line 1: want"},
		{"root only", h + "  /\n", nil, "line 1: empty path"},
		{"nul", h + "  bin/l\x00s\n", nil, "line 1: path has a NUL byte"},
		{"line too long", h + "  bin/ls\n" + h + "  " + strings.Repeat("a", 1<<20) + "\n", nil, "line 2: bufio.Scanner: token too long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMD5Sums([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func FuzzParseMD5Sums(f *testing.F) {
	f.Add([]byte("7987cf330ff5bb94015dfbb9eae5a99f  bin/ls\n"))
	f.Add([]byte("7987cf330ff5bb94015dfbb9eae5a99f  /usr/../x\n"))
	f.Add([]byte("7987cf330ff5bb94015dfbb9eae5a99f *./a//b/\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		sums, err := ParseMD5Sums(data)
		if err != nil {
			return
		}
		for _, s := range sums {
			if s.Path == "" || path.IsAbs(s.Path) || path.Clean(s.Path) != s.Path || s.Path == "." ||
				slices.Contains(strings.Split(s.Path, "/"), "..") {
				t.Errorf("path %q is not relative, clean and without \"..\"", s.Path)
			}
		}
	})
}

func TestParseStatus(t *testing.T) {
	status := `Package: a
Status: install ok installed
Priority: required
Pre-Depends: b (>= 1), c:any | d
Depends: e [amd64], f
Description: x
 continued: line

Package: b
Status: hold ok installed
Essential: yes

Package: c
Status: deinstall ok config-files
Priority: required

Package: e
Status: install ok installed
Architecture: amd64

Package: e
Status: install ok installed
Architecture: i386
Depends: g

Package: g
Status: install ok installed

Package: h
Status: install ok installed
Priority: optional
`
	pkgs := parseStatus([]byte(status))
	got := map[string]dpkgPackage{}
	for k, v := range pkgs {
		got[k] = *v
	}
	want := map[string]dpkgPackage{
		"a": {installed: true, core: true, depends: []string{"b", "c", "d", "e", "f"}},
		"b": {installed: true, core: true},
		"e": {installed: true, depends: []string{"g"}},
		"g": {installed: true},
		"h": {installed: true},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(dpkgPackage{})); diff != "" {
		t.Errorf("parseStatus (-want +got):\n%s", diff)
	}
	core := corePackages(pkgs)
	if diff := cmp.Diff(map[string]bool{"a": true, "b": true, "e": true, "g": true}, core); diff != "" {
		t.Errorf("corePackages (-want +got):\n%s", diff)
	}
}
