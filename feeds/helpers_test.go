package feeds

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ulikunitz/xz"

	"github.com/fanguard/fanguard/internal/testutil"
)

// member is one entry of an archive built by a test.
type member struct {
	name string
	body string
	kind byte   // a tar type flag; tar.TypeReg when 0
	link string // target of a link
	mode fs.FileMode
}

func (m member) typ() byte {
	if m.kind == 0 {
		return tar.TypeReg
	}
	return m.kind
}

// tarBytes builds a tar stream of members.
func tarBytes(t testing.TB, members []member) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range members {
		hdr := &tar.Header{Name: m.name, Typeflag: m.typ(), Linkname: m.link, Mode: 0o644}
		if m.typ() == tar.TypeReg {
			hdr.Size = int64(len(m.body))
		}
		if m.typ() == tar.TypeDir {
			hdr.Mode = 0o755
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("writing tar header of %q: %v", m.name, err)
		}
		if m.typ() == tar.TypeReg {
			if _, err := tw.Write([]byte(m.body)); err != nil {
				t.Fatalf("writing tar entry %q: %v", m.name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func tarGz(t testing.TB, members []member) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(tarBytes(t, members)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func tarXz(t testing.TB, members []member) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := xz.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(tarBytes(t, members)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// zipBytes builds a zip archive of members: regular files, directories
// (tar.TypeDir) and, with mode, anything the mode says (symbolic links).
func zipBytes(t testing.TB, members []member) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, m := range members {
		hdr := &zip.FileHeader{Name: m.name, Method: zip.Deflate}
		switch {
		case m.mode != 0:
			hdr.SetMode(m.mode)
		case m.typ() == tar.TypeDir:
			hdr.SetMode(fs.ModeDir | 0o755)
		default:
			hdr.SetMode(0o644)
		}
		w, err := zw.CreateHeader(hdr)
		if err != nil {
			t.Fatalf("writing zip entry %q: %v", m.name, err)
		}
		body := m.body
		if m.mode&fs.ModeSymlink != 0 {
			body = m.link
		}
		if _, err := w.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// formats builds the same members in each archive format Unpack reads.
var formats = []struct {
	name  string
	build func(testing.TB, []member) []byte
}{
	{"tar.gz", tarGz},
	{"tar.xz", tarXz},
	{"zip", zipBytes},
}

// writeTemp writes data to a new file in dir.
func writeTemp(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// readTree returns the regular files under dir (slash paths) with their
// content, and fails t on anything but regular files 0644 and directories
// 0755.
func readTree(t testing.TB, dir string) map[string]string {
	t.Helper()
	got := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case d.IsDir():
			if fi.Mode().Perm() != 0o755 {
				t.Errorf("directory %s has mode %v, want 0755", rel, fi.Mode())
			}
		case d.Type().IsRegular():
			if fi.Mode().Perm() != 0o644 {
				t.Errorf("file %s has mode %v, want 0644", rel, fi.Mode())
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			got[filepath.ToSlash(rel)] = string(b)
		default:
			t.Errorf("%s is a %v, not a regular file or directory", rel, fi.Mode())
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", dir, err)
	}
	return got
}

// sortedKeys returns the keys of m, sorted.
func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// reversingLabsFiles returns the ReversingLabs set's yara directory and
// its rule files, sorted. The set stands beside the repository (in CI
// too); /work/shared is where development machines keep it. Without it t
// skips, and fails under CI=true.
func reversingLabsFiles(t testing.TB) (root string, paths []string) {
	t.Helper()
	for _, root = range []string{"../../shared/rules/reversinglabs/yara", "/work/shared/rules/reversinglabs/yara"} {
		if paths, _ = filepath.Glob(filepath.Join(root, "*", "*.yara")); len(paths) > 0 {
			slices.Sort(paths)
			return root, paths
		}
	}
	if testutil.InCI() {
		t.Fatal("CI=true and the ReversingLabs rule set is not beside the repository (../../shared/rules/reversinglabs/yara)")
	}
	t.Skip("the ReversingLabs rule set is not beside the repository, nor in /work/shared")
	return "", nil
}

// reversingLabs returns up to n rule files of the ReversingLabs set, by
// path relative to its yara directory (see reversingLabsFiles).
func reversingLabs(t testing.TB, n int) map[string]string {
	t.Helper()
	root, paths := reversingLabsFiles(t)
	// Take files from several categories: every len/n-th one.
	step := max(1, len(paths)/n)
	rules := map[string]string{}
	for i := 0; i < len(paths) && len(rules) < n; i += step {
		b, err := os.ReadFile(paths[i])
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, paths[i])
		rules[filepath.ToSlash(rel)] = string(b)
	}
	return rules
}
