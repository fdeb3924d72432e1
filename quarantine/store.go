package quarantine

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	_ "github.com/mattn/go-sqlite3" // the "sqlite3" driver
)

// Store is the detection log: a SQLite database in WAL mode with
// synchronous=FULL, so that a write is on disk when its method returns. The
// daemon and the command line open the same file at the same time; SQLite's
// locking (with a 5 s busy timeout) orders their writes.
//
// A Store is safe for concurrent use.
type Store struct {
	db *sql.DB

	mu      sync.Mutex // guards verConn
	verConn *sql.Conn  // the one connection DataVersion asks, so that its values compare
}

// schema holds the migrations: schema[i] takes the database from version i
// to version i+1. Append; never edit a released step.
var schema = []string{
	`CREATE TABLE records (
		id               INTEGER PRIMARY KEY AUTOINCREMENT,
		time             INTEGER NOT NULL, -- Unix nanoseconds
		action           TEXT    NOT NULL CHECK (action IN ('audit', 'deny', 'quarantine')),
		state            TEXT    NOT NULL CHECK (state IN ('recorded', 'quarantining', 'quarantined', 'restored', 'deleted')),
		late             INTEGER NOT NULL DEFAULT 0,
		sha256           TEXT    NOT NULL,
		size             INTEGER NOT NULL,
		path             BLOB    NOT NULL, -- the original path's bytes, exactly
		dev              INTEGER NOT NULL, -- uint64 stored as its int64 bits
		ino              INTEGER NOT NULL, -- likewise
		mode             INTEGER NOT NULL,
		uid              INTEGER NOT NULL,
		gid              INTEGER NOT NULL,
		mtime            INTEGER NOT NULL, -- Unix nanoseconds
		pid              INTEGER NOT NULL,
		exe              BLOB    NOT NULL,
		cmdline          BLOB    NOT NULL, -- NUL-separated argv
		proc_uid         INTEGER NOT NULL,
		rules_generation TEXT    NOT NULL,
		vault_name       TEXT    NOT NULL DEFAULT '',
		matches          TEXT    NOT NULL  -- JSON: [Match]
	);
	CREATE INDEX records_time ON records (time);
	CREATE INDEX records_sha256 ON records (sha256);
	CREATE TABLE history (
		id        INTEGER PRIMARY KEY AUTOINCREMENT,
		record_id INTEGER NOT NULL REFERENCES records (id),
		time      INTEGER NOT NULL,
		what      TEXT    NOT NULL,
		by_uid    INTEGER NOT NULL,
		by_name   TEXT    NOT NULL,
		detail    TEXT    NOT NULL
	);
	CREATE INDEX history_record ON history (record_id);
	CREATE TABLE allowlist (
		sha256       TEXT PRIMARY KEY,
		comment      TEXT    NOT NULL,
		added_at     INTEGER NOT NULL,
		added_by_uid INTEGER NOT NULL,
		added_by     TEXT    NOT NULL
	);`,
	// Bounded records and repeats. Old rows read as seen once (count 1),
	// last seen at their time, with their whole command line (see
	// recordColumns): no rewrite of every row here.
	`ALTER TABLE records ADD COLUMN count           INTEGER NOT NULL DEFAULT 1;
	ALTER TABLE records ADD COLUMN last_seen        INTEGER NOT NULL DEFAULT 0; -- Unix nanoseconds; 0: time
	ALTER TABLE records ADD COLUMN cmdline_len      INTEGER NOT NULL DEFAULT 0; -- 0: length(cmdline)
	ALTER TABLE records ADD COLUMN matches_omitted  INTEGER NOT NULL DEFAULT 0;`,
	// Detections made when a writer closed the file, not at an open. Old
	// rows read as found at an open.
	`ALTER TABLE records ADD COLUMN on_close INTEGER NOT NULL DEFAULT 0;`,
	// Who opened it, by name and by where it runs: the user's name, the
	// systemd unit and the container (from its cgroup). Old rows read as
	// unknown ("").
	`ALTER TABLE records ADD COLUMN proc_user TEXT NOT NULL DEFAULT '';
	ALTER TABLE records ADD COLUMN unit      TEXT NOT NULL DEFAULT '';
	ALTER TABLE records ADD COLUMN container TEXT NOT NULL DEFAULT '';`,
}

// Open opens the log at path, creating it (file 0600, directory 0700) and
// bringing its schema up to date. Other processes may have it open.
func Open(path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating the quarantine database directory: %w", err)
	}
	// Create the file ourselves so that it is 0600 from the start; SQLite
	// gives its -wal and -shm files the database file's mode.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the quarantine database: %w", err)
	}
	err = f.Chmod(0o600)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("setting the mode of %s: %w", path, err)
	}
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() +
		"?_journal_mode=WAL&_synchronous=FULL&_busy_timeout=5000&_foreign_keys=on&_txlock=immediate"
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	db.SetMaxIdleConns(4)
	s := &Store{db: db}
	ctx := context.Background()
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("preparing %s: %w", path, err)
	}
	if s.verConn, err = db.Conn(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.verConn != nil {
		s.verConn.Close()
		s.verConn = nil
	}
	s.mu.Unlock()
	return s.db.Close()
}

// migrate brings the schema to len(schema), in one write transaction, so
// that two processes opening a new file at once do not both create it.
func (s *Store) migrate(ctx context.Context) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
			return err
		}
		var v int
		err := tx.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v)
		if errors.Is(err, sql.ErrNoRows) {
			if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version VALUES (0)`); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
		if v > len(schema) {
			return fmt.Errorf("schema version %d is newer than this fanguard knows (%d): upgrade fanguard", v, len(schema))
		}
		for ; v < len(schema); v++ {
			if _, err := tx.ExecContext(ctx, schema[v]); err != nil {
				return fmt.Errorf("migrating to version %d: %w", v+1, err)
			}
		}
		_, err = tx.ExecContext(ctx, `UPDATE schema_version SET version = ?`, v)
		return err
	})
}

// tx runs f in a write transaction (BEGIN IMMEDIATE) and commits it.
func (s *Store) tx(ctx context.Context, f func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return full(err)
	}
	if err := f(tx); err != nil {
		tx.Rollback()
		return full(err)
	}
	return full(tx.Commit())
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// Add records r durably (the transaction is committed, and with
// synchronous=FULL on disk, when it returns) and returns its id. r.ID and
// r.History are ignored; an empty r.State means StateRecorded. Whatever
// its size, r is stored bounded: each variable part is cut to its cap
// (MaxCmdline, MaxPath, MaxName, MaxMatchData, MaxStrings, MaxMatches,
// MaxMatchesBytes and the rest), with the whole lengths and the counts of
// what was left out kept (CmdlineLen, StringMatch.Len, StringsOmitted,
// MatchesOmitted); Get returns the bounded record. r is not modified.
//
// An error wrapping ErrFull means that the disk holding the database is
// full: nothing was recorded, and a later Add can succeed once there is
// room.
func (s *Store) Add(ctx context.Context, r *Record) (int64, error) {
	b, mj, err := bounded(r)
	if err != nil {
		return 0, fmt.Errorf("encoding matches: %w", err)
	}
	res, err := s.db.ExecContext(ctx, `INSERT INTO records (time, action, state, late, sha256, size, path, dev, ino, mode,
		uid, gid, mtime, pid, exe, cmdline, cmdline_len, proc_uid, rules_generation, vault_name, matches, matches_omitted,
		count, last_seen, on_close, proc_user, unit, container)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		nanos(b.Time), b.Action, b.State, b.Late, b.SHA256, b.Size, nonNil(b.Path), int64(b.Dev), int64(b.Ino), int64(b.Mode),
		int64(b.UID), int64(b.GID), nanos(b.Mtime), int64(b.PID), nonNil(b.Exe), nonNil(b.Cmdline), b.CmdlineLen, int64(b.ProcUID),
		b.RulesGeneration, b.VaultName, string(mj), b.MatchesOmitted, b.Count, nanos(b.LastSeen), b.OnClose,
		b.ProcUser, b.Unit, b.Container)
	if err != nil {
		return 0, fmt.Errorf("adding a record: %w", full(err))
	}
	id, err := res.LastInsertId()
	if err != nil {
		return 0, fmt.Errorf("adding a record: %w", err)
	}
	return id, nil
}

// AddRepeats folds repeats of recorded detections into their records, all
// in one transaction (one sync to disk, however many there are): each
// record's Count grows by N (up to the largest int64) and its LastSeen
// becomes Last when Last is later. Entries for the same record add up. It
// writes nothing and returns an error when an entry's N is below 1. Entries
// of records that do not exist are left out, and reported by an error
// wrapping ErrNotFound once the others are committed. An error wrapping
// ErrFull means that the disk is full and nothing was written.
//
// It is meant to be called about once a second by a daemon that coalesces
// repeats in memory: the cost is one small update per record in the batch.
func (s *Store) AddRepeats(ctx context.Context, reps []Repeat) error {
	for _, rp := range reps {
		if rp.N < 1 {
			return fmt.Errorf("adding %d repeats to record %d: want at least 1", rp.N, rp.ID)
		}
	}
	if len(reps) == 0 {
		return nil
	}
	var missing []int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		missing = missing[:0]
		st, err := tx.PrepareContext(ctx, `UPDATE records SET
			count = CASE WHEN count > 9223372036854775807 - ?1 THEN 9223372036854775807 ELSE count + ?1 END,
			last_seen = max(last_seen, ?2)
			WHERE id = ?3`)
		if err != nil {
			return err
		}
		defer st.Close()
		for _, rp := range reps {
			res, err := st.ExecContext(ctx, rp.N, nanos(rp.Last), rp.ID)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 0 {
				missing = append(missing, rp.ID)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("adding repeats: %w", full(err))
	}
	if len(missing) > 0 {
		return fmt.Errorf("adding repeats to records %v: %w", missing, ErrNotFound)
	}
	return nil
}

// recordColumns are the columns scanRecord reads. Rows from before the
// second schema step have last_seen 0 and cmdline_len 0: they read as last
// seen at their time, with their whole command line.
const recordColumns = `id, time, action, state, late, sha256, size, path, dev, ino, mode, uid, gid, mtime,
	pid, exe, cmdline, max(cmdline_len, length(cmdline)), proc_uid, rules_generation, vault_name, matches, matches_omitted,
	count, max(last_seen, time), on_close, proc_user, unit, container`

type scanner interface{ Scan(...any) error }

func scanRecord(row scanner) (Record, error) {
	var (
		r                         Record
		tm, mtime, dev, ino, mode int64
		uid, gid, pid, procUID    int64
		lastSeen                  int64
		matches                   string
	)
	err := row.Scan(&r.ID, &tm, &r.Action, &r.State, &r.Late, &r.SHA256, &r.Size, &r.Path, &dev, &ino, &mode,
		&uid, &gid, &mtime, &pid, &r.Exe, &r.Cmdline, &r.CmdlineLen, &procUID, &r.RulesGeneration, &r.VaultName, &matches,
		&r.MatchesOmitted, &r.Count, &lastSeen, &r.OnClose, &r.ProcUser, &r.Unit, &r.Container)
	if err != nil {
		return r, err
	}
	r.Time, r.Mtime, r.LastSeen = fromNanos(tm), fromNanos(mtime), fromNanos(lastSeen)
	r.Dev, r.Ino, r.Mode = uint64(dev), uint64(ino), uint32(mode)
	r.UID, r.GID, r.PID, r.ProcUID = uint32(uid), uint32(gid), int32(pid), uint32(procUID)
	if r.Matches, err = decodeMatches([]byte(matches)); err != nil {
		return r, fmt.Errorf("decoding the matches of record %d: %w", r.ID, err)
	}
	return r, nil
}

// Get returns the record with that id, with its history (oldest first). It
// returns an error wrapping ErrNotFound when there is none.
func (s *Store) Get(ctx context.Context, id int64) (*Record, error) {
	r, err := scanRecord(s.db.QueryRowContext(ctx, `SELECT `+recordColumns+` FROM records WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("record %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("reading record %d: %w", id, err)
	}
	if r.History, err = s.history(ctx, id); err != nil {
		return nil, err
	}
	return &r, nil
}

func (s *Store) history(ctx context.Context, id int64) ([]Event, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT time, what, by_uid, by_name, detail FROM history WHERE record_id = ? ORDER BY id`, id)
	if err != nil {
		return nil, fmt.Errorf("reading the history of record %d: %w", id, err)
	}
	defer rows.Close()
	var evs []Event
	for rows.Next() {
		var e Event
		var tm, uid int64
		if err := rows.Scan(&tm, &e.What, &uid, &e.By.Name, &e.Detail); err != nil {
			return nil, fmt.Errorf("reading the history of record %d: %w", id, err)
		}
		e.Time, e.By.UID = fromNanos(tm), uint32(uid)
		evs = append(evs, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading the history of record %d: %w", id, err)
	}
	return evs, nil
}

// List returns the records f selects, newest first, without their history.
func (s *Store) List(ctx context.Context, f Filter) ([]Record, error) {
	var where []string
	var args []any
	if !f.Since.IsZero() {
		where, args = append(where, "time >= ?"), append(args, f.Since.UnixNano())
	}
	if !f.Until.IsZero() {
		where, args = append(where, "time < ?"), append(args, f.Until.UnixNano())
	}
	if f.Action != "" {
		where, args = append(where, "action = ?"), append(args, f.Action)
	}
	if f.Rule != "" {
		where = append(where, "EXISTS (SELECT 1 FROM json_each(records.matches) WHERE json_extract(value, '$.rule') = ?)")
		args = append(args, f.Rule)
	}
	q := `SELECT ` + recordColumns + ` FROM records`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY time DESC, id DESC`
	if f.Limit > 0 && f.PathGlob == "" {
		q += fmt.Sprintf(` LIMIT %d`, f.Limit)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("listing records: %w", err)
	}
	defer rows.Close()
	var out []Record
	for rows.Next() {
		r, err := scanRecord(rows)
		if err != nil {
			return nil, fmt.Errorf("listing records: %w", err)
		}
		if f.PathGlob != "" && !matchGlob([]byte(f.PathGlob), r.Path) {
			continue
		}
		out = append(out, r)
		if f.Limit > 0 && len(out) >= f.Limit {
			break
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing records: %w", err)
	}
	return out, nil
}

// SetState sets the state and the vault name of record id. It returns an
// error wrapping ErrNotFound when there is no such record.
func (s *Store) SetState(ctx context.Context, id int64, state, vaultName string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		return setState(ctx, tx, id, state, vaultName)
	})
}

func setState(ctx context.Context, tx *sql.Tx, id int64, state, vaultName string) error {
	res, err := tx.ExecContext(ctx, `UPDATE records SET state = ?, vault_name = ? WHERE id = ?`, state, vaultName, id)
	if err != nil {
		return fmt.Errorf("setting the state of record %d: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("record %d: %w", id, ErrNotFound)
	}
	return nil
}

// AddEvent appends e to the history of record id (ErrNotFound when there is
// no such record). Its Detail is cut to MaxDetail bytes, its What and
// By.Name to MaxName.
func (s *Store) AddEvent(ctx context.Context, id int64, e Event) error {
	return s.tx(ctx, func(tx *sql.Tx) error { return addEvent(ctx, tx, id, e) })
}

func addEvent(ctx context.Context, tx *sql.Tx, id int64, e Event) error {
	e = boundedEvent(e)
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM records WHERE id = ?`, id).Scan(&n); err != nil {
		return fmt.Errorf("adding an event to record %d: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("record %d: %w", id, ErrNotFound)
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO history (record_id, time, what, by_uid, by_name, detail) VALUES (?, ?, ?, ?, ?, ?)`,
		id, e.Time.UnixNano(), e.What, int64(e.By.UID), e.By.Name, e.Detail)
	if err != nil {
		return fmt.Errorf("adding an event to record %d: %w", id, err)
	}
	return nil
}

// transition moves record id from state from to state to (setting its vault
// name) and adds e to its history, in one transaction. It returns an error
// wrapping ErrState when the record is not in state from.
func (s *Store) transition(ctx context.Context, id int64, from, to, vaultName string, e *Event) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE records SET state = ?, vault_name = ? WHERE id = ? AND state = ?`, to, vaultName, id, from)
		if err != nil {
			return fmt.Errorf("setting the state of record %d: %w", id, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			var cur string
			err := tx.QueryRowContext(ctx, `SELECT state FROM records WHERE id = ?`, id).Scan(&cur)
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("record %d: %w", id, ErrNotFound)
			}
			return fmt.Errorf("record %d is %s, not %s: %w", id, cur, from, ErrState)
		}
		if e != nil {
			return addEvent(ctx, tx, id, *e)
		}
		return nil
	})
}

// DataVersion returns SQLite's data_version as seen by one connection of
// this Store: it changes when another connection (of this Store or of
// another process, such as the command line changing the allow list)
// commits. Compare only values from the same Store; it costs no disk read.
func (s *Store) DataVersion(ctx context.Context) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.verConn == nil {
		return 0, fmt.Errorf("reading the data version: %w", os.ErrClosed)
	}
	var v int64
	if err := s.verConn.QueryRowContext(ctx, `PRAGMA data_version`).Scan(&v); err != nil {
		return 0, fmt.Errorf("reading the data version: %w", err)
	}
	return v, nil
}

// IntegrityCheck runs PRAGMA integrity_check and returns an error listing
// its findings unless the database is intact.
func (s *Store) IntegrityCheck(ctx context.Context) error {
	rows, err := s.db.QueryContext(ctx, `PRAGMA integrity_check`)
	if err != nil {
		return fmt.Errorf("checking integrity: %w", err)
	}
	defer rows.Close()
	var msgs []string
	for rows.Next() {
		var m string
		if err := rows.Scan(&m); err != nil {
			return fmt.Errorf("checking integrity: %w", err)
		}
		msgs = append(msgs, m)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("checking integrity: %w", err)
	}
	if len(msgs) == 1 && msgs[0] == "ok" {
		return nil
	}
	return fmt.Errorf("integrity check failed: %s", strings.Join(msgs, "; "))
}
