package quarantine

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func fullRecord() *Record {
	return &Record{
		Time: time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC), Action: ActionQuarantine, State: StateRecorded, Late: true,
		OnClose: true, SHA256: strings.Repeat("ab", 32), Size: 68, Path: []byte("/tmp/a\nb\xff\x00c"),
		Dev: 1<<63 + 5, Ino: 1<<64 - 1, Mode: 0o100755, UID: 1000, GID: 1<<32 - 1,
		Mtime: time.Unix(1700000000, 987654321), PID: 1 << 30, Exe: []byte("/usr/bin/\xfecat"),
		Cmdline: []byte("cat\x00/tmp/a\nb\x00"), ProcUID: 1000, ProcUser: "alice", Unit: "session-3.scope", Container: "3f2a9c1b7e6d",
		RulesGeneration: "0123456789abcdef",
		VaultName:       "",
		Matches: []Match{
			{Rule: "EICAR_Test_File", Namespace: "eicar.yar", RuleFile: "/etc/fanguard/rules.d/eicar.yar",
				Tags: []string{"test", "eicar"}, Meta: map[string]string{"action": "quarantine", "severity": "low"},
				Strings: []StringMatch{{ID: "$a", Offset: 0, Data: []byte("X5O!P%@AP")}, {ID: "$b", Offset: 1 << 40, Data: []byte{0, 0xff, '\n'}}}},
			{Rule: "bad\xffutf8", Meta: map[string]string{"k\xfe": "v\x80"}, Tags: []string{"\xc3"}},
		},
	}
}

// filled sets what Add fills in on a record within the caps: Count 1,
// LastSeen at Time, the whole lengths of the command line and of each
// matched string.
func filled(r *Record) {
	if r.State == "" {
		r.State = StateRecorded
	}
	r.Count = max(r.Count, 1)
	if r.LastSeen.Before(r.Time) {
		r.LastSeen = r.Time
	}
	r.CmdlineLen = max(r.CmdlineLen, int64(len(r.Cmdline)))
	for i := range r.Matches {
		for j := range r.Matches[i].Strings {
			s := &r.Matches[i].Strings[j]
			s.Len = max(s.Len, int64(len(s.Data)))
		}
	}
}

func TestAddGetRoundTrip(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	long := make([]byte, 100)
	for i := range long {
		long[i] = byte(i)
	}
	tests := []struct {
		name string
		in   func() *Record
		want func(*Record)
	}{
		{"full", fullRecord, filled},
		{"empty", func() *Record { return &Record{Action: ActionAudit} }, filled},
		{"long match data is cut", func() *Record {
			r := fullRecord()
			r.Matches[0].Strings[0].Data = long
			return r
		}, func(r *Record) {
			filled(r)
			r.Matches[0].Strings[0].Data = long[:MaxMatchData]
		}},
		{"repeats and lengths given", func() *Record {
			r := fullRecord()
			r.Count, r.LastSeen, r.CmdlineLen = 7, r.Time.Add(time.Minute), 1<<20
			r.Matches[0].Strings[1].Len = 1000
			r.Matches[0].StringsOmitted = 3
			r.MatchesOmitted = 2
			return r
		}, filled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.in()
			id, err := e.store.Add(ctx, in)
			if err != nil {
				t.Fatal(err)
			}
			want := tt.in()
			want.ID = id
			tt.want(want)
			got := e.get(t, id)
			if diff := cmp.Diff(want, got, timeEqual, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Get (-want +got):\n%s", diff)
			}
			if !cmp.Equal(in, tt.in(), timeEqual) {
				t.Error("Add changed its argument")
			}
		})
	}
	if _, err := e.store.Get(ctx, 999); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(999) = %v, want ErrNotFound", err)
	}
}

func TestFilesAndModes(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "new", "q.db")
	s, err := Open(db)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Add(context.Background(), fullRecord()); err != nil {
		t.Fatal(err)
	}
	want := map[string]os.FileMode{
		filepath.Join(dir, "new"): os.ModeDir | 0o700,
		db:                        0o600,
		db + "-wal":               0o600,
		db + "-shm":               0o600,
	}
	for p, m := range want {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != m {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode(), m)
		}
	}
	var mode string
	s.db.QueryRow(`PRAGMA journal_mode`).Scan(&mode)
	var sync int
	s.db.QueryRow(`PRAGMA synchronous`).Scan(&sync)
	var version int
	s.db.QueryRow(`SELECT version FROM schema_version`).Scan(&version)
	if mode != "wal" || sync != 2 || version != len(schema) {
		t.Errorf("journal_mode %q, synchronous %d, schema version %d; want wal, 2 (FULL), %d", mode, sync, version, len(schema))
	}

	// A path with URI syntax in it.
	odd := filepath.Join(dir, "we?ird #%41", "q.db")
	s2, err := Open(odd)
	if err != nil {
		t.Fatal(err)
	}
	s2.Close()
	if _, err := os.Stat(odd); err != nil {
		t.Errorf("database not at %s: %v", odd, err)
	}
}

// TestTwoStores: the daemon and the command line write the same file at
// once.
func TestTwoStores(t *testing.T) {
	db := filepath.Join(t.TempDir(), "q.db")
	var stores [2]*Store
	for i := range stores {
		s, err := Open(db)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		stores[i] = s
	}
	ctx := context.Background()
	v0, err := stores[0].DataVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 3, 20
	var wg sync.WaitGroup
	errs := make(chan error, 2*writers*each)
	for _, s := range stores {
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < each; i++ {
					id, err := s.Add(ctx, fullRecord())
					if err == nil {
						err = s.AddEvent(ctx, id, Event{What: EventAllowed, By: Actor{Name: "test"}})
					}
					if err == nil {
						err = s.Allow(ctx, fmt.Sprintf("%064x", w*1000+i), "c", Actor{})
					}
					if err != nil {
						errs <- err
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i, s := range stores {
		recs, err := s.List(ctx, Filter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 2*writers*each {
			t.Errorf("store %d sees %d records, want %d", i, len(recs), 2*writers*each)
		}
	}
	v1, _ := stores[0].DataVersion(ctx)
	if v1 == v0 {
		t.Error("DataVersion did not change after writes")
	}
	// A write by the other process only.
	v1, _ = stores[0].DataVersion(ctx)
	if v2, _ := stores[0].DataVersion(ctx); v2 != v1 {
		t.Errorf("DataVersion moved without a write: %d → %d", v1, v2)
	}
	if _, err := stores[1].Disallow(ctx, fmt.Sprintf("%064x", 0)); err != nil {
		t.Fatal(err)
	}
	if v2, _ := stores[0].DataVersion(ctx); v2 == v1 {
		t.Error("DataVersion did not change after the other store's write")
	}
	if err := stores[0].IntegrityCheck(ctx); err != nil {
		t.Error(err)
	}
}

func TestList(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	add := func(hours int, action, rule, path string) int64 {
		r := &Record{Time: base.Add(time.Duration(hours) * time.Hour), Action: action, Path: []byte(path),
			Matches: []Match{{Rule: rule}, {Rule: "other"}}}
		id, err := e.store.Add(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	a := add(0, ActionAudit, "R1", "/home/alice/x.exe")
	b := add(1, ActionDeny, "R2", "/home/bob/deep/y.exe")
	c := add(2, ActionQuarantine, "R1", "/tmp/z\n\xff.com")
	d := add(3, ActionQuarantine, "R3", "/tmp/w.com")
	tests := []struct {
		name string
		f    Filter
		want []int64
	}{
		{"all newest first", Filter{}, []int64{d, c, b, a}},
		{"limit", Filter{Limit: 2}, []int64{d, c}},
		{"since", Filter{Since: base.Add(time.Hour)}, []int64{d, c, b}},
		{"until", Filter{Until: base.Add(time.Hour)}, []int64{a}},
		{"rule", Filter{Rule: "R1"}, []int64{c, a}},
		{"second match's rule", Filter{Rule: "other", Limit: 1}, []int64{d}},
		{"action", Filter{Action: ActionQuarantine}, []int64{d, c}},
		{"glob star stays in a directory", Filter{PathGlob: "/home/*/*.exe"}, []int64{a}},
		{"glob double star crosses", Filter{PathGlob: "/home/**.exe"}, []int64{b, a}},
		{"glob invalid UTF-8 byte", Filter{PathGlob: "/tmp/z\n?.com"}, []int64{c}},
		{"glob with limit", Filter{PathGlob: "/tmp/*", Limit: 1}, []int64{d}},
		{"combined", Filter{Rule: "R1", Action: ActionAudit, Since: base}, []int64{a}},
		{"none", Filter{Rule: "nope"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recs, err := e.store.List(ctx, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			var got []int64
			for _, r := range recs {
				got = append(got, r.ID)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ids (-want +got):\n%s", diff)
			}
		})
	}
}

func TestGlob(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"/a/*", "/a/b", true},
		{"/a/*", "/a/b/c", false},
		{"/a/**", "/a/b/c", true},
		{"/a/**/c", "/a/b/x/c", true},
		{"*", "", true},
		{"/a/?", "/a/\xff", true},
		{"/a/?", "/a//", false},
		{"/a/[bc]", "/a/c", true},
		{"/a/[!bc]", "/a/c", false},
		{"/a/[^bc]", "/a/d", true},
		{"/a/[a-c]x", "/a/bx", true},
		{"/a/[]]", "/a/]", true},
		{"/a/[b", "/a/b", false},
		{`/a/\*`, "/a/*", true},
		{`/a/\*`, "/a/b", false},
		{`/a\`, "/a", false},
		{"/a/b", "/a/b/", false},
		{"/a/*.exe", "/a/x.exe", true},
		{"/a/*.exe", "/a/x.exe.txt", false},
	}
	for _, tt := range tests {
		if got := matchGlob([]byte(tt.pattern), []byte(tt.name)); got != tt.want {
			t.Errorf("matchGlob(%q, %q) = %v, want %v", tt.pattern, tt.name, got, tt.want)
		}
	}
}

func TestStateAndHistory(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id, err := e.store.Add(ctx, &Record{Action: ActionQuarantine})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.SetState(ctx, id, StateQuarantined, VaultName(strings.Repeat("0", 64))); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2025, 2, 2, 2, 2, 2, 2, time.UTC)
	evs := []Event{
		{Time: at, What: EventRestored, By: Actor{UID: 1000, Name: "alice (sudo)"}, Detail: "to \"/x\""},
		{Time: at.Add(time.Second), What: EventAllowed, By: Actor{UID: 0, Name: "root"}},
	}
	for _, ev := range evs {
		if err := e.store.AddEvent(ctx, id, ev); err != nil {
			t.Fatal(err)
		}
	}
	r := e.get(t, id)
	if r.State != StateQuarantined || r.VaultName != VaultName(strings.Repeat("0", 64)) {
		t.Errorf("state %q vault %q", r.State, r.VaultName)
	}
	if diff := cmp.Diff(evs, r.History, timeEqual); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}
	if err := e.store.SetState(ctx, 999, StateDeleted, ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetState(999) = %v, want ErrNotFound", err)
	}
	if err := e.store.AddEvent(ctx, 999, Event{What: "x"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("AddEvent(999) = %v, want ErrNotFound", err)
	}
	if err := e.store.SetState(ctx, id, "bogus", ""); err == nil {
		t.Error("SetState accepted an unknown state")
	}
}

func TestAllowList(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a, b := strings.Repeat("a", 64), strings.Repeat("b", 64)
	alice := Actor{UID: 1000, Name: "alice"}
	if err := e.store.Allow(ctx, a, "false positive", alice); err != nil {
		t.Fatal(err)
	}
	if err := e.store.Allow(ctx, b, "x", Actor{Name: "root"}); err != nil {
		t.Fatal(err)
	}
	if err := e.store.Allow(ctx, b, "second comment", Actor{Name: "root"}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", strings.Repeat("A", 64), strings.Repeat("a", 63), strings.Repeat("g", 64)} {
		if err := e.store.Allow(ctx, bad, "", alice); err == nil {
			t.Errorf("Allow(%q) accepted", bad)
		}
	}
	list, err := e.store.AllowList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []Allowed{{SHA256: a, Comment: "false positive", AddedBy: alice}, {SHA256: b, Comment: "second comment", AddedBy: Actor{Name: "root"}}}
	if diff := cmp.Diff(want, list, cmpopts.IgnoreFields(Allowed{}, "AddedAt")); diff != "" {
		t.Errorf("AllowList (-want +got):\n%s", diff)
	}
	if ok, _ := e.store.IsAllowed(ctx, a); !ok {
		t.Error("a not allowed")
	}
	sums, err := e.store.AllowedSums(ctx)
	var wantSums [][32]byte
	for _, h := range []string{a, b} {
		var sum [32]byte
		hex.Decode(sum[:], []byte(h))
		wantSums = append(wantSums, sum)
	}
	slices.SortFunc(sums, func(x, y [32]byte) int { return bytes.Compare(x[:], y[:]) })
	if err != nil || !slices.Equal(sums, wantSums) {
		t.Errorf("AllowedSums = %x, %v; want %x", sums, err, wantSums)
	}
	if ok, err := e.store.Disallow(ctx, a); !ok || err != nil {
		t.Errorf("Disallow(a) = %v, %v", ok, err)
	}
	if ok, err := e.store.Disallow(ctx, a); ok || err != nil {
		t.Errorf("second Disallow(a) = %v, %v", ok, err)
	}
	if ok, _ := e.store.IsAllowed(ctx, a); ok {
		t.Error("a still allowed")
	}
}

func TestMigrationRefusesNewerSchema(t *testing.T) {
	db := filepath.Join(t.TempDir(), "q.db")
	s, err := Open(db)
	if err != nil {
		t.Fatal(err)
	}
	s.db.Exec(`UPDATE schema_version SET version = 99`)
	s.Close()
	if s, err := Open(db); err == nil || !strings.Contains(err.Error(), "upgrade fanguard") {
		if s != nil {
			s.Close()
		}
		t.Errorf("Open of a newer schema: %v", err)
	}
}

// TestMigrationStep4 opens a database written before schema step 4 (the
// opener's user name, unit and container): its records read with those
// unknown, and new records keep them.
func TestMigrationStep4(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "q.db")
	old, err := sql.Open("sqlite3", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	stmts := append([]string{`CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (3)`}, schema[:3]...)
	stmts = append(stmts, `INSERT INTO records (time, action, state, sha256, size, path, dev, ino, mode, uid, gid, mtime,
		pid, exe, cmdline, proc_uid, rules_generation, matches, on_close)
		VALUES (1, 'deny', 'recorded', 'ab', 68, X'2f746d702f61', 1, 2, 33188, 0, 0, 1, 42, X'', X'', 1000, 'g', '[]', 1)`)
	for _, st := range stmts {
		if _, err := old.Exec(st); err != nil {
			t.Fatalf("%s: %v", st, err)
		}
	}
	old.Close()

	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, err := s.Get(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if r.ProcUser != "" || r.Unit != "" || r.Container != "" || !r.OnClose || r.ProcUID != 1000 || string(r.Path) != "/tmp/a" {
		t.Errorf("old record read as user %q, unit %q, container %q, on_close %v, uid %d, path %q; want the old values and unknowns",
			r.ProcUser, r.Unit, r.Container, r.OnClose, r.ProcUID, r.Path)
	}
	id, err := s.Add(ctx, &Record{Time: time.Now(), Action: ActionDeny, SHA256: "cd", Path: []byte("/tmp/b"),
		ProcUser: "alice", Unit: "nginx.service", Container: "3f2a9c1b7e6d"})
	if err != nil {
		t.Fatal(err)
	}
	r, err = s.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if r.ProcUser != "alice" || r.Unit != "nginx.service" || r.Container != "3f2a9c1b7e6d" {
		t.Errorf("new record read as user %q, unit %q, container %q", r.ProcUser, r.Unit, r.Container)
	}
}
