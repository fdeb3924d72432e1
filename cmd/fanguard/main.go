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

	"github.com/fanguard/fanguard/systemd"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	err := newRootCommand().Execute()
	if err == nil {
		return
	}
	code := 2
	var ee exitError
	if errors.As(err, &ee) {
		code, err = ee.code, ee.err
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%sfanguard: %v\n", errPrefix(), err)
	}
	os.Exit(code)
}

// exitConfig is the exit status of `fanguard daemon` on a configuration
// error (EX_CONFIG of sysexits.h): the unit's RestartPreventExitStatus=78
// leaves the service failed instead of restarting it with the same
// configuration for ever.
const exitConfig = 78

// errPrefix is what goes before an error message on standard error: the
// syslog priority prefix "<3>" (err) when standard error is the journal's
// stream, which reads it (SyslogLevelPrefix=yes, the default) so that
// `journalctl -p err` shows the error; nothing on a terminal or a file.
func errPrefix() string {
	if systemd.StderrIsJournal() {
		return "<3>"
	}
	return ""
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
