package quarantine

import (
	"context"
	"encoding/hex"
	"fmt"
	"time"
)

// Allow adds sha256 (64 hex digits, lower case) to the allow list, or
// replaces its comment if it is there: the daemon lets files with that
// content through.
func (s *Store) Allow(ctx context.Context, sha256, comment string, by Actor) error {
	if !validSHA256(sha256) {
		return fmt.Errorf("allowing %q: not a lower-case hex sha256", sha256)
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO allowlist (sha256, comment, added_at, added_by_uid, added_by) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (sha256) DO UPDATE SET comment = excluded.comment, added_at = excluded.added_at,
		added_by_uid = excluded.added_by_uid, added_by = excluded.added_by`,
		sha256, comment, time.Now().UnixNano(), int64(by.UID), by.Name)
	if err != nil {
		return fmt.Errorf("allowing %s: %w", sha256, err)
	}
	return nil
}

// Disallow removes sha256 from the allow list and reports whether it was
// there.
func (s *Store) Disallow(ctx context.Context, sha256 string) (bool, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM allowlist WHERE sha256 = ?`, sha256)
	if err != nil {
		return false, fmt.Errorf("removing %s from the allow list: %w", sha256, err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// AllowList returns the allow list, oldest entry first.
func (s *Store) AllowList(ctx context.Context) ([]Allowed, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT sha256, comment, added_at, added_by_uid, added_by FROM allowlist ORDER BY added_at, sha256`)
	if err != nil {
		return nil, fmt.Errorf("reading the allow list: %w", err)
	}
	defer rows.Close()
	var out []Allowed
	for rows.Next() {
		var a Allowed
		var at, uid int64
		if err := rows.Scan(&a.SHA256, &a.Comment, &at, &uid, &a.AddedBy.Name); err != nil {
			return nil, fmt.Errorf("reading the allow list: %w", err)
		}
		a.AddedAt, a.AddedBy.UID = fromNanos(at), uint32(uid)
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading the allow list: %w", err)
	}
	return out, nil
}

// AllowedSums returns the sha256 sums on the allow list, decoded, for a
// copy in memory: the daemon keeps one, reads it again when DataVersion
// changes, and never queries the list on the event path.
func (s *Store) AllowedSums(ctx context.Context) ([][32]byte, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT sha256 FROM allowlist`)
	if err != nil {
		return nil, fmt.Errorf("reading the allow list: %w", err)
	}
	defer rows.Close()
	var out [][32]byte
	for rows.Next() {
		var h string
		if err := rows.Scan(&h); err != nil {
			return nil, fmt.Errorf("reading the allow list: %w", err)
		}
		var sum [32]byte
		if n, err := hex.Decode(sum[:], []byte(h)); err != nil || n != len(sum) {
			return nil, fmt.Errorf("reading the allow list: %q is not a sha256", h)
		}
		out = append(out, sum)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading the allow list: %w", err)
	}
	return out, nil
}

// IsAllowed reports whether sha256 is on the allow list. The daemon does
// not ask it: it keeps a copy (AllowedSums) and reads it again when
// DataVersion changes.
func (s *Store) IsAllowed(ctx context.Context, sha256 string) (bool, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM allowlist WHERE sha256 = ?`, sha256).Scan(&n); err != nil {
		return false, fmt.Errorf("looking up %s in the allow list: %w", sha256, err)
	}
	return n > 0, nil
}
