package fan

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// waitChange runs Wait in the background and reports whether it returned
// with a change within d.
func waitChange(t *testing.T, w *DirWatcher, act func(), d time.Duration) bool {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- w.Wait() }()
	time.Sleep(20 * time.Millisecond)
	act()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Wait: %v", err)
		}
		return true
	case <-time.After(d):
		w.Close()
		<-done
		return false
	}
}

func TestDirWatcher(t *testing.T) {
	tests := []struct {
		name string
		act  func(dir string)
	}{
		{"file created", func(dir string) { os.WriteFile(filepath.Join(dir, "a.yar"), []byte("x"), 0o644) }},
		{"file removed", func(dir string) { os.Remove(filepath.Join(dir, "old.yar")) }},
		{"file renamed in", func(dir string) { os.Rename(filepath.Join(dir, "..", "outside.yar"), filepath.Join(dir, "in.yar")) }},
		{"file rewritten", func(dir string) { os.WriteFile(filepath.Join(dir, "old.yar"), []byte("new"), 0o644) }},
		{"symlink to /dev/null", func(dir string) { os.Symlink("/dev/null", filepath.Join(dir, "mask.yar")) }},
		{"missing dir created", func(dir string) {
			os.MkdirAll(filepath.Join(dir, "later"), 0o755)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			dir := filepath.Join(root, "rules.d")
			os.Mkdir(dir, 0o755)
			os.WriteFile(filepath.Join(dir, "old.yar"), []byte("old"), 0o644)
			os.WriteFile(filepath.Join(root, "outside.yar"), []byte("o"), 0o644)
			w, err := NewDirWatcher([]string{dir, filepath.Join(dir, "later", "deeper")})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			if !waitChange(t, w, func() { tt.act(dir) }, 2*time.Second) {
				t.Errorf("%s: no change seen", tt.name)
			}
		})
	}
}

func TestDirWatcherQuietAndClose(t *testing.T) {
	dir := t.TempDir()
	w, err := NewDirWatcher([]string{dir})
	if err != nil {
		t.Fatal(err)
	}
	if waitChange(t, w, func() { os.WriteFile(filepath.Join(t.TempDir(), "elsewhere"), nil, 0o644) }, 200*time.Millisecond) {
		t.Error("a change elsewhere woke the watcher")
	}
	// waitChange closed it; Wait now returns os.ErrClosed at once.
	if err := w.Wait(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Wait after Close: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
