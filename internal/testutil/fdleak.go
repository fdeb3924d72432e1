package testutil

import (
	"fmt"
	"os"
	"slices"
	"testing"
)

// RunCheckingFDs runs the tests of m and turns a passing run into a
// failing one when the tests left file descriptors open. Call it from
// TestMain: os.Exit(testutil.RunCheckingFDs(m)).
func RunCheckingFDs(m *testing.M) int {
	// The runtime's poller keeps its own descriptors once started: start
	// it before counting.
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	before := openFDs()
	code := m.Run()
	if code == 0 {
		if after := openFDs(); len(after) > len(before) {
			fmt.Fprintf(os.Stderr, "leaked file descriptors: before %v, after %v\n", before, after)
			code = 1
		}
	}
	return code
}

// openFDs lists this process's open descriptors with their targets.
func openFDs() []string {
	des, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil
	}
	var fds []string
	for _, de := range des {
		target, _ := os.Readlink("/proc/self/fd/" + de.Name())
		fds = append(fds, de.Name()+"="+target)
	}
	slices.Sort(fds)
	return fds
}
