// Package systemd speaks the service manager's protocols: readiness and
// state notifications (sd_notify) for now; the watchdog and the journal
// come later. It never blocks the event path: notifications are sent from
// the daemon's control goroutine, not from the reader or the workers.
package systemd

import (
	"fmt"

	sdaemon "github.com/coreos/go-systemd/v22/daemon"
)

// Notifier sends state changes to the service manager named by
// $NOTIFY_SOCKET. Without that variable it does nothing. The zero value is
// ready to use and safe for concurrent use.
type Notifier struct{}

// Ready says that the service is up: rules loaded and marks placed.
func (Notifier) Ready() error { return notify("READY=1") }

// Stopping says that the service is shutting down.
func (Notifier) Stopping() error { return notify("STOPPING=1") }

// Status sets the one-line status shown by systemctl status.
func (Notifier) Status(line string) error { return notify("STATUS=" + line) }

func notify(state string) error {
	if _, err := sdaemon.SdNotify(false, state); err != nil {
		return fmt.Errorf("notifying service manager (%s): %w", state, err)
	}
	return nil
}
