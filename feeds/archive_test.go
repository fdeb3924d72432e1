package feeds

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestUnpackReversingLabs packs real rules in each format, as a release
// archive lays them out (a top directory, a README, the rules in
// subdirectories), and checks that all three unpack to the same files.
func TestUnpackReversingLabs(t *testing.T) {
	rules := reversingLabs(t, 8)
	members := []member{
		{name: "reversinglabs-1.0/", kind: tar.TypeDir},
		{name: "reversinglabs-1.0/README.md", body: "# rules\n"},
		{name: "reversinglabs-1.0/yara/", kind: tar.TypeDir},
	}
	want := map[string]string{}
	for _, rel := range sortedKeys(rules) {
		members = append(members, member{name: "reversinglabs-1.0/yara/" + rel, body: rules[rel]})
		want[rel] = rules[rel]
	}
	for _, format := range formats {
		t.Run(format.name, func(t *testing.T) {
			dir := t.TempDir()
			arc := writeTemp(t, dir, "feed", format.build(t, members))
			dst := filepath.Join(dir, "out")
			u, err := Unpack(arc, dst, UnpackOptions{Subdir: "reversinglabs-1.0/yara"})
			if err != nil {
				t.Fatalf("Unpack: %v", err)
			}
			if diff := cmp.Diff(want, readTree(t, dst)); diff != "" {
				t.Errorf("files under dst (-want +got):\n%s", diff)
			}
			var bytes int64
			for _, b := range want {
				bytes += int64(len(b))
			}
			wantU := Unpacked{Files: sortedKeys(want), Bytes: bytes, Skipped: 1}
			if diff := cmp.Diff(wantU, u); diff != "" {
				t.Errorf("Unpacked (-want +got):\n%s", diff)
			}
		})
	}
}

// filterMembers is a synthetic feed for the filter tests.
var filterMembers = []member{
	{name: "top.yar", body: "rule top { condition: false }"},
	{name: "r/", kind: tar.TypeDir},
	{name: "r/a.yar", body: "rule a { condition: false }"},
	{name: "r/b.yara", body: "rule b { condition: false }"},
	{name: "r/README.md", body: "readme"},
	{name: "r/sub/c.yar", body: "rule c { condition: false }"},
	{name: "r/test/t.yar", body: "rule t { condition: false }"},
	{name: "./other/x.yar", body: "rule x { condition: false }"},
}

var filterCases = []struct {
	name        string
	opts        UnpackOptions
	want        []string
	wantSkipped int
}{
	{"defaults", UnpackOptions{},
		[]string{"other/x.yar", "r/a.yar", "r/b.yara", "r/sub/c.yar", "r/test/t.yar", "top.yar"}, 1},
	{"subdir", UnpackOptions{Subdir: "r"},
		[]string{"a.yar", "b.yara", "sub/c.yar", "test/t.yar"}, 3},
	{"subdir with slashes", UnpackOptions{Subdir: "/r/sub/"},
		[]string{"c.yar"}, 6},
	{"include base name", UnpackOptions{Subdir: "r", Include: []string{"*.yar"}},
		[]string{"a.yar", "sub/c.yar", "test/t.yar"}, 4},
	{"include path", UnpackOptions{Subdir: "r", Include: []string{"sub/*.yar"}},
		[]string{"sub/c.yar"}, 6},
	{"exclude path", UnpackOptions{Subdir: "r", Exclude: []string{"test/*"}},
		[]string{"a.yar", "b.yara", "sub/c.yar"}, 4},
	{"exclude base name", UnpackOptions{Exclude: []string{"c.yar", "t.*"}},
		[]string{"other/x.yar", "r/a.yar", "r/b.yara", "top.yar"}, 3},
	{"include everything", UnpackOptions{Subdir: "r", Include: []string{"*"}},
		[]string{"README.md", "a.yar", "b.yara", "sub/c.yar", "test/t.yar"}, 2},
}

func TestUnpackFilters(t *testing.T) {
	bodies := map[string]string{}
	for _, m := range filterMembers {
		bodies[strings.TrimPrefix(m.name, "./")] = m.body
	}
	for _, format := range formats {
		archive := format.build(t, filterMembers)
		for _, tc := range filterCases {
			t.Run(format.name+"/"+tc.name, func(t *testing.T) {
				dir := t.TempDir()
				dst := filepath.Join(dir, "out")
				u, err := Unpack(writeTemp(t, dir, "feed", archive), dst, tc.opts)
				if err != nil {
					t.Fatalf("Unpack: %v", err)
				}
				if diff := cmp.Diff(tc.want, u.Files); diff != "" {
					t.Errorf("Files (-want +got):\n%s", diff)
				}
				if u.Skipped != tc.wantSkipped {
					t.Errorf("Skipped = %d, want %d", u.Skipped, tc.wantSkipped)
				}
				got := readTree(t, dst)
				if diff := cmp.Diff(tc.want, sortedKeys(got)); diff != "" {
					t.Errorf("files under dst (-want +got):\n%s", diff)
				}
				prefix := strings.Trim(tc.opts.Subdir, "/")
				if prefix != "" {
					prefix += "/"
				}
				for rel, body := range got {
					if want := bodies[prefix+rel]; body != want {
						t.Errorf("%s holds %q, want %q", rel, body, want)
					}
				}
			})
		}
	}
}

// bombTarGz builds a tar.gz whose one entry declares 10 GiB and holds
// them: gzip(tar header) followed by one gzip member of 64 MiB of zeros,
// repeated 160 times (gzip streams may hold several members).
func bombTarGz(t testing.TB) []byte {
	t.Helper()
	const size = 10 << 30
	var hdr bytes.Buffer
	tw := tar.NewWriter(&hdr)
	if err := tw.WriteHeader(&tar.Header{Name: "bomb.yar", Typeflag: tar.TypeReg, Mode: 0o644, Size: size}); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	zw.Write(hdr.Bytes())
	zw.Close()

	member := zerosGzipMember(t, 64)
	for range size / (64 << 20) {
		out.Write(member)
	}
	if out.Len() > 20<<20 {
		t.Fatalf("the bomb is %d bytes, not about 10 MB", out.Len())
	}
	return out.Bytes()
}

// zerosGzipMember returns one gzip member holding mib MiB of zeros. It
// compresses 1 MiB once and repeats the result (deflate blocks ending in a
// sync flush can follow one another: each refers only to its own bytes),
// so that building a bomb stays fast under the race detector.
func zerosGzipMember(t testing.TB, mib int) []byte {
	t.Helper()
	zeros := make([]byte, 1<<20)
	var block bytes.Buffer
	fw, _ := flate.NewWriter(&block, flate.BestCompression)
	fw.Write(zeros)
	if err := fw.Flush(); err != nil {
		t.Fatal(err)
	}
	var last bytes.Buffer
	fw, _ = flate.NewWriter(&last, flate.BestCompression)
	fw.Close() // an empty final block
	out := []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff}
	crc := crc32.NewIEEE()
	for range mib {
		out = append(out, block.Bytes()...)
		crc.Write(zeros)
	}
	out = append(out, last.Bytes()...)
	out = binary.LittleEndian.AppendUint32(out, crc.Sum32())
	return binary.LittleEndian.AppendUint32(out, uint32(mib<<20))
}

// lyingZip builds a zip whose one entry declares 10 bytes and inflates to
// n zeros.
func lyingZip(t testing.TB, n int) []byte {
	t.Helper()
	var deflated bytes.Buffer
	fw, _ := flate.NewWriter(&deflated, flate.BestCompression)
	fw.Write(make([]byte, n))
	fw.Close()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.CreateRaw(&zip.FileHeader{
		Name: "lie.yar", Method: zip.Deflate,
		CompressedSize64: uint64(deflated.Len()), UncompressedSize64: 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(deflated.Bytes())
	zw.Close()
	return buf.Bytes()
}

func TestUnpackRefuses(t *testing.T) {
	big := strings.Repeat("x", 600<<10)
	small := UnpackOptions{MaxFileSize: 1 << 20, MaxTotal: 1 << 20}
	cases := []struct {
		name      string
		archive   func(testing.TB) []byte
		opts      UnpackOptions
		wantEntry string
		wantIn    string // in the error besides the entry
	}{
		{"parent", func(t testing.TB) []byte { return tarGz(t, []member{{name: "../x.yar"}}) }, UnpackOptions{}, "../x.yar", `".."`},
		{"absolute", func(t testing.TB) []byte { return tarGz(t, []member{{name: "/etc/x.yar"}}) }, UnpackOptions{}, "/etc/x.yar", "absolute"},
		{"escape after cleaning", func(t testing.TB) []byte {
			return tarGz(t, []member{{name: "a/", kind: tar.TypeDir}, {name: "a/../../x.yar"}})
		}, UnpackOptions{}, "a/../../x.yar", `".."`},
		{"inner parent", func(t testing.TB) []byte { return tarGz(t, []member{{name: "a/../x.yar"}}) }, UnpackOptions{}, "a/../x.yar", `".."`},
		{"backslash", func(t testing.TB) []byte { return tarGz(t, []member{{name: `..\x.yar`}}) }, UnpackOptions{}, `..\x.yar`, "backslash"},
		{"symlink", func(t testing.TB) []byte {
			return tarGz(t, []member{{name: "a.yar", body: "rule a { condition: false }"}, {name: "link.yar", kind: tar.TypeSymlink, link: "/etc/passwd"}})
		}, UnpackOptions{}, "link.yar", "symbolic link"},
		{"hard link", func(t testing.TB) []byte {
			return tarGz(t, []member{{name: "a.yar"}, {name: "hard.yar", kind: tar.TypeLink, link: "a.yar"}})
		}, UnpackOptions{}, "hard.yar", "hard link"},
		{"char device", func(t testing.TB) []byte { return tarGz(t, []member{{name: "null.yar", kind: tar.TypeChar}}) }, UnpackOptions{}, "null.yar", "character device"},
		{"block device", func(t testing.TB) []byte { return tarGz(t, []member{{name: "sda.yar", kind: tar.TypeBlock}}) }, UnpackOptions{}, "sda.yar", "block device"},
		{"FIFO", func(t testing.TB) []byte { return tarGz(t, []member{{name: "fifo.yar", kind: tar.TypeFifo}}) }, UnpackOptions{}, "fifo.yar", "FIFO"},
		{"duplicate", func(t testing.TB) []byte {
			return tarGz(t, []member{{name: "a.yar", body: "one"}, {name: "./a.yar", body: "two"}})
		}, UnpackOptions{}, "./a.yar", "duplicate"},
		{"file then directory", func(t testing.TB) []byte {
			return tarGz(t, []member{{name: "a", body: "file"}, {name: "a/b.yar"}})
		}, UnpackOptions{}, "a/b.yar", "also a directory"},
		{"directory then file", func(t testing.TB) []byte {
			return tarGz(t, []member{{name: "a/b.yar"}, {name: "a"}})
		}, UnpackOptions{}, "a", "duplicate"},
		{"too many entries", func(t testing.TB) []byte {
			return tarGz(t, []member{{name: "1.yar"}, {name: "2.yar"}, {name: "d/", kind: tar.TypeDir}, {name: "d/3.yar"}})
		}, UnpackOptions{MaxEntries: 3}, "d/3.yar", "more than 3 entries"},
		{"file declared too large", func(t testing.TB) []byte { return tarGz(t, []member{{name: "big.yar", body: big}}) }, UnpackOptions{MaxFileSize: 100 << 10}, "big.yar", "declares"},
		{"skipped file counts toward the total", func(t testing.TB) []byte {
			return tarGz(t, []member{{name: "a.bin", body: big}, {name: "b.bin", body: big}, {name: "c.yar", body: "x"}})
		}, small, "b.bin", "limit in all"},
		{"10 GiB bomb", bombTarGz, UnpackOptions{}, "bomb.yar", "declares 10737418240 bytes"},
		{"10 GiB bomb, bytes counted", bombTarGz, UnpackOptions{MaxFileSize: 1 << 40, MaxTotal: 1 << 20}, "bomb.yar", "limit in all"},
		{"xz parent", func(t testing.TB) []byte { return tarXz(t, []member{{name: "../x.yar"}}) }, UnpackOptions{}, "../x.yar", `".."`},
		{"xz symlink", func(t testing.TB) []byte { return tarXz(t, []member{{name: "l", kind: tar.TypeSymlink, link: "/"}}) }, UnpackOptions{}, "l", "symbolic link"},
		{"zip parent", func(t testing.TB) []byte { return zipBytes(t, []member{{name: "../x.yar"}}) }, UnpackOptions{}, "../x.yar", `".."`},
		{"zip absolute", func(t testing.TB) []byte { return zipBytes(t, []member{{name: "/etc/x.yar"}}) }, UnpackOptions{}, "/etc/x.yar", "absolute"},
		{"zip NUL", func(t testing.TB) []byte { return zipBytes(t, []member{{name: "a\x00.yar"}}) }, UnpackOptions{}, "a\x00.yar", "NUL"},
		{"zip symlink", func(t testing.TB) []byte {
			return zipBytes(t, []member{{name: "link.yar", link: "/etc/passwd", mode: fs.ModeSymlink | 0o777}})
		}, UnpackOptions{}, "link.yar", "symbolic link"},
		{"zip FIFO", func(t testing.TB) []byte {
			return zipBytes(t, []member{{name: "p.yar", mode: fs.ModeNamedPipe | 0o644}})
		}, UnpackOptions{}, "p.yar", "FIFO"},
		{"zip duplicate", func(t testing.TB) []byte {
			return zipBytes(t, []member{{name: "a.yar", body: "one"}, {name: "a.yar", body: "two"}})
		}, UnpackOptions{}, "a.yar", "duplicate"},
		{"zip too many entries", func(t testing.TB) []byte {
			return zipBytes(t, []member{{name: "1.yar"}, {name: "2.yar"}, {name: "3.yar"}})
		}, UnpackOptions{MaxEntries: 2}, "3.yar", "more than 2 entries"},
		{"zip total", func(t testing.TB) []byte {
			return zipBytes(t, []member{{name: "a.yar", body: big}, {name: "b.yar", body: big}})
		}, small, "b.yar", "limit in all"},
		{"zip lies about its size", func(t testing.TB) []byte { return lyingZip(t, 2<<20) }, small, "lie.yar", "longer than declared"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			arc := writeTemp(t, dir, "feed", tc.archive(t))
			dst := filepath.Join(dir, "out")
			_, err := Unpack(arc, dst, tc.opts)
			var unsafe *UnsafeEntryError
			if !errors.As(err, &unsafe) {
				t.Fatalf("Unpack: got error %v, want an *UnsafeEntryError", err)
			}
			if unsafe.Entry != tc.wantEntry {
				t.Errorf("refused entry %q, want %q (error %v)", unsafe.Entry, tc.wantEntry, err)
			}
			if msg := err.Error(); !strings.Contains(msg, tc.wantIn) || !strings.Contains(msg, arc) {
				t.Errorf("error %q does not say %q and name the archive", msg, tc.wantIn)
			}
			checkOnly(t, dir, "feed")
		})
	}
}

// checkOnly fails t unless dir holds exactly the names given.
func checkOnly(t testing.TB, dir string, names ...string) {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, de := range des {
		got = append(got, de.Name())
	}
	if diff := cmp.Diff(names, got); diff != "" {
		t.Errorf("%s holds (-want +got):\n%s", dir, diff)
	}
}

func TestUnpackNotAnArchive(t *testing.T) {
	for _, tc := range []struct{ name, content, want string }{
		{"text", "rule a { condition: true }\n", `"rule a {"`},
		{"empty", "", `""`},
		{"gzip without tar", "", "reading tar"},
		{"truncated gzip", "\x1f\x8b\x08\x00", "reading gzip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			content := []byte(tc.content)
			if tc.name == "gzip without tar" {
				var buf bytes.Buffer
				zw := gzip.NewWriter(&buf)
				zw.Write([]byte("just some text, not a tar stream, long enough to be read as a header block"))
				zw.Close()
				content = buf.Bytes()
			}
			arc := writeTemp(t, dir, "feed", content)
			_, err := Unpack(arc, filepath.Join(dir, "out"), UnpackOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Unpack: got error %v, want one saying %s", err, tc.want)
			}
			checkOnly(t, dir, "feed")
		})
	}
}

func TestUnpackXzDictionary(t *testing.T) {
	// An xz stream whose block asks for a 1.5 GiB dictionary, which the
	// decoder would allocate before reading anything.
	good := tarXz(t, []member{{name: "a.yar", body: "rule a { condition: false }"}})
	// Stream header (12 bytes), block header: size, flags, filter id 0x21,
	// properties size 1, dictionary byte.
	if good[12+2] != 0x21 || good[12+3] != 1 {
		t.Fatalf("unexpected xz block header % x", good[12:20])
	}
	bad := bytes.Clone(good)
	bad[12+4] = 39 // 3 << 30
	dir := t.TempDir()
	_, err := Unpack(writeTemp(t, dir, "feed", bad), filepath.Join(dir, "out"), UnpackOptions{})
	if err == nil || !strings.Contains(err.Error(), "dictionary") {
		t.Fatalf("Unpack: got error %v, want one about the dictionary", err)
	}
	checkOnly(t, dir, "feed")
}

func TestUnpackDestinationExists(t *testing.T) {
	dir := t.TempDir()
	arc := writeTemp(t, dir, "feed", tarGz(t, filterMembers))
	dst := filepath.Join(dir, "out")
	if err := os.Mkdir(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	keep := writeTemp(t, dst, "keep", []byte("mine"))
	if _, err := Unpack(arc, dst, UnpackOptions{}); err == nil {
		t.Fatal("Unpack into an existing directory: no error")
	}
	if b, err := os.ReadFile(keep); err != nil || string(b) != "mine" {
		t.Errorf("the existing destination was changed: %q, %v", b, err)
	}
}

func TestUnpackMissingSubdir(t *testing.T) {
	dir := t.TempDir()
	arc := writeTemp(t, dir, "feed", tarGz(t, filterMembers))
	_, err := Unpack(arc, filepath.Join(dir, "out"), UnpackOptions{Subdir: "rules"})
	if err == nil || !strings.Contains(err.Error(), `"rules" is not in the archive`) {
		t.Fatalf("Unpack: got error %v, want one naming the missing subdirectory", err)
	}
	checkOnly(t, dir, "feed")
}

// makeTree writes members (regular files and directories) under a new
// directory and returns it.
func makeTree(t testing.TB, members []member) string {
	t.Helper()
	root := t.TempDir()
	for _, m := range members {
		p := filepath.Join(root, filepath.FromSlash(m.name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if m.typ() == tar.TypeDir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(p, []byte(m.body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestCopyTreeFilters(t *testing.T) {
	src := makeTree(t, filterMembers)
	for _, tc := range filterCases {
		t.Run(tc.name, func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "out")
			u, err := CopyTree(src, dst, tc.opts)
			if err != nil {
				t.Fatalf("CopyTree: %v", err)
			}
			if diff := cmp.Diff(tc.want, u.Files); diff != "" {
				t.Errorf("Files (-want +got):\n%s", diff)
			}
			if u.Skipped != tc.wantSkipped {
				t.Errorf("Skipped = %d, want %d", u.Skipped, tc.wantSkipped)
			}
			if diff := cmp.Diff(tc.want, sortedKeys(readTree(t, dst))); diff != "" {
				t.Errorf("files under dst (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCopyTreeReversingLabs(t *testing.T) {
	rules := reversingLabs(t, 8)
	var members []member
	for rel, body := range rules {
		members = append(members, member{name: "yara/" + rel, body: body})
	}
	src := makeTree(t, append(members, member{name: "README.md", body: "readme"}))
	// A feed directory given through a symbolic link is fine.
	link := filepath.Join(t.TempDir(), "feed")
	if err := os.Symlink(src, link); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "out")
	u, err := CopyTree(link, dst, UnpackOptions{Subdir: "yara"})
	if err != nil {
		t.Fatalf("CopyTree: %v", err)
	}
	if diff := cmp.Diff(rules, readTree(t, dst)); diff != "" {
		t.Errorf("files under dst (-want +got):\n%s", diff)
	}
	if u.Skipped != 1 {
		t.Errorf("Skipped = %d, want 1", u.Skipped)
	}
}

func TestCopyTreeRefuses(t *testing.T) {
	cases := []struct {
		name      string
		plant     func(t *testing.T, root string)
		opts      UnpackOptions
		wantEntry string
		wantIn    string
	}{
		{"symlink", func(t *testing.T, root string) {
			if err := os.Symlink("/etc/passwd", filepath.Join(root, "r", "link.yar")); err != nil {
				t.Fatal(err)
			}
		}, UnpackOptions{}, "r/link.yar", "symbolic link"},
		{"symlink to a directory", func(t *testing.T, root string) {
			if err := os.Symlink("/etc", filepath.Join(root, "etc")); err != nil {
				t.Fatal(err)
			}
		}, UnpackOptions{}, "etc", "symbolic link"},
		{"FIFO", func(t *testing.T, root string) {
			if err := syscall.Mkfifo(filepath.Join(root, "r", "fifo.yar"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, UnpackOptions{}, "r/fifo.yar", "FIFO"},
		{"too many entries", func(t *testing.T, root string) {}, UnpackOptions{MaxEntries: 4}, "", "more than 4 entries"},
		{"file too large", func(t *testing.T, root string) {
			writeTemp(t, filepath.Join(root, "r"), "big.yar", make([]byte, 2000))
		}, UnpackOptions{MaxFileSize: 1000}, "r/big.yar", "more than the limit of 1000"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := makeTree(t, filterMembers)
			tc.plant(t, src)
			dir := t.TempDir()
			_, err := CopyTree(src, filepath.Join(dir, "out"), tc.opts)
			var unsafe *UnsafeEntryError
			if !errors.As(err, &unsafe) {
				t.Fatalf("CopyTree: got error %v, want an *UnsafeEntryError", err)
			}
			if tc.wantEntry != "" && unsafe.Entry != tc.wantEntry {
				t.Errorf("refused entry %q, want %q", unsafe.Entry, tc.wantEntry)
			}
			if !strings.Contains(err.Error(), tc.wantIn) {
				t.Errorf("error %q does not say %q", err, tc.wantIn)
			}
			checkOnly(t, dir)
		})
	}
}

func TestZerosGzipMember(t *testing.T) {
	zr, err := gzip.NewReader(bytes.NewReader(zerosGzipMember(t, 3)))
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, zr)
	if err != nil || n != 3<<20 {
		t.Fatalf("the member decompresses to %d bytes (%v), want %d", n, err, 3<<20)
	}
}

func TestUnpackLongNames(t *testing.T) {
	long := "r/" + strings.Repeat("deep-directory-name/", 8) + strings.Repeat("n", 120) + ".yar"
	for _, format := range []tar.Format{tar.FormatPAX, tar.FormatGNU} {
		t.Run(format.String(), func(t *testing.T) {
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			tw := tar.NewWriter(zw)
			body := "rule long { condition: false }"
			if err := tw.WriteHeader(&tar.Header{Name: long, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body)), Format: format}); err != nil {
				t.Fatal(err)
			}
			tw.Write([]byte(body))
			tw.Close()
			zw.Close()
			dir := t.TempDir()
			dst := filepath.Join(dir, "out")
			u, err := Unpack(writeTemp(t, dir, "feed", buf.Bytes()), dst, UnpackOptions{Subdir: "r"})
			if err != nil {
				t.Fatalf("Unpack: %v", err)
			}
			want := map[string]string{strings.TrimPrefix(long, "r/"): body}
			if diff := cmp.Diff(want, readTree(t, dst)); diff != "" {
				t.Errorf("files under dst (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(sortedKeys(want), u.Files); diff != "" {
				t.Errorf("Files (-want +got):\n%s", diff)
			}
		})
	}
}
