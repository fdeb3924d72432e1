package fan

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/fanguard/fanguard/internal/testutil"
)

func TestParseMountInfo(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []Mount
	}{{
		name: "no optional fields",
		in:   "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard\n",
		want: []Mount{{ID: 27, ParentID: 1, Dev: unix.Mkdev(254, 0), Root: "/", Point: "/", FSType: "ext4", Source: "/dev/vda", Options: "rw,relatime"}},
	}, {
		name: "optional fields",
		in:   "36 35 98:0 /mnt1 /mnt/parent rw,noatime shared:1 master:2 propagate_from:3 unbindable - ext3 /dev/root rw,errors=continue",
		want: []Mount{{ID: 36, ParentID: 35, Dev: unix.Mkdev(98, 0), Root: "/mnt1", Point: "/mnt/parent", FSType: "ext3", Source: "/dev/root", Options: "rw,noatime"}},
	}, {
		name: "escapes",
		in:   `40 27 0:40 /a\134b /mnt/with\040space\011tab\012nl rw - tmpfs my\040src rw` + "\n",
		want: []Mount{{ID: 40, ParentID: 27, Dev: unix.Mkdev(0, 40), Root: `/a\b`, Point: "/mnt/with space\ttab\nnl", FSType: "tmpfs", Source: "my src", Options: "rw"}},
	}, {
		name: "backslash not followed by three octal digits is kept",
		in:   `40 27 0:40 / /m\9\12\777 rw - tmpfs x\ rw`,
		want: []Mount{{ID: 40, ParentID: 27, Dev: unix.Mkdev(0, 40), Root: "/", Point: `/m\9\12\777`, FSType: "tmpfs", Source: `x\`, Options: "rw"}},
	}, {
		name: "empty source",
		in:   "41 27 0:41 / /mnt rw - tmpfs  rw,size=4k",
		want: []Mount{{ID: 41, ParentID: 27, Dev: unix.Mkdev(0, 41), Root: "/", Point: "/mnt", FSType: "tmpfs", Options: "rw"}},
	}, {
		name: "nsfs root and fuse subtype",
		in: "50 22 0:4 net:[4026531840] /run/netns/x rw shared:5 - nsfs nsfs rw\n" +
			"51 27 0:52 / /home/u/remote rw,nosuid,nodev - fuse.sshfs u@h:/ rw,user_id=0\n",
		want: []Mount{
			{ID: 50, ParentID: 22, Dev: unix.Mkdev(0, 4), Root: "net:[4026531840]", Point: "/run/netns/x", FSType: "nsfs", Source: "nsfs", Options: "rw"},
			{ID: 51, ParentID: 27, Dev: unix.Mkdev(0, 52), Root: "/", Point: "/home/u/remote", FSType: "fuse.sshfs", Source: "u@h:/", Options: "rw,nosuid,nodev"},
		},
	}, {
		name: "large device numbers",
		in:   "60 27 4095:1048575 / /big rw - xfs /dev/big rw",
		want: []Mount{{ID: 60, ParentID: 27, Dev: unix.Mkdev(4095, 1048575), Root: "/", Point: "/big", FSType: "xfs", Source: "/dev/big", Options: "rw"}},
	}, {
		name: "empty lines skipped",
		in:   "\n27 1 8:1 / / rw - ext4 /dev/sda1 rw\n\n",
		want: []Mount{{ID: 27, ParentID: 1, Dev: unix.Mkdev(8, 1), Root: "/", Point: "/", FSType: "ext4", Source: "/dev/sda1", Options: "rw"}},
	}, {
		name: "empty",
		in:   "",
		want: []Mount{},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMountInfo([]byte(tt.in))
			if err != nil {
				t.Fatalf("ParseMountInfo: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseMountInfo mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseMountInfoMalformed(t *testing.T) {
	const good = "27 1 254:0 / / rw - ext4 /dev/vda rw\n"
	tests := []struct {
		name    string
		line    string
		wantErr string
	}{
		{"too few fields", "27 1 254:0 / / rw - ext4", "8 fields, want at least 10"},
		{"no separator", "27 1 254:0 / / rw shared:1 ext4 /dev/vda rw x", `no "-" separator`},
		{"nothing after separator", "27 1 254:0 / / rw a b c -", "0 fields after the separator"},
		{"separator in the options field", "27 1 254:0 / / - ext4 /dev/vda rw x", `no "-" separator`},
		{"bad mount ID", "x 1 254:0 / / rw - ext4 /dev/vda rw", "parsing mount ID"},
		{"negative mount ID", "-27 1 254:0 / / rw - ext4 /dev/vda rw", "parsing mount ID"},
		{"huge mount ID", "2147483648 1 254:0 / / rw - ext4 /dev/vda rw", "parsing mount ID"},
		{"bad parent ID", "27 +1 254:0 / / rw - ext4 /dev/vda rw", "parsing parent mount ID"},
		{"device without colon", "27 1 2540 / / rw - ext4 /dev/vda rw", "parsing device number"},
		{"bad minor", "27 1 254:x / / rw - ext4 /dev/vda rw", "parsing device number"},
		{"relative mount point", "27 1 254:0 / mnt rw - ext4 /dev/vda rw", "not an absolute path"},
		{"empty mount point", "27 1 254:0 /  rw - ext4 /dev/vda rw", "not an absolute path"},
		{"empty type", "27 1 254:0 / / rw -  /dev/vda rw", "empty filesystem type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMountInfo([]byte(good + tt.line + "\n" + good))
			if err == nil {
				t.Fatalf("ParseMountInfo = %v, want an error", got)
			}
			if got != nil {
				t.Errorf("ParseMountInfo returned %d mounts with its error, want none", len(got))
			}
			if !strings.Contains(err.Error(), "line 2:") || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q, want it to name line 2 and contain %q", err, tt.wantErr)
			}
		})
	}
}

// formatMountInfo writes mounts back in mountinfo format, escaping as the
// kernel does.
func formatMountInfo(mounts []Mount) []byte {
	esc := strings.NewReplacer(`\`, `\134`, " ", `\040`, "\t", `\011`, "\n", `\012`)
	var b strings.Builder
	for _, m := range mounts {
		fmt.Fprintf(&b, "%d %d %d:%d %s %s %s shared:7 - %s %s rw\n",
			m.ID, m.ParentID, unix.Major(m.Dev), unix.Minor(m.Dev),
			esc.Replace(m.Root), esc.Replace(m.Point), m.Options,
			esc.Replace(m.FSType), esc.Replace(m.Source))
	}
	return []byte(b.String())
}

func FuzzParseMountInfo(f *testing.F) {
	if data, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		f.Add(data)
	} else {
		f.Errorf("reading /proc/self/mountinfo: %v", err)
	}
	for _, s := range []string{
		"",
		"\n\n",
		"36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n",
		`40 27 0:40 /a\134b /m\040n\011t\012 rw - tmpfs s\040rc rw`,
		"41 27 0:41 / /mnt rw - tmpfs  rw",
		"41 27 0:41 / /mnt rw - - - -",
		"1 2 3:4 - / - - a b c",
		`1 2 3:4 / /\ rw - t \1 \12 \123 \777`,
		"1 2 3:4 / / rw a b c d e f - t s o x y",
		"1 2 3 4 5 6 7 8 9",
		"4294967296 1 1:1 / / rw - t s o",
		"1 1 4294967295:4294967295 / / rw - t s o",
		"1 1 1:1 / / rw - t s o\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		mounts, err := ParseMountInfo(data)
		if err != nil {
			if mounts != nil {
				t.Fatalf("ParseMountInfo returned mounts and error %v", err)
			}
			return
		}
		for _, m := range mounts {
			if !strings.HasPrefix(m.Point, "/") {
				t.Fatalf("mount point %q does not start with /", m.Point)
			}
			if m.FSType == "" {
				t.Fatalf("mount %d has an empty type", m.ID)
			}
		}
		// What was parsed survives being written back and parsed again.
		again, err := ParseMountInfo(formatMountInfo(mounts))
		if err != nil {
			t.Fatalf("parsing the formatted mounts: %v", err)
		}
		if diff := cmp.Diff(mounts, again); diff != "" {
			t.Fatalf("round trip mismatch (-first +again):\n%s", diff)
		}
	})
}

func TestMountWatcherMounts(t *testing.T) {
	w := newTestWatcher(t)
	got, err := w.Mounts()
	if err != nil {
		t.Fatalf("Mounts: %v", err)
	}
	var root *Mount
	for i := range got {
		if got[i].Point == "/" {
			root = &got[i]
		}
	}
	if root == nil {
		t.Fatalf("Mounts returned no mount on /: %v", got)
	}
	var st unix.Stat_t
	if err := unix.Stat("/", &st); err != nil {
		t.Fatal(err)
	}
	// btrfs reports a subvolume's own device in st_dev.
	if root.FSType != "btrfs" && root.Dev != st.Dev {
		t.Errorf("mount on / has device %d:%d, stat / says %d:%d", unix.Major(root.Dev), unix.Minor(root.Dev), unix.Major(st.Dev), unix.Minor(st.Dev))
	}
	// A second read starts again from the beginning.
	again, err := w.Mounts()
	if err != nil {
		t.Fatalf("Mounts again: %v", err)
	}
	if len(again) != len(got) {
		t.Errorf("second Mounts returned %d mounts, first %d", len(again), len(got))
	}
}

func TestMountWatcherClose(t *testing.T) {
	before := countFds(t)
	w, err := NewMountWatcher()
	if err != nil {
		t.Fatalf("NewMountWatcher: %v", err)
	}
	waits := make([]<-chan error, 3)
	for i := range waits {
		waits[i] = waitAsync(w)
	}
	time.Sleep(50 * time.Millisecond) // let the Waits block in poll
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, done := range waits {
		select {
		case err := <-done:
			if !errors.Is(err, os.ErrClosed) {
				t.Errorf("Wait after Close = %v, want os.ErrClosed", err)
			}
		case <-time.After(time.Second):
			t.Fatal("Wait still blocked 1 s after Close")
		}
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	if err := w.Wait(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Wait on a closed watcher = %v, want os.ErrClosed", err)
	}
	if _, err := w.Mounts(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Mounts on a closed watcher = %v, want os.ErrClosed", err)
	}
	if after := countFds(t); after != before {
		t.Errorf("%d fds open after Close, %d before", after, before)
	}
}

func TestMountWatcherConcurrentClose(t *testing.T) {
	for range 20 {
		w, err := NewMountWatcher()
		if err != nil {
			t.Fatalf("NewMountWatcher: %v", err)
		}
		done := waitAsync(w)
		errs := make(chan error, 2)
		go func() { _, err := w.Mounts(); errs <- err }()
		go func() { errs <- w.Close() }()
		if err := w.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-done; !errors.Is(err, os.ErrClosed) {
			t.Errorf("Wait = %v, want os.ErrClosed", err)
		}
		for range 2 {
			if err := <-errs; err != nil && !errors.Is(err, os.ErrClosed) {
				t.Errorf("Mounts or Close racing with Close: %v", err)
			}
		}
	}
}

// TestMountWatcherLargeTable reads a table larger than the first read
// buffer.
func TestMountWatcherLargeTable(t *testing.T) {
	dir := testutil.MountTmpfs(t) // its cleanup detaches the mounts below too
	const n = 400
	long := strings.Repeat("x", 100)
	for i := range n {
		sub := fmt.Sprintf("%s/%s%03d with space", dir, long, i)
		if err := os.Mkdir(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount("tmpfs", sub, "tmpfs", 0, "size=4k"); err != nil {
			t.Fatalf("mounting tmpfs on %s: %v", sub, err)
		}
	}
	w := newTestWatcher(t)
	for range 2 { // the second read starts with a buffer of the right size
		got := mustMounts(t, w)
		data, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			t.Fatal(err)
		}
		if len(data) <= 16<<10 {
			t.Fatalf("the mount table has only %d bytes", len(data))
		}
		want, err := ParseMountInfo(data)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("Mounts differs from reading the file (-want +got):\n%s", diff)
		}
		below := 0
		for _, m := range got {
			if strings.HasPrefix(m.Point, dir+"/") && strings.HasSuffix(m.Point, " with space") {
				below++
			}
		}
		if below != n {
			t.Errorf("Mounts found %d of the %d mounts below %s", below, n, dir)
		}
	}
}

// TestMountWatcherWaitDoesNotSpin checks that a change wakes Wait once: the
// kernel marks it seen in the poll that reports it.
func TestMountWatcherWaitDoesNotSpin(t *testing.T) {
	testutil.RequireRoot(t)
	w := newTestWatcher(t)

	for _, reread := range []bool{true, false} {
		t.Run(fmt.Sprintf("reread=%v", reread), func(t *testing.T) {
			table := mustMounts(t, w)
			dir := testutil.MountTmpfs(t)
			expectWake(t, w)
			if reread {
				table = mustMounts(t, w)
				if !hasMountAt(table, dir) {
					t.Fatalf("the mount table has no mount on %s after the change", dir)
				}
			}
			done := expectBlocked(t, w, table)
			if err := unix.Unmount(dir, 0); err != nil {
				t.Fatalf("unmounting %s: %v", dir, err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Wait after an unmount = %v, want nil", err)
				}
			case <-time.After(time.Second):
				t.Fatal("Wait still blocked 1 s after an unmount")
			}
			// Leave the cleanup something to unmount.
			if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=4k"); err != nil {
				t.Fatal(err)
			}
			expectWake(t, w)
		})
	}
}

func newTestWatcher(t *testing.T) *MountWatcher {
	t.Helper()
	w, err := NewMountWatcher()
	if err != nil {
		t.Fatalf("NewMountWatcher: %v", err)
	}
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Errorf("closing the mount watcher: %v", err)
		}
	})
	return w
}

func waitAsync(w *MountWatcher) <-chan error {
	done := make(chan error, 1)
	go func() { done <- w.Wait() }()
	return done
}

func mustMounts(t *testing.T, w *MountWatcher) []Mount {
	t.Helper()
	mounts, err := w.Mounts()
	if err != nil {
		t.Fatalf("Mounts: %v", err)
	}
	return mounts
}

// expectWake checks that a change already made wakes Wait at once.
func expectWake(t *testing.T, w *MountWatcher) {
	t.Helper()
	select {
	case err := <-waitAsync(w):
		if err != nil {
			t.Fatalf("Wait after a mount change = %v, want nil", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Wait still blocked 1 s after a mount change")
	}
}

// expectBlocked checks that Wait stays blocked for 200 ms while the mount
// table stays as it is, and returns the channel of the blocked Wait. A wake
// by a change someone else made on this machine is retried.
func expectBlocked(t *testing.T, w *MountWatcher, table []Mount) <-chan error {
	t.Helper()
	for range 5 {
		done := waitAsync(w)
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Wait = %v, want it blocked", err)
			}
			now := mustMounts(t, w)
			if cmp.Equal(now, table) {
				t.Fatal("Wait returned with no change to the mount table: it spins")
			}
			table = now
		case <-time.After(200 * time.Millisecond):
			return done
		}
	}
	t.Fatal("the mount table kept changing; cannot check that Wait blocks")
	return nil
}

func hasMountAt(mounts []Mount, point string) bool {
	for _, m := range mounts {
		if m.Point == point {
			return true
		}
	}
	return false
}

func countFds(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}

// mountTmpfsAt mounts a tmpfs on dir, creating it, and unmounts it when the
// test ends.
func mountTmpfsAt(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=4m"); err != nil {
		t.Fatalf("mounting tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	})
}
