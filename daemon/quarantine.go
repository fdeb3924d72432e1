package daemon

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/fanguard/fanguard/policy"
	"github.com/fanguard/fanguard/quarantine"
)

// QuarantineRecorder is the Recorder of a real daemon: the quarantine log
// (SQLite), its allow list and the vault. Safe for concurrent use.
type QuarantineRecorder struct {
	Store *quarantine.Store
	Mover *quarantine.Mover
}

// OpenQuarantine opens the quarantine log and the vault named by cfg and
// settles moves a crash interrupted. Moves keep the vault within
// cfg.MaxBytes (0: no bound). Call it before the daemon places its marks.
func OpenQuarantine(ctx context.Context, cfg policy.QuarantineConfig) (*QuarantineRecorder, error) {
	store, err := quarantine.Open(cfg.DB)
	if err != nil {
		return nil, err
	}
	vault, err := quarantine.OpenVault(cfg.Vault)
	if err != nil {
		store.Close()
		return nil, err
	}
	q := &QuarantineRecorder{Store: store, Mover: &quarantine.Mover{Store: store, Vault: vault, MaxBytes: cfg.MaxBytes}}
	if err := q.Mover.Recover(ctx); err != nil {
		store.Close()
		return nil, fmt.Errorf("recovering interrupted quarantine moves: %w", err)
	}
	return q, nil
}

// Close closes the quarantine log.
func (q *QuarantineRecorder) Close() error { return q.Store.Close() }

// AllowListVersion implements Recorder: SQLite's data version, which
// moves with every commit of another connection, the command line's
// included.
func (q *QuarantineRecorder) AllowListVersion(ctx context.Context) (int64, error) {
	return q.Store.DataVersion(ctx)
}

// AllowedSums implements Recorder.
func (q *QuarantineRecorder) AllowedSums(ctx context.Context) ([][32]byte, error) {
	return q.Store.AllowedSums(ctx)
}

// Record implements Recorder. The record is bounded (see
// quarantine.MaxCmdline and the other caps) whatever d holds; an error
// wrapping quarantine.ErrFull means that the database's disk is full.
func (q *QuarantineRecorder) Record(ctx context.Context, d *Detection) (int64, error) {
	r := quarantine.Record{
		Time:            d.Time,
		Action:          recordAction(d.Action),
		Late:            d.Late,
		OnClose:         d.OnClose,
		SHA256:          d.SHA256,
		Size:            d.Size,
		Path:            d.Path,
		Dev:             d.File.ID.Dev,
		Ino:             d.File.ID.Ino,
		Mode:            d.File.Mode,
		UID:             d.File.UID,
		GID:             d.File.GID,
		Mtime:           time.Unix(0, d.File.MtimeNs),
		PID:             d.PID,
		Exe:             []byte(d.Exe),
		Cmdline:         d.Cmdline,
		CmdlineLen:      d.CmdlineLen,
		ProcUser:        d.User,
		Unit:            d.Unit,
		Container:       d.Container,
		RulesGeneration: d.RulesGeneration,
	}
	if d.UID >= 0 {
		r.ProcUID = uint32(d.UID)
	}
	for _, m := range d.Matches {
		qm := quarantine.Match{Rule: m.Rule, Namespace: m.Namespace, RuleFile: m.File, Tags: m.Tags, Meta: m.Meta,
			StringsOmitted: m.StringsOmitted}
		for _, s := range m.Strings {
			qm.Strings = append(qm.Strings, quarantine.StringMatch{ID: s.ID, Offset: s.Offset, Data: s.Data, Len: int64(s.Len)})
		}
		r.Matches = append(r.Matches, qm)
	}
	return q.Store.Add(ctx, &r)
}

// Quarantine implements Recorder. A refused move leaves the file in place
// (denied) and says why in the record; its error wraps
// quarantine.ErrVaultLimit (the vault would pass max_bytes),
// quarantine.ErrNotLocal (the path now leads through a filesystem that is
// not local), quarantine.ErrChanged (the file changed or left its path) or
// quarantine.ErrFull (a full disk).
func (q *QuarantineRecorder) Quarantine(ctx context.Context, id int64, d *Detection) error {
	return q.Mover.Quarantine(ctx, id, d.Path, d.File.ID.Dev, d.File.ID.Ino)
}

// AddRepeats folds repeats of recorded detections into their records
// (count and last seen), all in one transaction: call it about once a
// second with the repeats coalesced since. See quarantine.Store.AddRepeats.
func (q *QuarantineRecorder) AddRepeats(ctx context.Context, reps []quarantine.Repeat) error {
	return q.Store.AddRepeats(ctx, reps)
}

// Retain purges the vault by age and size.
func (q *QuarantineRecorder) Retain(ctx context.Context, maxAge time.Duration, maxBytes int64) (quarantine.PurgeResult, error) {
	var before time.Time
	if maxAge > 0 {
		before = time.Now().Add(-maxAge)
	}
	return q.Store.Purge(ctx, before, maxBytes, q.Mover.Vault)
}

func recordAction(a policy.Action) string {
	switch a {
	case policy.ActionAudit:
		return quarantine.ActionAudit
	case policy.ActionQuarantine:
		return quarantine.ActionQuarantine
	}
	return quarantine.ActionDeny
}

// retain enforces quarantine.max_age and max_bytes at start and daily.
func (d *Daemon) retain(ctx context.Context, q *QuarantineRecorder) {
	for {
		res, err := q.Retain(ctx, d.live().keepFor, d.cfg.Quarantine.MaxBytes)
		if err != nil {
			d.log.Warn("quarantine retention failed: "+err.Error(), zap.Error(err))
		} else {
			d.log.Info("quarantine retention: purged the content of "+plural(res.Records, "record")+", removed "+
				plural(res.Files, "vault file")+", freed "+plural(res.Bytes, "byte"),
				zap.Int("purged_records", res.Records), zap.Int("purged_files", res.Files), zap.Int64("purged_bytes", res.Bytes))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(24 * time.Hour):
		}
	}
}
