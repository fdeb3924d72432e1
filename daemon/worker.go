package daemon

import (
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/fanguard/fanguard/fan"
	"github.com/fanguard/fanguard/policy"
	"github.com/fanguard/fanguard/scanner"
)

// A worker takes jobs off the queue and scans them with its own YARA
// scanner. It owns its read buffer, which grows to the largest file it
// has scanned (at most max_file_size).
type worker struct {
	d       *Daemon
	scanner *scanner.Scanner
	buf     []byte
	path    [4096]byte
}

func (w *worker) run() {
	defer w.scanner.Close()
	for j := range w.d.queue {
		w.process(j)
	}
}

// outcome is what a worker learned of one event, kept for logging after
// the job is released.
type outcome struct {
	pid     int32
	read    time.Time
	path    string
	size    int64
	matches []scanner.Match
	verdict policy.Verdict // the scan's verdict
	late    bool           // the budget ran out first: on_timeout was the answer
	err     error
}

func (w *worker) process(j *job) {
	d := w.d
	o := outcome{pid: j.pid, read: j.read}
	v := w.scan(j, &o)
	o.verdict = v
	o.late = !j.finish(v)
	// The event is answered and its fd closed or left to the timer: from
	// here on, only logging.
	if o.err != nil {
		d.stats.Errors.Add(1)
		d.log.Warn("cannot scan file, answered with on_error", zap.ByteString("path", []byte(o.path)),
			zap.Int32("pid", o.pid), zap.Stringer("verdict", d.cfg.OnError), zap.Error(o.err))
	}
	if len(o.matches) > 0 {
		d.logDetection(&o)
	}
}

// scan decides the verdict of one event. It reads the file through the
// event fd only.
func (w *worker) scan(j *job, o *outcome) policy.Verdict {
	d := w.d
	st, err := fan.Fstat(j.fd)
	if err != nil {
		o.err = err
		return d.cfg.OnError
	}
	if !st.IsRegular() {
		d.stats.NotRegular.Add(1)
		return policy.Allow
	}
	o.size = st.Size
	if st.Size > d.cfg.MaxFileSize {
		d.stats.Oversize.Add(1)
		return d.cfg.OnOversize
	}
	if p, err := fan.FdPath(j.fd, w.path[:]); err == nil {
		o.path = string(p)
	} else {
		o.path = "fd:" + strconv.Itoa(int(j.fd))
	}
	if int64(cap(w.buf)) < st.Size {
		w.buf = make([]byte, st.Size)
	}
	n, err := fan.ReadFull(j.fd, w.buf[:st.Size])
	if err != nil {
		o.err = err
		return d.cfg.OnError
	}
	data := w.buf[:n]
	vars := scanner.VarsFor(strings.TrimSuffix(o.path, " (deleted)"), data[:min(n, 64)], d.owner(st.UID))
	matches, err := w.scanner.Scan(data, vars)
	d.stats.Scans.Add(1)
	d.stats.BytesScanned.Add(uint64(n))
	if err != nil {
		o.err = err
		return d.cfg.OnError
	}
	o.matches = matches
	v := policy.Allow
	for _, m := range matches {
		if policy.Decide(d.cfg.Mode, m.Action) == policy.Deny {
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

// logDetection logs each matching rule of a scan, after the answer.
func (d *Daemon) logDetection(o *outcome) {
	d.stats.Detections.Add(1)
	if o.late {
		d.stats.LateDetections.Add(1)
	}
	var exe string
	if p, err := fan.ExePath(o.pid, make([]byte, 4096)); err == nil {
		exe = string(p)
	}
	uid := int64(-1)
	if u, err := fan.ProcUID(o.pid); err == nil {
		uid = int64(u)
	}
	msg, answered := "detection", o.verdict
	if o.late {
		answered = d.cfg.OnTimeout
		msg = "late detection: the budget ran out before the scan finished, the open was answered with on_timeout"
	}
	for _, m := range o.matches {
		strs := make([]string, 0, len(m.Strings))
		for _, s := range m.Strings {
			strs = append(strs, s.ID+"@"+strconv.FormatInt(s.Offset, 10))
		}
		d.log.Warn(msg,
			zap.String("rule", m.Rule),
			zap.String("rule_file", m.File),
			zap.Strings("tags", m.Tags),
			zap.Stringer("action", m.Action),
			zap.ByteString("path", []byte(o.path)),
			zap.Int64("size", o.size),
			zap.Int32("pid", o.pid),
			zap.String("exe", exe),
			zap.Int64("uid", uid),
			zap.Stringer("verdict", o.verdict),
			zap.Stringer("answered", answered),
			zap.Bool("late", o.late),
			zap.Duration("elapsed", time.Since(o.read)),
			zap.Strings("strings", strs),
		)
	}
}
