package quarantine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/mattn/go-sqlite3"
	"golang.org/x/sys/unix"

	"github.com/fanguard/fanguard/internal/testutil"
)

// mountTiny mounts a tmpfs of size bytes on a new temporary directory,
// unmounted when the test ends.
func mountTiny(t *testing.T, size int) string {
	t.Helper()
	testutil.RequireRoot(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		t.Fatalf("mounting a tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// fill writes a file at path until its filesystem is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return
		}
	}
}

func TestFullClassification(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{sqlite3.Error{Code: sqlite3.ErrFull}, true},
		{sqlite3.Error{Code: sqlite3.ErrIoErr, ExtendedCode: sqlite3.ErrIoErrWrite, SystemErrno: syscall.EDQUOT}, true},
		{sqlite3.Error{Code: sqlite3.ErrIoErr, ExtendedCode: sqlite3.ErrIoErrSHMSize, SystemErrno: syscall.ENOSPC}, true},
		{sqlite3.Error{Code: sqlite3.ErrIoErr, SystemErrno: syscall.EIO}, false},
		{sqlite3.Error{Code: sqlite3.ErrBusy}, false},
		{fmt.Errorf("writing: %w", &os.PathError{Op: "write", Path: "x", Err: syscall.ENOSPC}), true},
		{syscall.EDQUOT, true},
		{syscall.EIO, false},
		{ErrNotFound, false},
		{nil, false},
	}
	for _, tt := range tests {
		err := full(tt.err)
		if got := errors.Is(err, ErrFull); got != tt.want {
			t.Errorf("errors.Is(full(%v), ErrFull) = %v, want %v", tt.err, got, tt.want)
		}
		if tt.err != nil && err.Error() != tt.err.Error() {
			t.Errorf("full(%v) says %q", tt.err, err)
		}
		if tt.err != nil && !errors.Is(err, tt.err) {
			t.Errorf("full(%v) lost its cause", tt.err)
		}
	}
}

// TestFullDisk fills a tiny tmpfs that holds the database: a record that
// cannot be written gives an error wrapping ErrFull, and the store works
// again once there is room.
func TestFullDisk(t *testing.T) {
	dir := mountTiny(t, 512<<10)
	ctx := context.Background()
	s, err := Open(filepath.Join(dir, "q.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	first, err := s.Add(ctx, fullRecord())
	if err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(dir, "filler")
	fill(t, filler)

	var addErr error
	added := 0
	for range 1000 {
		r := fullRecord()
		r.Cmdline = make([]byte, MaxCmdline)
		if _, addErr = s.Add(ctx, r); addErr != nil {
			break
		}
		added++
	}
	if !errors.Is(addErr, ErrFull) {
		t.Fatalf("Add on a full disk = %v, want ErrFull", addErr)
	}
	t.Logf("%d records fitted in the WAL's room, then: %v", added, addErr)
	rerr := s.AddRepeats(ctx, []Repeat{{ID: first, N: 1}})
	if rerr != nil && !errors.Is(rerr, ErrFull) {
		t.Errorf("AddRepeats on a full disk = %v, want nil or ErrFull", rerr)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	id, err := s.Add(ctx, fullRecord())
	if err != nil {
		t.Fatalf("Add once there is room: %v", err)
	}
	if err := s.AddRepeats(ctx, []Repeat{{ID: id, N: 3}}); err != nil {
		t.Fatalf("AddRepeats once there is room: %v", err)
	}
	if err := s.IntegrityCheck(ctx); err != nil {
		t.Fatal(err)
	}
	recs, err := s.List(ctx, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if want := 2 + added; len(recs) != want {
		t.Errorf("%d records, want %d", len(recs), want)
	}
}

// TestFullVault: a move into a vault whose disk is full leaves the file in
// place, the record recorded with why, nothing half-written in the vault,
// and an error wrapping ErrFull; once there is room the move works.
func TestFullVault(t *testing.T) {
	vdir := mountTiny(t, 256<<10)
	e := newEnv(t)
	ctx := context.Background()
	v, err := OpenVault(filepath.Join(vdir, "vault"))
	if err != nil {
		t.Fatal(err)
	}
	m := &Mover{Store: e.store, Vault: v}
	content := eicar + string(make([]byte, 300<<10)) // more than the vault's disk
	p := filepath.Join(e.dir, "big.com")
	r := e.detect(t, []byte(p), content, 0o644)
	err = m.Quarantine(ctx, r.ID, r.Path, r.Dev, r.Ino)
	if !errors.Is(err, ErrFull) {
		t.Fatalf("Quarantine into a full vault = %v, want ErrFull", err)
	}
	got := e.get(t, r.ID)
	if got.State != StateRecorded || historyWhat(got)[0] != EventNotMoved {
		t.Errorf("state %s, history %v", got.State, historyWhat(got))
	}
	if !exists(p) {
		t.Error("the file left its path")
	}
	if des, _ := os.ReadDir(v.Dir()); len(des) != 0 {
		t.Errorf("%d files left in the vault", len(des))
	}

	// Room: a smaller file.
	small := filepath.Join(e.dir, "small.com")
	r2 := e.detect(t, []byte(small), eicar, 0o644)
	if err := m.Quarantine(ctx, r2.ID, r2.Path, r2.Dev, r2.Ino); err != nil {
		t.Fatalf("Quarantine once there is room: %v", err)
	}
}
