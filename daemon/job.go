package daemon

import (
	"sync/atomic"
	"time"

	"github.com/fanguard/fanguard/fan"
	"github.com/fanguard/fanguard/policy"
)

// A job is one permission event on its way through the workers. Two parties
// race to answer it: the worker with the scan's verdict, and the deadline
// timer with on_timeout when the budget runs out. The compare-and-swap on
// answered lets exactly one of them answer. Both hold a reference; whoever
// drops the last one closes the event fd (always after the answer, so the
// fd number cannot be reused under a pending event) and recycles the job.
type job struct {
	d     *Daemon
	timer *time.Timer // fires expire; created once, re-armed per event

	fd   int32
	pid  int32
	read time.Time // when the reader read the event: the budget counts from here

	answered atomic.Bool
	timedOut atomic.Bool // the timer answered (a verdict from the scan is late)
	refs     atomic.Int32
}

func newJob(d *Daemon) *job {
	j := &job{d: d}
	j.timer = time.AfterFunc(time.Hour, j.expire)
	j.timer.Stop()
	return j
}

// start arms a recycled job for ev. Only the reader calls it.
func (j *job) start(ev fan.Event, read time.Time) {
	j.fd, j.pid, j.read = ev.Fd, ev.Pid, read
	j.answered.Store(false)
	j.timedOut.Store(false)
	j.refs.Store(2) // the worker's and the timer's
	j.timer.Reset(j.d.cfg.Budget - time.Since(read))
}

// answer sends v unless the event was answered already, and reports
// whether it did.
func (j *job) answer(v policy.Verdict) bool {
	if !j.answered.CompareAndSwap(false, true) {
		return false
	}
	if err := j.d.kern.Respond(j.fd, v == policy.Allow); err != nil {
		j.d.stats.AnswerErrors.Add(1)
	}
	return true
}

// expire runs on the timer's goroutine when the budget is spent.
func (j *job) expire() {
	if j.answer(j.d.cfg.OnTimeout) {
		j.timedOut.Store(true)
		j.d.stats.TimedOut.Add(1)
	}
	j.release()
}

// finish is the worker's way out: answer (if the timer has not), stop the
// timer (dropping its reference if it will never fire), drop the worker's
// reference. It reports whether the worker's verdict was the answer.
func (j *job) finish(v policy.Verdict) bool {
	ok := j.answer(v)
	if j.timer.Stop() {
		j.release()
	}
	j.release()
	return ok
}

func (j *job) release() {
	if j.refs.Add(-1) != 0 {
		return
	}
	d := j.d
	d.kern.CloseFd(j.fd)
	j.fd = -1
	d.inflight.Add(-1)
	d.jobs.Put(j)
}
