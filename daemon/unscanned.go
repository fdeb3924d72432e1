package daemon

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/fanguard/fanguard/policy"
)

// unscannedKind is why an open was let through (or denied) without a scan.
type unscannedKind uint8

const (
	unscannedTimeout  unscannedKind = iota // the budget ran out: on_timeout
	unscannedOverload                      // max_pending or max_pending_per_uid: on_overload
)

// unknownUID stands for the uid of an opener the kernel could not name
// (no pidfd: the daemon was out of fds).
const unknownUID = ^uint32(0)

// maxUnscannedUIDs bounds the uids counted one by one; the others are
// counted together under otherUIDs.
const maxUnscannedUIDs = 1024

// otherUIDs is the uid under which the opens of uids beyond
// maxUnscannedUIDs are counted.
const otherUIDs = ^uint32(0) - 1

// unscannedCounts counts, per uid, the opens answered without a scan by
// on_timeout or on_overload, so that every one of them leaves a trace
// that names who caused it. Safe for concurrent use.
type unscannedCounts struct {
	mu   sync.Mutex // guards following
	byID map[uint32]*UnscannedByUID
}

// UnscannedByUID is what /status tells of one uid's opens answered without
// a scan.
type UnscannedByUID struct {
	UID        uint32 `json:"uid"`
	User       string `json:"user,omitempty"`
	TimedOut   uint64 `json:"timed_out"`
	Overloaded uint64 `json:"overloaded"`
}

func (c *unscannedCounts) add(uid uint32, k unscannedKind) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byID == nil {
		c.byID = make(map[uint32]*UnscannedByUID)
	}
	e := c.byID[uid]
	if e == nil {
		if len(c.byID) >= maxUnscannedUIDs {
			uid = otherUIDs
			e = c.byID[uid]
		}
		if e == nil {
			e = &UnscannedByUID{UID: uid}
			c.byID[uid] = e
		}
	}
	switch k {
	case unscannedTimeout:
		e.TimedOut++
	case unscannedOverload:
		e.Overloaded++
	}
}

// snapshot returns the counts, the uids with the most first.
func (c *unscannedCounts) snapshot() []UnscannedByUID {
	return c.named(nil)
}

// named is snapshot with the users' names from owners.
func (c *unscannedCounts) named(owners map[uint32]string) []UnscannedByUID {
	c.mu.Lock()
	out := make([]UnscannedByUID, 0, len(c.byID))
	for _, e := range c.byID {
		u := *e
		u.User = owners[u.UID]
		out = append(out, u)
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b UnscannedByUID) int {
		return cmp.Or(cmp.Compare(b.TimedOut+b.Overloaded, a.TimedOut+a.Overloaded), cmp.Compare(a.UID, b.UID))
	})
	return out
}

// unscannedLogInterval is how often the opens let through unscanned are
// logged: at most one line per uid per interval, whatever their number.
const unscannedLogInterval = 10 * time.Second

// maxUnscannedLines bounds the lines of one interval; the rest are summed
// up in one more.
const maxUnscannedLines = 20

// logUnscanned logs, every unscannedLogInterval until ctx is done, one line
// per uid whose opens were answered without a scan since the last one.
func (d *Daemon) logUnscanned(ctx context.Context) {
	t := time.NewTicker(unscannedLogInterval)
	defer t.Stop()
	last := make(map[uint32]UnscannedByUID)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		set := d.live()
		msg := "opens allowed unscanned"
		if set.onTimeout == policy.Deny && set.onOverload == policy.Deny {
			msg = "opens denied unscanned"
		} else if set.onTimeout == policy.Deny || set.onOverload == policy.Deny {
			msg = "opens answered unscanned"
		}
		lines, more, moreOpens := 0, 0, uint64(0)
		for _, e := range d.unscanned.snapshot() {
			prev := last[e.UID]
			last[e.UID] = e
			timedOut, overloaded := e.TimedOut-prev.TimedOut, e.Overloaded-prev.Overloaded
			if timedOut+overloaded == 0 {
				continue
			}
			if lines == maxUnscannedLines {
				more++
				moreOpens += timedOut + overloaded
				continue
			}
			lines++
			d.log.Warn(fmt.Sprintf("%s by %s in the last %s: %d timed out (on_timeout %s), %d overloaded (on_overload %s)",
				msg, uidText(e.UID, d.userName(e.UID)), unscannedLogInterval, timedOut, set.onTimeout, overloaded, set.onOverload),
				zap.Int64("uid", uidField(e.UID)), zap.String("user", d.userName(e.UID)),
				zap.Uint64("timed_out", timedOut), zap.Stringer("on_timeout", set.onTimeout),
				zap.Uint64("overloaded", overloaded), zap.Stringer("on_overload", set.onOverload),
				zap.Duration("in", unscannedLogInterval))
		}
		if more > 0 {
			d.log.Warn(fmt.Sprintf("%s by %s more in the last %s: %s", msg, plural(more, "user"), unscannedLogInterval, plural(moreOpens, "open")),
				zap.Int("users", more), zap.Uint64("opens", moreOpens),
				zap.Duration("in", unscannedLogInterval))
		}
	}
}

// uidField is a uid as logged: -1 for one the kernel could not name, -2 for
// the uids counted together.
func uidField(uid uint32) int64 {
	switch uid {
	case unknownUID:
		return -1
	case otherUIDs:
		return -2
	}
	return int64(uid)
}

// uidText names a uid in a message: "uid 1000 alice", "uid 1000",
// "an unknown uid", "other uids".
func uidText(uid uint32, name string) string {
	switch uid {
	case unknownUID:
		return "an unknown uid"
	case otherUIDs:
		return "other uids"
	}
	if name != "" {
		return "uid " + strconv.FormatUint(uint64(uid), 10) + " " + printable(name)
	}
	return "uid " + strconv.FormatUint(uint64(uid), 10)
}

// userName is the name of uid from the users read at start, or "".
func (d *Daemon) userName(uid uint32) string {
	return d.owners[uid]
}
