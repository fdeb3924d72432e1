package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
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
type worker struct {
	d        *Daemon
	scanning atomic.Int64 // when the current scan began (Unix ns), 0 between scans: for Healthy
	rules    *ruleSet     // what scanner was made for
	scanner  *scanner.Scanner
	buf      []byte
	path     [4096]byte
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
		w.process(j)
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
// it; false when the queue is closed.
func (w *worker) next(spin time.Duration) (*job, bool) {
	select {
	case j, ok := <-w.d.queue:
		return j, ok
	default:
	}
	for until := time.Now().Add(spin); time.Now().Before(until); {
		select {
		case j, ok := <-w.d.queue:
			return j, ok
		default:
		}
	}
	j, ok := <-w.d.queue
	return j, ok
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
	allowListed bool   // it matched, but its sha256 is on the allow list
	exe         string // the opener's executable, "" if unknown
	uid         int64  // the opener's real uid, -1 if unknown
	cmdline     []byte
	scanTime    time.Duration // in YARA, 0 if no scan ran
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
	o := outcome{pid: j.pid, read: j.read, size: j.info.Stamp.Size}
	rules, err := w.use()
	v := d.cfg.OnError
	if err != nil {
		o.err = err
	} else {
		v = w.scan(j, &o)
	}
	if len(o.matches) > 0 {
		// Detections only, before the answer: the content's sha256 for the
		// allow list and the record, and who opened it, before the answer
		// lets the opener go on and perhaps exit (a denied cat is gone at
		// once).
		sum := sha256.Sum256(w.buf[:o.n])
		o.sha256 = hex.EncodeToString(sum[:])
		if d.recorder != nil {
			if ok, err := d.recorder.Allowed(context.Background(), o.sha256); err == nil && ok {
				// On the allow list: clean, for the caches too; logged
				// after the answer.
				d.stats.AllowListed.Add(1)
				o.allowListed = true
				o.matches, v = nil, policy.Allow
			}
		}
	}
	if len(o.matches) > 0 {
		o.exe, o.uid = opener(o.pid, w.path[:])
		o.cmdline, _ = fan.ProcCmdline(o.pid)
	}
	o.verdict = v
	cacheable := o.err == nil && o.complete
	ours, kernelCached := j.answerMarked(v, cacheable && len(o.matches) == 0)
	o.late = !ours
	if kernelCached {
		d.stats.KernelMarks.Add(1)
	}
	// The event is answered. What follows: the caches, the followers,
	// then logging.
	info := j.info
	w.endScan(j, rules, v, &o, cacheable, kernelCached)
	j.done()
	if cap(w.buf) > keptBuffer {
		w.buf = nil
	}

	if o.allowListed {
		d.log.Debug("detection allowed by the allow list", zap.String("sha256", o.sha256), zap.String("path", o.path))
	}
	if o.err != nil {
		d.stats.Errors.Add(1)
		d.log.Warn("cannot scan file, answered with on_error", zap.ByteString("path", []byte(o.path)),
			zap.Int32("pid", o.pid), zap.Stringer("verdict", d.cfg.OnError), zap.Error(o.err))
	}
	if o.scanTime > 0 {
		// Who makes the daemon work, for the status: after the answer.
		exe := o.exe
		if exe == "" {
			if p, err := fan.ExePath(o.pid, w.path[:]); err == nil {
				exe = string(p)
			} else {
				exe = "(exited)"
			}
		}
		d.talkers.add(time.Now(), exe, filepath.Dir(o.path), o.scanTime)
	}
	if len(o.matches) == 0 {
		return
	}
	d.stats.Detections.Add(1)
	if o.late {
		d.stats.LateDetections.Add(1)
	}
	answered := v
	if o.late {
		answered = d.cfg.OnTimeout
	}
	d.detections <- &Detection{ // may wait: a detection is never dropped
		Time:            o.read,
		Action:          d.action(o.matches),
		Verdict:         v,
		Answered:        answered,
		Late:            o.late,
		Matches:         o.matches,
		SHA256:          o.sha256,
		Size:            int64(o.n),
		Path:            detectionPath(o.path, info.ID),
		File:            info,
		PID:             o.pid,
		Exe:             o.exe,
		Cmdline:         o.cmdline,
		UID:             o.uid,
		RulesGeneration: rules.rs.Generation,
	}
}

// endScan closes a scan: it keeps the verdict in the caches
// if it still holds, and answers the events that waited for it.
func (w *worker) endScan(j *job, rules *ruleSet, v policy.Verdict, o *outcome, cacheable, kernelCached bool) {
	d := w.d
	detected := len(o.matches) > 0
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
	followers := j.followers
	d.scansMu.Unlock()

	if ce := d.log.Check(zap.DebugLevel, "scanned"); ce != nil {
		ce.Write(zap.ByteString("path", []byte(o.path)), zap.Int64("size", o.size), zap.Stringer("verdict", v),
			zap.Bool("cached", valid), zap.Bool("kernel_cached", kernelCached && valid),
			zap.Bool("dirty", dirty), zap.Bool("complete", o.complete), zap.Int("waited", len(followers)))
	}
	if kernelCached && !valid {
		// A reload after the mark, a write during the scan, or a stamp
		// that moved: the kernel must not answer for this file.
		if d.kern.Unignore(j.fd) == nil {
			d.stats.KernelUnmarks.Add(1)
		}
	}
	for _, f := range followers {
		if !f.finish(v) && len(o.matches) > 0 {
			d.stats.LateDetections.Add(1)
		}
	}
}

// scan decides the verdict of one event with the worker's scanner. It
// reads the file through the event fd only.
func (w *worker) scan(j *job, o *outcome) policy.Verdict {
	d := w.d
	if p, err := fan.FdPath(j.fd, w.path[:]); err == nil {
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
		return d.cfg.OnError
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
		return d.cfg.OnError
	}
	o.n = n
	o.complete = int64(n) == size
	o.matches = matches
	v := policy.Allow
	for _, m := range matches {
		if policy.Decide(d.cfg.Mode, policy.Effective(m.Action, d.cfg.Quarantine.Action)) == policy.Deny {
			v = policy.Deny
		}
	}
	return v
}

// detectionPath is the path a detection of file id is recorded under,
// from the path /proc gave for its fd. The kernel appends " (deleted)" to
// the path of an unlinked file, but a file may be named so too: the
// suffix goes unless the path as it is still leads to the file. It looks
// the path up: after the answer only.
func detectionPath(p string, id fan.FileID) []byte {
	base, ok := strings.CutSuffix(p, " (deleted)")
	if !ok {
		return []byte(p)
	}
	if fi, err := os.Lstat(p); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Dev == id.Dev && st.Ino == id.Ino {
			return []byte(p)
		}
	}
	return []byte(base)
}

// opener returns the executable and real uid of process pid, "" and -1
// where /proc no longer tells.
func opener(pid int32, scratch []byte) (exe string, uid int64) {
	uid = -1
	if p, err := fan.ExePath(pid, scratch); err == nil {
		exe = string(p)
	}
	if u, err := fan.ProcUID(pid); err == nil {
		uid = int64(u)
	}
	return exe, uid
}

func (d *Daemon) owner(uid uint32) string {
	if name, ok := d.owners[uid]; ok {
		return name
	}
	return strconv.FormatUint(uint64(uid), 10)
}
