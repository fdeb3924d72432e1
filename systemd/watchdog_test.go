package systemd

import (
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

func TestWatchdogInterval(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	tests := []struct {
		name     string
		usec     string
		pid      string
		want     time.Duration
		wantOkay bool
	}{
		{name: "unset"},
		{name: "no pid", usec: "30000000", want: 30 * time.Second, wantOkay: true},
		{name: "our pid", usec: "20000000", pid: self, want: 20 * time.Second, wantOkay: true},
		{name: "another pid", usec: "20000000", pid: strconv.Itoa(os.Getpid() + 1)},
		{name: "zero", usec: "0"},
		{name: "negative", usec: "-5"},
		{name: "garbage", usec: "30s"},
		{name: "garbage pid", usec: "20000000", pid: "me"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("WATCHDOG_USEC", tt.usec)
			t.Setenv("WATCHDOG_PID", tt.pid)
			got, ok := WatchdogInterval()
			if got != tt.want || ok != tt.wantOkay {
				t.Errorf("WatchdogInterval() = %v, %v; want %v, %v", got, ok, tt.want, tt.wantOkay)
			}
		})
	}
}

// TestWatchdogFollowsHealth runs a Watchdog against a real notification
// socket: pings arrive while Healthy says yes, stop while it says no, and
// resume when it says yes again.
func TestWatchdogFollowsHealth(t *testing.T) {
	ln := listenNotify(t)
	var healthy atomic.Bool
	healthy.Store(true)
	w := NewWatchdog(WatchdogOptions{Interval: 20 * time.Millisecond, Healthy: healthy.Load})
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		w.Run(ctx)
		close(stopped)
	}()
	defer func() {
		cancel()
		<-stopped
	}()

	// Healthy: keep-alives arrive.
	for range 3 {
		if got := readDatagram(t, ln); got != "WATCHDOG=1" {
			t.Fatalf("datagram %q, want WATCHDOG=1", got)
		}
	}

	// Wedged: once a period has seen the flip, no keep-alive goes out.
	healthy.Store(false)
	skips := w.Skips()
	waitFor(t, "a skipped period", func() bool { return w.Skips() > skips })
	pings := w.Pings()
	drain(t, ln, pings-3) // sent before the flip, not read yet
	skips = w.Skips()
	waitFor(t, "three more skipped periods", func() bool { return w.Skips() >= skips+3 })
	if got := w.Pings(); got != pings {
		t.Errorf("Pings() = %d while unhealthy, want %d", got, pings)
	}
	if got, ok := tryRead(ln, 50*time.Millisecond); ok {
		t.Errorf("datagram %q while unhealthy, want none", got)
	}

	// Healthy again: keep-alives resume.
	healthy.Store(true)
	if got := readDatagram(t, ln); got != "WATCHDOG=1" {
		t.Fatalf("datagram %q after recovery, want WATCHDOG=1", got)
	}
	if w.Failures() != 0 {
		t.Errorf("Failures() = %d, want 0", w.Failures())
	}
}

func TestWatchdogCountsFailures(t *testing.T) {
	fail := errors.New("socket gone")
	w := NewWatchdog(WatchdogOptions{Interval: 10 * time.Millisecond, Ping: func() error { return fail }})
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		w.Run(ctx)
		close(stopped)
	}()
	waitFor(t, "two failed pings", func() bool { return w.Failures() >= 2 })
	cancel()
	<-stopped
	if w.Pings() != 0 {
		t.Errorf("Pings() = %d with a failing Ping, want 0", w.Pings())
	}
}

func TestWatchdogOff(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "")
	w := NewWatchdog(WatchdogOptions{Ping: func() error {
		t.Error("ping with the watchdog off")
		return nil
	}})
	if w.Interval() != 0 {
		t.Errorf("Interval() = %v, want 0", w.Interval())
	}
	done := make(chan struct{})
	go func() {
		w.Run(context.Background())
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run with the watchdog off did not return")
	}
}

func TestWatchdogIntervalFromEnvironment(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "3000000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	if got := NewWatchdog(WatchdogOptions{}).Interval(); got != 3*time.Second {
		t.Errorf("Interval() = %v, want 3s", got)
	}
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// drain reads n datagrams from ln.
func drain(t *testing.T, ln *net.UnixConn, n uint64) {
	t.Helper()
	for range n {
		readDatagram(t, ln)
	}
}

// tryRead reads one datagram from ln if one comes within d.
func tryRead(ln *net.UnixConn, d time.Duration) (string, bool) {
	buf := make([]byte, 4096)
	ln.SetReadDeadline(time.Now().Add(d))
	n, err := ln.Read(buf)
	if err != nil {
		return "", false
	}
	return string(buf[:n]), true
}
