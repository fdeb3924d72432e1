// Package daemon wires fanguard's pipeline: the fanotify reader, its fast
// path, the scan workers, the per-event deadline and the marker that keeps
// the protected filesystems marked.
//
// The event path follows design §1: every permission event read is answered
// exactly once, before anything is logged, within the configured budget;
// the event fd is closed only after the answer; nothing on the path opens a
// file on a protected filesystem.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/fanguard/fanguard/fan"
	"github.com/fanguard/fanguard/policy"
	"github.com/fanguard/fanguard/scanner"
)

// Options configures a Daemon.
type Options struct {
	// Config is the validated configuration; required.
	Config policy.Config
	// Rules is the compiled rule set; required.
	Rules *scanner.Ruleset
	// Logger receives the daemon's log. It must not block (see LogSink);
	// nil discards.
	Logger *zap.Logger
	// Ready is called once the marks are in place (systemd READY=1); nil
	// does nothing.
	Ready func()
	// Owners maps uids to user names for the rules' "owner" variable. It
	// must be read before the marks are placed (the daemon never opens
	// /etc/passwd afterwards); nil means numeric uids.
	Owners map[uint32]string
}

// Daemon is the running pipeline. Create it with New and start it with
// Run; it is not reusable after Run returns.
type Daemon struct {
	cfg    policy.Config
	rules  *scanner.Ruleset
	log    *zap.Logger
	ready  func()
	owners map[uint32]string
	excl   *policy.Exclusions
	pid    int32

	group *fan.Group
	// kern answers events and closes their fds: the group and fan.CloseFd,
	// or a fake in unit tests.
	kern  kernel
	queue chan *job
	jobs  sync.Pool
	// inflight counts jobs alive: queued, scanning, or waiting for their
	// timer. Only the reader increments it, so checking it against
	// MaxPending before an increment is race-free.
	inflight atomic.Int64

	stats Stats
}

// New prepares a daemon: it creates the fanotify group and the scanners,
// but places no marks. It needs CAP_SYS_ADMIN.
func New(opts Options) (*Daemon, error) {
	if opts.Rules == nil {
		return nil, errors.New("creating daemon: no rules")
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	ready := opts.Ready
	if ready == nil {
		ready = func() {}
	}
	g, err := fan.NewGroup(fan.GroupOptions{})
	if err != nil {
		return nil, err
	}
	d := &Daemon{
		cfg:    opts.Config,
		rules:  opts.Rules,
		log:    log,
		ready:  ready,
		owners: opts.Owners,
		excl:   policy.NewExclusions(opts.Config.Protect),
		pid:    int32(os.Getpid()),
		group:  g,
		kern:   groupKernel{g},
		queue:  make(chan *job, opts.Config.MaxPending),
	}
	d.jobs.New = func() any { return newJob(d) }
	return d, nil
}

// kernel is the seam between the event path and the fanotify group.
type kernel interface {
	Respond(fd int32, allow bool) error
	CloseFd(fd int32) error
}

type groupKernel struct{ *fan.Group }

func (groupKernel) CloseFd(fd int32) error { return fan.CloseFd(fd) }

// Stats returns the daemon's counters.
func (d *Daemon) Stats() *Stats { return &d.stats }

// Run places the marks, reports readiness, and serves events until ctx is
// done or the reader fails. On the way out it stops reading, lets the
// workers answer what is pending (each event still within its budget), and
// closes the group, upon which the kernel allows anything left.
func (d *Daemon) Run(ctx context.Context) error {
	defer d.group.Close()

	// Zoneinfo is loaded lazily on first use; load it now, before any mark,
	// so that no later log line opens /etc/localtime (design §1, rule 3).
	_, _ = time.Now().Zone()

	var workers sync.WaitGroup
	for i := range d.cfg.Workers {
		s, err := d.rules.NewScanner(d.cfg.ScanTimeout)
		if err != nil {
			close(d.queue)
			workers.Wait()
			return fmt.Errorf("creating scanner %d: %w", i, err)
		}
		w := &worker{d: d, scanner: s}
		workers.Add(1)
		go func() {
			defer workers.Done()
			w.run()
		}()
	}

	readerErr := make(chan error, 1)
	go func() { readerErr <- d.read() }()

	marker, err := fan.NewMarker(fan.MarkerOptions{
		FSTypes: d.cfg.Protect.FSTypes,
		Paths:   d.cfg.Protect.Paths,
		Mark:    d.group.MarkFilesystem,
		Report:  d.reportMark,
	})
	if err == nil {
		err = marker.Sync()
	}
	if err == nil && len(marker.Marked()) == 0 {
		err = errors.New("no filesystem to protect: check protect.paths and protect.fs_types")
	}
	if err != nil {
		if marker != nil {
			marker.Close()
		}
		d.shutdown(readerErr, &workers)
		return fmt.Errorf("placing marks: %w", err)
	}
	markerDone := make(chan error, 1)
	go func() { markerDone <- marker.Run() }()

	d.log.Info("protecting",
		zap.Int("filesystems", len(marker.Marked())),
		zap.Int("rules", d.rules.Count),
		zap.Int("workers", d.cfg.Workers),
		zap.Duration("budget", d.cfg.Budget),
		zap.Stringer("mode", d.cfg.Mode))
	d.ready()

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-readerErr:
		readerErr <- runErr // for shutdown
	case runErr = <-markerDone:
		if runErr == nil {
			runErr = errors.New("mount watcher stopped")
		}
		runErr = fmt.Errorf("watching mounts: %w", runErr)
	}
	marker.Close()
	rerr := d.shutdown(readerErr, &workers)
	if runErr == nil {
		runErr = rerr
	}
	d.log.Info("stopped", d.stats.fields()...)
	return runErr
}

// shutdown stops the reader, lets the workers drain the queue for at most
// the budget plus a second (every event is answered by then: by its worker
// or by its deadline), and closes the group. It returns the reader's error,
// if it failed.
func (d *Daemon) shutdown(readerErr chan error, workers *sync.WaitGroup) error {
	d.group.Shutdown()
	err := <-readerErr
	if errors.Is(err, os.ErrClosed) {
		err = nil
	}
	close(d.queue) // the reader, the only sender, has returned
	done := make(chan struct{})
	go func() {
		workers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(d.cfg.Budget + time.Second):
		d.log.Warn("scans still running at shutdown; the kernel allows what is left",
			zap.Int64("inflight", d.inflight.Load()))
	}
	d.group.Close()
	return err
}

func (d *Daemon) reportMark(m fan.Mount, err error) {
	if err != nil {
		d.log.Warn("cannot protect filesystem", zap.String("mount", m.Point), zap.String("type", m.FSType), zap.Error(err))
		return
	}
	d.log.Info("protecting filesystem", zap.String("mount", m.Point), zap.String("type", m.FSType), zap.String("source", m.Source))
}

// readBufferSize bounds one read from the group: the kernel creates an fd
// for every event it copies out, so this also bounds the fds one read can
// add (about 680 records of 24 bytes).
const readBufferSize = 16 << 10

// read is the reader: it reads event records, answers what the fast path
// can answer, and queues the rest for the workers. Every permission event
// it reads leaves it answered or queued.
func (d *Daemon) read() error {
	runtime.LockOSThread() // a long-lived blocking loop: keep it off the shared threads
	buf := make([]byte, readBufferSize)
	var scratch [4096]byte
	for {
		n, err := d.group.Read(buf)
		if errors.Is(err, fan.ErrEventDenied) {
			// Not fatal, and no spin: each such read consumes one event.
			if c := d.stats.KernelDenied.Add(1); c&(c-1) == 0 { // log the 1st, 2nd, 4th, 8th...
				d.log.Error("the kernel denied an open it could not pass on (out of fds or memory?)",
					zap.Uint64("count", c), zap.Error(err))
			}
			continue
		}
		if err != nil {
			return err
		}
		now := time.Now()
		for off := 0; off < n; {
			ev, size, err := fan.ParseEvent(buf[off:n])
			if err != nil {
				// The records after this one cannot be found. Returning
				// makes Run close the group, which allows every event this
				// process holds: fail open rather than hang.
				d.stats.ParseErrors.Add(1)
				return fmt.Errorf("parsing events: %w", err)
			}
			off += size
			d.handle(ev, now, scratch[:])
		}
	}
}

// handle is the fast path for one event.
func (d *Daemon) handle(ev fan.Event, now time.Time, scratch []byte) {
	if ev.IsOverflow() {
		d.stats.Overflows.Add(1)
		d.log.Error("fanotify queue overflow: events were lost or allowed unscanned")
	}
	if ev.Fd < 0 {
		return
	}
	if !ev.IsPermission() {
		d.kern.CloseFd(ev.Fd)
		return
	}
	d.stats.Events.Add(1)
	switch {
	case ev.Pid == d.pid:
		d.stats.OwnPid.Add(1)
		d.answerNow(ev.Fd, policy.Allow)
		return
	case d.excluded(ev, scratch):
		d.stats.Excluded.Add(1)
		d.answerNow(ev.Fd, policy.Allow)
		return
	case d.inflight.Load() >= int64(d.cfg.MaxPending):
		d.stats.Overloaded.Add(1)
		d.answerNow(ev.Fd, d.cfg.OnOverload)
		return
	}
	d.inflight.Add(1)
	j := d.jobs.Get().(*job)
	j.start(ev, now)
	d.queue <- j // never blocks: cap(queue) == MaxPending ≥ inflight
}

// answerNow answers an event on the fast path and closes its fd.
func (d *Daemon) answerNow(fd int32, v policy.Verdict) {
	if err := d.kern.Respond(fd, v == policy.Allow); err != nil {
		d.stats.AnswerErrors.Add(1)
	}
	d.kern.CloseFd(fd)
}

// excluded checks the configured exclusions. Each check costs a system call
// on /proc and is made only when its list is non-empty.
func (d *Daemon) excluded(ev fan.Event, scratch []byte) bool {
	e := d.excl
	if e.HasUIDs() {
		if uid, err := fan.ProcUID(ev.Pid); err == nil && e.UID(uid) {
			return true
		}
	}
	if e.HasExe() {
		if exe, err := fan.ExePath(ev.Pid, scratch); err == nil && e.Exe(exe) {
			return true
		}
	}
	if e.HasPaths() {
		if p, err := fan.FdPath(ev.Fd, scratch); err == nil && e.Path(p) {
			return true
		}
	}
	return false
}
