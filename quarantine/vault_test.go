package quarantine

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// eicar is the EICAR test file.
const eicar = `X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`

func sumOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func openTemp(t *testing.T, content []byte) *os.File {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, content, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestVaultRoundTrip(t *testing.T) {
	e := newEnv(t)
	big := bytes.Repeat([]byte("0123456789abcdef\x00\xff"), 20000) // several buffers, offsets not on key boundaries
	tests := []struct {
		name    string
		content []byte
	}{
		{"empty", nil},
		{"eicar", []byte(eicar)},
		{"big", big},
		{"zeros", make([]byte, 1000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := openTemp(t, tt.content)
			f.Seek(5, io.SeekStart) // Put reads from 0 whatever the offset
			sum := sumOf(tt.content)
			name, err := e.vault.Put(f, sum)
			if err != nil {
				t.Fatal(err)
			}
			if name != sum+".fgq" {
				t.Errorf("name %q", name)
			}
			got, err := readAll(e.vault, name)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.content) {
				t.Errorf("content differs: %d bytes, want %d", len(got), len(tt.content))
			}
			raw, err := os.ReadFile(filepath.Join(e.vault.Dir(), name))
			if err != nil {
				t.Fatal(err)
			}
			if len(raw) != headerSize+len(tt.content) {
				t.Errorf("vault file %d bytes, want %d", len(raw), headerSize+len(tt.content))
			}
			// No byte of the original stays at its place.
			for i, b := range tt.content {
				if raw[headerSize+i] == b {
					t.Fatalf("byte %d kept as it was", i)
				}
			}
			// Idempotent.
			if name2, err := e.vault.Put(f, sum); err != nil || name2 != name {
				t.Errorf("second Put = %q, %v", name2, err)
			}
		})
	}
}

func TestVaultEICARNotPlain(t *testing.T) {
	e := newEnv(t)
	name, err := e.vault.Put(openTemp(t, []byte(eicar)), sumOf([]byte(eicar)))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(e.vault.Dir(), name))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{eicar, "EICAR", "STANDARD-ANTIVIRUS", "X5O!P"} {
		if bytes.Contains(raw, []byte(s)) {
			t.Errorf("vault file contains %q", s)
		}
	}
	// No run of 4 original bytes anywhere in the file, shifted or not.
	for i := 0; i+4 <= len(eicar); i++ {
		if bytes.Contains(raw, []byte(eicar[i:i+4])) {
			t.Errorf("vault file contains %q", eicar[i:i+4])
		}
	}
}

func TestVaultModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "v")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, VaultName(strings.Repeat("0", 64))), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	v, err := OpenVault(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Put(openTemp(t, []byte("x")), sumOf([]byte("x"))); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(dir)
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("vault dir mode %v, want 0700", fi.Mode().Perm())
	}
	des, _ := os.ReadDir(dir)
	if len(des) != 2 {
		t.Errorf("%d files in the vault, want 2", len(des))
	}
	for _, de := range des {
		fi, _ := de.Info()
		if fi.Mode() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", de.Name(), fi.Mode())
		}
	}

	link := filepath.Join(t.TempDir(), "link")
	os.Symlink(dir, link)
	if _, err := OpenVault(link); err == nil {
		t.Error("OpenVault followed a symbolic link")
	}
}

func TestVaultErrors(t *testing.T) {
	e := newEnv(t)
	content := []byte("some content")
	sum := sumOf(content)
	if _, err := e.vault.Put(openTemp(t, content), sumOf([]byte("other"))); !errors.Is(err, ErrChanged) {
		t.Errorf("Put with a wrong sum = %v, want ErrChanged", err)
	}
	if des, _ := os.ReadDir(e.vault.Dir()); len(des) != 0 {
		t.Errorf("a failed Put left %d files", len(des))
	}
	for _, bad := range []string{"../x", "", sum, strings.ToUpper(sum) + ".fgq"} {
		if _, err := e.vault.Open(bad); !errors.Is(err, ErrNotFound) {
			t.Errorf("Open(%q) = %v, want ErrNotFound", bad, err)
		}
		if err := e.vault.Remove(bad); err == nil {
			t.Errorf("Remove(%q) accepted", bad)
		}
	}
	if _, err := e.vault.Open(VaultName(sum)); !errors.Is(err, ErrNotFound) {
		t.Errorf("Open of a missing file = %v, want ErrNotFound", err)
	}
	name, err := e.vault.Put(openTemp(t, content), sum)
	if err != nil {
		t.Fatal(err)
	}
	size, err := e.vault.Size()
	if err != nil || size != int64(headerSize+len(content)) {
		t.Errorf("Size = %d, %v; want %d", size, err, headerSize+len(content))
	}
	// Damage one byte of the content.
	p := filepath.Join(e.vault.Dir(), name)
	raw, _ := os.ReadFile(p)
	raw[headerSize+3] ^= 1
	os.WriteFile(p, raw, 0o600)
	if _, err := readAll(e.vault, name); !errors.Is(err, ErrCorrupt) {
		t.Errorf("reading a damaged file = %v, want ErrCorrupt", err)
	}
	os.WriteFile(p, raw[:headerSize+2], 0o600)
	if _, err := readAll(e.vault, name); !errors.Is(err, ErrCorrupt) {
		t.Errorf("reading a truncated file = %v, want ErrCorrupt", err)
	}
	os.WriteFile(p, []byte("junk"), 0o600)
	if _, err := e.vault.Open(name); !errors.Is(err, ErrCorrupt) {
		t.Errorf("opening junk = %v, want ErrCorrupt", err)
	}
	if err := e.vault.Remove(name); err != nil {
		t.Fatal(err)
	}
	if err := e.vault.Remove(name); err != nil {
		t.Errorf("removing a missing file: %v", err)
	}
}
