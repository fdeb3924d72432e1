package systemd

import (
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
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
