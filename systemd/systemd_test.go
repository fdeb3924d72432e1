package systemd

import (
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func TestNotifier(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify.sock")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	t.Setenv("NOTIFY_SOCKET", sock)

	var n Notifier
	for _, f := range []func() error{n.Ready, func() error { return n.Status("protecting 2 filesystems") }, n.Stopping} {
		if err := f(); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	buf := make([]byte, 4096)
	for range 3 {
		ln.SetReadDeadline(time.Now().Add(5 * time.Second))
		k, err := ln.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(buf[:k]))
	}
	want := []string{"READY=1", "STATUS=protecting 2 filesystems", "STOPPING=1"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("messages (-want +got):\n%s", diff)
	}
}

func TestNotifierWithoutSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if err := (Notifier{}).Ready(); err != nil {
		t.Errorf("Ready without NOTIFY_SOCKET: %v", err)
	}
}

func TestNotifierDeadSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "nobody-listens"))
	if err := (Notifier{}).Ready(); err == nil {
		t.Error("Ready to a socket nobody listens on: no error")
	}
}

func TestNotifierReloading(t *testing.T) {
	ln := listenNotify(t)
	var before, after unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &before)
	if err := (Notifier{}).Reloading(); err != nil {
		t.Fatal(err)
	}
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &after)

	got := readDatagram(t, ln)
	lines := strings.Split(got, "\n")
	if len(lines) != 2 || lines[0] != "RELOADING=1" || !strings.HasPrefix(lines[1], "MONOTONIC_USEC=") {
		t.Fatalf("datagram %q, want RELOADING=1 and MONOTONIC_USEC=<µs> in one datagram", got)
	}
	usec, err := strconv.ParseInt(strings.TrimPrefix(lines[1], "MONOTONIC_USEC="), 10, 64)
	if err != nil {
		t.Fatalf("datagram %q: %v", got, err)
	}
	if lo, hi := before.Nano()/1000, after.Nano()/1000; usec < lo || usec > hi {
		t.Errorf("MONOTONIC_USEC=%d, want between %d and %d", usec, lo, hi)
	}
}

func TestNotifierWatchdog(t *testing.T) {
	ln := listenNotify(t)
	if err := (Notifier{}).Watchdog(); err != nil {
		t.Fatal(err)
	}
	if got := readDatagram(t, ln); got != "WATCHDOG=1" {
		t.Errorf("datagram %q, want WATCHDOG=1", got)
	}
}

// listenNotify listens for notifications as the service manager would, on a
// socket that $NOTIFY_SOCKET names for the rest of the test.
func listenNotify(t *testing.T) *net.UnixConn {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "notify.sock")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	t.Setenv("NOTIFY_SOCKET", sock)
	return ln
}

// readDatagram returns the next datagram on ln, failing the test after 5 s.
func readDatagram(t *testing.T, ln *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	ln.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := ln.Read(buf)
	if err != nil {
		t.Fatalf("reading notification: %v", err)
	}
	return string(buf[:n])
}
