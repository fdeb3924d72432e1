package daemon

import (
	"container/heap"
	"math/rand/v2"
	"time"

	"github.com/fanguard/fanguard/fan"
	"github.com/fanguard/fanguard/policy"
)

// Every answer the daemon writes wakes every process blocked on an open
// of the protected filesystems, not just the one answered: the kernel
// keeps them all on one wait queue per fanotify group and wakes it whole
// (fanotify_get_response). An answer costs the daemon, and the machine,
// time in proportion to the opens held at that moment, which a user with
// a thousand threads opening files chooses: about a millisecond each then
// (measured: 28 % of the daemon's time in __wake_up under such a flood).
// Answered one after the other in the order the kernel queued them, the
// events of that user would delay everyone else's by seconds.
//
// So the reader does not write its answers as it decides them. It keeps
// them in an answerQueue, one FIFO per uid, reads on while the kernel has
// events for it (cheap: no one is woken), and writes the answers in turns
// across uids, a few at a time between reads: another user's open is
// read within a few answers of arriving and answered within one turn.

// answerChunk is how many answers the reader writes between two reads.
// Measured under a flood of 1,000 threads of one user, with root opening
// a fresh file every 50 ms (TestAttackFailOpenByLoad): 16 answers between
// reads, root's p99 52 ms; 4, p99 10 ms.
const answerChunk = 4

// maxPendingAnswers bounds the answers the reader holds: past it, it
// writes before it reads more. Each holds two fds (the event's and the
// opener's pidfd).
const maxPendingAnswers = 4096

// pendingAnswer is a fast-path verdict not written yet.
type pendingAnswer struct {
	ev   fan.Event
	v    policy.Verdict
	read time.Time
	oc   eventOutcome
}

// answerQueue is the reader's answers not written yet, one FIFO per uid,
// written in turns across uids. Used by the reader's goroutine only.
type answerQueue struct {
	uids map[uint32]*uidAnswers
	ring []*uidAnswers // uids with answers waiting, in turn
	next int           // the ring's next turn
	n    int           // answers waiting
}

// uidAnswers is one uid's answers waiting, oldest first.
type uidAnswers struct {
	q      []pendingAnswer
	head   int
	inRing bool
}

// maxAnswerUIDs bounds the uids whose (empty) queues are kept for reuse.
const maxAnswerUIDs = 1024

func (q *answerQueue) push(uid uint32, a pendingAnswer) {
	if q.uids == nil {
		q.uids = make(map[uint32]*uidAnswers)
	}
	u := q.uids[uid]
	if u == nil {
		if len(q.uids) >= maxAnswerUIDs && q.n == 0 {
			clear(q.uids)
		}
		u = &uidAnswers{}
		q.uids[uid] = u
	}
	u.q = append(u.q, a)
	if !u.inRing {
		u.inRing = true
		q.ring = append(q.ring, u)
	}
	q.n++
}

// pop returns the next answer to write: the oldest of the uid whose turn
// it is.
func (q *answerQueue) pop() (pendingAnswer, bool) {
	if q.n == 0 {
		return pendingAnswer{}, false
	}
	if q.next >= len(q.ring) {
		q.next = 0
	}
	u := q.ring[q.next]
	a := u.q[u.head]
	u.q[u.head] = pendingAnswer{}
	u.head++
	q.n--
	if u.head == len(u.q) {
		u.q, u.head, u.inRing = u.q[:0], 0, false
		copy(q.ring[q.next:], q.ring[q.next+1:])
		q.ring[len(q.ring)-1] = nil
		q.ring = q.ring[:len(q.ring)-1]
	} else {
		q.next++
	}
	if q.next >= len(q.ring) {
		q.next = 0
	}
	return a, true
}

// reply queues a fast-path verdict, decided by oc, for the reader to
// write in uid's turn.
func (d *Daemon) reply(uid uint32, ev fan.Event, v policy.Verdict, read time.Time, oc eventOutcome) {
	d.answers.push(uid, pendingAnswer{ev: ev, v: v, read: read, oc: oc})
}

// writeAnswers writes up to max of the answers waiting, in turns.
func (d *Daemon) writeAnswers(max int) {
	for range max {
		a, ok := d.answers.pop()
		if !ok {
			return
		}
		d.answerEvent(a.ev, a.v, a.read, a.oc)
	}
}

// A user past max_pending_per_uid gets on_overload for its further opens,
// but not at once: answered at once, a thousand threads of one user would
// open again at once, each answer waking every open held (see above), and
// spin the machine's CPUs at the expense of everyone else. So those
// answers are held (within the budget) by a goroutine of their own, at
// most maxHeld of them; beyond that bound, or when the daemon stops, they
// are written at once. Each is held for a time drawn between half and the
// whole of overloadHold: a thousand threads answered in one instant would
// all open again in the next, and every later wave would come as one
// too, each a storm of wake-ups during which nobody else's open gets the
// CPU; spread out, the same answers cost the same but leave room between
// them. The opens of the other users are not held: the bound is per uid.
// (The overload of max_pending itself, all users together, is answered at
// once.)

// maxHeld bounds the over-cap answers held; each holds two fds.
const maxHeld = 4096

// overloadHold is the longest an over-cap answer is held: a second less
// than the budget, or half of a budget shorter than two seconds; at most
// four seconds. Measured under a flood of 1,000 threads of one user (see
// TestAttackFailOpenByLoad): answered at once, the other users' opens
// took a second and more; held two seconds, p99 300 ms; four, less again.
func (d *Daemon) overloadHold() time.Duration {
	budget := d.live().budget
	return min(max(budget-time.Second, budget/2), 4*time.Second)
}

// heldAnswer is an over-cap answer and when to write it.
type heldAnswer struct {
	pendingAnswer
	at time.Time
}

// holdOverloaded queues an over-cap answer to be written within
// overloadHold, or writes it now if too many are held already. Only the
// reader calls it.
func (d *Daemon) holdOverloaded(uid uint32, ev fan.Event, now time.Time) {
	hold := d.overloadHold()
	at := now.Add(hold/2 + rand.N(hold/2+1))
	v := d.live().onOverload
	select {
	case d.held <- heldAnswer{pendingAnswer{ev: ev, v: v, read: now, oc: outcomeOverloaded}, at}:
	default:
		d.reply(uid, ev, v, now, outcomeOverloaded)
	}
}

// heldHeap orders the held answers by when to write them.
type heldHeap []heldAnswer

func (h heldHeap) Len() int           { return len(h) }
func (h heldHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h heldHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *heldHeap) Push(x any)        { *h = append(*h, x.(heldAnswer)) }
func (h *heldHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	old[len(old)-1] = heldAnswer{}
	*h = old[:len(old)-1]
	return x
}

// writeHeld writes each held answer when its time comes, until d.held is
// closed and every answer is written; once the daemon stops (stopHeld),
// it writes them at once.
func (d *Daemon) writeHeld() {
	var h heldHeap
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	in, stop := d.held, d.stopHeld
	stopped := false
	for in != nil || len(h) > 0 {
		var due <-chan time.Time
		if len(h) > 0 {
			wait := time.Until(h[0].at)
			if wait <= 0 || stopped {
				a := heap.Pop(&h).(heldAnswer)
				d.answerEvent(a.ev, a.v, a.read, a.oc)
				continue
			}
			t.Reset(wait)
			due = t.C
		}
		select {
		case a, ok := <-in:
			if !ok {
				in = nil
				continue
			}
			heap.Push(&h, a)
		case <-due:
		case <-stop:
			stopped, stop = true, nil
		}
	}
}
