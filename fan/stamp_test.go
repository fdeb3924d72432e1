package fan

import (
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/fanguard/fanguard/internal/testutil"
)

// countingStater is a Stater whose ioctls are counted, and answered by
// fake when it is set.
func countingStater(calls *atomic.Int64, fake func(int32) (uint32, unix.Errno)) *Stater {
	s := &Stater{}
	s.getVersion = func(fd int32) (uint32, unix.Errno) {
		calls.Add(1)
		if fake != nil {
			return fake(fd)
		}
		return getVersion(fd)
	}
	return s
}

// openFiles creates n files in dir and opens them.
func openFiles(t *testing.T, dir string, n int) []*os.File {
	t.Helper()
	var fs []*os.File
	for i := range n {
		p := filepath.Join(dir, "f"+string(rune('a'+i)))
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		fs = append(fs, f)
	}
	return fs
}

// TestStaterLearnsRefusal: on a tmpfs, which has no FS_IOC_GETVERSION,
// the ioctl is made once for all its files; on the filesystem of the
// test's own working directory, when it answers, once per stat; an error
// that is not about the filesystem teaches nothing.
func TestStaterLearnsRefusal(t *testing.T) {
	testutil.RequireRoot(t)
	tmp := testutil.MountTmpfs(t)
	var calls atomic.Int64
	s := countingStater(&calls, nil)
	for range 3 {
		for _, f := range openFiles(t, tmp, 5) {
			fi, err := s.Stat(int32(f.Fd()))
			if err != nil || fi.Stamp.Gen != 0 || fi.Stamp.Size != 1 {
				t.Fatalf("Stat on tmpfs = %+v, %v", fi, err)
			}
			if want, err := StatFd(int32(f.Fd())); err != nil || want != fi {
				t.Errorf("Stat = %+v, StatFd = %+v, %v", fi, want, err)
			}
		}
	}
	if got := calls.Load(); got != 1 {
		t.Errorf("%d ioctls for 15 stats on tmpfs, want 1", got)
	}

	// A filesystem that answers (ext4 or btrfs, where the tests run) is
	// asked every time.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, e := getVersion(int32(f.Fd())); e == 0 {
		calls.Store(0)
		for range 4 {
			if _, err := s.Stat(int32(f.Fd())); err != nil {
				t.Fatal(err)
			}
		}
		if got := calls.Load(); got != 4 {
			t.Errorf("%d ioctls for 4 stats where the filesystem answers, want 4", got)
		}
	} else {
		t.Logf("the filesystem of %s refuses FS_IOC_GETVERSION (%v): not checked", self, e)
	}

	for _, tt := range []struct {
		errno unix.Errno
		want  int64 // ioctls for 4 stats
	}{
		{unix.EIO, 4}, {unix.EINTR, 4}, {unix.ENOMEM, 4},
		{unix.ENOTTY, 1}, {unix.EINVAL, 1}, {unix.EOPNOTSUPP, 1},
	} {
		t.Run(tt.errno.Error(), func(t *testing.T) {
			var calls atomic.Int64
			s := countingStater(&calls, func(int32) (uint32, unix.Errno) { return 0, tt.errno })
			for range 4 {
				if _, err := s.Stat(int32(f.Fd())); err != nil {
					t.Fatal(err)
				}
			}
			if got := calls.Load(); got != tt.want {
				t.Errorf("%d ioctls, want %d", got, tt.want)
			}
		})
	}
}

// TestStaterFull: past noGenSlots refusing mounts nothing more is
// learned, and every key learned is still known.
func TestStaterFull(t *testing.T) {
	var s Stater
	for k := range uint64(noGenSlots + 10) {
		s.learn(k * 7)
	}
	for k := range uint64(noGenSlots) {
		if !s.refuses(k * 7) {
			t.Fatalf("key %d learned but not known", k*7)
		}
	}
	if s.refuses(noGenSlots*7 + 7) {
		t.Error("a key past the bound is known")
	}
	if s.refuses(1) {
		t.Error("a key never learned is known")
	}
}

// BenchmarkStater is the stat the reader makes of each event's file, on
// a tmpfs (which refuses FS_IOC_GETVERSION).
func BenchmarkStater(b *testing.B) {
	testutil.RequireRoot(b)
	tmp := testutil.MountTmpfs(b)
	p := filepath.Join(tmp, "f")
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		b.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	for _, bm := range []struct {
		name string
		stat func(int32) (FileInfo, error)
	}{{"StatFd", StatFd}, {"Stater", new(Stater).Stat}} {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bm.stat(int32(f.Fd())); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestStaterAllocs(t *testing.T) {
	if testutil.RaceEnabled {
		t.Skip("the race detector changes escape analysis")
	}
	f, err := os.Open("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var s Stater
	if a := testing.AllocsPerRun(50, func() { s.Stat(int32(f.Fd())) }); a != 0 {
		t.Errorf("Stat allocates %v times, want 0", a)
	}
}
