package fan

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fanguard/fanguard/internal/testutil"
)

// TestMarkFilesystemAt marks a tmpfs through an O_PATH fd of its root, and
// through one of a file on it, and checks that an open on it is then held
// for an answer.
func TestMarkFilesystemAt(t *testing.T) {
	tests := []struct {
		name    string
		target  string // opened O_PATH, relative to the tmpfs
		wantErr error  // nil: the mark works
	}{
		{"directory", ".", nil},
		{"file", "f", nil},
		{"closed fd", "", unix.EBADF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := testutil.MountTmpfs(t)
			file := filepath.Join(dir, "f")
			if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			fd := -1
			if tt.target != "" {
				var err error
				fd, err = unix.Open(filepath.Join(dir, tt.target), unix.O_PATH|unix.O_CLOEXEC, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer unix.Close(fd)
			}
			g, err := NewGroup(GroupOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			events := make(chan string, 10)
			done := serve(t, g, func(ev Event) bool {
				var buf [4096]byte
				p, _ := FdPath(ev.Fd, buf[:])
				events <- string(p)
				return true
			})

			err = g.MarkFilesystemAt(fd)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("MarkFilesystemAt = %v, want %v", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatalf("MarkFilesystemAt: %v", err)
			}
			if _, err := os.ReadFile(file); err != nil {
				t.Fatal(err)
			}
			select {
			case p := <-events:
				if tt.wantErr != nil {
					t.Errorf("event for %s without a mark", p)
				} else if p != file {
					t.Errorf("event for %s, want %s", p, file)
				}
			case <-time.After(500 * time.Millisecond):
				if tt.wantErr == nil {
					t.Errorf("no event for an open of %s within 500 ms", file)
				}
			}
			g.Shutdown()
			if err := <-done; !errors.Is(err, os.ErrClosed) {
				t.Errorf("Read after Shutdown: %v", err)
			}
		})
	}
}
