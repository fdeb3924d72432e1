package feeds

import (
	"os"
	"testing"

	"github.com/fanguard/fanguard/internal/testutil"
)

func TestMain(m *testing.M) { os.Exit(testutil.RunCheckingFDs(m)) }
