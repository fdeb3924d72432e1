package feeds

import (
	"archive/tar"
	"crypto/rand"
	"errors"
	"io/fs"
	"path/filepath"
	"slices"
	"testing"

	"aead.dev/minisign"
)

// FuzzUnpack unpacks arbitrary bytes with small limits: it must never
// panic, never write outside dst, leave nothing when it fails, and write
// only regular files and directories, exactly those it reports.
func FuzzUnpack(f *testing.F) {
	seeds := [][]member{
		filterMembers,
		{{name: "../x.yar", body: "x"}},
		{{name: "a/", kind: tar.TypeDir}, {name: "a/b.yar", body: "b"}, {name: "a/l", kind: tar.TypeSymlink, link: "../../etc"}},
		{{name: "a.yar", body: "1"}, {name: "a.yar", body: "2"}},
		{{name: "h", kind: tar.TypeLink, link: "a.yar"}},
	}
	for _, s := range seeds {
		f.Add(tarGz(f, s))
		f.Add(tarXz(f, s))
		f.Add(zipBytes(f, s))
	}
	f.Add(tarBytes(f, filterMembers))
	f.Add(lyingZip(f, 100000))
	f.Add([]byte("PK\x03\x04"))
	f.Add([]byte{0x1f, 0x8b})
	f.Add([]byte{0xfd, '7', 'z', 'X', 'Z', 0})
	opts := UnpackOptions{MaxEntries: 64, MaxFileSize: 64 << 10, MaxTotal: 1 << 20, Include: []string{"*"}}
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		arc := writeTemp(t, dir, "in", data)
		dst := filepath.Join(dir, "out")
		u, err := Unpack(arc, dst, opts)
		if err != nil {
			checkOnly(t, dir, "in")
			var unsafe *UnsafeEntryError
			if errors.As(err, &unsafe) && unsafe.Reason == "" {
				t.Errorf("refusal without a reason: %v", err)
			}
			return
		}
		checkOnly(t, dir, "in", "out")
		var files []string
		var n int64
		walkErr := filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			switch {
			case d.IsDir():
			case d.Type().IsRegular():
				fi, err := d.Info()
				if err != nil {
					return err
				}
				if fi.Size() > opts.MaxFileSize {
					t.Errorf("%s is %d bytes, over the limit", p, fi.Size())
				}
				n += fi.Size()
				rel, _ := filepath.Rel(dst, p)
				files = append(files, filepath.ToSlash(rel))
			default:
				t.Errorf("%s is a %v", p, d.Type())
			}
			return nil
		})
		if walkErr != nil {
			t.Fatal(walkErr)
		}
		slices.Sort(files)
		if !slices.Equal(files, u.Files) || n != u.Bytes {
			t.Errorf("Unpack reported %v (%d bytes), dst holds %v (%d bytes)", u.Files, u.Bytes, files, n)
		}
		if n > opts.MaxTotal {
			t.Errorf("%d bytes written, over MaxTotal", n)
		}
	})
}

// FuzzVerifyMinisign checks that no signature text makes VerifyMinisign
// panic or accept a file the key did not sign.
func FuzzVerifyMinisign(f *testing.F) {
	pub, priv, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	file := writeTemp(f, f.TempDir(), "feed", []byte("signed content"))
	f.Add(minisign.Sign(priv, []byte("other content")))
	f.Add([]byte("untrusted comment: x\n\ntrusted comment: y\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, sig []byte) {
		if err := VerifyMinisign(pub.String(), file, sig); err == nil {
			t.Errorf("signature %q verifies a file the key never signed", sig)
		}
	})
}
