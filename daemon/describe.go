package daemon

import (
	"strings"
	"sync/atomic"
	"time"

	"github.com/fanguard/fanguard/fan"
	"github.com/fanguard/fanguard/quarantine"
	"github.com/fanguard/fanguard/scanner"
)

// Who opened a detected file (its executable and command line) is read
// under /proc/<pid> of the opener. The opener controls how long some of
// those reads take: /proc/<pid>/cmdline takes its mmap_lock, which it can
// hold for as long as it likes (one of its threads faulting on a FUSE
// mapping whose server never answers, another queued for the lock in
// write mode). So no such read stands between an event and its answer,
// none runs on a worker, and the stage that makes them, after the answer,
// bounds each one: a read that has not returned in procReadTimeout is
// given up (its goroutine stays, blocked in the kernel, until the opener
// lets go), and while maxStuckReads of them are still out, no new one is
// started at all.

// procReadTimeout bounds the wait for one read under /proc/<pid>.
const procReadTimeout = 250 * time.Millisecond

// maxStuckReads bounds the reads given up on and still blocked.
const maxStuckReads = 8

// maxCmdline bounds the command line read for a record: what the record
// keeps (quarantine.MaxCmdline).
const maxCmdline = quarantine.MaxCmdline

// procReads runs reads under other processes' /proc with a bound on each.
// Safe for concurrent use.
type procReads struct {
	out       atomic.Int64 // reads started and not returned, some perhaps never
	abandoned *atomic.Uint64
}

// bounded runs fn in a goroutine of its own and returns its result, or
// false when it did not return within procReadTimeout or too many reads
// are stuck already to start one more.
func bounded[T any](r *procReads, fn func() T) (T, bool) {
	var zero T
	if r.out.Load() >= maxStuckReads {
		r.abandoned.Add(1)
		return zero, false
	}
	r.out.Add(1)
	res := make(chan T, 1)
	go func() {
		defer r.out.Add(-1)
		res <- fn()
	}()
	t := time.NewTimer(procReadTimeout)
	defer t.Stop()
	select {
	case v := <-res:
		return v, true
	case <-t.C:
		r.abandoned.Add(1)
		return zero, false
	}
}

// opener is what describe reads of an opener besides its command line.
type opener struct {
	exe, unit, container string
}

type cmdline struct {
	b      []byte
	length int64
	err    error
}

// describe fills in who opened a detected file: the user's name, and from
// /proc under the opener's pid its executable, command line and cgroup
// (its systemd unit or container), and whether the record's path still names the file. It
// runs after the answer, on the describing goroutine; every read is
// bounded. What was read is kept only if the opener's pidfd shows,
// after the reads, that the pid was still the opener's.
func (d *Daemon) describe(det *Detection) {
	det.Path = detectionPath(det.Path, det.File.ID)
	if det.UID >= 0 && det.UID <= 1<<32-1 {
		det.User = d.userName(uint32(det.UID))
	}
	if det.pidfd < 0 {
		det.OpenerExited = true
		return
	}
	pid := det.PID
	// The executable and the cgroup in one read: neither takes a lock
	// the opener holds for long.
	op, ok := bounded(&d.procReads, func() opener {
		var o opener
		var buf [4096]byte
		if p, err := fan.ExePath(pid, buf[:]); err == nil {
			o.exe = string(p)
		}
		o.unit, o.container, _ = openerCgroup(pid)
		return o
	})
	if !ok {
		det.OpenerUnread = true
	}
	cl, ok := bounded(&d.procReads, func() cmdline {
		b, length, err := fan.ProcCmdline(pid, maxCmdline)
		return cmdline{b, length, err}
	})
	if !ok {
		det.OpenerUnread = true
	}
	if fan.PidfdAlive(det.pidfd) {
		det.Exe, det.Unit, det.Container = op.exe, op.unit, op.container
		if cl.err == nil {
			det.Cmdline, det.CmdlineLen = cl.b, cl.length
		}
	} else {
		det.OpenerExited = true
	}
	d.kern.CloseFd(det.pidfd)
	det.pidfd = -1
}

// detectionPath is the path a detection of file id is recorded under,
// from the path /proc gave for its fd. The kernel appends " (deleted)" to
// the path of an unlinked file, but a file may be named so too: the
// suffix goes unless the path as it is still leads to the file. The look
// up never waits for I/O or a file server (fan.PathLeadsTo): where it
// cannot tell, the suffix goes.
func detectionPath(p []byte, id fan.FileID) []byte {
	base, ok := strings.CutSuffix(string(p), " (deleted)")
	if !ok || fan.PathLeadsTo(string(p), id) {
		return p
	}
	return []byte(base)
}

// detectionSize estimates the bytes a queued detection holds, for the
// bound on the detection queue.
func detectionSize(path string, matches []scanner.Match) int64 {
	n := int64(512 + len(path))
	for _, m := range matches {
		n += int64(len(m.Rule) + len(m.Namespace) + len(m.File) + 64)
		for _, t := range m.Tags {
			n += int64(len(t))
		}
		for k, v := range m.Meta {
			n += int64(len(k) + len(v))
		}
		for _, s := range m.Strings {
			n += int64(len(s.ID) + len(s.Data) + 16)
		}
	}
	return n
}

// detectionQueue carries detections from the workers to the describing
// stage, bounded in entries and in bytes. A worker reserves room before
// it answers (reserve); a detection that finds no room is not queued, and
// its verdict is not cached, so that the file's next open scans and
// detects it again — nothing is lost, and no worker ever waits for the
// record. Safe for concurrent use.
type detectionQueue struct {
	ch       chan *Detection
	slots    atomic.Int64
	bytes    atomic.Int64
	maxBytes int64
}

// detectionQueueEntries and detectionQueueBytes bound the detections
// waiting to be described and recorded.
const (
	detectionQueueEntries = 1024
	detectionQueueBytes   = 16 << 20
)

func newDetectionQueue() *detectionQueue {
	return &detectionQueue{ch: make(chan *Detection, detectionQueueEntries), maxBytes: detectionQueueBytes}
}

// reserve takes room for a detection of size bytes, if there is room.
func (q *detectionQueue) reserve(size int64) bool {
	if q.slots.Add(1) > int64(cap(q.ch)) {
		q.slots.Add(-1)
		return false
	}
	if q.bytes.Add(size) > q.maxBytes {
		q.bytes.Add(-size)
		q.slots.Add(-1)
		return false
	}
	return true
}

// send queues det, for which room was reserved: it never blocks.
func (q *detectionQueue) send(det *Detection) { q.ch <- det }

// taken gives back the room of det, taken off the queue.
func (q *detectionQueue) taken(det *Detection) {
	q.bytes.Add(-det.size)
	q.slots.Add(-1)
}

// describeAll describes each queued detection and hands it to the
// recorder, until the queue is closed; then it closes out.
func (d *Daemon) describeAll(out chan<- *Detection) {
	defer close(out)
	for det := range d.detections.ch {
		d.detections.taken(det)
		d.describe(det)
		out <- det // may wait for the recorder: nothing waits for us
	}
}
