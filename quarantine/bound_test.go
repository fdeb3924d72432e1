package quarantine

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	_ "github.com/mattn/go-sqlite3"
)

// rowBytes returns the bytes of record id's variable columns as stored.
func rowBytes(t *testing.T, s *Store, id int64) int {
	t.Helper()
	var n int
	err := s.db.QueryRow(`SELECT length(path) + length(exe) + length(cmdline) + length(matches) + length(sha256) +
		length(rules_generation) + length(vault_name) FROM records WHERE id = ?`, id).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// maxRowBytes is what the caps allow a record's variable columns, with
// room for the first match's escaping.
const maxRowBytes = 2*MaxPath + MaxCmdline + 3*MaxName + 2*MaxMatchesBytes

func TestAddBounds(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	mib := func(b byte) []byte { return bytes.Repeat([]byte{b}, 1<<20) }
	manyMatches := func(n int, m func(i int) Match) []Match {
		out := make([]Match, n)
		for i := range out {
			out[i] = m(i)
		}
		return out
	}
	manyStrings := make([]StringMatch, 100000)
	for i := range manyStrings {
		manyStrings[i] = StringMatch{ID: "$a", Offset: int64(i) * 68, Data: []byte(eicar)}
	}
	manyTags := make([]string, 1000)
	manyMeta := make(map[string]string)
	for i := range manyTags {
		manyTags[i] = fmt.Sprintf("tag%04d", i)
		manyMeta[fmt.Sprintf("key%04d", i)] = strings.Repeat("v", 1000)
	}
	tests := []struct {
		name  string
		edit  func(r *Record)
		check func(t *testing.T, got *Record)
	}{
		{"6 MiB command line", func(r *Record) {
			r.Cmdline = bytes.Repeat([]byte("A\x00"), 3<<20)
		}, func(t *testing.T, got *Record) {
			if len(got.Cmdline) != MaxCmdline || got.CmdlineLen != 6<<20 || !bytes.HasPrefix(got.Cmdline, []byte("A\x00A\x00")) {
				t.Errorf("command line: %d bytes kept, CmdlineLen %d; want %d, %d", len(got.Cmdline), got.CmdlineLen, MaxCmdline, 6<<20)
			}
		}},
		{"command line read in part by the caller", func(r *Record) {
			r.Cmdline, r.CmdlineLen = []byte("cat\x00"), 1<<30
		}, func(t *testing.T, got *Record) {
			if string(got.Cmdline) != "cat\x00" || got.CmdlineLen != 1<<30 {
				t.Errorf("command line %q, CmdlineLen %d", got.Cmdline, got.CmdlineLen)
			}
		}},
		{"1 MiB of string data", func(r *Record) {
			r.Matches[0].Strings[0].Data = mib('X')
		}, func(t *testing.T, got *Record) {
			s := got.Matches[0].Strings[0]
			if len(s.Data) != MaxMatchData || s.Len != 1<<20 {
				t.Errorf("string data: %d bytes kept, Len %d; want %d, %d", len(s.Data), s.Len, MaxMatchData, 1<<20)
			}
			if s2 := got.Matches[0].Strings[1]; s2.Len != 3 {
				t.Errorf("the whole second string: Len %d, want 3", s2.Len)
			}
		}},
		{"5,000 matches", func(r *Record) {
			r.Matches = manyMatches(5000, func(i int) Match {
				return Match{Rule: fmt.Sprintf("Rule_%04d", i), Namespace: "big.yar", Strings: []StringMatch{{ID: "$a", Data: []byte(eicar)}}}
			})
		}, func(t *testing.T, got *Record) {
			if len(got.Matches) != MaxMatches || got.MatchesOmitted != 5000-MaxMatches {
				t.Errorf("%d matches kept, %d omitted; want %d, %d", len(got.Matches), got.MatchesOmitted, MaxMatches, 5000-MaxMatches)
			}
			if got.Matches[MaxMatches-1].Rule != fmt.Sprintf("Rule_%04d", MaxMatches-1) {
				t.Errorf("not the first matches kept: last %q", got.Matches[MaxMatches-1].Rule)
			}
		}},
		{"100,000 matched strings", func(r *Record) {
			r.Matches[0].Strings = manyStrings
			r.Matches[0].StringsOmitted = 5 // left out by the scanner already
		}, func(t *testing.T, got *Record) {
			m := got.Matches[0]
			if len(m.Strings) != MaxStrings || m.StringsOmitted != 100000-MaxStrings+5 {
				t.Errorf("%d strings kept, %d omitted", len(m.Strings), m.StringsOmitted)
			}
		}},
		{"long names, 1,000 tags and metadata entries", func(r *Record) {
			m := &r.Matches[0]
			m.Rule, m.Namespace, m.RuleFile = string(mib('r')), strings.Repeat("é", 1<<19), "/"+string(mib('f'))
			m.Tags, m.Meta = manyTags, manyMeta
			m.Strings[0].ID = string(mib('$'))
			r.RulesGeneration, r.SHA256, r.VaultName = string(mib('g')), string(mib('s')), string(mib('v'))
		}, func(t *testing.T, got *Record) {
			m := got.Matches[0]
			if len(m.Rule) != MaxName || len(m.RuleFile) != MaxPath || len(m.Strings[0].ID) != MaxName {
				t.Errorf("rule %d bytes, rule file %d, string id %d", len(m.Rule), len(m.RuleFile), len(m.Strings[0].ID))
			}
			if m.Namespace != strings.Repeat("é", MaxName/2) {
				t.Errorf("namespace not cut at a rune: %d bytes", len(m.Namespace))
			}
			if len(m.Tags) != MaxTags || m.Tags[MaxTags-1] != fmt.Sprintf("tag%04d", MaxTags-1) {
				t.Errorf("tags %v", m.Tags)
			}
			if len(m.Meta) != MaxMeta || len(m.Meta["key0000"]) != MaxMetaValue {
				t.Errorf("%d metadata entries, key0000 %d bytes", len(m.Meta), len(m.Meta["key0000"]))
			}
			if _, ok := m.Meta[fmt.Sprintf("key%04d", MaxMeta)]; ok {
				t.Error("metadata not the first keys in order")
			}
			if len(got.RulesGeneration) != MaxName || len(got.SHA256) != MaxName || len(got.VaultName) != MaxName {
				t.Error("generation, sha256 or vault name not cut")
			}
		}},
		{"long path and executable", func(r *Record) {
			r.Path, r.Exe = append([]byte("/"), mib('p')...), append([]byte("/"), mib('e')...)
		}, func(t *testing.T, got *Record) {
			if len(got.Path) != MaxPath || len(got.Exe) != MaxPath {
				t.Errorf("path %d bytes, exe %d", len(got.Path), len(got.Exe))
			}
		}},
		{"matches past the byte budget", func(r *Record) {
			meta := make(map[string]string)
			for i := range MaxMeta {
				meta[fmt.Sprintf("k%02d", i)] = strings.Repeat("\x01", MaxMetaValue) // escaped as \u0001 in JSON
			}
			r.Matches = manyMatches(MaxMatches, func(i int) Match {
				return Match{Rule: fmt.Sprintf("R%d", i), Meta: meta}
			})
		}, func(t *testing.T, got *Record) {
			if len(got.Matches) == MaxMatches || len(got.Matches)+got.MatchesOmitted != MaxMatches || len(got.Matches) < 1 {
				t.Errorf("%d matches kept, %d omitted", len(got.Matches), got.MatchesOmitted)
			}
			// The first match is kept whatever its size; the others only
			// within the budget.
			var stored string
			e.store.db.QueryRow(`SELECT matches FROM records WHERE id = ?`, got.ID).Scan(&stored)
			first, _ := encodeMatch(got.Matches[0])
			if len(got.Matches) > 1 && len(stored) > MaxMatchesBytes || len(stored) > len(first)+MaxMatchesBytes {
				t.Errorf("%d matches take %d bytes, the first %d", len(got.Matches), len(stored), len(first))
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := fullRecord()
			tt.edit(in)
			id, err := e.store.Add(ctx, in)
			if err != nil {
				t.Fatal(err)
			}
			got := e.get(t, id)
			tt.check(t, got)
			if n := rowBytes(t, e.store, id); n > maxRowBytes {
				t.Errorf("the record takes %d bytes, more than %d", n, maxRowBytes)
			}
			// What Get returns is within the caps: adding it again stores it as it is.
			id2, err := e.store.Add(ctx, got)
			if err != nil {
				t.Fatal(err)
			}
			again := e.get(t, id2)
			again.ID = got.ID
			if diff := cmp.Diff(got, again, timeEqual); diff != "" {
				t.Errorf("a bounded record changed when added again (-first +second):\n%s", diff)
			}
		})
	}
}

func TestEventDetailBound(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id, err := e.store.Add(ctx, fullRecord())
	if err != nil {
		t.Fatal(err)
	}
	ev := Event{What: strings.Repeat("w", 1000), By: Actor{Name: strings.Repeat("n", 1000)}, Detail: strings.Repeat("d", 1<<20)}
	if err := e.store.AddEvent(ctx, id, ev); err != nil {
		t.Fatal(err)
	}
	h := e.get(t, id).History[0]
	if len(h.Detail) != MaxDetail || len(h.What) != MaxName || len(h.By.Name) != MaxName {
		t.Errorf("detail %d bytes, what %d, by %d", len(h.Detail), len(h.What), len(h.By.Name))
	}
}

func TestAddRepeats(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	type want struct {
		count int64
		last  time.Time
	}
	tests := []struct {
		name    string
		batches [][]Repeat // ids 1 and 2 exist, first seen at t0
		wantErr error      // of the last batch
		want    [2]want
	}{
		{"one batch", [][]Repeat{{{ID: 1, N: 15, Last: t0.Add(time.Second)}}},
			nil, [2]want{{16, t0.Add(time.Second)}, {1, t0}}},
		{"batches add up", [][]Repeat{{{ID: 1, N: 1, Last: t0.Add(time.Second)}, {ID: 2, N: 3, Last: t0.Add(2 * time.Second)}},
			{{ID: 1, N: 2, Last: t0.Add(3 * time.Second)}}},
			nil, [2]want{{4, t0.Add(3 * time.Second)}, {4, t0.Add(2 * time.Second)}}},
		{"same record twice in a batch", [][]Repeat{{{ID: 2, N: 5, Last: t0.Add(time.Minute)}, {ID: 2, N: 5, Last: t0.Add(time.Second)}}},
			nil, [2]want{{1, t0}, {11, t0.Add(time.Minute)}}},
		{"an earlier last time moves nothing back", [][]Repeat{{{ID: 1, N: 1, Last: t0.Add(-time.Hour)}}},
			nil, [2]want{{2, t0}, {1, t0}}},
		{"a missing record: the others are written", [][]Repeat{{{ID: 1, N: 1, Last: t0.Add(time.Second)}, {ID: 99, N: 1}}},
			ErrNotFound, [2]want{{2, t0.Add(time.Second)}, {1, t0}}},
		{"N below 1: nothing is written", [][]Repeat{{{ID: 1, N: 1, Last: t0.Add(time.Second)}, {ID: 2, N: 0}}},
			errAny, [2]want{{1, t0}, {1, t0}}},
		{"the count saturates", [][]Repeat{{{ID: 1, N: math.MaxInt64 - 1}}, {{ID: 1, N: math.MaxInt64}}},
			nil, [2]want{{math.MaxInt64, t0}, {1, t0}}},
		{"nothing", [][]Repeat{nil}, nil, [2]want{{1, t0}, {1, t0}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			for range 2 {
				if _, err := e.store.Add(ctx, &Record{Time: t0, Action: ActionDeny}); err != nil {
					t.Fatal(err)
				}
			}
			var err error
			for _, b := range tt.batches {
				err = e.store.AddRepeats(ctx, b)
			}
			switch {
			case tt.wantErr == errAny && err == nil, tt.wantErr == nil && err != nil,
				tt.wantErr != nil && tt.wantErr != errAny && !errors.Is(err, tt.wantErr):
				t.Errorf("AddRepeats = %v, want %v", err, tt.wantErr)
			}
			for i, w := range tt.want {
				got := e.get(t, int64(i+1))
				if got.Count != w.count || !got.LastSeen.Equal(w.last) {
					t.Errorf("record %d: count %d, last seen %v; want %d, %v", i+1, got.Count, got.LastSeen, w.count, w.last)
				}
			}
		})
	}
}

// errAny stands for any error in a table.
var errAny = errors.New("any error")

// TestMigrationFromVersion1: a database made before records were bounded
// opens, its rows read as seen once, with their whole command line.
func TestMigrationFromVersion1(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "q.db")
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2024, 5, 6, 7, 8, 9, 10, time.UTC)
	long := bytes.Repeat([]byte("arg\x00"), 1<<18) // 1 MiB, stored whole by version 1
	for _, q := range []string{`CREATE TABLE schema_version (version INTEGER NOT NULL)`, `INSERT INTO schema_version VALUES (1)`, schema[0]} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	_, err = db.Exec(`INSERT INTO records (time, action, state, sha256, size, path, dev, ino, mode, uid, gid, mtime, pid, exe,
		cmdline, proc_uid, rules_generation, matches) VALUES (?, 'deny', 'recorded', 'ab', 1, x'2f78', 1, 2, 3, 4, 5, 6, 7, x'',
		?, 8, 'g', '[{"rule":"R","strings":[{"id":"$a","offset":0,"data":"WDVP"}]}]')`, at.UnixNano(), long)
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, err := s.Get(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if r.Count != 1 || !r.LastSeen.Equal(at) || r.CmdlineLen != int64(len(long)) || !bytes.Equal(r.Cmdline, long) ||
		r.MatchesOmitted != 0 || r.Matches[0].Strings[0].Len != 3 || r.OnClose {
		t.Errorf("old row reads as count %d, last seen %v, cmdline %d of %d bytes, %d matches omitted, string len %d, on close %v",
			r.Count, r.LastSeen, len(r.Cmdline), r.CmdlineLen, r.MatchesOmitted, r.Matches[0].Strings[0].Len, r.OnClose)
	}
	if err := s.AddRepeats(ctx, []Repeat{{ID: 1, N: 2, Last: at.Add(time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	if r := storeGet(t, s, 1); r.Count != 3 || !r.LastSeen.Equal(at.Add(time.Hour)) {
		t.Errorf("after AddRepeats: count %d, last seen %v", r.Count, r.LastSeen)
	}
	var v int
	s.db.QueryRow(`SELECT version FROM schema_version`).Scan(&v)
	if v != len(schema) {
		t.Errorf("schema version %d, want %d", v, len(schema))
	}
}

func storeGet(t *testing.T, s *Store, id int64) *Record {
	t.Helper()
	r, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestFloodGrowth: a detection seen once a second for twenty minutes, by a
// program with a 6 MiB command line, takes one bounded record and repeats
// folded into it: the database stays small, and its WAL stays below the
// automatic checkpoint's size (1,000 pages) however long the flood lasts.
func TestFloodGrowth(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	dbPath := filepath.Join(e.dir, "db", "quarantine.db")
	size := func(suffix string) int64 {
		fi, err := os.Stat(dbPath + suffix)
		if err != nil {
			return 0
		}
		return fi.Size()
	}
	checkpoint := func() {
		if _, err := e.store.db.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
			t.Fatal(err)
		}
	}
	checkpoint()
	before := size("")
	r := fullRecord()
	r.Cmdline = bytes.Repeat([]byte("A\x00"), 3<<20)
	id, err := e.store.Add(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	afterAdd := size("") + size("-wal")
	const seconds = 1200
	last := r.Time
	var maxWAL int64
	for i := range seconds {
		last = r.Time.Add(time.Duration(i+1) * time.Second)
		if err := e.store.AddRepeats(ctx, []Repeat{{ID: id, N: 16, Last: last}}); err != nil {
			t.Fatal(err)
		}
		maxWAL = max(maxWAL, size("-wal"))
	}
	checkpoint()
	after := size("")
	got := e.get(t, id)
	if got.Count != 1+16*seconds || !got.LastSeen.Equal(last) {
		t.Errorf("count %d, last seen %v", got.Count, got.LastSeen)
	}
	var pageSize int64
	e.store.db.QueryRow(`PRAGMA page_size`).Scan(&pageSize)
	t.Logf("database: %d bytes empty; %d with its WAL after one record with a 6 MiB command line; %d after %d batches of repeats (the WAL peaked at %d)",
		before, afterAdd, after, seconds, maxWAL)
	if after-before > 16*pageSize {
		t.Errorf("the database grew by %d bytes, want at most 16 pages", after-before)
	}
	if walMax := 1010 * (pageSize + 24); maxWAL > walMax {
		t.Errorf("the WAL reached %d bytes, more than the automatic checkpoint lets it (%d)", maxWAL, walMax)
	}
}
