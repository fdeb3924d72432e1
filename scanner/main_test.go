package scanner

import (
	"os"
	"testing"

	"github.com/fanguard/fanguard/internal/testutil"
)

// TestMain fails the run when the tests leave file descriptors open.
func TestMain(m *testing.M) { os.Exit(testutil.RunCheckingFDs(m)) }
