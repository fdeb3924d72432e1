package daemon

import (
	"context"
	"crypto/sha256"
	"strconv"
	"time"

	"go.uber.org/zap"
)

// The allow list lives in the quarantine's database, where the
// administrator changes it (fanguard quarantine allow, restore --allow)
// from another process. The workers consult it for every scan that
// matched, before the answer, so they consult a copy in memory: no
// database query stands between a scan and its answer. The copy is read
// before the marks are placed, again whenever the database's data
// version moves (asked every allowRefresh: a change is in force within
// about a second), on every reload, and at once when the command line
// asks over the control socket (POST /allowlist) after a change.

// allowList is the allow list as read at one time: read-only once
// stored in Daemon.allow.
type allowList struct {
	sums    map[[sha256.Size]byte]struct{}
	version int64 // the recorder's AllowListVersion when it was read
}

// has reports whether content with this sha256 is on the list; the nil
// list holds nothing.
func (a *allowList) has(sum [sha256.Size]byte) bool {
	if a == nil {
		return false
	}
	_, ok := a.sums[sum]
	return ok
}

// allowRefresh is how often the daemon asks whether the allow list may
// have changed: one PRAGMA, no disk read.
const allowRefresh = time.Second

// refreshAllowList reads the allow list again if its version moved since
// the last read, or in any case with force, and puts it in force. If
// sums were added, the cached verdicts of detected files go, so that a
// newly allowed file is allowed at its next open; if sums left the list,
// every cached verdict goes (a file let through by the list was cached
// as clean, in the kernel too). A failure keeps the list in force, is
// logged and shows in the status until a read succeeds. The version
// moves with the daemon's own records too: the list is then read, found
// the same, and nothing is dropped. Safe for concurrent use; reads are
// serialized.
func (d *Daemon) refreshAllowList(ctx context.Context, force bool) (int, error) {
	if d.recorder == nil {
		return 0, nil
	}
	d.allowMu.Lock()
	defer d.allowMu.Unlock()
	old := d.allow.Load()
	// The version before the list: a change committed between the two
	// reads moves the version again, and the next refresh reads it.
	v, err := d.recorder.AllowListVersion(ctx)
	if err != nil {
		return 0, d.allowFailed(err)
	}
	if old != nil && !force && v == old.version {
		return len(old.sums), nil
	}
	sums, err := d.recorder.AllowedSums(ctx)
	if err != nil {
		return 0, d.allowFailed(err)
	}
	next := &allowList{sums: make(map[[sha256.Size]byte]struct{}, len(sums)), version: v}
	added, removed := 0, 0
	for _, s := range sums {
		next.sums[s] = struct{}{}
		if !old.has(s) {
			added++
		}
	}
	if old != nil {
		for s := range old.sums {
			if !next.has(s) {
				removed++
			}
		}
	}
	// Under scansMu: a scan that consulted the old list either caches its
	// verdict before this swap, and the drop below takes it, or sees the
	// swap when it would cache, and does not (endScan).
	d.scansMu.Lock()
	d.allow.Store(next)
	d.scansMu.Unlock()
	d.allowOK()
	switch {
	case removed > 0:
		d.log.Info("allow list changed: "+plural(len(next.sums), "entry")+" ("+strconv.Itoa(added)+" added, "+strconv.Itoa(removed)+" removed)",
			zap.Int("entries", len(next.sums)), zap.Int("added", added), zap.Int("removed", removed))
		d.invalidateAll("sums left the allow list")
	case added > 0:
		d.log.Info("allow list changed: "+plural(len(next.sums), "entry")+" ("+strconv.Itoa(added)+" added)",
			zap.Int("entries", len(next.sums)), zap.Int("added", added))
		d.cache.forgetDetections()
	}
	return len(next.sums), nil
}

// allowFailed marks the allow list unreadable for the status, logs it the
// first time, and returns err.
func (d *Daemon) allowFailed(err error) error {
	e := err.Error()
	if d.allowErr.Swap(&e) == nil {
		d.log.Error("cannot read the allow list; the last one read stays in force: "+err.Error(), zap.Error(err))
	}
	return err
}

// allowOK marks the allow list readable again.
func (d *Daemon) allowOK() {
	if d.allowErr.Swap(nil) != nil {
		d.log.Info("reading the allow list works again")
	}
}
