// Command fanguard is the on-access scanning daemon and its command line:
// `fanguard daemon` runs the daemon, `fanguard reload` reloads its rules,
// `fanguard scan` scans files on demand with the same rules and engine,
// `fanguard rules check|list` checks and lists the rule directories,
// `fanguard quarantine ...` and `fanguard allow ...` review detections and
// the allow list, and `fanguard version` prints the version.
package main

import (
	"errors"
	"fmt"
	"os"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	err := newRootCommand().Execute()
	if err == nil {
		return
	}
	var ee exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintf(os.Stderr, "fanguard: %v\n", ee.err)
		}
		os.Exit(ee.code)
	}
	fmt.Fprintf(os.Stderr, "fanguard: %v\n", err)
	os.Exit(2)
}

// exitError ends the program with code, printing err if it is not nil.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}
