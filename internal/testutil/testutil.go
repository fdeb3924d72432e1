// Package testutil holds helpers shared by fanguard's tests. It is imported
// only from _test.go files.
package testutil

import (
	"os"
	"testing"
)

// InCI reports whether the tests run under CI (CI=true), where a missing
// privilege or tool is a failure, not a reason to skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// RequireRoot skips t when the test does not run as root, and fails it
// instead under CI, so a missing privilege never hides a regression.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if InCI() {
		t.Fatal("this test needs root, and CI=true: run the tests as root")
	}
	t.Skip("this test needs root")
}

// MountTmpfs mounts a fresh tmpfs on a new temporary directory and unmounts
// it when the test ends. It needs root (see RequireRoot).
func MountTmpfs(t testing.TB) string {
	t.Helper()
	RequireRoot(t)
	dir := t.TempDir()
	if err := mount(dir); err != nil {
		t.Fatalf("mounting tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unmount(dir); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	})
	return dir
}
