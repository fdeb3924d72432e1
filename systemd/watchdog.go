package systemd

import (
	"context"
	"sync/atomic"
	"time"

	sdaemon "github.com/coreos/go-systemd/v22/daemon"
)

// WatchdogInterval returns the service's watchdog timeout (WatchdogSec=),
// which systemd passes in $WATCHDOG_USEC, and whether the watchdog is on for
// this process: $WATCHDOG_USEC must be a positive number and
// $WATCHDOG_PID, if set, must be this process's pid. A malformed variable
// counts as off. The environment is left as it is.
func WatchdogInterval() (time.Duration, bool) {
	d, err := sdaemon.SdWatchdogEnabled(false)
	if err != nil || d <= 0 {
		return 0, false
	}
	return d, true
}

// WatchdogOptions configures a Watchdog. The zero value means the defaults.
type WatchdogOptions struct {
	// Interval is the watchdog timeout: the service manager kills the
	// service when no ping arrives for this long. The Watchdog pings at half
	// of it. Zero takes it from WatchdogInterval; when the watchdog is off,
	// Run returns at once.
	Interval time.Duration

	// Healthy reports whether the daemon is making progress: its reader
	// answers events and no event has waited past its budget. It is called
	// once per period, just before a ping, from Run's goroutine; a Healthy
	// that hangs stops the pings as surely as one that returns false. Nil
	// means always healthy.
	Healthy func() bool

	// Ping sends one keep-alive. Nil means Notifier.Watchdog.
	Ping func() error
}

// Watchdog keeps the service manager's watchdog fed while the daemon is
// healthy, and only then. A daemon wedged with permission events pending
// hangs every open on the protected filesystems (the kernel never times an
// event out); when Healthy says so, the pings stop, systemd kills the
// service, and closing the fanotify group lets the pending opens through.
//
// Run is meant to be called once; the counters are safe for concurrent use.
type Watchdog struct {
	interval time.Duration
	healthy  func() bool
	ping     func() error

	pings    atomic.Uint64
	skips    atomic.Uint64
	failures atomic.Uint64
}

// NewWatchdog returns a Watchdog configured by opts. It sends nothing until
// Run.
func NewWatchdog(opts WatchdogOptions) *Watchdog {
	w := &Watchdog{interval: opts.Interval, healthy: opts.Healthy, ping: opts.Ping}
	if w.interval <= 0 {
		w.interval, _ = WatchdogInterval()
	}
	if w.healthy == nil {
		w.healthy = func() bool { return true }
	}
	if w.ping == nil {
		w.ping = Notifier{}.Watchdog
	}
	return w
}

// Interval returns the watchdog timeout in force; zero means off.
func (w *Watchdog) Interval() time.Duration { return w.interval }

// Run checks health and pings at once, then every half interval, until ctx
// is done. With the watchdog off it returns at once.
func (w *Watchdog) Run(ctx context.Context) {
	if w.interval <= 0 {
		return
	}
	period := w.interval / 2
	if period <= 0 {
		period = w.interval
	}
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		w.tick()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (w *Watchdog) tick() {
	if !w.healthy() {
		w.skips.Add(1)
		return
	}
	if err := w.ping(); err != nil {
		w.failures.Add(1)
		return
	}
	w.pings.Add(1)
}

// Pings returns the number of keep-alives sent.
func (w *Watchdog) Pings() uint64 { return w.pings.Load() }

// Skips returns the number of periods in which Healthy said no, so no
// keep-alive went out.
func (w *Watchdog) Skips() uint64 { return w.skips.Load() }

// Failures returns the number of keep-alives that could not be sent.
func (w *Watchdog) Failures() uint64 { return w.failures.Load() }
