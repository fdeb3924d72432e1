package daemon

import (
	"sync"
	"time"
)

// sched is the queue between the reader and the workers. It shares the
// workers fairly between users: each real uid has a queue of its own, and
// the next job is the one with the smallest start tag of start-time fair
// queueing, where a job costs its file's size plus a fixed part (libyara's
// cost per scan, whatever the content). A user with a thousand opens
// queued waits behind itself; another user's open waits for at most one
// job of each user before it, not for the thousand.
//
// Jobs answered already (their budget ran out while they waited) go to a
// bounded queue of late jobs, scanned only when no open waits: the scan
// can still find (and record, and cache as denied) what was let through,
// but never before an open that is still held. When that queue is full,
// its oldest job is dropped unscanned: the file stays uncached and its
// next open scans.
//
// A scan cannot be interrupted, so fairness in the order of jobs is not
// enough when one user's files are large: another user's small file would
// wait for a worker until a large scan ends (tens to hundreds of
// milliseconds for a 32 MiB file on a busy machine). While another user
// has opened a file lately (reserveWindow), one user's large files
// (bigJob and up) take at most all workers but one; the others stay free
// for everyone else. A user alone on the machine keeps every worker.
//
// It also counts the jobs alive per uid (queued, scanning, waiting for
// another scan of the same file, or waiting for their timer) against
// max_pending_per_uid.
//
// Safe for concurrent use.
type sched struct {
	ready chan struct{} // a token for each queued job; closed by close

	mu      sync.Mutex // guards following
	users   map[uint32]*userQueue
	active  []*userQueue // users with jobs waiting
	vtime   uint64       // the start tag of the job handed out last
	late    []*job       // answered before their scan began, oldest first
	lateCap int
	perUID  int
	bigMax  int // large scans one user may run at once while another is active: workers - 1
	// recent are the last two distinct uids admitted and when (Unix ns).
	recent [2]struct {
		uid uint32
		at  int64
	}
	parked int // tokens taken by workers that found only large jobs they may not start
	closed bool
}

// userQueue is one user's waiting jobs and the count of its live jobs.
type userQueue struct {
	uid    uint32
	jobs   []*job // waiting, oldest first, from head on
	head   int
	finish uint64 // the finish tag of the last job queued
	live   int    // jobs of this uid alive, against perUID
	active bool   // in sched.active
	bigRun int    // large scans of this uid running
}

// scanOverhead is the cost of a scan beyond its bytes, in bytes: with the
// rule sets fanguard is used with, libyara's fixed cost per scan (module
// object trees, every condition evaluated) is about what scanning 64 KiB
// more costs.
const scanOverhead = 64 << 10

// maxLateJobs bounds the late jobs kept for a scan after their answer.
const maxLateJobs = 256

// bigJob is the size from which a file's scan counts as large.
const bigJob = 1 << 20

// reserveWindow is how lately another user must have opened a file for a
// worker to be kept free of one user's large files.
const reserveWindow = time.Second

// newSched returns a scheduler for maxPending jobs, perUID of them per
// uid (max_pending where perUID is not in 1..maxPending), and workers.
func newSched(maxPending, perUID, workers int) *sched {
	if perUID < 1 || perUID > maxPending {
		perUID = max(1, maxPending)
	}
	return &sched{
		ready:   make(chan struct{}, maxPending+maxLateJobs),
		users:   make(map[uint32]*userQueue),
		lateCap: maxLateJobs,
		perUID:  perUID,
		bigMax:  workers - 1,
	}
}

// next is u's oldest job waiting; u must be active.
func (u *userQueue) next() *job { return u.jobs[u.head] }

// big reports whether j's scan counts as large.
func big(j *job) bool { return j.info.Stamp.Size >= bigJob }

// admit counts a new job of uid, read at now, unless uid has perUID jobs
// alive already. Only the reader calls it.
func (s *sched) admit(uid uint32, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch at := now.UnixNano(); uid {
	case s.recent[0].uid:
		s.recent[0].at = at
	default:
		s.recent[1] = s.recent[0]
		s.recent[0].uid, s.recent[0].at = uid, at
	}
	u := s.users[uid]
	if u == nil {
		u = &userQueue{uid: uid}
		s.users[uid] = u
	}
	if u.live >= s.perUID {
		return false
	}
	u.live++
	return true
}

// maxIdleUsers bounds the users kept between their jobs (a user's queue
// is kept so that its next job allocates nothing); past it, idle users
// are let go.
const maxIdleUsers = 1024

// leave uncounts a job of uid admitted before, when it is released.
func (s *sched) leave(uid uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.users[uid]
	if u == nil {
		return
	}
	u.live--
	if len(s.users) > maxIdleUsers {
		for id, u := range s.users {
			if u.live <= 0 && !u.active {
				delete(s.users, id)
			}
		}
	}
}

// push queues j (admitted before) for a worker. It never blocks. Only the
// reader calls it, and never after close.
func (s *sched) push(j *job) {
	s.mu.Lock()
	u := s.users[j.uid]
	if u == nil { // never: admit made it; be safe rather than lose j
		u = &userQueue{uid: j.uid, live: 1}
		s.users[j.uid] = u
	}
	j.vstart = max(s.vtime, u.finish)
	u.finish = j.vstart + uint64(j.info.Stamp.Size) + scanOverhead
	u.jobs = append(u.jobs, j)
	if !u.active {
		u.active = true
		s.active = append(s.active, u)
	}
	s.mu.Unlock()
	s.ready <- struct{}{} // never blocks: one token per job queued, within cap
}

// mayStart reports whether a job of u may start now: a small one always;
// a large one unless u runs bigMax of them already while another user has
// been active lately.
func (s *sched) mayStart(u *userQueue, j *job, now int64) bool {
	if !big(j) || s.bigMax < 1 || u.bigRun < s.bigMax {
		return true
	}
	for _, r := range s.recent {
		if r.uid != u.uid && r.at != 0 && now-r.at < int64(reserveWindow) {
			return false
		}
	}
	return true
}

// started counts j as running, taken by a worker.
func (s *sched) started(j *job) {
	if !big(j) {
		return
	}
	if u := s.users[j.uid]; u != nil {
		u.bigRun++
	}
}

// finished uncounts a job of uid that ran, large or not; a token a worker
// gave up because that user ran too many large scans goes back.
func (s *sched) finished(uid uint32, wasBig bool) {
	if !wasBig {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.users[uid]; u != nil && u.bigRun > 0 {
		u.bigRun--
	}
	if s.parked > 0 && !s.closed {
		s.parked--
		s.ready <- struct{}{} // room: the token was taken before
	}
}

// pop returns the next job to scan: the waiting job with the smallest
// start tag that may start, or, when none waits, the oldest late job. It
// returns nil when there is none (a token can outlive the job it was for:
// see dropLate; or the jobs there are may not start yet: then the token
// comes back when one may, see finished). Jobs dropped from the late queue
// to make room are appended to dropped for the caller to finish, outside
// the lock.
func (s *sched) pop(waiting func(*job) bool, dropped []*job) (*job, []*job) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now().UnixNano()
	for len(s.active) > 0 {
		best := -1
		for i, u := range s.active {
			if (best < 0 || u.next().vstart < s.active[best].next().vstart) && s.mayStart(u, u.next(), now) {
				best = i
			}
		}
		if best < 0 {
			s.parked++
			return nil, dropped
		}
		u := s.active[best]
		j := u.jobs[u.head]
		u.jobs[u.head] = nil
		u.head++
		if u.head == len(u.jobs) {
			u.jobs, u.head = u.jobs[:0], 0
			u.active = false
			last := len(s.active) - 1
			s.active[best] = s.active[last]
			s.active[last] = nil
			s.active = s.active[:last]
		}
		s.vtime = j.vstart
		if waiting(j) {
			s.started(j)
			return j, dropped
		}
		// Answered while it waited: behind every open still held.
		if len(s.late) == s.lateCap {
			dropped = append(dropped, s.late[0])
			copy(s.late, s.late[1:])
			s.late[len(s.late)-1] = nil
			s.late = s.late[:len(s.late)-1]
			s.dropToken()
		}
		s.late = append(s.late, j)
	}
	if len(s.late) > 0 {
		j := s.late[0]
		if u := s.users[j.uid]; u != nil && !s.mayStart(u, j, now) {
			s.parked++
			return nil, dropped
		}
		s.late[0] = nil
		s.late = s.late[1:]
		if len(s.late) == 0 {
			s.late = nil
		}
		s.started(j)
		return j, dropped
	}
	return nil, dropped
}

// dropToken takes back the token of a job that left the queue without a
// worker, if no worker took it yet; a worker that did finds one job less,
// which pop allows for.
func (s *sched) dropToken() {
	select {
	case <-s.ready:
	default:
	}
}

// queued returns the jobs waiting and the late jobs.
func (s *sched) queued() (waiting, late int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, u := range s.active {
		waiting += len(u.jobs) - u.head
	}
	return waiting, len(s.late)
}

// close lets the workers take what is queued and then stop. The reader
// must have stopped pushing.
func (s *sched) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		close(s.ready)
	}
}
