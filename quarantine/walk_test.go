package quarantine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fanguard/fanguard/internal/testutil"
)

func TestLocalFS(t *testing.T) {
	tests := []struct {
		name  string
		magic uint64
		want  bool
	}{
		{"ext4", unix.EXT4_SUPER_MAGIC, true},
		{"xfs", unix.XFS_SUPER_MAGIC, true},
		{"btrfs", unix.BTRFS_SUPER_MAGIC, true},
		{"tmpfs", unix.TMPFS_MAGIC, true},
		{"ramfs", unix.RAMFS_MAGIC, true},
		{"vfat", unix.MSDOS_SUPER_MAGIC, true},
		{"exfat", unix.EXFAT_SUPER_MAGIC, true},
		{"f2fs", unix.F2FS_SUPER_MAGIC, true},
		{"iso9660", unix.ISOFS_SUPER_MAGIC, true},
		{"fuse", unix.FUSE_SUPER_MAGIC, false},
		{"nfs", unix.NFS_SUPER_MAGIC, false},
		{"cifs", unix.CIFS_SUPER_MAGIC, false},
		{"smb3", unix.SMB2_SUPER_MAGIC, false},
		{"9p", unix.V9FS_MAGIC, false},
		{"ceph", unix.CEPH_SUPER_MAGIC, false},
		{"overlay", unix.OVERLAYFS_SUPER_MAGIC, false},
		{"autofs", unix.AUTOFS_SUPER_MAGIC, false},
		{"proc", unix.PROC_SUPER_MAGIC, false},
		{"sysfs", unix.SYSFS_MAGIC, false},
		{"unknown", 0x12345678, false},
	}
	for _, tt := range tests {
		if got := localFS(tt.magic); got != tt.want {
			t.Errorf("localFS(%s) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// requireStatmount skips a test on a kernel that cannot tell a
// filesystem's type without asking it (before Linux 6.8).
func requireStatmount(t *testing.T) {
	t.Helper()
	fd, err := unix.Open("/", unix.O_PATH, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if _, err := fsMagic(fd); errors.Is(err, unix.ENOSYS) {
		t.Skipf("statmount: %v", err)
	}
}

// TestCheckLocal asks the kernel about real directories.
func TestCheckLocal(t *testing.T) {
	requireStatmount(t)
	tests := []struct {
		dir  string
		want error
	}{
		{t.TempDir(), nil},
		{"/proc/self", ErrNotLocal},
		{"/sys/kernel", ErrNotLocal},
	}
	if os.Geteuid() == 0 {
		tests = append(tests, struct {
			dir  string
			want error
		}{mountTiny(t, 1<<20), nil})
	}
	for _, tt := range tests {
		fd, err := unix.Open(tt.dir, unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		err = checkLocal(fd, tt.dir)
		unix.Close(fd)
		if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
			t.Errorf("checkLocal(%s) = %v, want %v", tt.dir, err, tt.want)
		}
	}
}

// mountHungFUSE mounts on dir a FUSE filesystem whose server never
// answers (not even the kernel's first request, INIT): every request to it
// waits until the test ends and the device is closed.
func mountHungFUSE(t *testing.T, dir string) {
	t.Helper()
	testutil.RequireRoot(t)
	fuse, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if testutil.InCI() {
			t.Fatalf("opening /dev/fuse: %v", err)
		}
		t.Skipf("opening /dev/fuse: %v", err)
	}
	opts := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other", fuse)
	if err := unix.Mount("hung", dir, "fuse.hung", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		unix.Close(fuse)
		t.Fatalf("mounting FUSE on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		unix.Close(fuse) // aborts the connection: whatever waits on it fails
		unix.Unmount(dir, unix.MNT_DETACH)
	})
}

// within runs f and fails the test if it has not returned after d.
func within(t *testing.T, d time.Duration, what string, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("%s still waits after %v: held by the FUSE server", what, d)
		return nil
	}
}

// TestMoveNeverWaitsOnFUSE: the opener swaps the directory of its
// detected file for a FUSE mount whose server never answers. The move
// gives up at once, the file stays (denied) where it is, and the record
// says why; with a plain path walk it would wait forever.
func TestMoveNeverWaitsOnFUSE(t *testing.T) {
	requireStatmount(t)
	ctx := context.Background()
	tests := []struct {
		name string
		// under returns the detected path under the FUSE mount point mnt
		under func(mnt string) string
	}{
		{"file in the mount's root", func(mnt string) string { return filepath.Join(mnt, "x.com") }},
		{"file deeper in the mount", func(mnt string) string { return filepath.Join(mnt, "sub", "dir", "x.com") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			work := filepath.Join(e.dir, "a")
			os.Mkdir(work, 0o755)
			p := tt.under(work)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			r := e.detect(t, []byte(p), eicar, 0o644)
			// The swap: the real directory moves away, the mount takes its
			// place.
			if err := os.Rename(work, work+".real"); err != nil {
				t.Fatal(err)
			}
			os.Mkdir(work, 0o755)
			mountHungFUSE(t, work)

			err := within(t, 5*time.Second, "Quarantine", func() error {
				return e.mover.Quarantine(ctx, r.ID, r.Path, r.Dev, r.Ino)
			})
			if !errors.Is(err, ErrNotLocal) {
				t.Fatalf("Quarantine = %v, want ErrNotLocal", err)
			}
			got := e.get(t, r.ID)
			h := got.History[len(got.History)-1]
			if got.State != StateRecorded || h.What != EventNotMoved || !strings.Contains(h.Detail, "FUSE") {
				t.Errorf("state %s, last event %s %q", got.State, h.What, h.Detail)
			}
			moved := strings.Replace(p, work, work+".real", 1)
			if b, err := os.ReadFile(moved); err != nil || string(b) != eicar {
				t.Errorf("the file at %s: %q, %v", moved, b, err)
			}
			// Recover, at the next start, does not wait either.
			e.store.SetState(ctx, r.ID, StateQuarantining, "")
			if err := within(t, 5*time.Second, "Recover", func() error { return e.mover.Recover(ctx) }); err != nil {
				t.Errorf("Recover: %v", err)
			}
		})
	}
}

// TestMoveFromColdCache: a path whose dentries the kernel dropped is
// walked component by component through local filesystems, and the move
// succeeds.
func TestMoveFromColdCache(t *testing.T) {
	testutil.RequireRoot(t)
	requireStatmount(t)
	e := newEnv(t)
	ctx := context.Background()
	p := filepath.Join(e.dir, "cold", "deeper", "x.com")
	os.MkdirAll(filepath.Dir(p), 0o755)
	r := e.detect(t, []byte(p), eicar, 0o644)
	// Drop the unused dentries and inodes, these among them.
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0o200); err != nil {
		t.Skipf("dropping the dentry cache: %v", err)
	}
	fd, err := unix.Openat2(unix.AT_FDCWD, filepath.Dir(p), &unix.OpenHow{Flags: unix.O_PATH, Resolve: resolveCached})
	if err == nil {
		unix.Close(fd)
		t.Log("the path was back in the cache: the component walk is not exercised")
	} else if !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("a cached lookup of a dropped path: %v, want EAGAIN", err)
	}
	if err := e.mover.Quarantine(ctx, r.ID, r.Path, r.Dev, r.Ino); err != nil {
		t.Fatal(err)
	}
	if exists(p) {
		t.Error("the original is still there")
	}
}
