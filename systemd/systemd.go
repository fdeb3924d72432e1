// Package systemd speaks the service manager's protocols: readiness and
// state notifications (sd_notify), the watchdog keep-alive, and structured
// logging to the journal over its native protocol. It never blocks the event
// path: notifications and watchdog pings are sent from the daemon's control
// goroutines, not from the reader or the workers, and log entries are queued
// and sent by a goroutine of their own, dropped and counted when the journal
// does not keep up (design §1, rule 2).
package systemd

import (
	"fmt"
	"strconv"

	sdaemon "github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// Notifier sends state changes to the service manager named by
// $NOTIFY_SOCKET. Without that variable it does nothing. Each call sends one
// datagram on a fresh unixgram socket and does not wait for the service
// manager to read it. The zero value is ready to use and safe for concurrent
// use.
type Notifier struct{}

// Ready says that the service is up: rules loaded and marks placed. After
// Reloading, it also says that the reload is over.
func (Notifier) Ready() error { return notify("READY=1") }

// Stopping says that the service is shutting down.
func (Notifier) Stopping() error { return notify("STOPPING=1") }

// Status sets the one-line status shown by systemctl status.
func (Notifier) Status(line string) error { return notify("STATUS=" + line) }

// Reloading says that the service is reloading its configuration and rules;
// call Ready when the reload is over. It sends RELOADING=1 together with
// MONOTONIC_USEC (CLOCK_MONOTONIC now, in microseconds) in one datagram, as
// Type=notify-reload services must.
func (Notifier) Reloading() error {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return fmt.Errorf("reading the monotonic clock: %w", err)
	}
	return notify("RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatInt(ts.Nano()/1000, 10))
}

// Watchdog sends one watchdog keep-alive (WATCHDOG=1). The Watchdog type
// sends these on a schedule, and only while the daemon is healthy.
func (Notifier) Watchdog() error { return notify("WATCHDOG=1") }

func notify(state string) error {
	if _, err := sdaemon.SdNotify(false, state); err != nil {
		return fmt.Errorf("notifying service manager (%q): %w", state, err)
	}
	return nil
}
