package quarantine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// PurgeResult says what Purge did.
type PurgeResult struct {
	Records int   // records whose content was deleted (now StateDeleted)
	Files   int   // vault files removed
	Bytes   int64 // bytes freed in the vault
}

// Purge enforces retention on the vault. First the content of every
// quarantined record older than olderThan (zero: no age bound) is deleted;
// then, while the vault holds more than maxBytes (0: no bound), the content
// of the oldest quarantined records. A purged record keeps its row: it goes
// to StateDeleted with an EventPurged event. A vault file shared by several
// records (same sha256) is removed only when no record that keeps its
// content (quarantined, or being quarantined) needs it. Records that never
// had content in the vault (audit, deny) are left as they are.
func (s *Store) Purge(ctx context.Context, olderThan time.Time, maxBytes int64, vault *Vault) (PurgeResult, error) {
	var res PurgeResult
	by := Actor{UID: uint32(os.Geteuid()), Name: "retention"}
	if !olderThan.IsZero() {
		recs, err := s.quarantinedOldestFirst(ctx, olderThan, 0)
		if err != nil {
			return res, err
		}
		detail := "older than " + olderThan.Format(time.RFC3339)
		for _, r := range recs {
			if err := s.purgeOne(ctx, &r, vault, by, detail, &res); err != nil {
				return res, err
			}
		}
	}
	if maxBytes <= 0 {
		return res, nil
	}
	detail := fmt.Sprintf("vault above %d bytes", maxBytes)
	for {
		size, err := vault.Used()
		if err != nil {
			return res, fmt.Errorf("purging: %w", err)
		}
		if size <= maxBytes {
			return res, nil
		}
		recs, err := s.quarantinedOldestFirst(ctx, time.Time{}, 1)
		if err != nil {
			return res, err
		}
		if len(recs) == 0 {
			return res, nil // what is left belongs to no quarantined record
		}
		if err := s.purgeOne(ctx, &recs[0], vault, by, detail, &res); err != nil {
			return res, err
		}
	}
}

func (s *Store) purgeOne(ctx context.Context, r *Record, vault *Vault, by Actor, detail string, res *PurgeResult) error {
	e := Event{What: EventPurged, By: by, Detail: detail}
	err := s.transition(ctx, r.ID, StateQuarantined, StateDeleted, "", &e)
	if errors.Is(err, ErrState) {
		return nil // restored or deleted meanwhile
	}
	if err != nil {
		return fmt.Errorf("purging: %w", err)
	}
	res.Records++
	removed, n, err := release(ctx, s, vault, r.VaultName, r.SHA256)
	if err != nil {
		return fmt.Errorf("purging: %w", err)
	}
	if removed {
		res.Files++
		res.Bytes += n
	}
	return nil
}

// quarantinedOldestFirst returns quarantined records older than before
// (zero: any), oldest first, at most limit (0: all).
func (s *Store) quarantinedOldestFirst(ctx context.Context, before time.Time, limit int) ([]Record, error) {
	q := `SELECT ` + recordColumns + ` FROM records WHERE state = ?`
	args := []any{StateQuarantined}
	if !before.IsZero() {
		q, args = q+` AND time < ?`, append(args, before.UnixNano())
	}
	q += ` ORDER BY time, id`
	if limit > 0 {
		q += fmt.Sprintf(` LIMIT %d`, limit)
	}
	return s.query(ctx, q, args...)
}

// inState returns the records in state, oldest first.
func (s *Store) inState(ctx context.Context, state string) ([]Record, error) {
	return s.query(ctx, `SELECT `+recordColumns+` FROM records WHERE state = ? ORDER BY id`, state)
}

func (s *Store) query(ctx context.Context, q string, args ...any) ([]Record, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("reading records: %w", err)
	}
	defer rows.Close()
	var out []Record
	for rows.Next() {
		r, err := scanRecord(rows)
		if err != nil {
			return nil, fmt.Errorf("reading records: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading records: %w", err)
	}
	return out, nil
}

// release removes vault file name (content sha256 sum) unless a record
// still needs it: one that is quarantined with it, or one being
// quarantined with that content. It holds the vault's exclusive lock from
// the check to the removal, so no move can claim the file in between. It
// reports whether it removed the file, and its size.
func release(ctx context.Context, s *Store, v *Vault, name, sum string) (removed bool, size int64, err error) {
	if name == "" {
		return false, 0, nil
	}
	unlock, err := v.lock(unix.LOCK_EX)
	if err != nil {
		return false, 0, err
	}
	defer unlock()
	var n int
	err = s.db.QueryRowContext(ctx, `SELECT count(*) FROM records
		WHERE (vault_name = ? AND state IN (?, ?)) OR (sha256 = ? AND state = ?)`,
		name, StateQuarantined, StateQuarantining, sum, StateQuarantining).Scan(&n)
	if err != nil {
		return false, 0, fmt.Errorf("checking who needs %s: %w", name, err)
	}
	if n > 0 {
		return false, 0, nil
	}
	size = v.fileSize(name)
	if size == 0 {
		return false, 0, nil // already gone
	}
	err = v.track(func() (int64, error) {
		err := v.Remove(name)
		return v.fileSize(name) - size, err
	})
	if err != nil {
		return false, 0, err
	}
	return true, size, nil
}
