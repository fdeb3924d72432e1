package daemon

import (
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/fanguard/fanguard/fan"
	"github.com/fanguard/fanguard/policy"
)

// Scan on close ([scan] on_close). When a writer closes a regular file on
// a protected filesystem, the notification group's event carries an fd of
// the file (opened by the kernel, FMODE_NONOTIFY: reading it makes no
// event) and a pidfd of the writer. watchWrites drops the file's cached
// verdicts, as it always did, and then queues the file for a scan; a
// worker scans it only when it would otherwise be idle. The verdict is
// cached as an open's scan would cache it (the daemon's entry, the
// kernel's ignore mark), so the first open after the write is answered at
// once; a detection goes through the record, the log and the quarantine
// at close, before anyone reads the file.
//
// Bounds and order:
//   - The queue holds at most on_close_queue files, newest first: an
//     extraction or a build closes thousands, and the newest are the
//     likeliest to be opened next. Past the bound the oldest is dropped
//     (its fds closed): its first open will scan it. A file closed again
//     while it waits is queued once, with the latest fd and stamp.
//   - Each file queued holds two fds of the daemon (the event fd and the
//     writer's pidfd): at most 2 × on_close_queue.
//   - Opens come first: a worker takes a close-scan only when no open job
//     (nor a late one) waits for it, and files above closeScanMax are
//     left to their first open, so an open that comes meanwhile waits for
//     at most one small scan. With more than one worker, at most
//     workers - 1 scan on close at once: one worker stays free for the
//     next open, which then waits for none (and the machine keeps a CPU
//     for the writer: a tar extracting files, a compiler).
//
// Deduplication with opens goes through the in-flight table: a close-scan
// is put in d.scans like an open's scan, already "answered" (no open
// waits for it) and started, so an open of the same file and stamp waits
// for its verdict as a follower (see handle). A file being scanned for an
// open, or whose verdict is cached for its stamp and the rules in force,
// is not scanned again.
//
// A reload leaves the queue as it is: a queued file carries no verdict,
// and is scanned with the rules in force when its turn comes; a
// close-scan that ran with the rules replaced meanwhile caches nothing
// (endScan compares the generations).

// closeScanMax is the largest file scanned on close: larger files are
// left to their first open. At 1 MiB, one scan costs a few milliseconds
// with the shipped rules and some tens of milliseconds with large public
// sets: the most an open that arrives meanwhile waits for a worker.
const closeScanMax = 1 << 20

// defaultCloseQueue is the queue bound when the configuration says none.
const defaultCloseQueue = 512

// closeItem is a file closed by a writer and waiting for its scan. It
// owns fd and pidfd until they are handed to a job or closed.
type closeItem struct {
	id    fan.FileID
	fd    int32
	pidfd int32 // the writer's, or < 0
	pid   int32
	uid   uint32    // the writer's real uid (unknownUID if the kernel could not say)
	read  time.Time // when the close was read
	// newer and older link the queue, newest at closeQueue.newest.
	newer, older *closeItem
}

// closeQueue is the bounded queue of files waiting for a scan on close,
// newest first, one item per file. Safe for concurrent use.
type closeQueue struct {
	// wake holds a token while items wait, for an idle worker to take
	// (see worker.next); whoever takes an item and leaves others behind
	// puts the token back.
	wake    chan struct{}
	limit   int
	closeFd func(int32) error
	stats   *Stats

	mu     sync.Mutex // guards following
	byID   map[fan.FileID]*closeItem
	newest *closeItem
	oldest *closeItem
	closed bool
}

func newCloseQueue(limit int, closeFd func(int32) error, stats *Stats) *closeQueue {
	if limit < 1 {
		limit = defaultCloseQueue
	}
	return &closeQueue{
		wake:    make(chan struct{}, 1),
		limit:   limit,
		closeFd: closeFd,
		stats:   stats,
		byID:    make(map[fan.FileID]*closeItem, limit),
	}
}

// signal puts the token in wake, unless it is there already.
func (q *closeQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// release closes the fds an item holds.
func (q *closeQueue) release(it *closeItem) {
	q.closeFd(it.fd)
	if it.pidfd >= 0 {
		q.closeFd(it.pidfd)
	}
	it.fd, it.pidfd = -1, -1
}

// push queues it, taking its fds, as the newest item. An item of the same
// file already queued is replaced (its fds closed) and moves to the front;
// past the bound, the oldest is dropped. After close, it is released at
// once.
func (q *closeQueue) push(it *closeItem) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		q.release(it)
		return
	}
	var drop [2]*closeItem
	if old := q.byID[it.id]; old != nil {
		q.unlink(old)
		drop[0] = old
		q.stats.CloseMerged.Add(1)
	} else {
		q.stats.CloseQueued.Add(1)
	}
	q.byID[it.id] = it
	it.older, it.newer = q.newest, nil
	if q.newest != nil {
		q.newest.newer = it
	}
	q.newest = it
	if q.oldest == nil {
		q.oldest = it
	}
	if len(q.byID) > q.limit {
		old := q.oldest
		q.unlink(old)
		delete(q.byID, old.id)
		drop[1] = old
		q.stats.CloseDropped.Add(1)
	}
	q.mu.Unlock()
	for _, it := range drop {
		if it != nil {
			q.release(it)
		}
	}
	q.signal()
}

// unlink takes it out of the list (not out of byID).
func (q *closeQueue) unlink(it *closeItem) {
	if it.newer != nil {
		it.newer.older = it.older
	} else {
		q.newest = it.older
	}
	if it.older != nil {
		it.older.newer = it.newer
	} else {
		q.oldest = it.newer
	}
	it.newer, it.older = nil, nil
}

// pop takes the newest item, nil if none waits. The caller owns its fds.
func (q *closeQueue) pop() *closeItem {
	q.mu.Lock()
	it := q.newest
	if it != nil {
		q.unlink(it)
		delete(q.byID, it.id)
	}
	more := q.newest != nil
	q.mu.Unlock()
	if more {
		q.signal()
	}
	return it
}

// len returns the items waiting.
func (q *closeQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.byID)
}

// close releases every item waiting; later pushes release theirs at once.
func (q *closeQueue) close() {
	q.mu.Lock()
	q.closed = true
	var items []*closeItem
	for it := q.newest; it != nil; it = it.older {
		items = append(items, it)
	}
	clear(q.byID)
	q.newest, q.oldest = nil, nil
	q.mu.Unlock()
	for _, it := range items {
		q.release(it)
	}
}

// closeScanLimit is the largest file scanned on close.
func (d *Daemon) closeScanLimit() int64 { return min(closeScanMax, d.live().maxFileSize) }

// queueClose queues the file a writer closed (ev, stated as fi) for a
// scan, unless it is not to be scanned on close: the daemon's own write,
// too large, excluded by its writer or its path, or its detection is
// cached for this stamp already. It takes ev's fd and pidfd either way.
// Called by watchWrites only.
func (d *Daemon) queueClose(ev fan.Event, fi fan.FileInfo, read time.Time, scratch []byte) {
	uid := unknownUID
	if ev.Pidfd >= 0 {
		if u, err := d.kern.OpenerUID(ev.Pidfd); err == nil {
			uid = u
		}
	}
	_, _, cached := d.cache.lookup(fi.ID, fi.Stamp, d.rules.Load().gen)
	if ev.Pid == d.pid || fi.Stamp.Size > d.closeScanLimit() || cached || d.excluded(d.live(), ev, fi, uid, scratch) {
		d.stats.CloseSkipped.Add(1)
		d.kern.CloseFd(ev.Fd)
		d.closePidfd(ev.Pidfd)
		return
	}
	d.closeq.push(&closeItem{id: fi.ID, fd: ev.Fd, pidfd: ev.Pidfd, pid: ev.Pid, uid: uid, read: read})
}

// nextClose returns a job for the newest file closed that still needs a
// scan, nil when none does or an open job came meanwhile. Items that need
// none (see prepareClose) are released on the way.
func (d *Daemon) nextClose() *job {
	if !d.closeSlot() {
		return nil // the worker that ends a scan on close signals the queue again
	}
	for len(d.sched.ready) == 0 {
		it := d.closeq.pop()
		if it == nil {
			break
		}
		if j := d.prepareClose(it); j != nil {
			return j // processClose gives the slot back
		}
		d.stats.CloseSkipped.Add(1)
		d.closeq.release(it)
	}
	d.closeDone()
	return nil
}

// closeSlot takes one of the slots for a scan on close (workers - 1, at
// least one), if one is free.
func (d *Daemon) closeSlot() bool {
	if d.closeRunning.Add(1) > int32(max(1, d.cfg.Workers-1)) {
		d.closeRunning.Add(-1)
		return false
	}
	return true
}

// closeDone gives a slot back, and wakes an idle worker if files wait.
func (d *Daemon) closeDone() {
	d.closeRunning.Add(-1)
	if d.closeq.len() > 0 {
		d.closeq.signal()
	}
}

// prepareClose makes a job of it and puts it in the in-flight table, or
// returns nil if the file needs no scan now: it is no longer a regular
// file within closeScanLimit, its verdict is cached for its stamp and the
// rules in force, or a scan of the same stamp runs (or waits) already.
// The file is stated again: what is scanned is the content now, cached
// under the stamp of now (the close's stamp may have moved since, and a
// later close then queues the file again).
func (d *Daemon) prepareClose(it *closeItem) *job {
	fi, err := d.kern.Stat(it.fd)
	if err != nil || !fi.IsRegular() || fi.Stamp.Size > d.closeScanLimit() {
		return nil
	}
	gen := d.rules.Load().gen
	if _, _, ok := d.cache.lookup(fi.ID, fi.Stamp, gen); ok {
		return nil
	}
	d.scansMu.Lock()
	defer d.scansMu.Unlock()
	l := d.scans[fi.ID]
	if l != nil && l.info.Stamp == fi.Stamp {
		return nil // an open's scan (or another close's) will cache it
	}
	if _, _, ok := d.cache.lookup(fi.ID, fi.Stamp, gen); ok {
		return nil // a scan ended since the lookup above
	}
	if l != nil {
		l.dirty = true // of an older version: this scan's verdict is the one to keep
	}
	j := d.jobs.Get().(*job)
	j.startClose(it, fi)
	d.scans[fi.ID] = j
	return j
}

// processClose scans a file a writer closed, caches the verdict as an
// open's scan would, answers the opens that waited for it, and hands a
// detection on to be recorded and acted on.
func (w *worker) processClose(j *job) {
	d := w.d
	w.busy.Store(time.Now().UnixNano())
	defer w.busy.Store(0)
	defer d.closeDone()
	o := outcome{pid: j.pid, read: j.read, size: j.info.Stamp.Size}
	set := d.live()
	rules, err := w.use()
	v := set.onError
	if err != nil {
		o.err = err
	} else {
		v = w.scan(set, j, &o)
		d.stats.CloseScans.Add(1)
	}
	v = w.checkAllowList(&o, v)
	if o.allowSeen {
		o.sha256 = hex.EncodeToString(o.sum[:])
	}
	o.verdict = v
	cacheable := o.err == nil && o.complete
	size, deferred := d.reserveRecord(&o)
	detected := len(o.matches) > 0 && deferred == 0
	cacheable = cacheable && deferred == 0
	// No open is held: the mark goes on now. endScan states the file
	// again and takes the mark back if the stamp moved (a write between
	// the read and the mark); a write after the mark clears it. The
	// kernel refuses the mark, silently, while another writer holds the
	// file open: the daemon's entry answers then.
	kernelCached := false
	if cacheable && len(o.matches) == 0 {
		if kernelCached = d.kern.Ignore(j.fd) == nil; kernelCached {
			d.stats.KernelMarks.Add(1)
		}
	}
	info, uid := j.info, j.uid
	w.endScan(j, rules, v, &o, cacheable, kernelCached)
	pidfd := w.release(j, detected)
	if deferred&(deferred-1) == 0 && deferred > 0 {
		d.logDeferred(o.path, deferred)
	}
	if o.err != nil {
		if ce := d.log.Check(zap.DebugLevel, ""); ce != nil {
			ce.Message = "cannot scan a file on close; its first open scans it: " + printable(o.path) + ": " + o.err.Error()
			ce.Write(zap.ByteString("path", []byte(o.path)), zap.Int32("pid", o.pid), zap.Error(o.err))
		}
	}
	if o.scanTime > 0 {
		w.talk.add(talkSample{pid: o.pid, dir: filepath.Dir(o.path), took: o.scanTime})
	}
	if len(o.matches) == 0 {
		return
	}
	d.stats.Detections.Add(1)
	d.stats.CloseDetections.Add(1)
	if !detected {
		return // deferred: see above
	}
	det := d.newDetection(&o, info, uid, rules, v, v, pidfd, size)
	det.OnClose = true
	d.detections.send(det)
}

// closeStatus is what the status shows of the scans on close.
func (d *Daemon) closeStatus() StatusOnClose {
	st := StatusOnClose{Enabled: d.closeq != nil, MaxSize: d.closeScanLimit()}
	if d.closeq != nil {
		st.Waiting, st.Bound, st.Running = d.closeq.len(), d.closeq.limit, int(d.closeRunning.Load())
	}
	return st
}

// StatusOnClose is the state of the scans on close ([scan] on_close).
type StatusOnClose struct {
	Enabled bool  `json:"enabled"`
	Waiting int   `json:"waiting"`  // files queued now
	Running int   `json:"running"`  // workers on a scan on close now
	Bound   int   `json:"bound"`    // on_close_queue
	MaxSize int64 `json:"max_size"` // larger files are left to their first open
}

// checkAllowList takes a scan with matches (o) and its verdict v: it
// looks the content's sha256 up in the allow list in memory (allow.go) and
// returns Allow, with the matches dropped, when the list has it. Clean
// then, for the caches too; logged after the answer. The hex of the sum,
// for the record, is made after the answer (o.allowSeen).
func (w *worker) checkAllowList(o *outcome, v policy.Verdict) policy.Verdict {
	if len(o.matches) == 0 {
		return v
	}
	d := w.d
	o.sum = sha256.Sum256(w.buf[:o.n])
	o.allow, o.allowSeen = d.allow.Load(), true
	if o.allow.has(o.sum) {
		d.stats.AllowListed.Add(1)
		o.allowListed = true
		o.matches, v = nil, policy.Allow
	}
	return v
}
