package daemon

import (
	"sync/atomic"
	"time"

	"github.com/fanguard/fanguard/fan"
	"github.com/fanguard/fanguard/policy"
)

// A job is one permission event on its way through the workers. Two parties
// race to answer it: whoever has the scan's verdict (the worker, or for a
// follower the worker of its leader's scan), and the deadline timer with
// on_timeout when the budget runs out. The compare-and-swap on answered
// lets exactly one of them answer. Both hold a reference; whoever drops the
// last one closes the event fd (always after the answer, so the fd number
// cannot be reused under a pending event) and recycles the job.
type job struct {
	d     *Daemon
	timer *time.Timer // fires expire; created once, re-armed per event

	fd    int32
	pid   int32
	pidfd int32        // the opener's pidfd, or < 0; closed on release unless taken (takePidfd)
	uid   uint32       // the opener's real uid (unknownUID if the kernel could not say)
	info  fan.FileInfo // stated by the reader, before the scan
	read  time.Time    // when the reader read the event: the budget counts from here

	vstart uint64 // start tag in the scheduler's fair queueing (sched.push)

	answered atomic.Bool
	started  atomic.Bool // a worker took it (for the reader: a scan of an answered job that still runs is worth waiting for)
	refs     atomic.Int32
	// onClose: a scan of a file a writer closed (onclose.go), with no
	// event to answer, no timer, and not counted in inflight nor by the
	// scheduler.
	onClose bool

	// Guarded by Daemon.scansMu while the job is in Daemon.scans:
	followers []*job // events for the same file and stamp, answered with this job's verdict
	dirty     bool   // the file changed or a writer closed it during the scan: do not cache
}

func newJob(d *Daemon) *job {
	j := &job{d: d}
	j.timer = time.AfterFunc(time.Hour, j.expire)
	j.timer.Stop()
	return j
}

// start arms a recycled job for ev, of an opener with uid, admitted by
// the scheduler. It takes ev's pidfd. Only the reader calls it.
func (j *job) start(ev fan.Event, uid uint32, fi fan.FileInfo, read time.Time) {
	j.fd, j.pid, j.pidfd, j.uid, j.info, j.read = ev.Fd, ev.Pid, ev.Pidfd, uid, fi, read
	j.onClose = false
	j.dirty = false
	j.followers = j.followers[:0]
	j.answered.Store(false)
	j.started.Store(false)
	j.refs.Store(2) // the scanning side's and the timer's
	j.timer.Reset(j.d.live().budget - time.Since(read))
}

// startClose arms a recycled job for the scan of a file a writer closed,
// stated as fi: it takes it's fds. The job counts as answered (no open
// waits for it) and started, so that opens of the same file and stamp
// wait for its verdict (see handle); its only reference is the scanning
// side's.
func (j *job) startClose(it *closeItem, fi fan.FileInfo) {
	j.fd, j.pid, j.pidfd, j.uid, j.info, j.read = it.fd, it.pid, it.pidfd, it.uid, fi, it.read
	it.fd, it.pidfd = -1, -1
	j.onClose = true
	j.dirty = false
	j.followers = j.followers[:0]
	j.answered.Store(true)
	j.started.Store(true)
	j.refs.Store(1)
}

// answer sends v, decided by oc, unless the event was answered already,
// and reports whether it did.
func (j *job) answer(v policy.Verdict, oc eventOutcome) bool {
	ok, _ := j.answerMarked(v, oc, false)
	return ok
}

// answerMarked is answer that, if mark, first adds the kernel's ignore
// mark on the file, while the opener is still held: released, a writer
// could change the file and close it before the mark, which the kernel
// would then accept for content never scanned (its change came first, so
// it does not clear the mark). When the deadline answered first, no mark
// is added. It reports whether it answered and whether the mark was added.
func (j *job) answerMarked(v policy.Verdict, oc eventOutcome, mark bool) (answered, marked bool) {
	if !j.answered.CompareAndSwap(false, true) {
		return false, false
	}
	if mark {
		marked = j.d.kern.Ignore(j.fd) == nil
	}
	if err := j.d.kern.Respond(j.fd, v == policy.Allow); err != nil {
		j.d.stats.AnswerErrors.Add(1)
	}
	j.d.stats.answered(oc, v == policy.Allow)
	j.d.stats.Decision.Record(time.Since(j.read))
	return true, marked
}

// expire runs on the timer's goroutine when the budget is spent.
func (j *job) expire() {
	if j.answer(j.d.live().onTimeout, outcomeTimedOut) {
		j.d.stats.TimedOut.Add(1)
		j.d.unscanned.add(j.uid, unscannedTimeout)
	}
	j.release()
}

// takePidfd hands the opener's pidfd over to the caller, who closes it.
func (j *job) takePidfd() int32 {
	p := j.pidfd
	j.pidfd = -1
	return p
}

// done is the scanning side's way out: stop the timer (dropping its
// reference if it will never fire) and drop the scanning side's
// reference. The job may be recycled as soon as done returns.
func (j *job) done() {
	if j.timer.Stop() {
		j.release()
	}
	j.release()
}

// finish answers v, decided by oc (if the timer has not), and calls done.
// It reports whether v was the answer.
func (j *job) finish(v policy.Verdict, oc eventOutcome) bool {
	ok := j.answer(v, oc)
	j.done()
	return ok
}

func (j *job) release() {
	if j.refs.Add(-1) != 0 {
		return
	}
	d := j.d
	d.kern.CloseFd(j.fd)
	j.fd = -1
	if j.pidfd >= 0 {
		d.kern.CloseFd(j.pidfd)
		j.pidfd = -1
	}
	clear(j.followers)
	if !j.onClose {
		d.inflight.Add(-1)
		d.sched.leave(j.uid)
	}
	d.jobs.Put(j)
}
