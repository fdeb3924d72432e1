package daemon

import (
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/fanguard/fanguard/fan"
	"github.com/fanguard/fanguard/policy"
	"github.com/fanguard/fanguard/scanner"
)

// A worker takes jobs off the queue and scans them with its own YARA
// scanner, made for the rules in force. It owns its read buffer, which
// grows to the largest file it has scanned up to keptBuffer; a larger one
// is let go after its scan, so that a few huge files (any user can make a
// sparse one of max_file_size) do not pin workers × max_file_size.
//
// A worker never reads under an opener's /proc: what the record needs of
// the opener is read after the answer by the describing stage, with a
// bound on each read (describe.go).
type worker struct {
	d        *Daemon
	busy     atomic.Int64 // when the current job began (Unix ns), 0 between jobs: for Healthy
	scanning atomic.Int64 // when the current scan began (Unix ns), 0 outside scans
	rules    *ruleSet     // what scanner was made for
	scanner  *scanner.Scanner
	buf      []byte
	path     [4096]byte
	dropped  []*job     // late jobs the scheduler dropped, to finish
	talk     talkBuffer // scans for the talkers, counted by drainTalkers
}

// keptBuffer is the largest read buffer a worker keeps between scans.
const keptBuffer = 4 << 20

func (w *worker) run() {
	defer w.drop()
	spin := time.Duration(0)
	if runtime.NumCPU() > 1 {
		spin = workerSpin
	}
	for {
		j, ok := w.next(spin)
		if !ok {
			return
		}
		if j != nil && j.onClose {
			w.processClose(j)
			continue
		}
		if j != nil {
			uid, wasBig := j.uid, big(j)
			w.process(j)
			w.d.sched.finished(uid, wasBig)
		}
	}
}

// workerSpin is how long a worker that finds the queue empty keeps polling
// it before it parks. A parked worker costs a wake-up (a futex and, on a
// virtual machine, an inter-processor interrupt: tens of microseconds)
// when the reader queues the next job; a program opening files one after
// the other queues its next open just about that much after our answer.
// Measured with make bench (2 CPUs, 10,000 files): cold pass 4.06 s
// without the spin, 3.85 s with it. The cost is bounded: at most this much
// CPU per scan, none when the daemon is idle, none on a single CPU.
const workerSpin = 30 * time.Microsecond

// next returns the next job, polling the queue for spin before parking on
// it; false when the queue is closed and empty. A nil job with true is a
// token whose job left the queue another way: ask again.
func (w *worker) next(spin time.Duration) (*job, bool) {
	ready := w.d.sched.ready
	got, ok := false, true
	select {
	case _, ok = <-ready:
		got = true
	default:
	}
	if cq := w.d.closeq; !got && cq != nil && len(cq.wake) > 0 {
		// A file a writer closed waits: this worker has work, so no
		// spin (it burnt a core's share beside the writer, 30 µs before
		// each scan on close: a fifth of the daemon's CPU during a tar
		// xf). An open that comes meanwhile waits for at most that one
		// scan, as it would for a spinning worker's.
		spin = 0
	}
	for until := time.Now().Add(spin); !got && time.Now().Before(until); {
		select {
		case _, ok = <-ready:
			got = true
		default:
		}
	}
	if !got {
		if cq := w.d.closeq; cq != nil {
			// Idle: a file a writer closed may be scanned, unless an
			// open's job came meanwhile (it goes first).
			select {
			case _, ok = <-ready:
			case <-cq.wake:
				select {
				case _, ok = <-ready:
					cq.signal() // for another idle worker, or for this one later
				default:
					return w.d.nextClose(), true
				}
			}
		} else {
			_, ok = <-ready
		}
	}
	if !ok {
		return nil, false
	}
	j, dropped := w.d.sched.pop(w.d.stillWaiting, w.dropped[:0])
	for i, l := range dropped {
		w.d.dropLate(l)
		dropped[i] = nil
	}
	w.dropped = dropped[:0]
	if j != nil {
		j.started.Store(true)
		if j.answered.Load() {
			w.d.stats.LateScans.Add(1)
		}
	}
	return j, true
}

// outcome is what a worker learned of one event, kept for logging after
// the job is released.
type outcome struct {
	pid         int32
	read        time.Time
	path        string
	size        int64
	n           int  // bytes read and scanned (in the worker's buffer until its next scan)
	complete    bool // the whole file was read and scanned
	sha256      string
	sum         [sha256.Size]byte // the content's sha256, if it matched
	allow       *allowList        // the allow list sum was looked up in (if allowSeen)
	allowSeen   bool              // it matched: sum was looked up in allow
	allowListed bool              // it matched, but its sha256 is on the allow list
	scanTime    time.Duration     // in YARA, 0 if no scan ran
	matches     []scanner.Match
	verdict     policy.Verdict // the scan's verdict
	late        bool           // the budget ran out first: on_timeout was the answer
	err         error
}

// use returns the rules in force, for which the worker then has a
// scanner of its own.
func (w *worker) use() (*ruleSet, error) {
	for {
		rules := w.d.rules.Load()
		if w.rules == rules {
			return rules, nil
		}
		if !rules.acquire() {
			continue // replaced and freed since the Load: take the newer set
		}
		s, err := rules.rs.NewScanner(w.d.cfg.ScanTimeout)
		if err != nil {
			rules.release()
			return rules, err
		}
		w.drop()
		w.rules, w.scanner = rules, s
		return rules, nil
	}
}

// drop closes the worker's scanner and lets go of its rules.
func (w *worker) drop() {
	if w.scanner != nil {
		w.scanner.Close()
		w.rules.release()
		w.rules, w.scanner = nil, nil
	}
}

func (w *worker) process(j *job) {
	d := w.d
	w.busy.Store(time.Now().UnixNano())
	defer w.busy.Store(0)
	o := outcome{pid: j.pid, read: j.read, size: j.info.Stamp.Size}
	set := d.live()
	rules, err := w.use()
	v := set.onError
	if err != nil {
		o.err = err
	} else {
		v = w.scan(set, j, &o)
	}
	v = w.checkAllowList(&o, v) // detections only, before the answer
	o.verdict = v
	cacheable := o.err == nil && o.complete
	ours, kernelCached := j.answerMarked(v, o.eventOutcome(), cacheable && len(o.matches) == 0)
	o.late = !ours
	if kernelCached {
		d.stats.KernelMarks.Add(1)
	}
	// The event is answered. What follows: the record's room, the caches
	// and the followers, then logging.
	if o.allowSeen {
		o.sha256 = hex.EncodeToString(o.sum[:])
	}
	size, deferred := d.reserveRecord(&o)
	detected := len(o.matches) > 0 && deferred == 0
	cacheable = cacheable && deferred == 0
	if deferred&(deferred-1) == 0 && deferred > 0 {
		defer d.logDeferred(o.path, deferred) // after the followers' answers
	}
	info, uid := j.info, j.uid
	w.endScan(j, rules, v, &o, cacheable, kernelCached)
	pidfd := w.release(j, detected)

	if o.allowListed {
		if ce := d.log.Check(zap.DebugLevel, ""); ce != nil {
			ce.Message = "detection allowed by the allow list: " + printable(o.path) + " (sha256 " + o.sha256 + ")"
			ce.Write(zap.String("sha256", o.sha256), zap.String("path", o.path))
		}
	}
	if o.err != nil {
		d.stats.Errors.Add(1)
		d.log.Warn("cannot scan file "+printable(o.path)+" (opened by pid "+strconv.Itoa(int(o.pid))+"), answered with on_error ("+
			set.onError.String()+"): "+o.err.Error(), zap.ByteString("path", []byte(o.path)),
			zap.Int32("pid", o.pid), zap.Stringer("verdict", set.onError), zap.Error(o.err))
	}
	if o.scanTime > 0 {
		// Who makes the daemon work, for the status: the talkers'
		// goroutine names the executable, if it still can.
		w.talk.add(talkSample{pid: o.pid, dir: filepath.Dir(o.path), took: o.scanTime})
	}
	if len(o.matches) == 0 {
		return
	}
	d.stats.Detections.Add(1)
	if o.late {
		d.stats.LateDetections.Add(1)
	}
	if !detected {
		return // deferred: see above
	}
	answered := v
	if o.late {
		answered = set.onTimeout
	}
	det := d.newDetection(&o, info, uid, rules, v, answered, pidfd, size)
	det.Late = o.late
	d.detections.send(det)
}

// newDetection is the record of a scan that matched (o), for the
// describing stage: v is the scan's verdict, answered what the open got.
func (d *Daemon) newDetection(o *outcome, info fan.FileInfo, uid uint32, rules *ruleSet, v, answered policy.Verdict, pidfd int32, size int64) *Detection {
	return &Detection{
		Time:            o.read,
		Action:          d.action(o.matches),
		Verdict:         v,
		Answered:        answered,
		Matches:         o.matches,
		SHA256:          o.sha256,
		Size:            int64(o.n),
		Path:            []byte(o.path),
		File:            info,
		PID:             o.pid,
		UID:             uidOf(uid),
		RulesGeneration: rules.rs.Generation,
		pidfd:           pidfd,
		size:            size,
	}
}

// reserveRecord makes room in the detection queue for the record of a
// scan that matched (o), and returns its size. When there is none it
// returns how many detections were deferred so far (0 when reserved, or
// when nothing matched): the detection is then not recorded now and its
// verdict not cached, so that the file's next open scans and detects it
// again, when there may be room.
func (d *Daemon) reserveRecord(o *outcome) (size int64, deferred uint64) {
	if len(o.matches) == 0 {
		return 0, 0
	}
	size = detectionSize(o.path, o.matches)
	if d.detections.reserve(size) {
		return size, 0
	}
	return size, d.stats.DetectionsDeferred.Add(1)
}

// logDeferred logs a detection not recorded for want of room; callers log
// the 1st, 2nd, 4th, 8th... of them.
func (d *Daemon) logDeferred(path string, count uint64) {
	d.log.Warn("detection not recorded now: the record queue is full; the file stays uncached and is detected again at its next open: "+
		printable(path)+" ("+plural(count, "detection")+" not recorded so far)",
		zap.String("path", path), zap.Uint64("count", count))
}

// release ends a job once endScan has answered it and its followers: it
// takes the job's pidfd for the record of a detection (the describing
// stage closes it), -1 otherwise, lets the job go, and drops a read
// buffer grown past keptBuffer.
func (w *worker) release(j *job, detected bool) (pidfd int32) {
	pidfd = -1
	if detected {
		pidfd = j.takePidfd()
	}
	j.done()
	if cap(w.buf) > keptBuffer {
		w.buf = nil
	}
	return pidfd
}

// uidOf is a uid as a Detection holds it: -1 if the kernel could not say.
func uidOf(uid uint32) int64 {
	if uid == unknownUID {
		return -1
	}
	return int64(uid)
}

// endScan closes a scan: it answers the events that waited for it, and
// keeps the verdict in the caches if it still holds.
//
// The followers are answered first, before any system call or log line
// of the scan's own: they wait for nothing but the verdict, which the
// scan's own open has had. Those that came before this point are
// answered first; the reader can still attach more until the job leaves
// d.scans (it must stay there until its verdict is cached, for the
// reader's second look at the cache), and those are answered as soon as
// it has left. Meanwhile a kernel mark that turns out invalid below
// stays in place a little longer (the time of those answers): it was
// added before the scan's own answer, and removed, as before, before
// anything is logged.
func (w *worker) endScan(j *job, rules *ruleSet, v policy.Verdict, o *outcome, cacheable, kernelCached bool) {
	d := w.d
	detected := len(o.matches) > 0
	d.scansMu.Lock()
	early := j.followers // the reader only appends, past len(early)
	d.scansMu.Unlock()
	w.answerFollowers(early, v, o.eventOutcome(), detected)
	// Whether the file still has the stamp the reader stated. After a
	// kernel mark: if it moved, the scan may have seen a mix, and the mark
	// would cache it. For a detection: it then holds even if a writer's
	// close came during the scan (the close may be of the write the scan
	// read; see verdictCache.forget).
	unchanged := false
	if kernelCached || cacheable && detected {
		fi, err := d.kern.Stat(j.fd)
		unchanged = err == nil && fi.Stamp == j.info.Stamp
	}
	valid := cacheable && (unchanged || !kernelCached)
	d.scansMu.Lock()
	// Under scansMu: invalidate marks a running scan dirty under the same
	// lock before it drops cache entries, so a write seen after this point
	// finds the entry stored here and drops it.
	dirty := j.dirty
	valid = valid && (!dirty || detected && unchanged) && d.rules.Load().gen == rules.gen
	// The allow list the verdict rests on, if it rests on one, is still
	// in force (it is swapped under scansMu: see refreshAllowList).
	valid = valid && (!o.allowSeen || d.allow.Load() == o.allow)
	if valid {
		e := cacheEntry{id: j.info.ID, stamp: j.info.Stamp, gen: rules.gen, verdict: v}
		if detected {
			e.det = &detection{rule: o.matches[0].Rule, ruleFile: o.matches[0].File}
		}
		d.cache.store(e)
	}
	if d.scans[j.info.ID] == j { // a scan of a newer version may have taken the place
		delete(d.scans, j.info.ID)
	}
	late := j.followers[len(early):] // attached meanwhile; no more can come
	d.scansMu.Unlock()
	w.answerFollowers(late, v, o.eventOutcome(), detected)

	if kernelCached && !valid {
		// A reload after the mark, a write during the scan, or a stamp
		// that moved: the kernel must not answer for this file.
		if d.kern.Unignore(j.fd) == nil {
			d.stats.KernelUnmarks.Add(1)
		}
	}
	if ce := d.log.Check(zap.DebugLevel, ""); ce != nil {
		ce.Message = "scanned " + printable(o.path) + ": " + v.String()
		ce.Write(zap.ByteString("path", []byte(o.path)), zap.Int64("size", o.size), zap.Stringer("verdict", v),
			zap.Bool("cached", valid), zap.Bool("kernel_cached", kernelCached && valid),
			zap.Bool("dirty", dirty), zap.Bool("complete", o.complete), zap.Int("waited", len(early)+len(late)))
	}
}

// answerFollowers answers the events that waited for a scan with its
// verdict v, decided by oc (unless their budget did first), and lets go
// of them.
func (w *worker) answerFollowers(followers []*job, v policy.Verdict, oc eventOutcome, detected bool) {
	for _, f := range followers {
		if !f.finish(v, oc) && detected {
			w.d.stats.LateDetections.Add(1)
		}
	}
}

// scan decides the verdict of one event with the worker's scanner, by the
// settings set. It reads the file through the event fd only.
func (w *worker) scan(set *settings, j *job, o *outcome) policy.Verdict {
	d := w.d
	// The path before the scan: the rules' external variables (filename,
	// filepath, extension) need it, and the rules cannot say whether
	// they use them.
	if p, err := d.kern.Path(j.fd, w.path[:]); err == nil {
		o.path = string(p)
	} else {
		o.path = "fd:" + strconv.Itoa(int(j.fd))
	}
	size := j.info.Stamp.Size
	if int64(cap(w.buf)) < size {
		w.buf = make([]byte, size)
	}
	n, err := fan.ReadFull(j.fd, w.buf[:size])
	if err != nil {
		o.err = err
		return set.onError
	}
	data := w.buf[:n]
	vars := scanner.VarsFor(strings.TrimSuffix(o.path, " (deleted)"), data[:min(n, 64)], d.owner(j.info.UID))
	w.scanning.Store(time.Now().UnixNano())
	matches, err := w.scanner.Scan(data, vars)
	o.scanTime = time.Duration(time.Now().UnixNano() - w.scanning.Load())
	d.stats.Scan.Record(o.scanTime)
	w.scanning.Store(0)
	d.stats.Scans.Add(1)
	d.stats.BytesScanned.Add(uint64(n))
	if err != nil {
		o.err = err
		return set.onError
	}
	o.n = n
	o.complete = int64(n) == size
	o.matches = matches
	v := policy.Allow
	for _, m := range matches {
		if policy.Decide(set.mode, policy.Effective(m.Action, set.action)) == policy.Deny {
			v = policy.Deny
		}
	}
	return v
}

func (d *Daemon) owner(uid uint32) string {
	if name, ok := d.owners[uid]; ok {
		return name
	}
	return strconv.FormatUint(uint64(uid), 10)
}

// eventOutcome is what decided an answer given with the verdict of the
// scan o: an error, a match, or neither.
func (o *outcome) eventOutcome() eventOutcome {
	switch {
	case o.err != nil:
		return outcomeError
	case len(o.matches) > 0:
		return outcomeDetected
	}
	return outcomeClean
}
