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
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
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
	// LoadRules compiles the rules anew for Reload; nil makes Reload fail.
	LoadRules func() (*scanner.Ruleset, error)
	// LoadConfig reads the configuration file again for Reload, which
	// puts the keys that can change live in force (policy.Changes) and
	// reports the others as needing a restart; nil: Reload reloads only
	// the rules.
	LoadConfig func() (policy.Config, error)
	// LogLevel, if set, is the level of Logger, which Reload changes to a
	// new log.level; nil: log.level needs a restart.
	LogLevel *zap.AtomicLevel
	// Logger receives the daemon's log. It must not block (see LogSink);
	// nil discards.
	Logger *zap.Logger
	// Notify receives the daemon's state changes for the service manager
	// (systemd's READY=1, RELOADING=1, STATUS=, STOPPING=1); nil sends none.
	Notify Notifier
	// RuleDirs are watched for changes that reload the rules; none: no
	// watching.
	RuleDirs []string
	// LogDropped reports the log entries dropped by the logger's queue,
	// for the counters; nil: not known.
	LogDropped func() uint64
	// Recorder keeps the record of detections and the quarantine; nil:
	// detections are only logged.
	Recorder Recorder
	// Owners maps uids to user names for the rules' "owner" variable. It
	// must be read before the marks are placed (the daemon never opens
	// /etc/passwd afterwards); nil means numeric uids.
	Owners map[uint32]string
	// Version is the daemon's version, for the status and the metrics.
	Version string
	// Feeds reports the rule feeds' state for the status and the metrics;
	// nil: no feeds. Called from the control socket's goroutines, never
	// on the event path.
	Feeds func() []StatusFeed
}

// Daemon is the running pipeline. Create it with New and start it with
// Run; it is not reusable after Run returns. Reload and LogStats are safe
// to call from any goroutine while it runs.
type Daemon struct {
	// cfg is the configuration of the start. What a reload may change is
	// read from set (live), never from cfg.
	cfg       policy.Config
	log       *zap.Logger
	notify    Notifier
	ruleDirs  []string
	owners    map[uint32]string
	pid       int32
	loadRules func() (*scanner.Ruleset, error)

	rules atomic.Pointer[ruleSet]  // in force; swapped whole by Reload
	set   atomic.Pointer[settings] // the live keys in force; swapped whole by Reload

	reloadMu   sync.Mutex // serializes reloads, and guards following
	inForce    policy.Config
	readConfig func() (policy.Config, error) // Options.LoadConfig
	logLevel   *zap.AtomicLevel              // Options.LogLevel

	group *fan.Group // permission events
	notif *fan.Group // writers' closes, to invalidate cached verdicts (and scan on close)
	// closeq holds the files writers closed, waiting for a scan on
	// close (onclose.go); nil when [scan] on_close is off.
	closeq *closeQueue
	// closeRunning counts the workers on a scan on close, or about to
	// take one (closeSlot).
	closeRunning atomic.Int32
	// kern is the seam to the kernel for the event path: the group and
	// fan's fd functions, or a fake in unit tests.
	kern  kernel
	cache *verdictCache
	sched *sched // the jobs waiting for a worker, shared fairly between users
	// detections carries detections from the workers to the describing
	// stage and on to the recorder, after the answers.
	detections *detectionQueue
	recorder   Recorder
	procReads  procReads                               // the describing stage's reads under openers' /proc
	unscanned  unscannedCounts                         // opens answered without a scan, per uid
	exeIDs     atomic.Pointer[map[fan.FileID]struct{}] // exclude_exe, by identity: the files the paths lead to
	mounts     mountTrust                              // which mounts' paths exclude_paths may match
	jobs       sync.Pool
	// inflight counts jobs alive: queued, scanning, waiting for a scan of
	// the same file, or waiting for their timer. Only the reader
	// increments it, so checking it against MaxPending before an
	// increment is race-free.
	inflight atomic.Int64

	scansMu sync.Mutex // guards scans and the leaders' followers and dirty flags
	// scans holds the job whose scan runs (or waits in the queue) for each
	// file: opens of the same file and stamp wait for its verdict instead of
	// scanning again. Every job in the queue was put here first.
	scans map[fan.FileID]*job

	workers     []*worker
	talkers     talkers
	readerBusy  atomic.Int64 // when the reader began its current batch (Unix ns), 0 when idle
	readerDone  atomic.Bool  // the reader returned
	workersDone atomic.Bool  // the workers returned and d.detections is closed
	// recorderBusy: when the recorder began its current record (Unix ns),
	// 0 when idle; recordErr: why the last write of the record failed,
	// nil once one succeeds again.
	recorderBusy atomic.Int64
	recordErr    atomic.Pointer[string]
	// allow is the allow list in force, in memory (allow.go); allowErr:
	// why the last read of it failed, nil once one succeeds again.
	allow       atomic.Pointer[allowList]
	allowErr    atomic.Pointer[string]
	allowMu     sync.Mutex   // serializes refreshAllowList
	filesystems atomic.Int64 // protected now

	stats     Stats
	talkDrain talkDrain // the talkers' samples counted so far
	// answers are the reader's fast-path answers not written yet; the
	// reader's alone.
	answers answerQueue
	// held are the answers to opens past max_pending_per_uid, written by
	// writeHeld after overloadHold; stopHeld, closed at shutdown, makes
	// it write them at once.
	held     chan heldAnswer
	stopHeld chan struct{}

	version    string
	feedStatus func() []StatusFeed // Options.Feeds
	started    time.Time
	rates      rateWindow // events and scans over the last minute, for the status
}

// Notifier receives the daemon's state changes. Its methods must not
// block for long; errors are the notifier's to log.
type Notifier interface {
	Ready()
	Reloading()
	Status(line string)
	Stopping()
}

type nopNotifier struct{}

func (nopNotifier) Ready()        {}
func (nopNotifier) Reloading()    {}
func (nopNotifier) Status(string) {}
func (nopNotifier) Stopping()     {}

// ruleSet is a compiled rule set and its generation: cached verdicts of
// another generation are stale.
type ruleSet struct {
	rs  *scanner.Ruleset
	gen uint64
	// emptyClean says that these rules match no empty content, whatever
	// the file's name or owner (scanner.Ruleset.EmptyMatches): an open of
	// an empty file needs no scan.
	emptyClean bool
	// refs counts the holders of rs's compiled rules: the daemon while the
	// set is in force, and each worker whose scanner was made from it. The
	// last to let go frees them (Ruleset.Close): a replaced set is
	// megabytes of C memory that the garbage collector would free only
	// when the Go heap, which hardly grows on a reload, next asks it to.
	refs atomic.Int32
}

// newRuleSet returns rs in force as generation gen, held by the daemon.
func newRuleSet(rs *scanner.Ruleset, gen uint64) *ruleSet {
	s := &ruleSet{rs: rs, gen: gen}
	if rs != nil {
		m, known := rs.EmptyMatches()
		s.emptyClean = known && len(m) == 0
	}
	s.refs.Store(1)
	return s
}

// acquire takes a reference, unless the set was let go by all and freed.
func (s *ruleSet) acquire() bool {
	for {
		n := s.refs.Load()
		if n == 0 {
			return false
		}
		if s.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// release drops a reference; the last one frees the compiled rules.
func (s *ruleSet) release() {
	if s.refs.Add(-1) == 0 && s.rs != nil {
		s.rs.Close()
	}
}

// New prepares a daemon: it creates the fanotify groups, but places no
// marks. It needs CAP_SYS_ADMIN.
func New(opts Options) (*Daemon, error) {
	if opts.Rules == nil {
		return nil, errors.New("creating daemon: no rules")
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	notify := opts.Notify
	if notify == nil {
		notify = nopNotifier{}
	}
	g, err := fan.NewGroup(fan.GroupOptions{Pidfd: true})
	if err != nil {
		return nil, err
	}
	// With scans on close, the writer's pidfd: its uid for exclude_uids,
	// and a safe look at who wrote a detected file.
	notif, err := fan.NewGroup(fan.GroupOptions{Notification: true, Pidfd: opts.Config.Scan.OnClose})
	if err != nil {
		g.Close()
		return nil, err
	}
	d := &Daemon{
		cfg:        opts.Config,
		log:        log,
		notify:     notify,
		ruleDirs:   opts.RuleDirs,
		owners:     opts.Owners,
		pid:        int32(os.Getpid()),
		loadRules:  opts.LoadRules,
		inForce:    opts.Config,
		readConfig: opts.LoadConfig,
		logLevel:   opts.LogLevel,
		group:      g,
		notif:      notif,
		kern:       groupKernel{Group: g, stater: new(fan.Stater)},
		sched:      newSched(opts.Config.MaxPending, opts.Config.MaxPendingPerUID, opts.Config.Workers),
		detections: newDetectionQueue(),
		held:       make(chan heldAnswer, maxHeld),
		stopHeld:   make(chan struct{}),
		recorder:   opts.Recorder,
		mounts:     trustNoMounts{}, // until Run has a namespace marker
		scans:      make(map[fan.FileID]*job),
		version:    opts.Version,
		feedStatus: opts.Feeds,
		started:    time.Now(),
	}
	if d.cache, err = newVerdictCache(opts.Config.Cache.Entries, &d.stats); err != nil {
		g.Close()
		notif.Close()
		return nil, err
	}
	if opts.Config.Scan.OnClose {
		d.closeq = newCloseQueue(opts.Config.Scan.OnCloseQueue, d.kern.CloseFd, &d.stats)
	}
	d.stats.logDropped = opts.LogDropped
	d.procReads.abandoned = &d.stats.OpenerReadsAbandoned
	d.storeSettings(opts.Config)
	d.refreshExeIDs()
	d.rules.Store(newRuleSet(opts.Rules, 1))
	d.jobs.New = func() any { return newJob(d) }
	// Made here, not in Run: Healthy and the status read them from other
	// goroutines (the watchdog) from the start.
	for range d.cfg.Workers {
		d.workers = append(d.workers, &worker{d: d})
	}
	return d, nil
}

// withVault returns the protect settings with the quarantine's own files
// among the excluded paths: the vault (transformed content, never to be
// scanned) and the log, whose rows hold the paths, command lines and
// matched strings of detections in the clear — scanned, it would match.
func withVault(cfg policy.Config) policy.ProtectConfig {
	p := cfg.Protect
	p.ExcludePaths = slices.Clone(p.ExcludePaths)
	if q := cfg.Quarantine; q.Vault != "" {
		p.ExcludePaths = append(p.ExcludePaths, q.Vault)
	}
	if q := cfg.Quarantine; q.DB != "" {
		p.ExcludePaths = append(p.ExcludePaths, q.DB, q.DB+"-wal", q.DB+"-shm", q.DB+"-journal")
	}
	return p
}

// kernel is the seam between the event path and the kernel.
type kernel interface {
	Respond(fd int32, allow bool) error
	Ignore(fd int32) error
	Unignore(fd int32) error
	CloseFd(fd int32) error
	Stat(fd int32) (fan.FileInfo, error)
	OpenerUID(pidfd int32) (uint32, error)
	// Path reads the path of the event fd fd into buf (fan.FdPath).
	Path(fd int32, buf []byte) ([]byte, error)
}

// groupKernel is the kernel of a running daemon: its permission group,
// and a Stater that learns which filesystems have no generations.
type groupKernel struct {
	*fan.Group
	stater *fan.Stater
}

func (groupKernel) CloseFd(fd int32) error                { return fan.CloseFd(fd) }
func (k groupKernel) Stat(fd int32) (fan.FileInfo, error) { return k.stater.Stat(fd) }
func (groupKernel) OpenerUID(pidfd int32) (uint32, error) { return fan.PidfdUID(pidfd) }
func (groupKernel) Path(fd int32, buf []byte) ([]byte, error) {
	return fan.FdPath(fd, buf)
}

// Stats returns the daemon's counters.
func (d *Daemon) Stats() *Stats { return &d.stats }

// LogStats logs the counters (on SIGUSR1, say).
func (d *Daemon) LogStats() { d.log.Info(d.stats.summary("stats"), d.stats.fields()...) }

// ReloadResult is what a reload put in force.
type ReloadResult struct {
	Rules      int                 `json:"rules"`
	Files      int                 `json:"files"`
	Generation string              `json:"generation"`
	Unchanged  bool                `json:"unchanged"` // same generation as the rules in force: they stay, caches too
	FromCache  bool                `json:"from_cache"`
	Broken     []scanner.FileError `json:"broken,omitempty"` // files left out
	Took       time.Duration       `json:"took_ns"`
	TookMS     int64               `json:"took_ms"`
	// Config is what the reload did with the configuration file.
	Config ConfigReload `json:"config"`
}

// Reload reads the configuration file again (Options.LoadConfig), then
// compiles the rules again, and puts both in force.
//
// Of the configuration, the keys that can change live are put in force
// (policy.Changes); the others keep their values and are named in the
// result's Config.RestartNeeded. A configuration that does not load fails
// the reload: nothing changes, neither the configuration nor the rules.
//
// The new rules: scans running finish with the old rules, new scans use
// the new ones, and every cached verdict becomes stale (the kernel's
// ignore marks are flushed, the daemon's entries carry the old
// generation). No event waits for the compile. Rules whose generation
// (the digest of their inputs) is the one in force change nothing, and
// the cached verdicts stay. If the rules cannot be loaded, the rules and
// configuration in force stay and the error says why. Reloads are
// serialized.
func (d *Daemon) Reload() (ReloadResult, error) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	if d.loadRules == nil {
		return ReloadResult{}, errors.New("reloading rules: no way to load them")
	}
	d.notify.Reloading()
	defer d.notify.Ready()
	start := time.Now()
	cfg, changes, err := d.loadConfig()
	if err != nil {
		d.stats.ReloadFailures.Add(1)
		d.log.Error("reloading failed, the configuration and rules in force stay", zap.Error(err))
		d.updateStatus()
		return ReloadResult{}, err
	}
	d.refreshAllowList(context.Background(), true) // logs and shows its failure itself
	rs, err := d.loadRules()
	if err != nil {
		d.stats.ReloadFailures.Add(1)
		d.log.Error("reloading rules failed, the rules in force stay: "+err.Error(), zap.Error(err))
		d.updateStatus()
		return ReloadResult{}, fmt.Errorf("reloading rules: %w", err)
	}
	d.applyConfig(cfg, changes)
	for _, b := range rs.Broken {
		d.log.Error("rule file left out: "+printable(b.Error()), zap.String("file", b.Path), zap.Int("line", b.Line), zap.String("error", b.Msg))
	}
	old := d.rules.Load()
	unchanged := rs.Generation != "" && rs.Generation == old.rs.Generation
	if unchanged {
		rs.Close() // never in force: the set in force is the same rules
	} else {
		d.rules.Store(newRuleSet(rs, old.gen+1))
		old.release() // freed once the last worker scanning with it is done
		// After the swap: a worker that adds a mark for the old rules
		// after this flush sees the new generation and removes it (see
		// endScan).
		if err := d.group.FlushInodeMarks(); err != nil {
			d.log.Error("cannot flush the kernel's cached verdicts: "+err.Error(), zap.Error(err))
		} else {
			d.stats.KernelFlushes.Add(1)
		}
		d.stats.Reloads.Add(1)
	}
	res := ReloadResult{Rules: rs.Count, Files: len(rs.Files), Generation: rs.Generation, Unchanged: unchanged,
		FromCache: rs.FromCache, Broken: rs.Broken, Took: time.Since(start), Config: changes}
	res.TookMS = res.Took.Milliseconds()
	if rs.CacheError != nil {
		d.log.Warn("compiled-rules cache not used: "+rs.CacheError.Error(), zap.Error(rs.CacheError))
	}
	d.log.Info(reloadedMessage(rs, unchanged, res.Took), zap.Int("rules", rs.Count), zap.Int("files", len(rs.Files)),
		zap.Int("broken", len(rs.Broken)), zap.String("generation", rs.ShortGeneration()),
		zap.Bool("unchanged", unchanged), zap.Bool("from_cache", rs.FromCache), zap.Duration("took", res.Took))
	d.updateStatus()
	return res, nil
}

// watchRules reloads the rules when w sees something change in the rule
// directories, once the changes have settled for reloadDebounce. It
// closes w.
func (d *Daemon) watchRules(ctx context.Context, w *fan.DirWatcher) {
	changes := make(chan struct{}, 1)
	go func() {
		defer close(changes)
		for w.Wait() == nil {
			select {
			case changes <- struct{}{}:
			default:
			}
		}
	}()
	defer func() {
		w.Close()
		for range changes { // until the waiting goroutine is gone
		}
	}()
	var settle <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-changes:
			if !ok {
				return
			}
			settle = time.After(reloadDebounce)
		case <-settle:
			settle = nil
			d.Reload() // logs its outcome
		}
	}
}

// reloadDebounce is how long the rule directories must stay quiet after a
// change before the rules are reloaded: an editor or a package manager
// writes several files, or one file in several steps.
const reloadDebounce = time.Second

// updateStatus sends the one-line status to the service manager.
func (d *Daemon) updateStatus() {
	rs := d.rules.Load()
	d.notify.Status(fmt.Sprintf("protecting %d filesystems with %d rules (%s); %d events, %d scans, %d detections",
		d.filesystems.Load(), rs.rs.Count, rs.rs.ShortGeneration(), d.stats.Events.Load(), d.stats.Scans.Load(), d.stats.Detections.Load()))
}

// Healthy reports whether the pipeline makes progress: the reader is
// alive and not stuck on one batch, and no scan has run past twice the
// budget while events wait in the queue. The systemd watchdog pings only
// while it holds: a wedged daemon is killed, and the kernel then allows
// the opens it held.
func (d *Daemon) Healthy() bool { return d.unhealthyReason() == "" }

// Run places the marks, reports readiness, and serves events until ctx is
// done or the reader fails. On the way out it stops reading, lets the
// workers answer what is pending (each event still within its budget), and
// closes the groups, upon which the kernel allows anything left.
func (d *Daemon) Run(ctx context.Context) error {
	defer func() {
		if err := d.cache.close(); err != nil {
			d.log.Warn("cannot unmap the verdict cache", zap.Error(err))
		}
	}()
	defer d.group.Close()
	defer d.notif.Close()

	// Zoneinfo is loaded lazily on first use; load it now, before any mark,
	// so that no later log line opens /etc/localtime (design §1, rule 3).
	_, _ = time.Now().Zone()
	// The allow list too: the workers consult a copy in memory. A failure
	// is logged and shown in the status; the list is read again every
	// allowRefresh.
	d.refreshAllowList(ctx, true)

	// A worker inside libyara (a cgo call) keeps its P until the runtime's
	// monitor takes it back, which can take milliseconds: with one P per
	// CPU and every worker scanning, the reader woken by the kernel would
	// wait for a P before it can answer anything. Two Ps beyond the
	// workers keep the reader and the deadline timers running. An explicit
	// GOMAXPROCS in the environment wins.
	if os.Getenv("GOMAXPROCS") == "" && runtime.GOMAXPROCS(0) < d.cfg.Workers+2 {
		runtime.GOMAXPROCS(d.cfg.Workers + 2)
	}

	var workers sync.WaitGroup
	for _, w := range d.workers {
		workers.Add(1)
		go func() {
			defer workers.Done()
			w.run()
		}()
	}
	recorded := make(chan struct{})
	described := make(chan *Detection, describedQueue)
	go d.describeAll(described)
	go func() {
		defer close(recorded)
		d.record(described)
	}()
	// The detections the workers handed on are recorded (and logged)
	// before Run returns — when the workers finished and shutdown closed
	// d.detections. If scans were still running, Run returns at once: a
	// record is one SQLite transaction and a quarantine move is crash-safe
	// (settled at the next start), so leaving mid-way loses nothing.
	defer func() {
		if !d.workersDone.Load() {
			return
		}
		select {
		case <-recorded:
		case <-time.After(recordDrain):
			d.log.Warn("detections still being recorded at shutdown: not waiting longer than " + recordDrain.String())
		}
	}()
	// Filesystems mounted only in other mount namespaces (containers,
	// PrivateTmp= units, an unprivileged user's namespaces), and the
	// mounts whose paths exclude_paths may match. Without it (a kernel
	// before 6.12, a sandbox that refuses setns), no path is trusted:
	// exclude_paths match nothing.
	nsm, err := fan.NewNamespaceMarker(fan.NamespaceOptions{
		FSTypes: d.cfg.Protect.FSTypes,
		Paths:   d.cfg.Protect.Paths,
		Mark:    d.markFilesystemAt,
		Report:  d.reportForeignMark,
	})
	if err != nil {
		d.log.Error("not protecting filesystems mounted in other mount namespaces, and exclude_paths match nothing: "+err.Error(),
			zap.Error(err))
	} else {
		defer nsm.Close()
		d.mounts = nsm
	}
	heldDone := make(chan struct{})
	go func() {
		defer close(heldDone)
		d.writeHeld()
	}()
	readerErr := make(chan error, 1)
	go func() {
		defer close(d.held) // the reader is its only sender
		err := d.read()
		d.readerDone.Store(true)
		readerErr <- err
	}()
	writesDone := make(chan error, 1)
	go func() { writesDone <- d.watchWrites() }()

	marker, err := fan.NewMarker(fan.MarkerOptions{
		FSTypes: d.cfg.Protect.FSTypes,
		Paths:   d.cfg.Protect.Paths,
		Mark:    d.markFilesystem,
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
		d.shutdown(readerErr, heldDone, &workers)
		return fmt.Errorf("placing marks: %w", err)
	}
	markerDone := make(chan error, 1)
	go func() { markerDone <- marker.Run() }()
	if nsm != nil {
		if err := nsm.Sync(); err != nil {
			d.log.Error("looking at other mount namespaces: "+err.Error(), zap.Error(err))
		}
		d.stats.ForeignFilesystems.Store(int64(len(nsm.Marked())))
		go func() {
			if err := nsm.Run(); err != nil {
				d.log.Error("not following other mount namespaces any more: "+err.Error(), zap.Error(err))
			}
		}()
	}

	// The control socket, the rule watcher and the status line: all off
	// the event path.
	bg, stopBG := context.WithCancel(context.Background())
	var background sync.WaitGroup
	defer func() {
		stopBG()
		background.Wait()
	}()
	reg := d.newRegistry() // GET /metrics, on the control socket and the metrics listener
	if d.cfg.Control.Socket != "" {
		ln, err := listenControl(d.cfg.Control.Socket)
		if err != nil {
			marker.Close()
			d.shutdown(readerErr, heldDone, &workers)
			return err
		}
		defer os.Remove(d.cfg.Control.Socket)
		background.Go(func() { d.serveControl(bg, ln, reg) })
	}
	if d.cfg.Metrics.Listen != "" {
		ln, err := listenMetrics(d.cfg.Metrics.Listen)
		if err != nil {
			marker.Close()
			d.shutdown(readerErr, heldDone, &workers)
			return err
		}
		d.log.Info("serving metrics", zap.String("address", "http://"+ln.Addr().String()+"/metrics"))
		background.Go(func() { d.serveMetrics(bg, ln, reg) })
	}
	if len(d.ruleDirs) > 0 {
		// Watching before READY=1: a rule dropped in right after is seen.
		if w, err := fan.NewDirWatcher(d.ruleDirs); err != nil {
			d.log.Warn("not watching the rule directories; reload with SIGHUP or fanguard reload: "+err.Error(), zap.Error(err))
		} else {
			background.Go(func() { d.watchRules(bg, w) })
		}
	}
	if q, ok := d.recorder.(*QuarantineRecorder); ok {
		background.Go(func() { d.retain(bg, q) })
	}
	if d.recorder != nil {
		background.Go(func() { every(bg, allowRefresh, func() { d.refreshAllowList(bg, false) }) })
	}
	background.Go(func() { every(bg, talkEvery, d.drainTalkers) })
	background.Go(func() { d.logUnscanned(bg) })
	// Also without exclude_exe: a reload may add some.
	background.Go(func() { every(bg, exeIDsRefresh, d.refreshExeIDs) })

	d.filesystems.Store(int64(len(marker.Marked())))
	rules := d.rules.Load().rs
	d.log.Info(fmt.Sprintf("protecting %s with %s, mode %s, budget %s, %s",
		plural(len(marker.Marked()), "filesystem"), rulesText(rules), d.cfg.Mode, d.cfg.Budget, plural(d.cfg.Workers, "worker")),
		zap.Int("filesystems", len(marker.Marked())),
		zap.Int("rules", rules.Count),
		zap.String("generation", rules.ShortGeneration()),
		zap.Bool("rules_from_cache", rules.FromCache),
		zap.Duration("rules_load", rules.LoadTime),
		zap.Int("workers", d.cfg.Workers),
		zap.Duration("budget", d.live().budget),
		zap.Stringer("mode", d.live().mode),
		zap.Int("cache_entries", d.cfg.Cache.Entries))
	d.updateStatus()
	d.notify.Ready()
	background.Go(func() {
		t := time.NewTicker(statusInterval)
		defer t.Stop()
		for {
			select {
			case <-bg.Done():
				return
			case <-t.C:
				d.filesystems.Store(int64(len(marker.Marked())))
				if nsm != nil {
					d.stats.ForeignFilesystems.Store(int64(len(nsm.Marked())))
				}
				d.updateStatus()
			}
		}
	})

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-readerErr:
		readerErr <- runErr // for shutdown
	case runErr = <-writesDone:
		runErr = fmt.Errorf("watching writes: %w", runErr)
	case runErr = <-markerDone:
		if runErr == nil {
			runErr = errors.New("mount watcher stopped")
		}
		runErr = fmt.Errorf("watching mounts: %w", runErr)
	}
	d.notify.Stopping()
	stopBG()
	marker.Close()
	rerr := d.shutdown(readerErr, heldDone, &workers)
	if runErr == nil {
		runErr = rerr
	}
	d.log.Info(d.stats.summary("stopped"), d.stats.fields()...)
	return runErr
}

// recordDrain bounds the wait for the recorder at shutdown.
const recordDrain = 10 * time.Second

// describedQueue bounds the detections described and waiting for the
// recorder: the describing stage waits when it is full.
const describedQueue = 64

// every calls f every interval until ctx is done.
func every(ctx context.Context, interval time.Duration, f func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

// statusInterval is how often the status line is refreshed.
const statusInterval = 10 * time.Second

// markFilesystem marks a filesystem in both groups: for its opens and for
// its writers' closes.
func (d *Daemon) markFilesystem(path string) error {
	if err := d.notif.MarkFilesystem(path); err != nil {
		return err
	}
	return d.group.MarkFilesystem(path)
}

// markFilesystemAt marks the filesystem of a mount of another mount
// namespace, through an fd of its root, in both groups.
func (d *Daemon) markFilesystemAt(fd int) error {
	if err := d.notif.MarkFilesystemAt(fd); err != nil {
		return err
	}
	return d.group.MarkFilesystemAt(fd)
}

// reportForeignMark logs a mark placed (or not) in another mount
// namespace.
func (d *Daemon) reportForeignMark(m fan.ForeignMount, err error) {
	if err != nil {
		d.log.Warn(fmt.Sprintf("cannot protect a filesystem of another mount namespace: %s (%s, mount namespace %d): %v",
			printable(m.Point), printable(m.FSType), m.Namespace, err), zap.String("mount", m.Point),
			zap.String("type", m.FSType), zap.Uint64("mount_namespace", m.Namespace), zap.Error(err))
		return
	}
	d.stats.ForeignFilesystems.Add(1)
	d.log.Info(fmt.Sprintf("protecting a filesystem of another mount namespace: %s (%s, %s, mount namespace %d)",
		printable(m.Point), printable(m.FSType), printable(m.Source), m.Namespace), zap.String("mount", m.Point),
		zap.String("type", m.FSType), zap.String("source", m.Source), zap.Uint64("mount_namespace", m.Namespace))
}

// shutdown stops the reader, lets the workers drain the queue for at most
// the budget plus a second (every event is answered by then: by its worker
// or by its deadline), and closes the groups. It returns the reader's
// error, if it failed.
func (d *Daemon) shutdown(readerErr chan error, heldDone chan struct{}, workers *sync.WaitGroup) error {
	d.group.Shutdown()
	err := <-readerErr
	if errors.Is(err, fan.ErrMalformed) {
		// Events the reader could not find wait in its last read: only
		// closing the group answers them (allow), and within their
		// budget it must be now. The workers' answers fail from here on;
		// the kernel has allowed their events.
		d.group.Close()
	}
	close(d.stopHeld)
	<-heldDone // the held answers are written
	if errors.Is(err, os.ErrClosed) {
		err = nil
	}
	d.sched.close() // the reader, the only sender, has returned
	done := make(chan struct{})
	go func() {
		workers.Wait()
		close(done)
	}()
	select {
	case <-done:
		close(d.detections.ch) // the workers, its only senders, are gone
		d.workersDone.Store(true)
	case <-time.After(d.live().budget + time.Second):
		d.log.Warn("scans still running at shutdown; the kernel allows what is left: "+plural(d.inflight.Load(), "scan"),
			zap.Int64("inflight", d.inflight.Load()))
	}
	if d.closeq != nil {
		d.closeq.close() // the files still waiting for a scan on close
	}
	d.group.Close()
	d.notif.Close()
	return err
}

func (d *Daemon) reportMark(m fan.Mount, err error) {
	if err != nil {
		d.log.Warn(fmt.Sprintf("cannot protect filesystem %s (%s): %v", printable(m.Point), printable(m.FSType), err),
			zap.String("mount", m.Point), zap.String("type", m.FSType), zap.Error(err))
		return
	}
	d.log.Info(fmt.Sprintf("protecting filesystem %s (%s, %s)", printable(m.Point), printable(m.FSType), printable(m.Source)),
		zap.String("mount", m.Point), zap.String("type", m.FSType), zap.String("source", m.Source))
}

// readBufferSize bounds one read from a group: the kernel creates an fd for
// every event it copies out, so this also bounds the fds one read can add
// (about 680 records of 24 bytes).
const readBufferSize = 16 << 10

// read is the reader: it reads event records, answers what the fast path
// can answer, and queues the rest for the workers. Every permission event
// it reads leaves it answered or queued.
func (d *Daemon) read() error {
	runtime.LockOSThread() // a long-lived blocking loop: keep it off the shared threads
	buf := make([]byte, readBufferSize)
	var scratch [4096]byte
	for {
		// Wait for events only when no answer waits to be written; else
		// take what is there and write the next few answers.
		var n int
		var err error
		if d.answers.n == 0 {
			d.readerBusy.Store(0)
			n, err = d.group.Read(buf)
		} else if d.answers.n < maxPendingAnswers {
			n, err = d.group.ReadNow(buf)
		}
		now := time.Now()
		d.readerBusy.Store(now.UnixNano())
		if errors.Is(err, fan.ErrEventDenied) {
			// Not fatal, and no spin: each such read consumes one event.
			d.kernelDenied(err)
			continue
		}
		if err != nil {
			d.writeAnswers(d.answers.n) // the group still takes answers after Shutdown
			return err
		}
		if err := d.handleBatch(buf[:n], now, scratch[:]); err != nil {
			d.writeAnswers(d.answers.n)
			return err
		}
		d.writeAnswers(answerChunk)
	}
}

// handleBatch runs the fast path over the records of one read. A
// malformed record that can still be delimited is answered with
// on_error and skipped; the records after it go on as usual. It returns
// an error wrapping fan.ErrMalformed only when a record cannot be
// delimited: the events in the rest of buf then cannot be found, and
// only closing the group answers them (see shutdown). A read never
// splits a record, so the next read would be in step again, but those
// events would wait for ever.
func (d *Daemon) handleBatch(buf []byte, now time.Time, scratch []byte) error {
	for off := 0; off < len(buf); {
		ev, size, err := fan.ParseEvent(buf[off:])
		if err != nil {
			d.stats.ParseErrors.Add(1)
			if size == 0 {
				return fmt.Errorf("parsing events at byte %d of %d: %w", off, len(buf), err)
			}
			d.malformed(ev, now, err)
		} else {
			d.handle(ev, now, scratch)
		}
		off += size
	}
	return nil
}

// malformed answers a record whose event_len delimits it but whose other
// fields are wrong (fan.ParseEvent) with on_error, as any open whose file
// the daemon cannot judge, at once, and closes its fds. It answers
// whatever the mask says, as suspect as the rest: an answer for an fd
// without a pending event fails (ENOENT) and cannot release another
// event, since the fd number is this record's own until it is closed. A
// pidfd in an info record it could not read stays open: it cannot be
// found.
func (d *Daemon) malformed(ev fan.Event, now time.Time, err error) {
	if ev.Fd >= 0 {
		d.stats.Errors.Add(1)
		d.answerEvent(ev, d.live().onError, now, noOutcome)
	} else {
		d.closePidfd(ev.Pidfd)
	}
	if c := d.stats.ParseErrors.Load(); c&(c-1) == 0 {
		onError := d.live().onError
		d.log.Error(fmt.Sprintf("malformed fanotify event record, answered with on_error (%s) and skipped (%s so far): %v", onError, plural(c, "record"), err),
			zap.Uint64("count", c), zap.Stringer("verdict", onError), zap.Error(err))
	}
}

// handle is the fast path for one event: it decides at once what needs no
// scan (the daemon's own opens, files that are not regular, verdicts in the
// cache, empty files the rules cannot match, exclusions, files too large,
// overload) and queues the answer for
// the reader to write in the opener's turn (answers.go), attaches the
// event to a scan of the same file already running, or queues a scan. It reads
// nothing under the opener's /proc but, with exclude_exe set, the identity
// of its executable (fan.ExeID, which cannot block); the opener's uid
// comes from its pidfd.
func (d *Daemon) handle(ev fan.Event, now time.Time, scratch []byte) {
	if ev.IsOverflow() {
		d.stats.Overflows.Add(1)
		d.log.Error("fanotify queue overflow: events were lost or allowed unscanned")
	}
	if ev.Fd < 0 {
		d.closePidfd(ev.Pidfd)
		if ev.IsPermission() {
			// FAN_REPORT_FD_ERROR: the kernel could not open the file for
			// us and denied the open itself.
			d.kernelDenied(syscall.Errno(-ev.Fd))
		}
		return
	}
	if !ev.IsPermission() {
		d.kern.CloseFd(ev.Fd)
		d.closePidfd(ev.Pidfd)
		return
	}
	d.stats.Events.Add(1)
	if ev.Pid == d.pid {
		d.stats.OwnPid.Add(1)
		d.answerEvent(ev, policy.Allow, now, outcomeOwn)
		return
	}
	if ev.Pid != 0 && ev.PidfdGone() {
		// The opener exited before the event was read: no open waits for
		// the answer. (Pid 0 is an opener outside our pid namespace: the
		// kernel has no pidfd for it, and it may well wait.)
		d.stats.OpenerGone.Add(1)
		d.answerEvent(ev, policy.Allow, now, outcomeGone)
		return
	}
	set := d.live()
	uid := unknownUID
	if ev.Pidfd >= 0 {
		if u, err := d.kern.OpenerUID(ev.Pidfd); err == nil {
			uid = u
		}
	}
	fi, err := d.kern.Stat(ev.Fd)
	switch {
	case err != nil:
		d.stats.Errors.Add(1)
		d.reply(uid, ev, set.onError, now, outcomeError)
		return
	case !fi.IsRegular():
		d.stats.NotRegular.Add(1)
		d.reply(uid, ev, policy.Allow, now, outcomeNotRegular)
		return
	}
	// A known detection is denied before any exclusion applies: an
	// exclusion spares a file its scan, never its verdict. And a cached
	// answer costs no path read: exclude_paths, the reader's only
	// readlink, comes after the cache.
	rules := d.rules.Load()
	gen := rules.gen
	if v, det, ok := d.cache.lookup(fi.ID, fi.Stamp, gen); ok {
		d.stats.CacheHits.Add(1)
		d.answerCached(uid, ev, v, det, now)
		return
	}
	if fi.Stamp.Size == 0 && rules.emptyClean {
		// What tar, cp and compilers open when they create a file: the
		// verdict on no content is known. Nothing is cached: the next
		// open after a write has another stamp anyway.
		d.stats.EmptyClean.Add(1)
		d.reply(uid, ev, policy.Allow, now, outcomeEmpty)
		return
	}
	if d.excluded(set, ev, fi, uid, scratch) {
		d.stats.Excluded.Add(1)
		d.reply(uid, ev, policy.Allow, now, outcomeExcluded)
		return
	}
	if fi.Stamp.Size > set.maxFileSize {
		d.stats.Oversize.Add(1)
		d.reply(uid, ev, set.onOversize, now, outcomeOversize)
		return
	}
	if d.inflight.Load() >= int64(d.cfg.MaxPending) {
		d.stats.CacheMisses.Add(1)
		d.stats.Overloaded.Add(1)
		d.unscanned.add(uid, unscannedOverload)
		d.reply(uid, ev, set.onOverload, now, outcomeOverloaded)
		return
	}
	if !d.sched.admit(uid, now) {
		d.stats.CacheMisses.Add(1)
		d.stats.Overloaded.Add(1)
		d.unscanned.add(uid, unscannedOverload)
		d.holdOverloaded(uid, ev, now)
		return
	}
	d.scansMu.Lock()
	l := d.scans[fi.ID]
	switch {
	case l != nil && l.info.Stamp == fi.Stamp && (!l.answered.Load() || l.started.Load()):
		// The same file and stamp are being scanned, or wait for a worker
		// with an open still held: wait for that verdict. (A scan already
		// answered by the budget that still waits for a worker waits
		// behind every open held: this open gets a scan of its own.)
		d.inflight.Add(1)
		j := d.jobs.Get().(*job)
		j.start(ev, uid, fi, now)
		l.followers = append(l.followers, j)
		d.scansMu.Unlock()
		d.stats.CacheMisses.Add(1)
		d.stats.DedupWaits.Add(1)
		return
	case l == nil:
		// A scan that ended since the lookup above stored its verdict
		// before it left scans, under scansMu: look again.
		if v, det, ok := d.cache.lookup(fi.ID, fi.Stamp, gen); ok {
			d.scansMu.Unlock()
			d.sched.leave(uid)
			d.stats.CacheHits.Add(1)
			d.answerCached(uid, ev, v, det, now)
			return
		}
	case l.info.Stamp != fi.Stamp:
		// The file changed since that scan began: its verdict will not be
		// cached, this newer scan's will.
		l.dirty = true
	}
	d.inflight.Add(1)
	j := d.jobs.Get().(*job)
	j.start(ev, uid, fi, now)
	d.scans[fi.ID] = j
	d.scansMu.Unlock()
	d.stats.CacheMisses.Add(1)
	d.sched.push(j) // never blocks
}

// stillWaiting reports whether an open waits for j's scan: j's own, or one
// of its followers'. The scheduler asks it of a job it is about to hand
// out.
func (d *Daemon) stillWaiting(j *job) bool {
	if !j.answered.Load() {
		return true
	}
	d.scansMu.Lock()
	defer d.scansMu.Unlock()
	for _, f := range j.followers {
		if !f.answered.Load() {
			return true
		}
	}
	return false
}

// dropLate finishes a job the scheduler dropped from its late queue: its
// open was answered by the budget, and its scan will not run. Nothing is
// cached, so the file's next open scans; an open that waits for it (it
// came while the job was queued) is answered on_overload.
func (d *Daemon) dropLate(j *job) {
	d.stats.LateDropped.Add(1)
	d.scansMu.Lock()
	if d.scans[j.info.ID] == j {
		delete(d.scans, j.info.ID)
	}
	followers := j.followers
	d.scansMu.Unlock()
	for _, f := range followers {
		if f.answer(d.live().onOverload, outcomeOverloaded) {
			d.stats.Overloaded.Add(1)
			d.unscanned.add(f.uid, unscannedOverload)
		}
		f.done()
	}
	j.done()
}

// closePidfd closes an event's pidfd, if it has one.
func (d *Daemon) closePidfd(pidfd int32) {
	if pidfd >= 0 {
		d.kern.CloseFd(pidfd)
	}
}

// kernelDenied counts an open the kernel denied because it could not
// open the file for us, and logs the 1st, 2nd, 4th, 8th... of them.
func (d *Daemon) kernelDenied(err error) {
	if c := d.stats.KernelDenied.Add(1); c&(c-1) == 0 {
		d.log.Error(fmt.Sprintf("the kernel denied an open it could not pass on (out of fds or memory?): %v (%s so far)", err, plural(c, "open")),
			zap.Uint64("count", c), zap.Error(err))
	}
}

// answerCached answers an event from the daemon's cache.
func (d *Daemon) answerCached(uid uint32, ev fan.Event, v policy.Verdict, det *detection, now time.Time) {
	d.reply(uid, ev, v, now, outcomeCached)
	if det != nil {
		d.cachedDetection(ev, v, det)
	}
}

// cachedDetection counts (and, at debug level, logs) an open of a file
// whose matches the cache remembers.
func (d *Daemon) cachedDetection(ev fan.Event, v policy.Verdict, det *detection) {
	if v == policy.Deny {
		d.stats.CachedDenials.Add(1)
	}
	if ce := d.log.Check(zap.DebugLevel, ""); ce != nil {
		ce.Message = "open of a detected file, answered from the cache: " + printable(det.rule) + ", opened by pid " +
			strconv.Itoa(int(ev.Pid)) + ": " + v.String()
		ce.Write(zap.String("rule", det.rule), zap.String("rule_file", det.ruleFile),
			zap.Int32("pid", ev.Pid), zap.Stringer("verdict", v))
	}
}

// answerEvent answers an event on the fast path, decided by oc, and
// closes its fd and pidfd.
func (d *Daemon) answerEvent(ev fan.Event, v policy.Verdict, read time.Time, oc eventOutcome) {
	if err := d.kern.Respond(ev.Fd, v == policy.Allow); err != nil {
		d.stats.AnswerErrors.Add(1)
	}
	d.stats.answered(oc, v == policy.Allow)
	d.stats.Decision.Record(time.Since(read))
	d.kern.CloseFd(ev.Fd)
	d.closePidfd(ev.Pidfd)
}

// watchWrites reads the notification group: a writer closed a file, so its
// cached verdicts go — the daemon's entry and the kernel's ignore mark —
// which catches what the kernel's own clearing misses (writes through a
// shared mapping, through other listeners' fds). With [scan] on_close,
// the file is then queued for a scan (onclose.go).
func (d *Daemon) watchWrites() error {
	buf := make([]byte, readBufferSize)
	var scratch [4096]byte
	for {
		n, err := d.notif.Read(buf)
		if errors.Is(err, fan.ErrEventDenied) {
			// An invalidation was lost with its event: drop every cached
			// verdict rather than trust one that may be stale.
			d.stats.InvalidationsLost.Add(1)
			d.invalidateAll("a writer's close could not be read")
			continue
		}
		if errors.Is(err, os.ErrClosed) {
			return nil
		}
		if err != nil {
			return err
		}
		for off := 0; off < n; {
			ev, size, err := fan.ParseEvent(buf[off:n])
			if err != nil {
				return fmt.Errorf("parsing events: %w", err)
			}
			off += size
			if ev.Fd < 0 || d.closeq == nil {
				d.closePidfd(ev.Pidfd)
			}
			switch {
			case ev.IsOverflow():
				d.invalidateAll("the notification queue overflowed")
			case ev.Fd < 0:
				// FAN_REPORT_FD_ERROR: a writer closed a file the kernel
				// could not open for us without waiting (a lease on it,
				// or we are out of fds). Which file, it does not say.
				d.stats.InvalidationsLost.Add(1)
				d.invalidateAll("a writer's close came for a file the kernel could not open for us: " + syscall.Errno(-ev.Fd).Error())
			case d.closeq != nil:
				if fi, ok := d.invalidate(ev.Fd); ok {
					d.queueClose(ev, fi, time.Now(), scratch[:]) // takes the fds
				} else {
					d.kern.CloseFd(ev.Fd)
					d.closePidfd(ev.Pidfd)
				}
			default:
				d.invalidate(ev.Fd)
				d.kern.CloseFd(ev.Fd)
			}
		}
	}
}

// invalidate drops the cached verdicts of the file behind fd, and
// returns what it stated of it; false if it is not a regular file.
func (d *Daemon) invalidate(fd int32) (fan.FileInfo, bool) {
	fi, err := d.kern.Stat(fd)
	if err != nil || !fi.IsRegular() {
		return fi, false
	}
	d.stats.Invalidations.Add(1)
	d.scansMu.Lock()
	if l := d.scans[fi.ID]; l != nil {
		l.dirty = true // its verdict may be for content older than this write
	}
	d.scansMu.Unlock()
	d.cache.forget(fi.ID, fi.Stamp)
	if d.kern.Unignore(fd) == nil {
		d.stats.KernelUnmarks.Add(1)
	}
	return fi, true
}

// invalidateAll drops every cached verdict, in the kernel and here.
func (d *Daemon) invalidateAll(why string) {
	d.log.Warn("dropping every cached verdict: "+why, zap.String("reason", why))
	d.scansMu.Lock()
	for _, l := range d.scans {
		l.dirty = true
	}
	d.scansMu.Unlock()
	if err := d.group.FlushInodeMarks(); err == nil {
		d.stats.KernelFlushes.Add(1)
	}
	d.cache.clear()
}

// excluded checks the configured exclusions, by identity: an opener
// cannot make a file or a program look excluded by naming it so.
//   - exclude_uids: the opener's real uid, from its pidfd.
//   - exclude_exe: the file the opener runs (device and inode of
//     /proc/<pid>/exe, which cannot block), against the files the
//     configured paths led to, in the daemon's mount namespace, when last
//     looked up (refreshExeIDs, every exeIDsRefresh). A program bind-mounted over an excluded one
//     in a namespace of the opener's is another file.
//   - exclude_paths: the path of the event fd, but only where the file was
//     opened through a mount of a trusted namespace (the host's or the
//     daemon's own): in a mount namespace of its own, an opener can make
//     any file appear at any path.
//
// Each check costs a system call and is made only when its list is
// non-empty. set are the settings in force for the event.
func (d *Daemon) excluded(set *settings, ev fan.Event, fi fan.FileInfo, uid uint32, scratch []byte) bool {
	e := set.excl
	if e.HasUIDs() && uid != unknownUID && e.UID(uid) {
		return true
	}
	if ids := d.exeIDs.Load(); len(*ids) > 0 {
		if id, err := fan.ExeID(ev.Pid); err == nil {
			if _, ok := (*ids)[id]; ok {
				return true
			}
		}
	}
	if e.HasPaths() && d.mounts.Trusted(fi.MountID) {
		if p, err := d.kern.Path(ev.Fd, scratch); err == nil && e.Path(p) {
			return true
		}
	}
	return false
}

// mountTrust tells whether a mount, by its unique id, belongs to a mount
// namespace whose paths are the administrator's (the host's or the
// daemon's own). Safe for concurrent use, allocation-free.
type mountTrust interface {
	Trusted(uniqueMountID uint64) bool
}

// trustNoMounts trusts no mount: without a namespace marker, the daemon
// cannot tell the host's mounts from an opener's.
type trustNoMounts struct{}

func (trustNoMounts) Trusted(uint64) bool { return false }

// exeIDsRefresh is how often the exclude_exe paths are looked up again: a
// package upgrade replaces a program by a new file.
const exeIDsRefresh = 10 * time.Second

// refreshExeIDs looks up the files the exclude_exe paths lead to now. A
// path that leads nowhere excludes nothing until it does. Between an
// upgrade of an excluded program and the next look up, the new program is
// scanned: the safe side.
func (d *Daemon) refreshExeIDs() {
	exe := d.live().excludeExe
	ids := make(map[fan.FileID]struct{}, len(exe))
	for _, p := range exe {
		if id, err := fan.PathID(p); err == nil {
			ids[id] = struct{}{}
		}
	}
	d.exeIDs.Store(&ids)
}
