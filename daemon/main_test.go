package daemon

import (
	"os"
	"testing"

	"github.com/fanguard/fanguard/internal/testutil"
)

// TestMain fails the run when the tests leave file descriptors open.
func TestMain(m *testing.M) { os.Exit(testutil.RunCheckingFDs(m)) }

// testCache returns a verdict cache of n entries, unmapped when tb ends.
func testCache(tb testing.TB, n int, stats *Stats) *verdictCache {
	tb.Helper()
	c, err := newVerdictCache(n, stats)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := c.close(); err != nil {
			tb.Error(err)
		}
	})
	return c
}
